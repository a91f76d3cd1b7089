"""Benchmark a registered model: warm-up, synchronised timing, FLOPs, peak memory and MFU, returned as data.

What one benchmark does, per model, mode ("train" or "infer") and input ("synthetic" or "real"):

1. FLOPs per sample are counted once with ``torch.utils.flop_counter.FlopCounterMode`` on a copy of the model
   on the meta device (no memory, no arithmetic). These are real FLOPs: 2 per multiply-add, convolutions and
   matrix products only (normalisation, activations and the optimizer are not counted). Inference counts
   the forward pass, training the forward and the backward pass.
2. A fresh model is built, moved to the device (channels_last, torch.compile as asked), and ``warmup``
   steps run untimed (compilation, cuDNN autotuning, allocator growth and data-loader start-up land there).
3. ``steps`` steps are timed one by one: ``time.perf_counter`` on the CPU, CUDA events on a GPU (recorded
   in the stream, read after one ``torch.cuda.synchronize`` at the end, so timing never stalls the queue).
   samples/s is ``steps * batch_size`` over the synchronised wall time of the whole timed loop; p50/p90/p99
   come from the per-step times.
4. Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA (reset before the model is built); on the CPU
   the peak resident set size of this process, whose high-water mark is reset through
   ``/proc/self/clear_refs`` before the model is built, so each benchmark reports its own peak. Where that
   reset is not possible the process-wide ``ru_maxrss`` is reported and labelled as such; ``bench all``
   runs each model in its own process for the same reason.

A train step is: ``zero_grad(set_to_none=True)``, forward under autocast, loss (cross-entropy when the
output is a vector of class logits, mean squared error otherwise), backward (through a GradScaler for fp16
only), ``SGD(lr=1e-4, momentum=0.9).step()``. An inference step is a forward pass under
``torch.inference_mode()`` in eval mode. The batch size is the one asked for; running out of memory is
a ``DlcliError`` that suggests a smaller size, and ``auto_batch`` (CUDA) searches the largest that fits
and says which it chose.

Nothing here prints: results are dataclasses, progress goes through a callback, the tables live in
``dlcli.report.bench``.
"""

from __future__ import annotations

import csv
import ctypes
import datetime as _dt
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import dlcli
from dlcli import peaks
from dlcli.data import data_root
from dlcli.errors import DlcliError, UsageError
from dlcli.registry import accepted_args, build_model, get_model_builder, model_meta
from dlcli.runtime import Runtime, device_name

MODES = ("infer", "train")  # the order "both" runs them in
DATA_KINDS = ("synthetic", "real")
SGD_LR = 1e-4  # small, so that long benchmarks never diverge into NaN/inf (which can change kernel speed)
SGD_MOMENTUM = 0.9
AUTO_BATCH_LIMIT = 65536  # upper end of the --auto-batch search
AUTO_BATCH_MEMORY_FRACTION = 0.9  # the search must fit in this share of GPU memory (headroom for the timed run)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ----------------------------------------------------------------------------------------------------------
# request


@dataclass(frozen=True)
class BenchSpec:
    """What to benchmark; None means "the default for the device / model" (resolved in :func:`run_benchmark`)."""

    model: str
    modes: tuple[str, ...] = MODES
    device: str = "auto"
    batch_size: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
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
    """'3,224,224' (or '3x224x224') -> (3, 224, 224); a UsageError for anything else."""
    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--input-size {text!r}: expected positive integers like 3,224,224") from None
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f"--input-size {text!r}: expected positive integers like 3,224,224")
    return shape


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


# ----------------------------------------------------------------------------------------------------------
# results


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
    compile: bool
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


# ----------------------------------------------------------------------------------------------------------
# FLOPs


@dataclass(frozen=True)
class FlopCount:
    forward: int  # FLOPs per sample of one forward pass
    backward: int  # FLOPs per sample of the backward pass (input and weight gradients)
    params: int
    trainable: bool  # any parameter requires grad (the perceptron learns by its own rule, not by gradients)
    output_shape: tuple[int, ...]  # per sample, e.g. (1000,)

    @property
    def train(self) -> int:
        return self.forward + self.backward


