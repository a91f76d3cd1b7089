"""One benchmark: FLOPs counted once, then per mode and input kind a fresh model, untimed warm-up steps,
timed steps, and the arithmetic that turns timestamps into samples/s, percentiles, TFLOP/s and MFU."""

from __future__ import annotations

import datetime as _dt
import gc
from typing import Any

import torch

from dlcli import peaks
from dlcli.bench.autobatch import auto_batch
from dlcli.bench.flops import FlopCount, count_flops
from dlcli.bench.meters import Clock, MemoryMeter, percentile
from dlcli.bench.results import BenchResult, Environment
from dlcli.bench.spec import (
    BenchSpec,
    Progress,
    default_batch_size,
    default_steps,
    default_warmup,
    quiet,
    validate_spec,
)
from dlcli.bench.workload import RealData, Workload, builder_kwargs, is_oom, oom_error, prepare_workload
from dlcli.errors import DlcliError, UsageError
from dlcli.registry import model_meta
from dlcli.runtime import Runtime


def device_peak(device_type: str, device_name: str, precision: str) -> tuple[float | None, str | None]:
    """(published dense peak TFLOP/s, the peaks-table entry) of a CUDA device at a precision; (None, None)
    for every other device and for GPUs that are not in :mod:`dlcli.peaks`: no MFU is ever invented."""
    if device_type != "cuda":
        return None, None
    peak = peaks.peak_tflops(device_name, precision)
    matched = peaks.match_device(device_name) if peak is not None else None
    return peak, (matched.name if matched else None)


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
    real: RealData | None = None,
) -> BenchResult:
    clock = Clock(rt.device)
    meter = MemoryMeter(rt.device)
    meter.start()
    work: Workload | None = None
    try:
        work = prepare_workload(spec, rt, mode, data, batch, input_shape, kwargs, flops.output_shape, clock, real)
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
        if is_oom(e):
            raise oom_error(spec.model, mode, batch, rt) from None
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
    peak, peak_name = device_peak(rt.device.type, env.device_name, rt.precision)
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
        peak_device=peak_name,
        mfu=(achieved / peak) if peak else None,
        timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        env=env,
    )


def run_benchmark(spec: BenchSpec, progress: Progress = quiet) -> list[BenchResult]:
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
    kwargs = builder_kwargs(spec.model, meta, input_shape)
    flops = count_flops(spec.model, input_shape, builder_kwargs=kwargs)
    # the real data set is opened before any timing, so that missing files fail at once
    real = RealData.open(input_shape, spec.data_dir, spec.seed) if spec.data == "real" else None
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
            batch = auto_batch(spec, rt, mode, input_shape, kwargs, flops.output_shape, progress)
        else:
            batch = spec.batch_size or default_batch_size(rt.device)
        for data in ("synthetic", "real") if spec.data == "real" else ("synthetic",):
            results.append(
                _measure(
                    spec, rt, mode, data, batch, spec.auto_batch, input_shape, kwargs, flops, env, warmup, steps,
                    progress, real,
                )
            )
    return results
