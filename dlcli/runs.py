"""Run folders and what can be rebuilt from a checkpoint alone: the model, its recipe and its data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcli.checkpoint import find_checkpoint, load_checkpoint
from dlcli.config import Recipe, recipe_from_dict
from dlcli.data import DataBundle, images_to_float, load_data
from dlcli.errors import DlcliError
from dlcli.runtime import Runtime

_RUN_NAME = re.compile(r"^(?P<recipe>.+)-(?P<stamp>\d{8}-\d{6})(-\d+)?$")


def recipe_of(checkpoint: dict[str, Any]) -> Recipe:
    saved = checkpoint["recipe"]
    if not isinstance(saved, dict):
        raise DlcliError(f"{checkpoint.get('path')}: the checkpoint's recipe entry is not a mapping")
    return recipe_from_dict(saved, f"{checkpoint.get('path')} (saved recipe)", saved.get("name", "run"))


def run_dir_of(checkpoint: dict[str, Any]) -> Path:
    return Path(checkpoint["path"]).parent


def latest_run(recipe_name: str = "lenet", runs_root: str | Path = "runs") -> Path:
    """The newest ``runs/<recipe>-YYYYmmdd-HHMMSS`` folder that holds a checkpoint."""
    root = Path(runs_root)
    candidates = []
    if root.is_dir():
        for d in root.iterdir():
            m = _RUN_NAME.match(d.name)
            if m and m.group("recipe") == recipe_name and ((d / "best.pt").is_file() or (d / "last.pt").is_file()):
                candidates.append((d.stat().st_mtime, d.name, d))
    if not candidates:
        raise DlcliError(f"no {recipe_name} run found under {root}/; train one first: dlcli train {recipe_name}")
    return max(candidates)[2]


@dataclass
class Classifier:
    """A trained classifier rebuilt from its checkpoint: ``model`` takes pixels in [0, 1], (B, C, H, W)."""

    model: nn.Module
    recipe: Recipe
    checkpoint: dict[str, Any]
    class_names: list[str]
    input_shape: tuple[int, ...]
    run_dir: Path


def load_classifier(path: str | Path, device: torch.device | str = "cpu", data_dir: str | None = None) -> Classifier:
    """Rebuild an image classifier (normalisation inside, eval mode, on ``device``) from a run folder or file."""
    from dlcli.tasks.classify import Normalized

    ckpt = load_checkpoint(find_checkpoint(path), map_location="cpu")
    recipe = recipe_of(ckpt)
    if recipe.task != "classify":
        raise DlcliError(
            f"{ckpt['path']}: a {recipe.task!r} run ({recipe.name}), not an image classifier; "
            "attacks need a classify run such as lenet"
        )
    meta = classifier_meta(recipe, ckpt)
    c, h, _ = meta["input_shape"]
    from dlcli.registry import build_model_with_defaults

    net = build_model_with_defaults(recipe.model.name, recipe.model.args, num_classes=meta["num_classes"],
                                    in_channels=c, input_size=h)
    model = Normalized(net, tuple(meta["mean"]), tuple(meta["std"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise DlcliError(f"{ckpt['path']}: weights do not match model {recipe.model.name!r}: "
                         f"{str(e).splitlines()[0][:160]}") from None
    model.to(device).eval()
    return Classifier(model, recipe, ckpt, list(meta["class_names"]), tuple(meta["input_shape"]), run_dir_of(ckpt))


def classifier_meta(recipe: Recipe, ckpt: dict[str, Any]) -> dict[str, Any]:
    """Classes, input shape and normalisation, as saved in the checkpoint (no data access needed)."""
    meta = ckpt.get("data_meta")
    if not isinstance(meta, dict):
        raise DlcliError(f"{ckpt.get('path')}: checkpoint has no data description (written by an older dlcli?)")
    return meta


def load_split(recipe: Recipe, split: str, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float [0, 1] (N, C, H, W) on the CPU and int64 labels, for ``split`` in val | test."""
    data = load_bundle(recipe, data_dir)
    s = {"val": data.val, "test": data.test, "train": data.train}.get(split)
    if s is None:
        raise DlcliError(f"recipe {recipe.name} has no {split!r} split (val_size 0?)")
    return images_to_float(s.x), s.y.long()


def load_bundle(recipe: Recipe, data_dir: str | None) -> DataBundle:
    return load_data(recipe.data.source, recipe.data.args, data_dir, recipe.seed)


def runtime_for(device: str | None) -> Runtime:
    return Runtime.create(device=device or "auto")