def count_flops(
    model_name: str,
    input_shape: Sequence[int],
    *,
    builder_kwargs: dict[str, Any] | None = None,
    batch: int = 2,
) -> FlopCount:
    """Count FLOPs per sample of a registered model with FlopCounterMode, on the meta device when possible.

    ``batch`` is 2, not 1, so that layers that need more than one value per channel in training mode
    (BatchNorm1d) run; the counts are divided by it. Models that cannot be built on the meta device are
    counted on the CPU instead (slower, same numbers).
    """
    kwargs = dict(builder_kwargs or {})
    try:
        return _count_flops(model_name, tuple(input_shape), kwargs, batch, torch.device("meta"))
    except DlcliError:
        raise
    except Exception:
        pass
    try:
        return _count_flops(model_name, tuple(input_shape), kwargs, batch, torch.device("cpu"))
    except DlcliError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        shape = ",".join(str(d) for d in input_shape)
        raise DlcliError(f"{model_name} cannot run on an input of shape {shape}: {first}") from e


def _count_flops(
    name: str, input_shape: tuple[int, ...], kwargs: dict[str, Any], batch: int, device: torch.device
) -> FlopCount:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device(device):
        model = build_model(name, **kwargs)
        x = torch.randn(batch, *input_shape)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as fwd:
        out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    backward = 0
    if out.requires_grad:
        with FlopCounterMode(display=False) as bwd:
            out.float().sum().backward()  # the same gradients flow as with any loss of the output
        backward = bwd.get_total_flops()
    return FlopCount(
        forward=fwd.get_total_flops() // batch,
        backward=backward // batch,
        params=params,
        trainable=any(p.requires_grad for p in model.parameters()),
        output_shape=tuple(out.shape[1:]),
    )


# ----------------------------------------------------------------------------------------------------------
# memory


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _maxrss_bytes()


def _maxrss_bytes() -> int:
    """Process-wide peak RSS since start (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # "5": reset the peak resident set size (Linux >= 4.0, proc(5))
        return True
    except OSError:
        return False


def _rss_peak_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError):
        pass
    return _maxrss_bytes()


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so a previous benchmark's garbage is not resident."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class _MemoryMeter:
    """Peak memory of one benchmark: CUDA allocator peak, or the process's RSS high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss"
        self.baseline = 0

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            _malloc_trim()
            if not _reset_rss_peak():
                self.kind = "cpu_peak_rss_process"  # honest label: a peak since the process started
            self.baseline = _rss_bytes()

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        return _rss_peak_bytes()


# ----------------------------------------------------------------------------------------------------------
# timing


