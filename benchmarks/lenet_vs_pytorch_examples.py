"""Time to 99.0% MNIST test accuracy: ``dlcli train lenet`` against the classic PyTorch MNIST example.

The baseline is the recipe of pytorch/examples ``mnist/main.py``, written out here: two 3x3 convolutions
(32, 64 maps), max-pooling, dropout 0.25 / 0.5, a 128-unit layer, log-softmax + NLL, Adadelta (lr 1.0),
StepLR (gamma 0.7 per epoch), batch 64, a ``DataLoader`` over ``torchvision.datasets.MNIST`` with
``ToTensor`` + ``Normalize`` PIL transforms (in the main process, as the example does on a CPU), and a test
pass after every epoch. One deliberate difference: the training loader shuffles (the example shuffles only
on CUDA, which is an accident of its kwargs, not part of its recipe).

dlcli runs its own ``lenet`` recipe unchanged, except that the test split is scored after every epoch
(``task_args.eval_test_every_epoch``) so that the time at which it first reaches the target is known.

Each contestant runs in a fresh Python process, one after the other, with the same number of CPU threads
(``torch.set_num_threads`` and ``OMP_NUM_THREADS``) and the same OpenMP wait policy. A clock starts before
the data is opened and reads at the end of every epoch's test pass; imports and interpreter start-up are
excluded for both. The host may be shared, so ``--repeats`` runs the pair several times, alternating the
order, and the table quotes medians. On a shared host, OpenMP threads that spin while waiting for a
descheduled partner dominate both contestants' time (measured 2-3x); ``--omp-wait-policy PASSIVE`` (the
default here, for both) makes them sleep instead; ``inherit`` keeps the environment's setting.

Usage:
    DLCLI_DATA=../shared/data python benchmarks/lenet_vs_pytorch_examples.py
    python benchmarks/lenet_vs_pytorch_examples.py --data-dir ../shared/data --threads 2 --repeats 3 \
        --write /tmp/lenet_vs_examples.md   # a table to paste into benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.99


# ------------------------------------------------------------------------------------------- contestants


def _progress(name: str, e: dict[str, Any]) -> None:
    print(f"  {name} epoch {e['epoch']}: test {e['test_accuracy']:.2%} at {e['time_s']:.1f}s", file=sys.stderr,
          flush=True)


def run_baseline(data_dir: str, target: float, max_epochs: int, seed: int) -> dict[str, Any]:
    """pytorch/examples mnist/main.py on the CPU; stops at the first epoch whose test accuracy >= target."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torchvision import datasets, transforms

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)  # 64 maps of 12x12 after the pooling
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.conv2(F.relu(self.conv1(x))))
            x = self.dropout1(F.max_pool2d(x, 2))
            x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
            return F.log_softmax(self.fc2(x), dim=1)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_ds = datasets.MNIST(data_dir, train=True, download=False, transform=transform)
    test_ds = datasets.MNIST(data_dir, train=False, download=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=1000)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    epochs = []
    for epoch in range(1, max_epochs + 1):
        model.train()
        for data, y in train_loader:
            optimizer.zero_grad()
            F.nll_loss(model(data), y).backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, y in test_loader:
                correct += int((model(data).argmax(1) == y).sum())
        scheduler.step()
        acc = correct / len(test_ds)
        epochs.append({"epoch": epoch, "time_s": time.perf_counter() - t0, "test_accuracy": acc})
        _progress("baseline", epochs[-1])
        if acc >= target:
            break
    return {"epochs": epochs, "total_s": time.perf_counter() - t0, "final_test_accuracy": epochs[-1]["test_accuracy"]}


