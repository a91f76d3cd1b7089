"""Run folders: finding them, and reading back a run's recipe and evaluation data."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from dlcli.batches import images_to_float
from dlcli.classifier import Classifier, load_classifier, recipe_of  # noqa: F401  (re-exported for callers)
from dlcli.config import Recipe
from dlcli.data import DataBundle, load_data
from dlcli.errors import DlcliError
from dlcli.runtime import Runtime

_RUN_NAME = re.compile(r"^(?P<recipe>.+)-(?P<stamp>\d{8}-\d{6})(-\d+)?$")


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


def load_split(recipe: Recipe, split: str, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float [0, 1] (N, C, H, W) on the CPU and int64 labels, for ``split`` in val | test."""
    return split_of(load_bundle(recipe, data_dir), recipe, split)


def split_of(data: DataBundle, recipe: Recipe, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``load_split`` on a bundle already loaded (whose ``extra["notes"]`` say which files it was read from)."""
    s = {"val": data.val, "test": data.test, "train": data.train}.get(split)
    if s is None:
        raise DlcliError(f"recipe {recipe.name} has no {split!r} split (val_size 0?)")
    return images_to_float(s.x), s.y.long()


def load_bundle(recipe: Recipe, data_dir: str | None) -> DataBundle:
    if recipe.data is None:
        raise DlcliError(f"recipe {recipe.name} has no data source")
    return load_data(recipe.data.source, recipe.data.args, data_dir, recipe.seed)


def runtime_for(device: str | None) -> Runtime:
    return Runtime.create(device=device or "auto")
