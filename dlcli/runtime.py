"""Device, seed, precision, compilation and processes, resolved once and handed to every loop and benchmark.

``--device auto`` picks CUDA, then MPS, then the CPU. Asking for a device that is not there is an error,
never a silent fallback. Precision is validated against the device: fp16 autocast needs CUDA (GradScaler
is used only for fp16), bf16 runs on CUDA devices that support it and on the CPU, tf32 only changes CUDA
matmul/cuDNN settings, and ``auto`` picks bf16 where the hardware runs it natively, fp32 elsewhere.
``compile`` is off, on (torch.compile's default mode) or a mode name: ``reduce-overhead`` also records CUDA
graphs, which replay a step's many small kernel launches as one (on CUDA; elsewhere it compiles without them).
``auto`` is reduce-overhead on one CUDA GPU and off elsewhere (``resolve_compile``).

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the runtime joins the process group (NCCL on
CUDA, gloo on the CPU), takes ``cuda:LOCAL_RANK`` as its device, and ``prepare`` wraps the model in
``DistributedDataParallel``; ``is_primary`` (rank 0) alone writes files and prints.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dlcli.errors import DlcliError, UsageError

from dlcli.config import PRECISIONS  # the one place that names them

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


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """``auto`` -> (bf16 or fp32, the reason, for the run header); any other precision -> (itself, None)."""
    if precision != "auto":
        return precision, None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"precision auto: bf16 ({device_name(device)} has bfloat16 tensor cores)"
        return "fp32", f"precision auto: fp32 ({device_name(device)} has no native bfloat16)"
    if device.type == "cpu":
        if _cpu_has_bf16():
            return "bf16", "precision auto: bf16 (this CPU has AMX/AVX512-BF16 bfloat16 instructions)"
        return "fp32", "precision auto: fp32 (this CPU has no native bfloat16 instructions: AMX/AVX512-BF16)"
    return "fp32", f"precision auto: fp32 (no bfloat16 autocast on {device.type})"


def resolve_compile(compile: bool | str, device: torch.device, world_size: int = 1,
                    has_triton: bool | None = None, c_compiler: str | None = "") -> tuple[bool | str, str | None]:
    """``compile: auto`` made concrete, with the reason for the run header; other values pass through.

    CUDA graphs pay where a step waits on kernel launches rather than arithmetic: ResNet-56 trained an epoch in
    2.45 s on an H200 with them, against about 3 s for an *eager* ResNet-20 (benchmarks/RESULTS.md, sixth GPU
    session), for about 50 s of compilation once. On the CPU compilation takes minutes and there are no graphs;
    under torchrun (DDP) the combination has not been measured, so ``auto`` stays off there; and it needs
    Triton, which builds its launchers with a C compiler (``$CC``, cc, gcc or clang) at the first step.
    ``has_triton`` and ``c_compiler`` (None: none found) are for tests; by default they are looked up."""
    if compile != "auto":
        return compile, None
    if device.type != "cuda":
        return False, f"compile auto: off on {device.type} (auto records CUDA graphs on a CUDA GPU only)"
    if world_size > 1:
        return False, ("compile auto: off under torchrun (CUDA graphs with DDP are not measured yet; "
                       "--set compile=reduce-overhead asks for them)")
    if has_triton is None:
        try:
            from torch.utils._triton import has_triton as _has_triton
            has_triton = bool(_has_triton())
        except ImportError:  # a torch without the helper: let torch.compile say what is missing
            has_triton = True
    if not has_triton:
        return False, "compile auto: off (torch.compile needs Triton for CUDA, and it is not installed)"
    if c_compiler == "":
        c_compiler = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
    if c_compiler is None:
        return False, "compile auto: off (Triton needs a C compiler: set CC or install gcc)"
    return "reduce-overhead", ("compile auto: reduce-overhead (CUDA graphs: this net's steps wait on kernel "
                               "launches; the first epoch compiles, about a minute)")


def validate_precision(precision: str, device: torch.device) -> None:
    if precision == "auto":
        return
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
    compile: bool | str = False  # True (torch.compile's default mode) or a mode name (config.COMPILE_MODES)
    channels_last: bool = False
    seed: int = 0
    notes: list[str] = field(default_factory=list)  # stated fallbacks, shown in the run header
    rank: int = 0  # of this process among world_size (torchrun's RANK)
    local_rank: int = 0  # on this machine (torchrun's LOCAL_RANK)
    world_size: int = 1
    sync_batchnorm: bool = False  # convert BatchNorm to SyncBatchNorm when world_size > 1
    _control_group: Any = field(default=None, repr=False)  # gloo group for CPU-side flags (stop requests)

    @property
    def is_primary(self) -> bool:
        """Rank 0: the one process that chooses the run folder, writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def create(
        cls,
        device: str | None = "auto",
        precision: str = "fp32",
        compile: bool | str = False,
        channels_last: bool = False,
        seed: int = 0,
        sync_batchnorm: bool = False,
    ) -> "Runtime":
        rank, local_rank, world_size = _dist_env()
        if world_size > 1 and device is not None and device.strip().lower().startswith("cuda:"):
            raise UsageError(f"--device {device}: under torchrun each process takes cuda:LOCAL_RANK; use --device "
                             "cuda or auto")
        dev = resolve_device(device)
        if world_size > 1 and dev.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise DlcliError(f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} CUDA "
                                 "device(s); start at most that many processes per node")
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        resolved, why = resolve_precision(precision, dev)
        validate_precision(resolved, dev)
        compile, compile_why = resolve_compile(compile, dev, world_size)
        rt = cls(device=dev, precision=resolved, compile=compile, channels_last=channels_last, seed=seed,
                 rank=rank, local_rank=local_rank, world_size=world_size, sync_batchnorm=sync_batchnorm)
        rt.notes += [n for n in (why, compile_why) if n]
        if world_size > 1:
            rt._init_process_group()
        if compile and dev.type == "mps":
            raise UsageError("--compile is not supported on MPS; drop --compile")
        if compile and dev.type == "cpu":
            cxx = os.environ.get("CXX") or "g++"
            if shutil.which(cxx) is None:
                raise UsageError(f"--compile on the CPU needs a C++ compiler ({cxx} not found; set CXX or install "
                                 "g++), or drop --compile")
            rt.notes.append("--compile: the first steps compile the model, which can take minutes on a CPU")
        if rt.cuda_graphs and dev.type != "cuda":
            rt.notes.append(f"compile {compile}: CUDA graphs need a CUDA device; compiled without them")
        if resolved == "bf16" and dev.type == "cpu" and not _cpu_has_bf16():
            rt.notes.append("bf16 on a CPU without native bfloat16 instructions (AVX512-BF16/AMX) is emulated "
                            "and usually slower than fp32")
        if channels_last and dev.type == "mps":
            rt.notes.append("channels_last ignored on MPS")
            rt.channels_last = False
        if dev.type == "cuda":
            tf32 = resolved == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
        return rt

    @classmethod
    def from_config(cls, cfg: Any) -> "Runtime":
        """``create`` from anything that carries device, precision, compile, channels_last and seed (a
        ``Recipe``, a ``BenchSpec``)."""
        return cls.create(cfg.device, cfg.precision, cfg.compile, cfg.channels_last, cfg.seed,
                          getattr(cfg, "sync_batchnorm", False))

    @property
    def cuda_graphs(self) -> bool:
        """The compile mode records CUDA graphs (reduce-overhead, max-autotune): replayed launches, outputs in
        memory that the next replay overwrites."""
        return self.compile in ("reduce-overhead", "max-autotune")

    def mark_step(self) -> None:
        """A new training iteration begins: under CUDA graphs the tensors of the previous one may be reused
        (loops that call compiled modules several times per step, as a GAN does, call this first)."""
        if self.cuda_graphs and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.precision)

    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager[Any]:
        """Autocast for bf16/fp16, a no-op context otherwise. ``cache=False``: no reuse of the low-precision
        copies of the weights within the block (what CUDA-graph capture needs)."""
        dtype = self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype, cache_enabled=cache)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 only (bf16 has fp32's range and needs none)."""
        if self.precision == "fp16":
            return torch.amp.GradScaler(self.device.type)
        return None

    def prepare(self, model: nn.Module, *, channels_last: bool | None = None) -> tuple[nn.Module, nn.Module]:
        """Move the model to the device (and memory format: ``channels_last``, else the runtime's), wrap it in
        DDP under torchrun and compile it on request; returns (model to run, raw model to save and evaluate)."""
        if self.distributed and self.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.channels_last if channels_last is None else channels_last:
            model = model.to(memory_format=torch.channels_last)
        raw = model
        if self.distributed and any(p.requires_grad for p in model.parameters()):
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if self.compile:
            if self.precision != "tf32":  # fp32 here is full float32 on purpose (TF32 off, as documented): inductor's
                # advice to turn TF32 on would only confuse; --precision tf32 is how to ask for it
                warnings.filterwarnings("ignore", message="TensorFloat32 tensor cores for float32 matrix "
                                        "multiplication available but not enabled")
            model = torch.compile(model, mode=self.compile if isinstance(self.compile, str) else None)
        return model, raw

    # --- processes (torchrun) -------------------------------------------------------------------------
    def _init_process_group(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            kwargs: dict[str, Any] = {"device_id": self.device} if self.device.type == "cuda" else {}
            dist.init_process_group(backend=backend, **kwargs)
        # Flags that the host reads every step (a Ctrl-C on any rank) go through gloo on CPU tensors, so
        # checking them never waits for the GPU.
        self._control_group = dist.new_group(backend="gloo") if self.device.type == "cuda" else None
        self.notes.append(f"distributed: rank {self.rank} of {self.world_size} ({dist.get_backend()})")

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (a CPU all-reduce; no GPU sync)."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._control_group)
        return bool(t.item())

    def all_reduce_sum(self, *tensors: torch.Tensor) -> None:
        """Sum tensors (on this runtime's device) across ranks, in place."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable, small), in rank order, on every rank; ``[obj]`` in one process."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._control_group)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. the run folder rank 0 chose)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._control_group)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self._control_group)

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (sizes differ by at most one; none repeated)."""
        from dlcli.batches import shard

        return shard(n, self.rank, self.world_size)

    def close(self) -> None:
        """Leave the process group (torchrun's processes exit right after)."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

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
            "world_size": self.world_size,
            "notes": list(self.notes),
        }


def _dist_env() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; (0, 0, 1) for a plain process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError("RANK, LOCAL_RANK and WORLD_SIZE must be integers (they are set by torchrun)") from None
    return rank, local, max(1, world)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None = None, *, clip_grad_norm: float | None = None,
                   parameters: Any = None, inputs: list[torch.Tensor] | None = None) -> torch.Tensor | None:
    """One update: zero the gradients, backward (through the GradScaler for fp16), optionally clip the global
    gradient norm (after unscaling), step, update the scaler. Returns the norm before clipping, if clipped.
    ``inputs``: the only leaves whose gradients are computed and accumulated (``backward(inputs=...)``), e.g.
    a generator's parameters when its loss runs through a discriminator whose own gradients are not wanted.

    Every gradient-trained loop (tasks and ``dlcli bench``) calls this, so mixed precision and clipping are
    done one way everywhere."""
    optimizer.zero_grad(set_to_none=True)
    norm = None
    if scaler is not None:
        scaler.scale(loss).backward(inputs=inputs)
        if clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            norm = _clip(optimizer, clip_grad_norm, parameters)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward(inputs=inputs)
        if clip_grad_norm is not None:
            norm = _clip(optimizer, clip_grad_norm, parameters)
        optimizer.step()
    return norm


def _clip(optimizer: torch.optim.Optimizer, max_norm: float, parameters: Any) -> torch.Tensor:
    params = parameters if parameters is not None else [p for g in optimizer.param_groups for p in g["params"]]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