def run_dlcli(data_dir: str, recipe_name: str, device: str, sets: list[str]) -> dict[str, Any]:
    """``dlcli train RECIPE`` in this process (the trainer the CLI calls), timed at every epoch's end.

    On an accelerator, one untimed epoch first warms up the device (kernels, cuDNN autotuning, allocator).
    """
    from dlcli.config import apply_overrides, load_recipe, parse_set
    from dlcli.runtime import Runtime
    from dlcli.train import NoCallbacks, train

    overrides = {"task_args.eval_test_every_epoch": True, "device": device, **dict(map(parse_set, sets))}
    recipe = apply_overrides(load_recipe(recipe_name), overrides)
    if device != "cpu":
        with tempfile.TemporaryDirectory(prefix="dlcli-warmup-") as tmp:
            warm = apply_overrides(recipe, {"epochs": 1})
            train(warm, Runtime.from_config(warm), Path(tmp) / "run", data_dir=data_dir)
    epochs: list[dict[str, Any]] = []

    class Clock(NoCallbacks):
        def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
            epochs.append({"epoch": epoch + 1, "time_s": time.perf_counter() - t0,
                           "test_accuracy": metrics["test_accuracy"]})
            _progress("dlcli", epochs[-1])

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dlcli-bench-") as tmp:
        result = train(recipe, Runtime.from_config(recipe), Path(tmp) / "run", data_dir=data_dir, callbacks=Clock())
    return {"epochs": epochs, "total_s": time.perf_counter() - t0, "device": result.header["device_name"],
            "final_test_accuracy": result.final["test_accuracy"], "recipe": recipe.to_dict()}


def _worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.worker == "baseline":
        res = run_baseline(args.data_dir, args.target, args.max_epochs, args.seed)
    else:
        res = run_dlcli(args.data_dir, args.recipe, args.device, args.set or [])
    res["threads"] = torch.get_num_threads()
    sys.stdout.write(json.dumps(res) + "\n")


# ------------------------------------------------------------------------------------------------ driver


def time_to_target(res: dict[str, Any], target: float) -> tuple[float | None, int | None]:
    for e in res["epochs"]:
        if e["test_accuracy"] >= target:
            return e["time_s"], e["epoch"]
    return None, None


