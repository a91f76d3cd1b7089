"""What every data source shares: the registry of sources, the ``Split`` / ``DataBundle`` they return, and
the seeded validation hold-out.

The bottom of the data modules, so that both halves can use it without importing each other:
``dlcli.data_images`` (CIFAR-10 and image folders) and ``dlcli.data`` (toy data, MNIST, and the public face
that imports ``dlcli.data_images``) import from here; this module imports neither. Import data sources
through ``dlcli.data``: importing it registers every built-in source in ``DATASETS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from dlcli.errors import UsageError
from dlcli.registry import Registry

DATASETS: Registry[Callable[..., "DataBundle"]] = Registry("data source")
register_dataset = DATASETS.register


@dataclass
class Split:
    """One split held as tensors. Images: uint8 (N, C, H, W) in 0..255; points: float (N, D)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class DataBundle:
    kind: str  # "images" | "points"
    train: Split | None
    val: Split | None
    test: Split | None
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()  # of one sample, e.g. (1, 28, 28)
    mean: tuple[float, ...] = ()  # per channel, of pixels in [0, 1]
    std: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific (e.g. the target function)
    train_dataset: Dataset | None = None  # the DataLoader path (in_memory: false)


def _val_split(x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int) -> tuple[Split, Split | None]:
    """Hold out ``val_size`` random training examples (a fixed permutation of ``seed``) for validation."""
    if val_size < 0 or val_size >= len(x):
        raise UsageError(f"data.args.val_size must be in [0, {len(x) - 1}], got {val_size}")
    if val_size == 0:
        return Split(x, y), None
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(10_000 + seed))
    val, train = perm[:val_size], perm[val_size:]
    return Split(x[train], y[train]), Split(x[val], y[val])
