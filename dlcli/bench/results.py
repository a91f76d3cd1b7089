"""What a benchmark returns: one flat :class:`BenchResult` per model, mode and input kind, with the
:class:`Environment` it ran in; its dict / JSON / CSV forms."""

from __future__ import annotations

import csv
import os
import platform
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch

import dlcli
from dlcli.errors import DlcliError, UsageError
from dlcli.paths import refuse_file_in_the_way
from dlcli.runtime import Runtime, device_name


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # not on every platform
        return None


@dataclass(frozen=True)
class Environment:
    """Where a benchmark ran; repeated in every result so that appended CSV rows stay self-describing."""

    device: str  # "cpu", "cuda:0"
    device_name: str  # GPU marketing name or CPU model name
    torch: str
    cuda: str | None  # CUDA version torch was built with (None for CPU-only builds)
    cudnn: int | None  # cuDNN version number, e.g. 90100
    tf32_matmul: bool  # torch.backends.cuda.matmul.allow_tf32 during the run
    tf32_cudnn: bool  # torch.backends.cudnn.allow_tf32 during the run
    cpu_threads: int  # torch.get_num_threads()
    cpu_count: int  # logical CPUs of the machine
    load_average: float | None  # 1-minute load average when the benchmark started (other work skews CPU timings)
    dlcli: str
    python: str
    platform: str

    @classmethod
    def capture(cls, rt: Runtime) -> "Environment":
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return cls(
            device=str(rt.device),
            device_name=device_name(rt.device),
            torch=torch.__version__,
            cuda=torch.version.cuda,
            cudnn=cudnn,
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
            tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
            cpu_threads=torch.get_num_threads(),
            cpu_count=os.cpu_count() or 1,
            load_average=_load_average(),
            dlcli=dlcli.__version__,
            python=platform.python_version(),
            platform=platform.platform(terse=True),
        )


@dataclass(frozen=True)
class BenchResult:
    """One model, mode and input kind. Times in ms, memory in bytes, FLOPs real (2 per multiply-add)."""

    model: str
    mode: str  # "train" | "infer"
    data: str  # "synthetic" | "real"
    batch_size: int
    auto_batch: bool  # True when --auto-batch chose batch_size
    input_shape: tuple[int, ...]  # one sample
    precision: str
    channels_last: bool
    compile: bool | str  # False, True (torch.compile's default mode) or the mode, e.g. "reduce-overhead"
    warmup: int
    steps: int
    samples_per_s: float  # steps * batch_size / synchronised wall time of the timed loop
    step_ms_p50: float
    step_ms_p90: float
    step_ms_p99: float
    step_ms_mean: float
    data_ms: float | None  # median per-step phase times; only with detail (data only for real input)
    forward_ms: float | None
    backward_ms: float | None
    optimizer_ms: float | None
    peak_memory_bytes: int
    memory_baseline_bytes: int  # allocated (CUDA) / resident (CPU) just before the model was built
    memory_kind: str  # "cuda_max_memory_allocated" | "cpu_peak_rss" | "cpu_peak_rss_process"
    params: int
    flops_per_sample: int  # forward (infer) or forward + backward (train), counted by FlopCounterMode
    achieved_tflops: float  # flops_per_sample * samples_per_s / 1e12
    peak_tflops: float | None  # published dense peak for the device and precision; None when unknown
    peak_device: str | None  # the peaks-table entry that matched, e.g. "H100 SXM"
    mfu: float | None  # achieved_tflops / peak_tflops, a fraction (0.42 = 42%)
    timestamp: str  # UTC, ISO 8601, when the timed loop ended
    env: Environment

    def to_dict(self) -> dict[str, Any]:
        """A flat dict: the result's fields, then the environment's. The same keys as the CSV columns."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "env"}
        d["input_shape"] = list(self.input_shape)
        d.update(asdict(self.env))
        return d

    def to_row(self) -> dict[str, Any]:
        """:meth:`to_dict` with only scalars, for CSV (input_shape as '3x224x224')."""
        d = self.to_dict()
        d["input_shape"] = "x".join(str(v) for v in self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchResult":
        """Inverse of :meth:`to_dict` (used to read the JSON of ``bench all``'s child processes)."""
        env_names = {f.name for f in fields(Environment)}
        own = {f.name for f in fields(cls)} - {"env"}
        missing = sorted((env_names | own) - set(d))
        if missing:
            raise DlcliError(f"benchmark result is missing field(s): {', '.join(missing)}")
        kw = {k: d[k] for k in own}
        kw["input_shape"] = tuple(kw["input_shape"])
        return cls(env=Environment(**{k: d[k] for k in env_names}), **kw)


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(BenchResult) if f.name != "env") + tuple(
    f.name for f in fields(Environment)
)


def check_csv(path: str | os.PathLike[str]) -> bool:
    """``--csv PATH``, checked before anything is benchmarked: a file name (missing folders above it are made),
    not a folder nor inside a file; an existing file must have the columns dlcli bench writes. Returns
    whether the header is still to be written (a new or empty file)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--csv {p} is a folder; --csv takes a file name, e.g. {p / 'bench.csv'}")
    refuse_file_in_the_way("--csv", p, "a file name", folder=False)
    fresh = not p.exists() or p.stat().st_size == 0
    if not fresh:
        try:
            with p.open(newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
        except (UnicodeDecodeError, csv.Error):  # not a CSV file dlcli wrote
            header = []
        if tuple(header) != FIELDS:
            raise DlcliError(f"--csv {p}: the file has other columns than dlcli bench writes; use a new file")
    return fresh


def append_csv(path: str | os.PathLike[str], results: Sequence[BenchResult]) -> None:
    """Append one row per result; the header is written only when the file is new or empty.

    An existing file with other columns (an older dlcli, another tool) is an error rather than a
    silently misaligned table.
    """
    p = Path(path)
    fresh = check_csv(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(FIELDS))
        if fresh:
            w.writeheader()
        for r in results:
            w.writerow(r.to_row())
