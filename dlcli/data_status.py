"""What ``dlcli data`` reports and does: for each real data set, where dlcli looks for it, what it finds there
and which recipes use it; and fetching data sets ahead of time, for machines whose training nodes have no
network (download on a login node, then point ``--data-dir`` or ``DLCLI_DATA`` at the same folder).

Inspecting reads no image: file names and sizes for MNIST's IDX files, the published MD5 of each original
CIFAR-10 batch (``dlcli.data_cifar.original_problem``, what training checks too), a count of the image files
of CIFAR-10's image folders. Fetching
goes through the data sources themselves (``dlcli.data.load_data``), so it downloads exactly what a run would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlcli.data import data_root, load_data
from dlcli.data_cifar import ORIGINAL_FOLDER, TARBALL, original_problem
from dlcli.errors import UsageError

#: the real data sets a recipe can name, and their folder under the data root
REAL_DATA = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": ORIGINAL_FOLDER}
#: the IDX files of MNIST and Fashion-MNIST (the same names and sizes for both) -> bytes
IDX_SIZES = {"train-images-idx3-ubyte": 16 + 60_000 * 28 * 28, "train-labels-idx1-ubyte": 8 + 60_000,
             "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28, "t10k-labels-idx1-ubyte": 8 + 10_000}


def root_and_origin(data_dir: str | None) -> tuple[Path, str]:
    """The data root ``load_data`` uses, and where it came from."""
    origin = "--data-dir" if data_dir else "$DLCLI_DATA" if os.environ.get("DLCLI_DATA") else "the cache folder"
    return data_root(data_dir), origin


def check_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in REAL_DATA]
    if unknown:
        raise UsageError(f"unknown data set {unknown[0]!r}; the real data sets are: {', '.join(REAL_DATA)} "
                         "(the toy data is generated; image folders are given per run with data.args.path)")
    return names or list(REAL_DATA)


def _idx_state(root: Path, folder: str) -> tuple[str, str]:
    raw = root / folder / "raw"
    missing = [f for f in IDX_SIZES if not (raw / f).is_file()]
    if len(missing) == len(IDX_SIZES):
        return "missing", f"no IDX files in {raw}"
    if missing:
        return "incomplete", f"{raw}: missing {', '.join(missing)}"
    wrong = [f for f, size in IDX_SIZES.items() if (raw / f).stat().st_size != size]
    if wrong:
        return "damaged", f"{raw / wrong[0]} has {(raw / wrong[0]).stat().st_size:,} bytes, not {IDX_SIZES[wrong[0]]:,}"
    return "found", f"{raw}: the 4 IDX files (60,000 + 10,000 images)"


def _count_images(split: Path) -> int:
    from dlcli.data_images import IMAGE_EXTENSIONS

    return sum(1 for d in split.iterdir() if d.is_dir() for f in os.scandir(d)
               if f.name.lower().endswith(IMAGE_EXTENSIONS))


def _cifar_state(root: Path) -> tuple[str, str]:
    """The copy ``files: auto`` would read, in its order: the original batches, the image folders, the tarball."""
    original, images, tarball = root / ORIGINAL_FOLDER, root / "cifar10-jpg", root / TARBALL
    has_images = (images / "train").is_dir() and (images / "test").is_dir()
    if original.is_dir():
        problem = original_problem(original)
        if problem is not None:
            return problem
        also = " (image folders cifar10-jpg/ also there, not used)" if has_images else ""
        return "found", f"{original}: the original batches, each with its published MD5{also}"
    if has_images:
        n_train, n_test = _count_images(images / "train"), _count_images(images / "test")
        return "found", (f"{images}: image folders, {n_train:,} + {n_test:,} images (not the original pixels: "
                         "runs say so in their header)")
    if tarball.is_file():
        return "found", f"{tarball}: the original's tarball, extracted at first use"
    return "missing", f"neither {original}/ nor {images}/{{train,test}}/ nor {tarball}"


def recipes_using() -> dict[str, list[str]]:
    """Data set -> the recipes that train on it (read from the recipe files; no torch)."""
    from dlcli.config import load_recipe, recipe_names
    from dlcli.errors import DlcliError

    users: dict[str, list[str]] = {name: [] for name in REAL_DATA}
    for name in recipe_names():
        try:
            r = load_recipe(name, check_builders=False)
        except DlcliError:
            continue  # `dlcli list` names invalid recipes
        if r.data is not None and r.data.source in users:
            users[r.data.source].append(name)
    return users


def inspect(names: list[str], data_dir: str | None) -> dict[str, Any]:
    """One row per data set: name, state (found | missing | incomplete | damaged), detail, recipes using it."""
    root, origin = root_and_origin(data_dir)
    users = recipes_using()
    rows = []
    for name in check_names(names):
        state, detail = _cifar_state(root) if name == "cifar10" else _idx_state(root, REAL_DATA[name])
        rows.append({"name": name, "state": state, "detail": detail, "recipes": users[name]})
    return {"data_root": str(root), "from": origin, "data_sets": rows}


def fetch(name: str, data_dir: str | None) -> None:
    """Download ``name`` into the data root as a run would (CIFAR-10: the original batches), or raise the one-line
    error saying what to put where. Reading the files afterwards checks them."""
    args: dict[str, Any] = {"val_size": 0}
    if name == "cifar10":
        args["files"] = "original"
    load_data(name, args, data_dir, seed=0)
