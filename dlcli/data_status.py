"""What ``dlcli data`` reports and does: for each real data set, and for the torchvision ImageNet weights that
``pretrained: true`` loads, where dlcli looks for it, what it finds there and which recipes use it; and
fetching them ahead of time, for machines whose training nodes have no network (download on a login node,
then point ``--data-dir`` or ``DLCLI_DATA`` at the same folder; the weights go to the torch hub cache, which
``TORCH_HOME`` moves).

Inspecting reads no image: file names and sizes for MNIST's IDX files, the published MD5 of each original
CIFAR-10 batch (``dlcli.data_cifar.original_problem``, what training checks too), a count of the image files
of CIFAR-10's image folders, the SHA-256 prefix that a weights file's name carries. Fetching data goes
through the data sources themselves (``dlcli.data.load_data``), so it downloads exactly what a run would;
weights are the files torchvision's ``Weights`` enums name, downloaded into the torch hub cache (``dlcli.download.fetch_file``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlcli.data import data_root, load_data
from dlcli.data_cifar import (
    ORIGINAL_FOLDER,
    TARBALL,
    choose_copy,
    original_problem,
    tarball_problem,
)
from dlcli.download import fetch_file, file_hash, hash_prefix, hub_checkpoint
from dlcli.errors import UsageError

#: the real data sets a recipe can name, and their folder under the data root
REAL_DATA = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": ORIGINAL_FOLDER}
#: torchvision's ImageNet weights that ``model.args.pretrained: true`` reads: name -> (dlcli model, the file's URL:
#: ``<Weights enum>.IMAGENET1K_V1.url``, written out because importing torchvision.models takes seconds; tested)
WEIGHTS = {"alexnet-imagenet": ("alexnet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
           "resnet18-imagenet": ("resnet18", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
           "resnet50-imagenet": ("resnet50", "https://download.pytorch.org/models/resnet50-0676ba61.pth")}
NAMES = (*REAL_DATA, *WEIGHTS)
#: the IDX files of MNIST and Fashion-MNIST (the same names and sizes for both) -> bytes
IDX_SIZES = {"train-images-idx3-ubyte": 16 + 60_000 * 28 * 28, "train-labels-idx1-ubyte": 8 + 60_000,
             "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28, "t10k-labels-idx1-ubyte": 8 + 10_000}


def root_and_origin(data_dir: str | None) -> tuple[Path, str]:
    """The data root ``load_data`` uses, and where it came from."""
    origin = "--data-dir" if data_dir else "$DLCLI_DATA" if os.environ.get("DLCLI_DATA") else "the cache folder"
    return data_root(data_dir), origin


def check_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise UsageError(f"unknown data set or weights {unknown[0]!r}; expected one of: {', '.join(NAMES)} (the toy "
                         "data is generated; image folders are given per run with data.args.path)")
    return names or list(NAMES)


def _idx_state(root: Path, folder: str) -> tuple[str, str]:
    raw = root / folder / "raw"
    missing = [f for f in IDX_SIZES if not (raw / f).is_file()]
    packed = [f"{f}.gz" for f in missing if (raw / f"{f}.gz").is_file()]
    unpack = (f" ({', '.join(packed)} {'is' if len(packed) == 1 else 'are'} there: --download or a run unpacks "
              f"{'it' if len(packed) == 1 else 'them'}, MD5 checked)") if packed else ""
    if len(missing) == len(IDX_SIZES):
        return "missing", f"no IDX files in {raw}{unpack}"
    if missing:
        return "incomplete", f"{raw}: missing {', '.join(missing)}{unpack}"
    wrong = [f for f, size in IDX_SIZES.items() if (raw / f).stat().st_size != size]
    if wrong:
        return "damaged", f"{raw / wrong[0]} has {(raw / wrong[0]).stat().st_size:,} bytes, not {IDX_SIZES[wrong[0]]:,}"
    return "found", f"{raw}: the 4 IDX files (60,000 + 10,000 images)"


def _count_images(split: Path) -> tuple[int, list[str]]:
    """The image files under ``split/<class>/``, and those of them that are empty (a run refuses those)."""
    from dlcli.data_images import IMAGE_EXTENSIONS

    files = [f for d in split.iterdir() if d.is_dir() for f in os.scandir(d)
             if f.name.lower().endswith(IMAGE_EXTENSIONS)]
    return len(files), [f.path for f in files if f.stat().st_size == 0]


def _cifar_state(root: Path) -> tuple[str, str, str]:
    """State, detail, and the copy a run with ``files: auto`` reads (``data_cifar.choose_copy``)."""
    original, images, tarball = root / ORIGINAL_FOLDER, root / "cifar10-jpg", root / TARBALL
    copy = choose_copy(root)
    if copy == "original":
        problem = original_problem(original)
        if problem is not None:
            if tarball.is_file():
                damaged_tarball = tarball_problem(tarball)  # (an MD5 over 163 MB: once)
                if damaged_tarball is None:
                    return "found", f"{original}: {problem[0]}; a run extracts {tarball} again first", copy
                return problem[0], f"{problem[1]}; and {damaged_tarball}", copy
            return (*problem, copy)
        return "found", f"{original}: the original batches, each with its published MD5", copy
    if copy == "images":
        (n_train, empty_train), (n_test, empty_test) = _count_images(images / "train"), _count_images(images / "test")
        empty = empty_train + empty_test
        if empty:
            return "damaged", f"{len(empty)} empty image file(s) in {images}, e.g. {empty[0]}", copy
        state = "found" if n_train and n_test else "incomplete"
        return state, (f"{images}: image folders, {n_train:,} + {n_test:,} images (not the original pixels, as "
                       "runs say; `dlcli data cifar10 --download` fetches the original)"), copy
    if copy == "tarball":
        problem = tarball_problem(tarball)
        if problem:
            return "damaged", problem, copy
        return "found", f"{tarball}: the original's tarball, extracted at first use", copy
    return "missing", f"neither {original}/ nor {images}/{{train,test}}/ nor {tarball}", copy


def weights_url(name: str) -> str:
    """The URL of torchvision's IMAGENET1K_V1 weights for ``name`` (what the model builders load)."""
    return WEIGHTS[name][1]


