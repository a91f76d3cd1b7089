"""One process against ``--nproc-per-node N`` (torchrun + DistributedDataParallel) on the same recipe: the
per-epoch accuracy curves side by side, and on GPUs the scaling efficiency.

All runs use the same recipe, seed and overrides. ``--scaling strong`` (the default) keeps the recipe's
``batch_size`` as the global batch, so N processes take batch/N each and must reach (nearly) the same weights
as one: the curves show how far apart they are. They are not bit-identical: each process normalises its
batch-norm layers over its own batch/N images (``sync_batchnorm: true`` in the recipe makes the statistics
global), and the reductions are summed in another order. ``--scaling weak`` keeps the batch per process
(global batch = N x the recipe's, learning rate unchanged), the usual way to measure throughput on N GPUs.

Throughput is a steady epoch's: the training images of one epoch over the median epoch time after the first
(``epoch_time_s``: the first carries compilation and autotuning; validation is inside each epoch), so give
at least 2 epochs (3 or more for a median). Scaling efficiency at N processes = throughput(N) / (N x
throughput(1)): 1.0 is perfect linear scaling. On the CPU the N processes share its cores, so there the
efficiency measures nothing but the sharing; the curves are what the CPU run is for.

    DLCLI_DATA=../shared/data python benchmarks/cifar_ddp_curve.py --recipe resnet20-cifar10 --nproc 2 \
        --set epochs=2 --set data.args.train_size=2560 --set data.args.test_size=1000
    # N GPUs of one machine (NCCL): 1, 2, 4 and 8 processes, 3 epochs each, batch 512 per GPU
    python benchmarks/cifar_ddp_curve.py --device cuda --nproc 2,4,8 --scaling weak --recipe resnet18-cifar10 \
        --set epochs=3 --set batch_size=512
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

import yaml

ROOT = Path(__file__).resolve().parent.parent


def train(recipe: str, nproc: int, sets: list[str], out: Path, data_dir: str | None,
          device: str = "cpu") -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dlcli", "train", recipe, "--device", device, "--out", str(out), "--json"]
    cmd += [a for s in sets for a in ("--set", s)]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {last}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    epochs = [r for r in rows if "row" not in r]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))  # the resolved recipe
    return {"nproc": nproc, "wall_s": round(wall, 1), "epochs": epochs, "final": summary["final"],
            "header": summary["header"], "batch_size": config["batch_size"], "command": " ".join(cmd)}


def scaling(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: global and per-process batch, the steady epoch time, training images/s, and the scaling
    efficiency against the first run (one process): throughput(N) / (N x throughput(1)). A run of one epoch
    has no steady epoch; its first epoch (compilation included) stands in, flagged ``steady: false``."""
    out = []
    for r in runs:
        final, header = r["final"], r["header"]
        steady = final.get("epoch_time_s") is not None
        seconds = final["epoch_time_s"] if steady else final.get("first_epoch_s")
        images_s = header["train_samples"] / seconds if seconds else None
        out.append({"nproc": r["nproc"], "global_batch": r["batch_size"], "batch_per_process": r["batch_size"] // r["nproc"], "epoch_s": seconds, "steady": steady,
                    "images_per_s": images_s})
    base = out[0]["images_per_s"]
    for row in out:
        ok = base and row["images_per_s"] is not None
        row["efficiency"] = row["images_per_s"] / (row["nproc"] * base) if ok else None
    return out


def _sets_for(nproc: int, sets: list[str], weak: bool, batch: int | None) -> list[str]:
    """The overrides of one run: weak scaling multiplies the global batch by the number of processes."""
    return [*sets, f"batch_size={batch * nproc}"] if weak and batch else sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="resnet20-cifar10")
    p.add_argument("--nproc", default="2", help="process counts to run beside one process, e.g. 2 or 2,4,8")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: one GPU per process (NCCL)")
    p.add_argument("--scaling", default="strong", choices=["strong", "weak"],
                   help="strong: the recipe's batch is the global batch; weak: it is each process's batch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    try:
        asked = {int(n) for n in args.nproc.split(",")}
    except ValueError:
        p.error(f"--nproc {args.nproc}: expected process counts separated by commas, e.g. 2 or 2,4,8")
    if min(asked) < 1:
        p.error(f"--nproc {args.nproc}: every process count must be at least 1")
    counts = [1, *sorted(asked - {1})]
    if args.device == "cuda":
        import torch

        if torch.cuda.device_count() < counts[-1]:
            raise SystemExit(f"--nproc {counts[-1]} needs {counts[-1]} GPUs; {torch.cuda.device_count()} visible")
    batch = None
    if args.scaling == "weak":  # each process keeps the recipe's batch (or the one --set gives)
        given = [s.split("=", 1)[1] for s in args.set if s.startswith("batch_size=")]
        batch = int(given[-1]) if given else _recipe_batch(args.recipe)
    with tempfile.TemporaryDirectory(prefix="ddp-curve-") as tmp:
        runs = [train(args.recipe, n, _sets_for(n, args.set, args.scaling == "weak", batch), Path(tmp) / f"n{n}",
                      args.data_dir, args.device) for n in counts]
    res = {"recipe": args.recipe, "sets": args.set, "device": args.device, "scaling": args.scaling, "runs": runs,
           "table": scaling(runs), "device_name": runs[0]["header"].get("device_name"),
           "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "load_average": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(res, default=str))
        return
    print(f"{args.recipe} {' '.join(args.set)}: 1 process against {', '.join(map(str, counts[1:]))} "
          f"(torchrun, {'NCCL' if args.device == 'cuda' else 'gloo'}; {args.scaling} scaling; "
          f"{res['device_name']})")
    keys = [k for k in ("train_loss", "train_accuracy", "val_accuracy") if k in runs[0]["epochs"][0]]
    print("| epoch | " + " | ".join(f"{k} ({r['nproc']})" for k in keys for r in runs) + " |")
    print("|---" * (1 + len(keys) * len(runs)) + "|")
    for rows in zip(*(r["epochs"] for r in runs)):
        print(f"| {rows[0]['epoch']} | " + " | ".join(f"{row[k]:.4f}" for k in keys for row in rows) + " |")
    print()
    print("| processes | global batch | per process | s / epoch | training images/s | scaling efficiency | final |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for row, r in zip(res["table"], runs):
        acc = ", ".join(f"{k} {v:.4f}" for k, v in r["final"].items() if "accuracy" in k)
        flag = "" if row["steady"] else " (first epoch: compilation included)"
        ips = f"{row['images_per_s']:,.0f}" if row["images_per_s"] else "-"
        eff = f"{row['efficiency']:.2f}" if row["efficiency"] is not None else "-"
        print(f"| {row['nproc']} | {row['global_batch']} | {row['batch_per_process']} | {row['epoch_s']}{flag} | "
              f"{ips} | {eff} | {acc} |")


def _recipe_batch(recipe: str) -> int:
    from dlcli.config import load_recipe

    return int(load_recipe(recipe).batch_size)


if __name__ == "__main__":
    main()
