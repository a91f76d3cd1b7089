"""Device, seed, precision and compilation, resolved once and handed to every training loop and benchmark.

``--device auto`` picks CUDA, then MPS, then the CPU. Asking for a device that is not there is an error,
never a silent fallback. Precision is validated against the device: fp16 autocast needs CUDA (GradScaler
is used only for fp16), bf16 runs on CUDA devices that support it and on the CPU, tf32 only changes CUDA
matmul/cuDNN settings.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from dlcli.errors import DlcliError, UsageError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | None = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a device that exists, or a ``DlcliError``."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise DlcliError("--device mps: no Apple GPU (MPS) is available here; use --device cpu or auto")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DlcliError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto")
        index = 0
        if ":" in spec:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise UsageError(f"--device {spec}: expected cuda:N with N an integer") from None
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise DlcliError(f"--device {spec}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def device_name(device: torch.device) -> str:
    """A human-readable name: the GPU's marketing name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return _cpu_name()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic on this x86 CPU (AVX512-BF16 or AMX); False when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional
        pass


def validate_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise UsageError(f"--precision fp16 needs a CUDA device (got {device.type}); use bf16 or fp32 here")
    if precision == "tf32" and device.type != "cuda":
        raise UsageError(f"--precision tf32 is a CUDA tensor-core mode (got {device.type}); use fp32 or bf16 here")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {device_name(device)} does not support bfloat16; use fp16 or fp32")
    if precision == "bf16" and device.type == "mps":
        raise UsageError("--precision bf16 is not supported on MPS here; use fp32")


@dataclass
class Runtime:
    """Everything a loop needs to know about where and how to compute."""

    device: torch.device
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    seed: int = 0
    notes: list[str] = field(default_factory=list)  # stated fallbacks, shown in the run header

    @classmethod
    def create(
        cls,
        device: str | None = "auto",
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool = False,
        seed: int = 0,
    ) -> "Runtime":
        dev = resolve_device(device)
        validate_precision(precision, dev)
        rt = cls(device=dev, precision=precision, compile=compile, channels_last=channels_last, seed=seed)
        if compile and dev.type == "mps":
            raise UsageError("--compile is not supported on MPS; drop --compile")
        if compile and dev.type == "cpu":
            cxx = os.environ.get("CXX") or "g++"
            if shutil.which(cxx) is None:
                raise UsageError(f"--compile on the CPU needs a C++ compiler ({cxx} not found; set CXX or install "
                                 "g++), or drop --compile")
            rt.notes.append("--compile: the first steps compile the model, which can take minutes on a CPU")
        if precision == "bf16" and dev.type == "cpu" and not _cpu_has_bf16():
            rt.notes.append("bf16 on a CPU without native bfloat16 instructions (AVX512-BF16/AMX) is emulated "
                            "and usually slower than fp32")
        if channels_last and dev.type == "mps":
            rt.notes.append("channels_last ignored on MPS")
            rt.channels_last = False
        if dev.type == "cuda":
            tf32 = precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
        return rt

    @classmethod
    def from_config(cls, cfg: Any) -> "Runtime":
        """``create`` from anything that carries device, precision, compile, channels_last and seed (a
        ``Recipe``, a ``BenchSpec``)."""
        return cls.create(cfg.device, cfg.precision, cfg.compile, cfg.channels_last, cfg.seed)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast for bf16/fp16, a no-op context otherwise."""
        dtype = self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 only (bf16 has fp32's range and needs none)."""
        if self.precision == "fp16":
            return torch.amp.GradScaler(self.device.type)
        return None

    def prepare(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """Move the model to the device (and memory format); returns (model to run, raw model to save)."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        raw = model
        if self.compile:
            model = torch.compile(model)
        return model, raw

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "device_name": device_name(self.device),
            "precision": self.precision,
            "compile": self.compile,
            "channels_last": self.channels_last,
            "seed": self.seed,
            "torch": str(torch.__version__),
            "threads": torch.get_num_threads(),
            "notes": list(self.notes),
        }


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put a model in eval mode for the block, restoring its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def cpu_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))