def _weights_state(name: str) -> tuple[str, str]:
    url = weights_url(name)
    path = hub_checkpoint(url)
    if not path.is_file():
        return "missing", f"not in the torch hub cache: {path} (from {url})"
    prefix = hash_prefix(path)
    if prefix and not file_hash(path, "sha256").startswith(prefix):
        return "damaged", f"{path}: its SHA-256 does not start with {prefix}, as its name says (a cut download?)"
    return "found", f"{path}: torchvision's ImageNet weights (IMAGENET1K_V1), for model.args.pretrained: true"


def recipes_using() -> dict[str, list[str]]:
    """Data set or weights -> the recipes that use it (read from the recipe files; no torch). Weights are used by
    the recipes of their model when trained with ``--set model.args.pretrained=true``."""
    from dlcli.config import load_recipe, recipe_names
    from dlcli.errors import DlcliError

    users: dict[str, list[str]] = {name: [] for name in NAMES}
    by_model = {model: name for name, (model, _) in WEIGHTS.items()}
    for name in recipe_names():
        try:
            r = load_recipe(name, check_builders=False)
        except DlcliError:
            continue  # `dlcli list` names invalid recipes
        if r.data is not None and r.data.source in users:
            users[r.data.source].append(name)
        if r.model.name in by_model:
            users[by_model[r.model.name]].append(f"{name} (pretrained)")
    return users


def inspect(names: list[str], data_dir: str | None) -> dict[str, Any]:
    """One row per data set or weights file: name, state (found | missing | incomplete | damaged), detail, the
    recipes using it."""
    root, origin = root_and_origin(data_dir)
    users = recipes_using()
    rows = []
    for name in check_names(names):
        row: dict[str, Any] = {"name": name}
        if name in WEIGHTS:
            row["state"], row["detail"] = _weights_state(name)
        elif name == "cifar10":
            row["state"], row["detail"], row["copy"] = _cifar_state(root)
        else:
            row["state"], row["detail"] = _idx_state(root, REAL_DATA[name])
        rows.append({**row, "recipes": users[name]})
    return {"data_root": str(root), "from": origin, "data_sets": rows}


def needs_fetch(row: dict[str, Any], named: bool) -> bool:
    """Whether ``dlcli data --download`` fetches this row's data: whatever is not found, and CIFAR-10's original
    when it was named and a run would read another copy (the image folders, or a tarball not yet extracted)."""
    return row["state"] != "found" or (named and row["name"] == "cifar10" and row.get("copy") != "original")


def fetch(name: str, data_dir: str | None) -> None:
    """Download ``name`` as a run would need it (CIFAR-10: the original batches; weights: into the torch hub
    cache), or raise the one-line error saying what to put where. Data is read afterwards, which checks it."""
    if name in WEIGHTS:
        url = weights_url(name)
        dest = hub_checkpoint(url)
        fetch_file(url, dest, name, f"place {dest.name} (from {url}) in {dest.parent}/ (TORCH_HOME moves it)")
        return
    args: dict[str, Any] = {"val_size": 0}
    if name == "cifar10":
        args["files"] = "original"
    load_data(name, args, data_dir, seed=0)
