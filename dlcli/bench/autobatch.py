"""``--auto-batch`` (CUDA): the largest batch whose steps fit in GPU memory, found by doubling and bisection."""

from __future__ import annotations

import gc
from typing import Any, Callable

import torch

from dlcli.bench.spec import BenchSpec, Progress, default_batch_size
from dlcli.bench.workload import SGD_LR, SGD_MOMENTUM, loss_and_target
from dlcli.errors import DlcliError
from dlcli.registry import build_model
from dlcli.runtime import Runtime, device_name, optimizer_step

AUTO_BATCH_LIMIT = 65536  # upper end of the --auto-batch search
AUTO_BATCH_MEMORY_FRACTION = 0.9  # the search must fit in this share of GPU memory (headroom for the timed run)


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


def _gpu_fits(model: torch.nn.Module, rt: Runtime, mode: str, input_shape: tuple[int, ...],
              output_shape: tuple[int, ...]) -> Callable[[int], bool]:
    """A predicate: do two steps of ``mode`` at batch b run on the GPU without running out of memory?

    ``model`` is a fresh, uncompiled one (compiling every candidate size would take minutes; compiled graphs
    use no more memory than eager ones), moved to the GPU here. Two steps, because the optimizer's momentum
    buffers appear in the first.
    """
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn, make_target, _ = loss_and_target(output_shape, rt.device)

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
                opt.zero_grad(set_to_none=True)  # as in the timed step: no stale gradients through the forward
                with rt.autocast():
                    out = model(x)
                    loss = loss_fn((out[0] if isinstance(out, (tuple, list)) else out).float(), y)
                optimizer_step(loss, opt)
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


def auto_batch(
    spec: BenchSpec,
    rt: Runtime,
    mode: str,
    input_shape: tuple[int, ...],
    kwargs: dict[str, Any],
    output_shape: tuple[int, ...],
    progress: Progress,
) -> int:
    """The largest batch that fits (stated through ``progress``), or a DlcliError when not even 1 does."""
    start = default_batch_size(rt.device)
    progress(f"{spec.model} {mode}: --auto-batch searching from batch {start} (one trial = 2 steps)")
    torch.cuda.set_per_process_memory_fraction(AUTO_BATCH_MEMORY_FRACTION, rt.device)
    try:
        # built under the cap; no name holds the model or its predicate, so both are freed before `finally`
        best = find_max_batch(_gpu_fits(build_model(spec.model, **kwargs), rt, mode, input_shape, output_shape),
                              start=start)
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
