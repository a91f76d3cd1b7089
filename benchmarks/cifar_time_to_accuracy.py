"""Time to a test accuracy, and the accuracy per epoch, of a dlcli recipe (CIFAR-10 by default).

Runs ``dlcli train RECIPE`` in this process (the trainer the CLI calls) with the test split scored after
every epoch (``task_args.eval_test_every_epoch``: the test split chooses nothing, best.pt is still picked on
validation), and reports for every epoch the wall time and the test accuracy, the first epoch that reaches
``--target`` (by default the accuracy the recipe itself expects), and the recipe's own expectation checked on
its final (best-on-validation) model.

Two clocks: ``total`` starts before the data is opened (CIFAR-10 is read from dlcli's decoded cache after
the first run) and the model is built; ``train`` starts at the first training step. On an accelerator, a
short untimed warm-up run first (``--warmup-steps`` steps on a subset) fills the data cache and lets cuDNN
choose its kernels, so neither clock pays for one-time start-up; ``--no-warmup`` skips it.

Every epoch is also appended as one JSON line to ``--progress FILE`` as soon as it ends, so a run stopped by
a timeout still leaves its curve; with ``--out DIR`` a run stopped by Ctrl-C or SIGTERM (``timeout``) also
leaves a resumable ``DIR/last.pt``: ``dlcli train --resume DIR`` finishes it.

Usage:
    DLCLI_DATA=../shared/data python benchmarks/cifar_time_to_accuracy.py --recipe resnet18-cifar10 \
        --device cuda --json                                  # time to the recipe's 94%
    python benchmarks/cifar_time_to_accuracy.py --recipe resnet20-cifar10 --device cpu \
        --set data.args.train_size=5000 --set epochs=2        # the CPU per-epoch table, on a subset
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dlcli import timing


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def recipe_target(expect: dict[str, str]) -> float | None:
    """The test accuracy a recipe promises (its ``expect.test_accuracy: ">= X"``), or None."""
    from dlcli.config import parse_expectation

    text = expect.get("test_accuracy")
    return parse_expectation(text)[1] if text is not None else None


def run(recipe_name: str, target: float | None, device: str, sets: list[str], warmup_steps: int,
        out: str | None, progress: str | None, data_dir: str | None) -> dict[str, Any]:
    import torch

    from dlcli.config import apply_overrides, load_recipe, parse_set
    from dlcli.runtime import Runtime
    from dlcli.train import NoCallbacks, train

    overrides: dict[str, Any] = {"task_args.eval_test_every_epoch": True, "device": device}
    overrides.update(dict(map(parse_set, sets)))
    recipe = apply_overrides(load_recipe(recipe_name), overrides)
    if target is None:
        target = recipe_target(recipe.expect)
        if target is None:
            raise SystemExit(f"{recipe.name} expects no test accuracy: give one with --target")
    warm_s = None
    if warmup_steps > 0 and not device.startswith("cpu"):
        t = time.perf_counter()
        n = warmup_steps * recipe.batch_size
        data_args = recipe.data.args if recipe.data else {}
        warm_over: dict[str, Any] = {"epochs": 1}
        if "train_size" not in data_args or (data_args.get("train_size") or n) > n:
            warm_over["data.args.train_size"] = n
        if recipe.data and recipe.data.source == "cifar10":
            warm_over["data.args.test_size"] = min(recipe.eval_batch_size, 10_000)
        warm = apply_overrides(recipe, warm_over)
        with tempfile.TemporaryDirectory(prefix="dlcli-warmup-") as tmp:
            train(warm, Runtime.from_config(warm), Path(tmp) / "run", data_dir=data_dir)
        warm_s = time.perf_counter() - t
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    epochs: list[dict[str, Any]] = []
    t_first_step: list[float] = []
    sink = open(progress, "a", encoding="utf-8") if progress else None  # noqa: SIM115 (closed below)

    class Clock(NoCallbacks):
        def on_start(self, header: dict[str, Any], total_steps: int, done_steps: int) -> None:
            _sync(device)
            t_first_step.append(time.perf_counter())

        def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
            now = time.perf_counter()  # end_epoch already read its metrics back: the device is synchronised
            row = {"recipe": recipe.name, "epoch": epoch + 1, "time_s": round(now - t0, 3),
                   "train_time_s": round(now - t_first_step[0], 3),
                   **{k: metrics.get(k) for k in ("test_accuracy", "val_accuracy", "train_loss", "train_accuracy")}}
            epochs.append(row)
            print(f"  {recipe.name} epoch {row['epoch']}: test {row['test_accuracy']:.2%} at {row['time_s']:.1f}s "
                  f"(training {row['train_time_s']:.1f}s)", file=sys.stderr, flush=True)
            if sink:
                sink.write(json.dumps(row) + "\n")
                sink.flush()

    tmp = None if out else tempfile.TemporaryDirectory(prefix="dlcli-tta-")
    run_dir = Path(out) if out else Path(tmp.name) / "run"  # type: ignore[union-attr]
    t0 = time.perf_counter()
    try:
        result = train(recipe, Runtime.from_config(recipe), run_dir, data_dir=data_dir, callbacks=Clock())
    finally:
        if sink:
            sink.close()
    total_s = time.perf_counter() - t0
    reached = next((e for e in epochs if (e["test_accuracy"] or 0) >= target), None)
    res = {
        "recipe": recipe.name, "target": target, "device": result.header.get("device_name"),
        "precision": result.header.get("precision"), "channels_last": recipe.channels_last,
        "compile": result.header.get("compile", recipe.compile), "notes": result.header.get("notes"),
        "batch_size": recipe.batch_size,
        "epochs": recipe.epochs, "train_samples": result.header.get("train_samples"),
        "test_samples": result.header.get("test_samples"), "parameters": result.header.get("parameters"),
        "time_to_target_s": reached["time_s"] if reached else None,
        "train_time_to_target_s": reached["train_time_s"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        "total_s": round(total_s, 2), "warmup_s": round(warm_s, 2) if warm_s is not None else None,
        "per_epoch_s": round(epochs[-1]["train_time_s"] / len(epochs), 3) if epochs else None,
        "steady_epoch_s": steady_epoch_s(epochs),
        "final_test_accuracy": result.final.get("test_accuracy"), "best_epoch": result.final.get("best_epoch"),
        "max_test_accuracy": max((e["test_accuracy"] or 0) for e in epochs) if epochs else None,
        "expect": result.expectations, "history": epochs, "run_dir": str(run_dir) if out else None,
        "torch": torch.__version__, "date": dt.date.today().isoformat(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available() and device.startswith("cuda"):
        res["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if tmp is not None:
        tmp.cleanup()
    return res


def steady_epoch_s(history: list[dict[str, Any]]) -> float | None:
    """The median training time of the epochs after the first, which carries compilation, CUDA-graph capture and
    cuDNN's autotuning (52 s of ResNet-56's 247 s with graphs on an H200): ``dlcli.timing.steady_epoch_s`` over
    this script's rows (numbered from 1 where they carry no epoch), to the millisecond; None with fewer than 2."""
    steady = timing.steady_epoch_s((e.get("epoch", i + 1), e["train_time_s"]) for i, e in enumerate(history))
    return round(steady, 3) if steady is not None else None


