"""One process against ``--nproc-per-node N`` (torchrun + DistributedDataParallel) on the same recipe: the
per-epoch accuracy curves side by side.

Both runs use the same recipe, seed and overrides; the recipe's ``batch_size`` is the global batch, so N
processes take batch/N each and must reach (nearly) the same weights as one. They are not bit-identical:
each process normalises its batch-norm layers over its own batch/N images (``sync_batchnorm: true`` in the
recipe makes the statistics global), and the reductions are summed in another order. The table shows how
far the curves are apart.

    DLCLI_DATA=../shared/data python benchmarks/cifar_ddp_curve.py --recipe resnet20-cifar10 --nproc 2 \
        --set epochs=2 --set data.args.train_size=2560 --set data.args.test_size=1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def train(recipe: str, nproc: int, sets: list[str], out: Path, data_dir: str | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dlcli", "train", recipe, "--device", "cpu", "--out", str(out), "--json"]
    cmd += [a for s in sets for a in ("--set", s)]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
    epochs = [r for r in rows if "row" not in r]
    final = json.load(open(out / "summary.json", encoding="utf-8"))["final"]
    return {"nproc": nproc, "wall_s": round(wall, 1), "epochs": epochs, "final": final, "command": " ".join(cmd)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="resnet20-cifar10")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddp-curve-") as tmp:
        runs = [train(args.recipe, n, args.set, Path(tmp) / f"n{n}", args.data_dir) for n in (1, args.nproc)]
    res = {"recipe": args.recipe, "sets": args.set, "runs": runs, "cpu": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(res, default=str))
        return
    one, many = runs
    print(f"{args.recipe} {' '.join(args.set)}: 1 process against {args.nproc} (torchrun, gloo)")
    keys = [k for k in ("train_loss", "train_accuracy", "val_accuracy") if k in one["epochs"][0]]
    print("| epoch | " + " | ".join(f"{k} (1) | {k} ({args.nproc})" for k in keys) + " |")
    print("|---" * (1 + 2 * len(keys)) + "|")
    for a, b in zip(one["epochs"], many["epochs"]):
        print(f"| {a['epoch']} | " + " | ".join(f"{a[k]:.4f} | {b[k]:.4f}" for k in keys) + " |")
    for r in runs:
        acc = {k: v for k, v in r["final"].items() if "accuracy" in k}
        print(f"{r['nproc']} process(es): final {acc}, wall {r['wall_s']} s")


if __name__ == "__main__":
    main()
