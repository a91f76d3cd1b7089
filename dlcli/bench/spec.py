"""What to benchmark: the request (:class:`BenchSpec`), its defaults per device, and its validation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

from dlcli.config import COMPILE_MODES
from dlcli.errors import UsageError

MODES = ("infer", "train")  # the order "both" runs them in
DATA_KINDS = ("synthetic", "real")

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that drops every line."""


@dataclass(frozen=True)
class BenchSpec:
    """What to benchmark; None means "the default for the device / model" (resolved in ``run_benchmark``)."""

    model: str
    modes: tuple[str, ...] = MODES
    device: str = "auto"
    batch_size: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool | str = False  # True: torch.compile's default mode, or a mode (--compile-mode reduce-overhead)
    warmup: int | None = None
    steps: int | None = None
    input_shape: tuple[int, ...] | None = None  # one sample, e.g. (3, 224, 224); None: the registered shape
    data: str = "synthetic"  # "real" also runs synthetic input beside it, so a loader bottleneck shows
    data_dir: str | None = None
    workers: int | None = None  # DataLoader worker processes for --data real
    detail: bool = False  # time data / forward / backward / optimizer separately
    auto_batch: bool = False
    seed: int = 0


def default_batch_size(device: torch.device) -> int:
    # A GPU needs a large batch to be busy; a 2-core CPU needs a small one to finish in seconds.
    return 128 if device.type == "cuda" else 8


def default_warmup(device: torch.device) -> int:
    return 10 if device.type == "cuda" else 2


def default_steps(device: torch.device) -> int:
    return 50 if device.type == "cuda" else 10


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def parse_input_size(text: str) -> tuple[int, ...]:
    """'3,224,224' (or '3x224x224') -> (3, 224, 224); a UsageError for anything else (an empty part included)."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if not all(p.isdecimal() and int(p) >= 1 for p in parts):  # "3,,224" is a typo, not the shape (3, 224)
        raise UsageError(f"--input-size {text!r}: expected positive integers like 3,224,224")
    return tuple(int(p) for p in parts)


def validate_spec(spec: BenchSpec) -> None:
    """One clear UsageError for each kind of bad request (before anything heavy happens)."""
    if spec.batch_size is not None and spec.batch_size < 1:
        raise UsageError(f"--batch-size {spec.batch_size}: must be a positive integer")
    if spec.batch_size is not None and spec.auto_batch:
        raise UsageError("--auto-batch chooses the batch size itself; drop --batch-size or --auto-batch")
    if spec.warmup is not None and spec.warmup < 0:
        raise UsageError(f"--warmup {spec.warmup}: must be 0 or more")
    if spec.steps is not None and spec.steps < 1:
        raise UsageError(f"--steps {spec.steps}: must be at least 1")
    if isinstance(spec.compile, str) and spec.compile not in COMPILE_MODES:
        raise UsageError(f"--compile-mode {spec.compile!r}: expected one of {', '.join(COMPILE_MODES)}")
    if spec.compile and spec.warmup == 0:
        raise UsageError("--compile needs at least one warm-up step, or compilation would be timed: --warmup 1 or more")
    if spec.workers is not None and spec.workers < 0:
        raise UsageError(f"--workers {spec.workers}: must be 0 or more")
    if not spec.modes or any(m not in MODES for m in spec.modes):
        raise UsageError(f"--mode: expected train, infer or both (got {', '.join(spec.modes) or 'nothing'})")
    if spec.data not in DATA_KINDS:
        raise UsageError(f"--data {spec.data!r}: expected synthetic or real")
    if spec.input_shape is not None and (not spec.input_shape or any(d < 1 for d in spec.input_shape)):
        raise UsageError(f"--input-size {spec.input_shape}: expected positive integers like 3,224,224")