class _Clock:
    """Timestamps for the host (perf_counter, seconds) or a CUDA stream (events); differences in ms."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()  # enqueued on the current stream: no synchronisation here
            return ev
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def ms(self, a: Any, b: Any) -> float:
        if self.cuda:
            return float(a.elapsed_time(b))  # both events must have completed: call after sync()
        return (b - a) * 1000.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ----------------------------------------------------------------------------------------------------------
# inputs


def _real_dataset(input_shape: tuple[int, ...], data_dir: Path) -> tuple[Any, str]:
    """MNIST for 1-channel images, CIFAR-10 (JPEG image folder) for 3-channel ones, resized to the input."""
    from torchvision import datasets, transforms

    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        shape = ",".join(str(d) for d in input_shape)
        raise UsageError(
            f"--data real: no real data set for input shape {shape} (real input is MNIST for 1xHxW "
            "or CIFAR-10 for 3xHxW images); use --data synthetic"
        )
    c, h, w = input_shape
    if c == 1:
        raw = data_dir / "MNIST" / "raw"
        if not (raw / "train-images-idx3-ubyte").is_file():
            raise DlcliError(
                f"--data real: MNIST not found in {raw} (expected train-images-idx3-ubyte there); "
                "pass --data-dir or set DLCLI_DATA"
            )
        steps: list[Any] = [] if (h, w) == (28, 28) else [transforms.Resize((h, w), antialias=True)]
        tf = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        return datasets.MNIST(str(data_dir), train=True, download=False, transform=tf), "MNIST"
    folder = data_dir / "cifar10-jpg" / "train"
    if not folder.is_dir():
        raise DlcliError(
            f"--data real: CIFAR-10 image folder not found at {folder} (expected train/<class>/*.jpg); "
            "pass --data-dir or set DLCLI_DATA"
        )
    steps = [] if (h, w) == (32, 32) else [transforms.Resize((h, w), antialias=True)]
    tf = transforms.Compose(
        [*steps, transforms.ToTensor(), transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))]
    )
    return datasets.ImageFolder(str(folder), transform=tf), "CIFAR-10"


class _Batches:
    """An endless supply of (input, target) on the device: one fixed synthetic batch, or a real DataLoader."""

    def __init__(
        self,
        rt: Runtime,
        batch: int,
        input_shape: tuple[int, ...],
        make_target: Callable[[int], torch.Tensor],
        real: Any | None = None,  # (dataset, use_labels) for --data real
        workers: int = 0,
    ) -> None:
        self.rt = rt
        self.make_target = make_target
        self.loader: Any = None
        self._it: Iterator[Any] | None = None
        if real is None:
            self.x = rt.to_input(torch.randn(batch, *input_shape, device=rt.device))  # (B, *input_shape)
            self.y = make_target(batch)
            return
        dataset, self.use_labels = real
        if len(dataset) < batch:
            raise UsageError(f"--batch-size {batch} is larger than the real data set ({len(dataset)} samples)")
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            drop_last=True,  # every step sees exactly the batch size asked for
            num_workers=workers,
            pin_memory=rt.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loader is None:
            return self.x, self.y
        if self._it is None:
            self._it = iter(self.loader)
        try:
            x, labels = next(self._it)
        except StopIteration:  # an epoch ended; real pipelines start the next one, so do we
            self._it = iter(self.loader)
            x, labels = next(self._it)
        x = self.rt.to_input(x)
        if self.use_labels:
            return x, labels.to(self.rt.device, non_blocking=True)
        return x, self.make_target(x.shape[0])

    def close(self) -> None:
        self._it = None  # shuts the worker processes down
        self.loader = None


def _loss_and_target(output_shape: tuple[int, ...], device: torch.device) -> tuple[Callable[..., Any], Any, int]:
    """(loss_fn, make_target(batch), number of classes or 0) for a model's per-sample output shape."""
    if len(output_shape) == 1 and output_shape[0] >= 2:  # class logits (B, K)
        k = output_shape[0]

        def class_target(b: int) -> torch.Tensor:
            return torch.randint(0, k, (b,), device=device)

        return F.cross_entropy, class_target, k

    def regression_target(b: int) -> torch.Tensor:
        return torch.randn(b, *output_shape, device=device)

    return F.mse_loss, regression_target, 0


# ----------------------------------------------------------------------------------------------------------
# one benchmark