def markdown(r: dict[str, Any]) -> str:
    ttt = (f"{r['time_to_target_s']:.1f} s (epoch {r['epochs_to_target']}; training alone "
           f"{r['train_time_to_target_s']:.1f} s)" if r["time_to_target_s"] is not None else "not reached")
    met = all(e["met"] for e in r["expect"]) if r["expect"] else None
    return (f"{r['recipe']} on {r['device']} ({r['precision']}, channels_last {r['channels_last']}, "
            f"batch {r['batch_size']}, {r['epochs']} epochs, torch {r['torch']}, {r['date']}): time to "
            f"{r['target']:.2%} test accuracy {ttt}; {r['per_epoch_s']} s per epoch on average, "
            f"{r.get('steady_epoch_s')} s after the first (median); final test accuracy "
            f"{r['final_test_accuracy']:.2%} (best epoch {r['best_epoch']} by validation), expectation "
            f"{'met' if met else 'NOT met' if met is not None else 'none'}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="resnet18-cifar10")
    p.add_argument("--target", type=float, help="test accuracy to time, a fraction (default: the recipe's own "
                   "expect.test_accuracy, e.g. 0.9125 for resnet20-cifar10)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    p.add_argument("--warmup-steps", type=int, default=20, help="untimed warm-up steps on an accelerator")
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--data-dir", default=os.environ.get("DLCLI_DATA"))
    p.add_argument("--out", help="keep the run folder here (default: a temporary folder, removed)")
    p.add_argument("--progress", help="append one JSON line per epoch to this file as it ends")
    p.add_argument("--write", help="also write the one-line summary to this file")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = p.parse_args()
    from dlcli.train import Interrupted

    try:
        res = run(args.recipe, args.target, args.device, args.set, 0 if args.no_warmup else args.warmup_steps,
                  args.out, args.progress, args.data_dir)
    except Interrupted as e:  # Ctrl-C or SIGTERM (a time limit): the epochs so far are in --progress
        print(f"{e}" + ("" if args.out else " (the run folder was temporary: pass --out to resume)"), file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    text = markdown(res)
    print(json.dumps(res, indent=2, default=str) if args.json else text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