def _spawn(which: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if args.omp_wait_policy != "inherit":  # read by OpenMP when torch loads: set before the worker starts
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    cmd = [sys.executable, __file__, "--worker", which, "--data-dir", args.data_dir, "--threads", str(args.threads),
           "--target", str(args.target), "--max-epochs", str(args.max_epochs), "--recipe", args.recipe,
           "--seed", str(args.seed), "--device", args.device, *(f"--set={x}" for x in args.set or [])]
    before = _load()
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["load_average"] = [before, _load()]  # 1-minute load at the start and the end: other jobs on the host
    return res


def _load() -> float | None:
    return round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None


def machine() -> dict[str, Any]:
    import torch

    from dlcli.runtime import device_name

    return {"cpu": device_name(torch.device("cpu")), "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "date": dt.date.today().isoformat(), "load_average": _load()}


def summarize(runs: dict[str, list[dict[str, Any]]], target: float) -> dict[str, Any]:
    rows = {}
    for name, results in runs.items():
        ttt = [time_to_target(r, target) for r in results]
        reached = [t for t, _ in ttt if t is not None]
        rows[name] = {
            "time_to_target_s": statistics.median(reached) if len(reached) == len(results) else None,
            "time_to_target_all_s": [round(t, 1) if t is not None else None for t, _ in ttt],
            "epochs_to_target": [e for _, e in ttt],
            "final_test_accuracy": [r["final_test_accuracy"] for r in results],
            "total_s": statistics.median(r["total_s"] for r in results),
            "per_epoch_s": statistics.median(r["epochs"][0]["time_s"] for r in results),
            "load": [r.get("load_average", [None, None]) for r in results],
        }
    a, b = rows["dlcli"]["time_to_target_s"], rows["baseline"]["time_to_target_s"]
    return {"rows": rows, "ratio": (a / b) if a and b else None}


def markdown(summary: dict[str, Any], info: dict[str, Any], args: argparse.Namespace,
             recipe: dict[str, Any]) -> str:
    rows, ratio = summary["rows"], summary["ratio"]

    def cell(v: Any) -> str:
        return "not reached" if v is None else f"{v:.1f}"

    o = recipe["optim"]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {args.threads} thread(s) per run "
        f"(OMP_WAIT_POLICY {args.omp_wait_policy}), torch {info['torch']}, Python {info['python']}, "
        f"{info['date']}; load average at the start {info['load_average']}; {args.repeats} repeat(s), medians.",
        "",
        f"| contestant | time to {args.target:.1%} test accuracy (s) | epochs to reach it | per repeat (s) | "
        "final test accuracy | first epoch (s) | host load (start → end) |",
        "|---|---:|---:|---|---|---:|---|",
    ]
    names = {"dlcli": f"`dlcli train {args.recipe}` (LeNet-5 {recipe['model']['args'].get('variant', '')}, "
                      f"{o['name']} {recipe['schedule']['name']}, batch {recipe['batch_size']}, "
                      f"{recipe['epochs']} epochs)",
             "baseline": "PyTorch MNIST example (2 conv + 2 fc, Adadelta, StepLR 0.7, batch 64, PIL DataLoader)"}
    for key in ("dlcli", "baseline"):
        r = rows[key]
        lines.append(f"| {names[key]} | {cell(r['time_to_target_s'])} | {r['epochs_to_target']} | "
                     f"{r['time_to_target_all_s']} | {', '.join(f'{a:.2%}' for a in r['final_test_accuracy'])} | "
                     f"{r['per_epoch_s']:.1f} | {', '.join(f'{a} → {b}' for a, b in r['load'])} |")
    lines += ["", f"Ratio dlcli / baseline (time to {args.target:.1%}): "
              + (f"**{ratio:.3f}** (target ≤ 0.333)" if ratio else "n/a")]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("DLCLI_DATA", "../shared/data"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for each contestant")
    p.add_argument("--repeats", type=int, default=1, help="run the pair this many times (alternating order)")
    p.add_argument("--omp-wait-policy", default="PASSIVE", choices=("PASSIVE", "ACTIVE", "inherit"),
                   help="OMP_WAIT_POLICY for both contestants (default PASSIVE: no spinning on a shared host)")
    p.add_argument("--target", type=float, default=TARGET)
    p.add_argument("--max-epochs", type=int, default=14, help="baseline epochs at most (the example trains 14)")
    p.add_argument("--recipe", default="lenet")
    p.add_argument("--seed", type=int, default=1, help="baseline seed (the example's default)")
    p.add_argument("--device", default="cpu", help="dlcli's device (the baseline always runs on the CPU); "
                   "an accelerator gets an untimed warm-up epoch first")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override dlcli's recipe (repeatable)")
    p.add_argument("--dlcli-only", action="store_true", help="skip the baseline (e.g. for a GPU time-to-99%%)")
    p.add_argument("--write", help="also write the markdown table to this file (replaced, not appended to)")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON")
    p.add_argument("--worker", choices=("dlcli", "baseline"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args)
        return
    info = machine()
    runs: dict[str, list[dict[str, Any]]] = {"dlcli": [], "baseline": []}
    for i in range(args.repeats):
        order = ("dlcli", "baseline") if i % 2 == 0 else ("baseline", "dlcli")
        for which in order:
            if which == "baseline" and args.dlcli_only:
                continue
            runs[which].append(_spawn(which, args))
            r = runs[which][-1]
            t, e = time_to_target(r, args.target)
            print(f"[{i + 1}/{args.repeats}] {which}: " + ", ".join(
                f"epoch {x['epoch']} {x['test_accuracy']:.2%} at {x['time_s']:.1f}s" for x in r["epochs"])
                + f"; time to target {t if t is None else round(t, 1)}", file=sys.stderr, flush=True)
    if args.dlcli_only:
        times = [time_to_target(r, args.target)[0] for r in runs["dlcli"]]
        reached = [t for t in times if t is not None]
        text = (f"dlcli train {args.recipe} on {runs['dlcli'][0]['device']} (torch {info['torch']}, {info['date']}): "
                f"time to {args.target:.1%} test accuracy after warm-up "
                f"{statistics.median(reached) if reached else float('nan'):.2f} s (runs: {times}), final "
                f"{[r['final_test_accuracy'] for r in runs['dlcli']]}\n")
        print(json.dumps({"machine": info, "runs": runs}, indent=2) if args.json else text)
        if args.write:
            Path(args.write).write_text(text, encoding="utf-8")
        return
    summary = summarize(runs, args.target)
    text = markdown(summary, info, args, runs["dlcli"][0]["recipe"])
    if args.json:
        print(json.dumps({"machine": info, "summary": summary, "runs": runs}, indent=2))
    else:
        print(text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
