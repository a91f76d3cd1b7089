"""Reproduce the figures that README.md quotes without a benchmark script of their own, one claim at a time.

    python benchmarks/claims.py                                     # the quick claims (minutes on 2 cores)
    python benchmarks/claims.py --long --data-dir ../shared/data    # also the LeNet trainings (~5 min idle)
    python benchmarks/claims.py --only approx-init,bf16-cpu

Claims, and what is measured for each:

approx-init     ``dlcli train approx``: max |error| on the 4,001-point grid with the recipe's ``spread``
                initialisation and with PyTorch's default one (``--set model.args.weights=random``).
                Deterministic on the CPU: the numbers do not depend on the machine's load.
channels-last   a LeNet-5 training step at the lenet recipe's batch (128, fp32) on the CPU, through
                ``dlcli.bench.run_benchmark``, channels_last against the default memory format; the two
                alternate, medians over ``--repeats``.
bf16-cpu        the same step (train and infer) under bf16 autocast against fp32. On a CPU without
                AVX512-BF16/AMX instructions bf16 is emulated.
lenet-seed      (--long) ``dlcli train lenet --seed 1``: test accuracy (the recipe's seed 0 is
                ``dlcli verify lenet``).
lenet-no-shift  (--long) ``dlcli train lenet --epochs 4 --set task_args.shift=0`` for seeds 0, 1, 2.

Timings depend on the machine and on what else runs there: the header prints the CPU, torch's threads and
the load average before and after, so that a table pasted into benchmarks/RESULTS.md says where it was made.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's dlcli, also when it is not installed

Row = tuple[str, str, str, str]  # claim, what the README says, what was measured, the command


def _train(recipe_name: str, overrides: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    """``dlcli train RECIPE --set ...`` in this process; returns the run's ``final`` metrics."""
    from dlcli.config import apply_overrides, load_recipe
    from dlcli.runtime import Runtime
    from dlcli.train import train

    recipe = apply_overrides(load_recipe(recipe_name), {"device": "cpu", **overrides})
    with tempfile.TemporaryDirectory(prefix="dlcli-claims-") as tmp:
        result = train(recipe, Runtime.from_config(recipe), Path(tmp) / "run", data_dir=data_dir)
    return result.final


def approx_init(args: argparse.Namespace) -> list[Row]:
    spread = _train("approx", {}, None)
    random = _train("approx", {"model.args.weights": "random"}, None)
    return [
        ("approx, `spread` init (the recipe)", "max error 0.0052, mean 0.0012",
         f"max error {spread['max_abs_error']:.4f}, mean {spread['mean_abs_error']:.4f}", "dlcli verify approx"),
        ("approx, PyTorch's default init", "max error 0.35",
         f"max error {random['max_abs_error']:.4f}, mean {random['mean_abs_error']:.4f}",
         "dlcli train approx --set model.args.weights=random"),
    ]


def _alternating(configs: dict[str, dict[str, Any]], mode: str, args: argparse.Namespace) -> dict[str, float]:
    """Median samples/s of a lenet5 step per configuration, the configurations alternating over repeats."""
    from dlcli.bench import BenchSpec, run_benchmark

    samples: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            spec = BenchSpec("lenet5", modes=(mode,), device="cpu", batch_size=args.batch_size, warmup=args.warmup,
                             steps=args.steps, **configs[name])
            (r,) = run_benchmark(spec)
            samples[name].append(r.samples_per_s)
            print(f"  {mode} {name}: {r.samples_per_s:,.0f} samples/s", file=sys.stderr, flush=True)
    return {name: statistics.median(v) for name, v in samples.items()}


def _bench_command(args: argparse.Namespace, mode: str, extra: str) -> str:
    return (f"dlcli bench lenet5 --device cpu --mode {mode} --batch-size {args.batch_size} --warmup {args.warmup} "
            f"--steps {args.steps}{extra}")


def channels_last(args: argparse.Namespace) -> list[Row]:
    med = _alternating({"contiguous": {}, "channels_last": {"channels_last": True}}, "train", args)
    ratio = med["channels_last"] / med["contiguous"]
    return [("lenet5 training step, channels_last vs default (CPU)", "15-20% faster per step",
             f"{med['channels_last']:,.0f} vs {med['contiguous']:,.0f} samples/s: {ratio - 1:+.1%} "
             f"(medians of {args.repeats})", _bench_command(args, "train", " [--channels-last]"))]


def bf16_cpu(args: argparse.Namespace) -> list[Row]:
    from dlcli.runtime import _cpu_has_bf16

    native = "native bf16 instructions" if _cpu_has_bf16() else "no AVX512-BF16/AMX: emulated"
    rows = []
    for mode in ("train", "infer"):
        med = _alternating({"fp32": {}, "bf16": {"precision": "bf16"}}, mode, args)
        ratio = med["bf16"] / med["fp32"]
        rows.append((f"lenet5 {mode} step, bf16 vs fp32 (CPU, {native})", "bf16 emulation usually slower",
                     f"{med['bf16']:,.0f} vs {med['fp32']:,.0f} samples/s: {ratio - 1:+.1%} "
                     f"(medians of {args.repeats})", _bench_command(args, mode, " --precision bf16|fp32")))
    return rows


def lenet_seed(args: argparse.Namespace) -> list[Row]:
    final = _train("lenet", {"seed": 1}, args.data_dir)
    return [("lenet, seed 1", "99.28%", f"{final['test_accuracy']:.2%}", "dlcli train lenet --seed 1")]


def lenet_no_shift(args: argparse.Namespace) -> list[Row]:
    accs = [_train("lenet", {"seed": s, "epochs": 4, "task_args.shift": 0}, args.data_dir)["test_accuracy"]
            for s in (0, 1, 2)]
    return [("lenet without the 1-pixel shifts, 4 epochs, seeds 0-2", "99.05-99.10%",
             ", ".join(f"{a:.2%}" for a in accs), "dlcli train lenet --epochs 4 --set task_args.shift=0 --seed S")]


QUICK: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "approx-init": approx_init, "channels-last": channels_last, "bf16-cpu": bf16_cpu}
LONG: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "lenet-seed": lenet_seed, "lenet-no-shift": lenet_no_shift}


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--only", help="comma-separated claims: " + ", ".join([*QUICK, *LONG]))
    p.add_argument("--long", action="store_true", help="also the LeNet trainings (minutes each on a small CPU)")
    p.add_argument("--data-dir", default=os.environ.get("DLCLI_DATA"), help="folder with MNIST/ (for --long)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats of each timing (medians)")
    p.add_argument("--batch-size", type=int, default=128, help="timed lenet5 batch (the lenet recipe's)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    claims = {**QUICK, **LONG} if args.long else dict(QUICK)
    if args.only:
        wanted = [c.strip() for c in args.only.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in {**QUICK, **LONG}]
        if unknown:
            p.error(f"unknown claim(s) {', '.join(unknown)}; known: {', '.join([*QUICK, *LONG])}")
        claims = {c: {**QUICK, **LONG}[c] for c in wanted}

    import torch

    from dlcli.runtime import device_name

    load_start = _load()
    rows: list[Row] = []
    for name, fn in claims.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows += fn(args)
    print(f"{device_name(torch.device('cpu'))}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; load average {load_start} at the start, "
          f"{_load()} at the end\n")
    print("| claim | README | measured | command |")
    print("|---|---|---|---|")
    for claim, said, measured, command in rows:
        print(f"| {claim} | {said} | {measured} | `{command}` |")


if __name__ == "__main__":
    main()
