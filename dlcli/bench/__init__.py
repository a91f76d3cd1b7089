"""Benchmark a registered model: warm-up, synchronised timing, FLOPs, peak memory and MFU, returned as data.

What one benchmark does, per model, mode ("train" or "infer") and input ("synthetic" or "real"):

1. FLOPs per sample are counted once with ``FlopCounterMode`` on a copy of the model on the meta device
   (:mod:`.flops`): real FLOPs, 2 per multiply-add; inference counts the forward pass, training the
   forward and the backward pass.
2. A fresh model is built, moved to the device (channels_last, torch.compile as asked), and ``warmup``
   steps run untimed (compilation, cuDNN autotuning, allocator growth and data-loader start-up land there)
   (:mod:`.workload`, :mod:`.run`).
3. ``steps`` steps are timed one by one: ``time.perf_counter`` on the CPU, CUDA events on a GPU, read after
   one synchronisation at the end (:mod:`.meters`). samples/s is ``steps * batch_size`` over the
   synchronised wall time of the whole timed loop; p50/p90/p99 come from the per-step times.
4. Peak memory: the CUDA allocator's peak, or the process's resident-memory high-water mark reset before
   each benchmark (:mod:`.meters`).

The batch size is the one asked for; running out of memory is a ``DlcliError`` that suggests a smaller
size, and ``auto_batch`` (CUDA) searches the largest that fits and says which it chose (:mod:`.autobatch`).
``bench all`` runs each model in its own process (:mod:`.child`). The request and the results are
dataclasses (:mod:`.spec`, :mod:`.results`).

Nothing here prints: progress goes through a callback, the tables live in ``dlcli.report.bench``.
"""

from dlcli.bench.autobatch import AUTO_BATCH_LIMIT, AUTO_BATCH_MEMORY_FRACTION, find_max_batch
from dlcli.bench.child import ChildError, ChildFailure, child_argv, run_all, run_in_child
from dlcli.bench.flops import FlopCount, count_flops
from dlcli.bench.meters import percentile
from dlcli.bench.results import FIELDS, BenchResult, Environment, append_csv
from dlcli.bench.run import device_peak, run_benchmark
from dlcli.bench.spec import (
    DATA_KINDS,
    MODES,
    BenchSpec,
    Progress,
    default_batch_size,
    default_steps,
    default_warmup,
    default_workers,
    parse_input_size,
    validate_spec,
)
from dlcli.bench.workload import SGD_LR, SGD_MOMENTUM

__all__ = [
    "AUTO_BATCH_LIMIT",
    "AUTO_BATCH_MEMORY_FRACTION",
    "DATA_KINDS",
    "FIELDS",
    "MODES",
    "SGD_LR",
    "SGD_MOMENTUM",
    "BenchResult",
    "BenchSpec",
    "ChildError",
    "ChildFailure",
    "Environment",
    "FlopCount",
    "Progress",
    "append_csv",
    "child_argv",
    "count_flops",
    "default_batch_size",
    "default_steps",
    "default_warmup",
    "default_workers",
    "device_peak",
    "find_max_batch",
    "parse_input_size",
    "percentile",
    "run_all",
    "run_benchmark",
    "run_in_child",
    "validate_spec",
]
