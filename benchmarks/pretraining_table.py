"""Does unsupervised pretraining help? Test error with and without it, at 100, 1,000 and all labels, for the
stacked denoising autoencoders (``sdae``) and the deep belief net (``dbn``).

Every cell is one ``dlcli train`` (a fresh process) with the recipe's defaults and the same seed; the pair
in a row differs only in ``task_args.pretrain``, so both start from the same random weights and fine-tune
with the same steps, learning-rate schedule and batches:

- all labels: the recipe unchanged (pretraining on all 55,000 training images), and ``pretrain=false``.
- ``L`` labels (``data.args.labels=L``, a class-balanced subset; validation stays the 5,000 held-out
  images): fine-tuning epochs of ``--finetune-steps`` steps (one pass over 100 images is one step). With
  pretraining, the stack that the all-labels run pretrained is loaded (``task_args.pretrained_from``):
  pretraining reads no label, and it saw the same 55,000 images, so the stack is the one a run with the
  label budget would pretrain (up to batch order), without paying for it again.

Prints a Markdown table (test error in %, and each run's training time) and writes every result as JSON.

    python benchmarks/pretraining_table.py                       # sdae and dbn, seed 0: 12 runs
    python benchmarks/pretraining_table.py --recipes sdae --full-run sdae=runs/sdae-verify   # reuse a run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def train(recipe: str, out: Path, seed: int, sets: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    """One ``dlcli train --json`` run; returns its final metrics (plus wall time), reuses a finished run and
    resumes an interrupted one."""
    summary = out / "summary.json"
    if summary.is_file():
        return {**json.loads(summary.read_text())["final"], "reused": True}
    if (out / "last.pt").is_file():  # an interrupted run (Ctrl-C, a stopped machine): continue it
        cmd = [sys.executable, "-m", "dlcli", "train", "--resume", str(out), "--json"]
    else:
        cmd = [sys.executable, "-m", "dlcli", "train", recipe, "--seed", str(seed), "--out", str(out), "--json"]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    print("$", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{recipe} failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
    return {**json.loads(res.stdout)["final"], "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=["sdae", "dbn"])
    ap.add_argument("--labels", nargs="+", type=int, default=[100, 1000], help="label budgets besides all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune-steps", type=int, default=50, help="steps per fine-tuning epoch, label budgets")
    ap.add_argument("--full-run", action="append", default=[], metavar="RECIPE=RUN",
                    help="a finished all-labels run with pretraining of RECIPE (same seed) to reuse")
    ap.add_argument("--out", default="runs/pretraining-table", help="folder for the runs and results.json")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a recipe override for every run (e.g. model.args.layers=[500,500,500])")
    args = ap.parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    reuse = dict(item.split("=", 1) for item in args.full_run)
    results: list[dict[str, Any]] = []
    for recipe in args.recipes:
        full_on = Path(reuse.get(recipe, root / f"{recipe}-all-on-s{args.seed}"))
        for labels in ["all", *args.labels]:
            for pretrain in (True, False):
                sets: dict[str, Any] = {**dict(kv.split("=", 1) for kv in args.set),
                                        "task_args.pretrain": str(pretrain).lower()}
                out = full_on if labels == "all" and pretrain else \
                    root / f"{recipe}-{labels}-{'on' if pretrain else 'off'}-s{args.seed}"
                if labels != "all":
                    sets.update({"data.args.labels": labels, "task_args.finetune_steps": args.finetune_steps})
                    if pretrain:
                        sets["task_args.pretrained_from"] = str(full_on)
                final = train(recipe, out, args.seed, sets, args.data_dir)
                results.append({"recipe": recipe, "labels": labels, "pretrain": pretrain, "seed": args.seed,
                                "test_error": final["test_error"], "train_time_s": final.get("train_time_s"),
                                "run": str(out)})
    (root / "results.json").write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                                   "cpus": os.cpu_count(), "results": results}, indent=2))
    print("| recipe | labels | test error, pretrained | test error, not pretrained | seed |")
    print("|---|---|---|---|---|")
    for recipe in args.recipes:
        for labels in ["all", *args.labels]:
            on, off = (next(r for r in results if r["recipe"] == recipe and r["labels"] == labels
                            and r["pretrain"] == p) for p in (True, False))
            name = "all (55,000)" if labels == "all" else f"{labels:,}"
            print(f"| `{recipe}` | {name} | {100 * on['test_error']:.2f}% | {100 * off['test_error']:.2f}% | "
                  f"{args.seed} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