def _builder_kwargs(name: str, meta: dict[str, Any], input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Pass ``in_channels`` when --input-size changes the number of channels and the builder takes it."""
    registered = meta.get("input_shape")
    if (
        registered
        and len(input_shape) == len(registered) >= 2
        and input_shape[0] != registered[0]
        and "in_channels" in accepted_args(get_model_builder(name))
    ):
        return {"in_channels": input_shape[0]}
    return {}


def _oom_error(model: str, mode: str, batch: int, rt: Runtime) -> DlcliError:
    where = device_name(rt.device) if rt.device.type == "cuda" else "the CPU"
    if batch <= 1:
        return DlcliError(f"out of memory on {where}: {model} {mode} does not fit even at --batch-size 1")
    smaller = 1 << (max(1, batch // 2).bit_length() - 1)  # the power of two at or below half the batch
    hint = " or --auto-batch to find the largest that fits" if rt.device.type == "cuda" else ""
    return DlcliError(
        f"out of memory on {where} at --batch-size {batch} ({model} {mode}, {rt.precision}); "
        f"try --batch-size {smaller}{hint}"
    )


_OOM_MESSAGES = (
    "out of memory",  # "CUDA error: out of memory" raised outside the caching allocator
    "can't allocate memory",  # the CPU allocator
    "not enough memory",
    "CUDNN_STATUS_ALLOC_FAILED",  # cuDNN / cuBLAS workspaces
    "CUBLAS_STATUS_ALLOC_FAILED",
)


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e) for m in _OOM_MESSAGES)


class _Workload:
    """A prepared model, optimizer and input supply; ``step()`` runs one step and returns its timestamps.

    Timestamps per step: (start, [data ready], [forward done, backward done], end), the inner ones only
    with ``detail`` (and "data ready" only for real input).
    """

    def __init__(
        self,
        rt: Runtime,
        model: nn.Module,
        mode: str,
        batches: _Batches,
        loss_fn: Callable[..., Any],
        clock: _Clock,
        detail: bool,
    ) -> None:
        self.rt, self.model, self.mode, self.batches, self.loss_fn = rt, model, mode, batches, loss_fn
        self.clock, self.detail = clock, detail
        self.real = batches.loader is not None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler = None
        if mode == "train":
            model.train()
            self.optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
            self.scaler = rt.grad_scaler()
        else:
            model.eval()

    def phases(self) -> tuple[str, ...]:
        if not self.detail:
            return ()
        data = ("data",) if self.real else ()
        return data + (("forward", "backward", "optimizer") if self.mode == "train" else ("forward",))

    def step(self) -> tuple[Any, ...]:
        mark, detail = self.clock.mark, self.detail
        if self.mode == "infer":
            t0 = mark()
            x, _ = self.batches.next()
            if detail and self.real:
                t_data = mark()
                with self.rt.autocast():
                    self.model(x)
                return (t0, t_data, mark())
            with self.rt.autocast():
                self.model(x)
            return (t0, mark())

        opt = self.optimizer
        assert opt is not None
        t0 = mark()
        x, y = self.batches.next()
        marks = [t0]
        if detail and self.real:
            marks.append(mark())
        opt.zero_grad(set_to_none=True)
        with self.rt.autocast():
            out = self.model(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            loss = self.loss_fn(out.float(), y)
        if detail:
            marks.append(mark())
        if self.scaler is not None:  # fp16 only
            self.scaler.scale(loss).backward()
            if detail:
                marks.append(mark())
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            if detail:
                marks.append(mark())
            opt.step()
        marks.append(mark())
        return tuple(marks)


def _prepare_workload(
    spec: BenchSpec,
    rt: Runtime,
    mode: str,
    data: str,
    batch: int,
    input_shape: tuple[int, ...],
    kwargs: dict[str, Any],
    flops: FlopCount,
    clock: _Clock,
    dataset: Any,
) -> _Workload:
    torch.manual_seed(spec.seed)
    model, _raw = rt.prepare(build_model(spec.model, **kwargs))
    loss_fn, make_target, classes = _loss_and_target(flops.output_shape, rt.device)
    real = None
    workers = 0
    if data == "real":
        # real labels (0..9) fit a classifier with at least 10 classes; other heads get synthetic targets
        real = (dataset, classes >= 10)
        workers = default_workers() if spec.workers is None else spec.workers
    batches = _Batches(rt, batch, input_shape, make_target, real=real, workers=workers)
    return _Workload(rt, model, mode, batches, loss_fn, clock, spec.detail)


def _measure(
    spec: BenchSpec,
    rt: Runtime,
    mode: str,
    data: str,
    batch: int,
    auto: bool,
    input_shape: tuple[int, ...],
    kwargs: dict[str, Any],
    flops: FlopCount,
    env: Environment,
    warmup: int,
    steps: int,
    progress: Progress,
    dataset: Any = None,
) -> BenchResult:
    clock = _Clock(rt.device)
    meter = _MemoryMeter(rt.device)
    meter.start()
    work: _Workload | None = None
    try:
        work = _prepare_workload(spec, rt, mode, data, batch, input_shape, kwargs, flops, clock, dataset)
        grad = torch.inference_mode() if mode == "infer" else torch.enable_grad()
        with grad:
            if warmup:
                what = "compiles and warms up" if spec.compile else "warms up"
                progress(f"{spec.model} {mode} ({data}, batch {batch}): {what}, {warmup} step(s) untimed")
            for _ in range(warmup):
                work.step()
            clock.sync()  # the warm-up's queued work must not leak into the timed loop
            progress(f"{spec.model} {mode} ({data}, batch {batch}): timing {steps} step(s)")
            t_start = clock.mark()
            marks = [work.step() for _ in range(steps)]
            t_end = clock.mark()
            clock.sync()
        peak_mem = meter.peak()
        phases = work.phases()
    except Exception as e:
        if _is_oom(e):
            raise _oom_error(spec.model, mode, batch, rt) from None
        raise
    finally:
        if work is not None:
            work.batches.close()
        del work
        gc.collect()
        if rt.device.type == "cuda":
            torch.cuda.empty_cache()

    total_ms = clock.ms(t_start, t_end)
    step_ms = [clock.ms(m[0], m[-1]) for m in marks]
    phase_ms: dict[str, float] = {}
    for i, name in enumerate(phases):
        phase_ms[name] = percentile([clock.ms(m[i], m[i + 1]) for m in marks], 50)

    samples_per_s = steps * batch / (total_ms / 1000.0)
    flops_per_sample = flops.train if mode == "train" else flops.forward
    achieved = flops_per_sample * samples_per_s / 1e12
    peak = peaks.peak_tflops(env.device_name, rt.precision) if rt.device.type == "cuda" else None
    matched = peaks.match_device(env.device_name) if peak is not None else None
    return BenchResult(
        model=spec.model,
        mode=mode,
        data=data,
        batch_size=batch,
        auto_batch=auto,
        input_shape=input_shape,
        precision=rt.precision,
        channels_last=rt.channels_last,
        compile=rt.compile,
        warmup=warmup,
        steps=steps,
        samples_per_s=samples_per_s,
        step_ms_p50=percentile(step_ms, 50),
        step_ms_p90=percentile(step_ms, 90),
        step_ms_p99=percentile(step_ms, 99),
        step_ms_mean=sum(step_ms) / len(step_ms),
        data_ms=phase_ms.get("data"),
        forward_ms=phase_ms.get("forward"),
        backward_ms=phase_ms.get("backward"),
        optimizer_ms=phase_ms.get("optimizer"),
        peak_memory_bytes=peak_mem,
        memory_baseline_bytes=meter.baseline,
        memory_kind=meter.kind,
        params=flops.params,
        flops_per_sample=flops_per_sample,
        achieved_tflops=achieved,
        peak_tflops=peak,
        peak_device=matched.name if matched else None,
        mfu=(achieved / peak) if peak else None,
        timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        env=env,
    )


# ----------------------------------------------------------------------------------------------------------
# --auto-batch


def find_max_batch(fits: Callable[[int], bool], start: int = 1, limit: int = AUTO_BATCH_LIMIT) -> int:
    """The largest batch b in [1, limit] with fits(b), assuming fits is monotone (True up to some size).

    Doubles from ``start`` until a size fails (or ``limit`` is reached), then bisects between the last size
    that fitted and the first that did not. Returns 0 when not even 1 fits.
    """
    start = max(1, min(start, limit))
    lo, hi = 0, None  # lo: largest known to fit (0 = none); hi: smallest known not to fit
    b = start
    while True:
        if fits(b):
            lo = b
            if b >= limit:
                return limit
            b = min(b * 2, limit)
        else:
            hi = b
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _gpu_fits(
    spec: BenchSpec, rt: Runtime, mode: str, input_shape: tuple[int, ...], kwargs: dict[str, Any], flops: FlopCount
) -> Callable[[int], bool]:
    """A predicate: do two steps of ``mode`` at batch b run on the GPU without running out of memory?

    Uses the uncompiled model (compiling every candidate size would take minutes; compiled graphs use no
    more memory than eager ones). Two steps, because the optimizer's momentum buffers appear in the first.
    """
    model = build_model(spec.model, **kwargs).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn, make_target, _ = _loss_and_target(flops.output_shape, rt.device)

    def trial(b: int) -> None:
        opt = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM) if mode == "train" else None
        x = rt.to_input(torch.randn(b, *input_shape, device=rt.device))  # (b, *input_shape)
        y = make_target(b)
        for _ in range(2):
            if opt is None:
                model.eval()
                with torch.inference_mode(), rt.autocast():
                    model(x)
            else:
                model.train()
                opt.zero_grad(set_to_none=True)
                with rt.autocast():
                    out = model(x)
                    loss = loss_fn((out[0] if isinstance(out, (tuple, list)) else out).float(), y)
                loss.backward()
                opt.step()
        torch.cuda.synchronize(rt.device)

    def fits(b: int) -> bool:
        try:
            trial(b)  # its tensors die with its frame, once the exception below is handled
            ok = True
        except torch.OutOfMemoryError:
            ok = False
        model.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        return ok

    return fits


def _auto_batch(
    spec: BenchSpec,
    rt: Runtime,
    mode: str,
    input_shape: tuple[int, ...],
    kwargs: dict[str, Any],
    flops: FlopCount,
    progress: Progress,
) -> int:
    start = default_batch_size(rt.device)
    progress(f"{spec.model} {mode}: --auto-batch searching from batch {start} (one trial = 2 steps)")
    torch.cuda.set_per_process_memory_fraction(AUTO_BATCH_MEMORY_FRACTION, rt.device)
    try:
        best = find_max_batch(_gpu_fits(spec, rt, mode, input_shape, kwargs, flops), start=start)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, rt.device)
        gc.collect()
        torch.cuda.empty_cache()
    if best < 1:
        raise DlcliError(f"out of memory on {device_name(rt.device)}: {spec.model} {mode} does not fit at batch 1")
    limit_note = " (the search limit)" if best >= AUTO_BATCH_LIMIT else ""
    progress(
        f"{spec.model} {mode}: --auto-batch chose batch {best}{limit_note}, the largest that fits in "
        f"{AUTO_BATCH_MEMORY_FRACTION:.0%} of GPU memory"
    )
    return best


# ----------------------------------------------------------------------------------------------------------
# entry points


def run_benchmark(spec: BenchSpec, progress: Progress = _quiet) -> list[BenchResult]:
    """Benchmark one registered model: one result per mode, and per input kind (synthetic, then real).

    Raises UsageError for bad requests (unknown model, bad sizes, a precision the device cannot run) and
    DlcliError for expected failures (no CUDA, out of memory, missing data), each with one clear line.
    """
    validate_spec(spec)
    meta = model_meta(spec.model)  # an unknown name is a UsageError listing the valid ones
    input_shape = spec.input_shape or meta.get("input_shape")
    if not input_shape:
        raise DlcliError(
            f"model {spec.model!r} registers no input_shape, so bench does not know its input; "
            "pass --input-size (e.g. --input-size 3,224,224)"
        )
    input_shape = tuple(int(d) for d in input_shape)
    rt = Runtime.from_config(spec)
    for line in rt.notes:  # stated fallbacks and caveats (e.g. bf16 emulated on this CPU)
        progress(line)
    if spec.auto_batch and rt.device.type != "cuda":
        # Out of memory on the CPU is swapping or the kernel's OOM killer, not an error to search against.
        raise UsageError("--auto-batch searches GPU memory and needs a CUDA device; on the CPU choose --batch-size")
    env = Environment.capture(rt)
    kwargs = _builder_kwargs(spec.model, meta, input_shape)
    flops = count_flops(spec.model, input_shape, builder_kwargs=kwargs)
    # the real data set is opened before any timing, so that a missing folder fails at once
    dataset = _real_dataset(input_shape, data_root(spec.data_dir))[0] if spec.data == "real" else None
    warmup = default_warmup(rt.device) if spec.warmup is None else spec.warmup
    steps = default_steps(rt.device) if spec.steps is None else spec.steps

    modes = spec.modes
    if "train" in modes and not flops.trainable:
        why = f"{spec.model} has no parameters trained by gradients (it learns by its own rule)"
        if modes == ("train",):
            raise UsageError(f"{why}; benchmark it with --mode infer")
        progress(f"{why}: train mode skipped")
        modes = tuple(m for m in modes if m != "train")

    results = []
    for mode in modes:
        if spec.auto_batch:
            batch, auto = _auto_batch(spec, rt, mode, input_shape, kwargs, flops, progress), True
        else:
            batch, auto = spec.batch_size or default_batch_size(rt.device), False
        for data in ("synthetic", "real") if spec.data == "real" else ("synthetic",):
            results.append(
                _measure(
                    spec, rt, mode, data, batch, auto, input_shape, kwargs, flops, env, warmup, steps, progress,
                    dataset,
                )
            )
    return results


def child_argv(spec: BenchSpec) -> list[str]:
    """The ``dlcli bench`` options (without the model name) that reproduce ``spec`` in a child process."""
    mode = "both" if set(spec.modes) == set(MODES) else spec.modes[0]
    argv = ["--device", spec.device, "--mode", mode, "--precision", spec.precision, "--data", spec.data]
    argv += ["--seed", str(spec.seed)]
    for flag, value in (
        ("--batch-size", spec.batch_size),
        ("--warmup", spec.warmup),
        ("--steps", spec.steps),
        ("--workers", spec.workers),
        ("--data-dir", spec.data_dir),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if spec.input_shape is not None:
        argv += ["--input-size", ",".join(str(d) for d in spec.input_shape)]
    for flag, on in (
        ("--channels-last", spec.channels_last),
        ("--compile", spec.compile),
        ("--detail", spec.detail),
        ("--auto-batch", spec.auto_batch),
    ):
        if on:
            argv.append(flag)
    return argv


@dataclass(frozen=True)
class ChildFailure:
    model: str
    returncode: int
    message: str  # the child's last line on stderr (its one-line error)


def run_in_child(model: str, argv: Sequence[str], on_line: Progress = _quiet) -> list[BenchResult]:
    """Run ``python -m dlcli bench MODEL --json ARGV`` in a fresh process and parse its results.

    The child's stderr (progress) is forwarded line by line to ``on_line``. Raises ``ChildError`` (a
    DlcliError) carrying the child's last stderr line when it fails.
    """
    root = str(Path(dlcli.__file__).resolve().parent.parent)  # so `-m dlcli` works from any directory
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "dlcli", "bench", model, "--json", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()  # drain stdout concurrently, so a full pipe can never block the child
    last = ""
    assert proc.stderr is not None
    for line in proc.stderr:
        line = line.rstrip("\n")
        if line.strip():
            last = line.strip()
            on_line(line)
    rc = proc.wait()
    reader.join()
    if rc != 0:
        raise ChildError(ChildFailure(model, rc, last or f"exited with code {rc}"))
    try:
        docs = json.loads("".join(out_chunks))
        return [BenchResult.from_dict(d) for d in docs]
    except (ValueError, TypeError, KeyError) as e:
        raise ChildError(ChildFailure(model, rc, f"unreadable JSON from the child process: {e}")) from e


class ChildError(DlcliError):
    def __init__(self, failure: ChildFailure) -> None:
        super().__init__(f"{failure.model}: {failure.message}")
        self.failure = failure


def run_all(
    models: Sequence[str], spec: BenchSpec, on_line: Progress = _quiet
) -> tuple[list[BenchResult], list[ChildFailure]]:
    """Benchmark each model in its own process (so one model's memory never distorts the next)."""
    argv = child_argv(spec)
    results: list[BenchResult] = []
    failures: list[ChildFailure] = []
    for i, name in enumerate(models, 1):
        on_line(f"[{i}/{len(models)}] {name}")
        try:
            results.extend(run_in_child(name, argv, on_line))
        except ChildError as e:
            failures.append(e.failure)
    return results, failures


def append_csv(path: str | os.PathLike[str], results: Sequence[BenchResult]) -> None:
    """Append one row per result; the header is written only when the file is new or empty.

    An existing file with other columns (an older dlcli, another tool) is an error rather than a
    silently misaligned table.
    """
    p = Path(path)
    fresh = not p.exists() or p.stat().st_size == 0
    if not fresh:
        with p.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != FIELDS:
            raise DlcliError(f"--csv {p}: the file has other columns than dlcli bench writes; use a new file")
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(FIELDS))
        if fresh:
            w.writeheader()
        for r in results:
            w.writerow(r.to_row())
