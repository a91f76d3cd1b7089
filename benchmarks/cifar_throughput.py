"""Training throughput of a dlcli CIFAR recipe against a bare PyTorch loop of the same model, batch and precision.

Both sides hold the training images as uint8 tensors on the device, draw a random permutation per epoch,
pad-and-crop and flip on the device, normalise, run the forward pass under the same autocast (the recipe's
resolved precision) and memory format, and step the same optimiser (SGD, Nesterov momentum, weight decay,
one-cycle schedule, label smoothing). The bare loop is what a user would write by hand in ~30 lines; dlcli is
``dlcli.train.train`` with the recipe, i.e. everything ``dlcli train`` does per step (trainer, callbacks,
running loss and accuracy sums on the device, the stop flag). Images/s are timed over ``--steps`` steps after
``--warmup`` untimed ones (synchronised on CUDA); the pair runs ``--repeats`` times in alternating order in
one process and the medians are reported. The target is a ratio dlcli / bare >= 1.0. ``--ops`` also counts
the ATen calls each loop makes per step (torch.profiler): the host work that a launch-bound GPU step waits
on, counted without the machine's timing noise.

Usage:
    DLCLI_DATA=../shared/data python benchmarks/cifar_throughput.py --recipe resnet20-cifar10 --device cpu \
        --steps 10 --warmup 3 --repeats 3
    python benchmarks/cifar_throughput.py --recipe resnet18-cifar10 --device cuda --steps 50 --json
    python benchmarks/cifar_throughput.py --recipe resnet20-cifar10 --device cpu --set batch_size=8 --ops
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(recipe: Any, x_all: Any, y_all: Any, mean: Any, std: Any, warmup: int, steps: int,
              window: Any = None) -> float:
    """Images/s of a hand-written loop over ``steps`` steps after ``warmup`` steps (``window``: a context
    manager entered for exactly the timed steps, e.g. a profiler)."""
    import torch
    import torch.nn.functional as F

    from dlcli.registry import build_model_with_defaults
    from dlcli.runtime import Runtime

    rt = Runtime.from_config(recipe)
    dev = rt.device
    torch.manual_seed(recipe.seed)
    net = build_model_with_defaults(recipe.model.name, recipe.model.args, num_classes=10, in_channels=3,
                                    input_size=32).to(dev)
    if recipe.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if rt.compile:  # the recipe's mode as dlcli resolves it (reduce-overhead: CUDA graphs)
        net = torch.compile(net, mode=rt.compile if isinstance(rt.compile, str) else None)
    o = recipe.optim
    opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    total = warmup + steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=max(2, total),
                                                pct_start=recipe.schedule.pct_start)
    pad, flip = int(recipe.task_args.get("crop", 0)), bool(recipe.task_args.get("flip", False))
    smoothing = float(recipe.task_args.get("label_smoothing", 0.0))
    amp = rt.amp_dtype
    bs = recipe.batch_size
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    mean, std = mean.to(dev).view(1, -1, 1, 1), std.to(dev).view(1, -1, 1, 1)
    perm = torch.randperm(len(x_all), device=dev)
    h = x_all.shape[-1]
    ar = torch.arange(h, device=dev)
    t1 = 0.0
    net.train()
    window = window or contextlib.nullcontext()
    for step in range(total):
        if step == warmup:
            _sync(dev)
            window.__enter__()
            t1 = time.perf_counter()
        idx = perm[(step * bs) % len(x_all):][:bs]
        x = x_all[idx].float() / 255  # (B, C, H, W) in [0, 1]
        if pad:
            b = len(x)
            xp = F.pad(x, (pad,) * 4)
            dy = torch.randint(0, 2 * pad + 1, (b,), device=dev)
            dx = torch.randint(0, 2 * pad + 1, (b,), device=dev)
            rows = (dy[:, None] + ar)[:, :, None]  # (B, H, 1)
            cols = (dx[:, None] + ar)[:, None, :]  # (B, 1, W)
            x = xp.permute(0, 2, 3, 1)[torch.arange(b, device=dev)[:, None, None], rows, cols].permute(0, 3, 1, 2)
        if flip:
            x = torch.where(torch.rand(len(x), 1, 1, 1, device=dev) < 0.5, x.flip(3), x)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last if recipe.channels_last
                                           else torch.contiguous_format)
        rt.mark_step()  # under CUDA graphs a new replay starts (the last step's outputs may be overwritten)
        with torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext():
            loss = F.cross_entropy(net(x).float(), y_all[idx], label_smoothing=smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    _sync(dev)
    t2 = time.perf_counter()
    window.__exit__(None, None, None)
    return steps * bs / (t2 - t1)


def dlcli_loop(recipe: Any, warmup: int, steps: int, data_dir: str | None, window: Any = None) -> float:
    """Images/s of ``dlcli train`` with the recipe over the same steps (timed from the trainer's callbacks)."""
    from dlcli.runtime import Runtime
    from dlcli.train import NoCallbacks, train

    rt = Runtime.from_config(recipe)
    marks: dict[str, float] = {}
    window = window or contextlib.nullcontext()

    class Clock(NoCallbacks):
        def on_step(self, epoch: int, step: int, metrics: dict[str, Any], samples: int) -> None:
            if step == warmup:
                _sync(rt.device)
                window.__enter__()
                marks["t1"] = time.perf_counter()
            elif step == warmup + steps:
                _sync(rt.device)
                marks["t2"] = time.perf_counter()
                window.__exit__(None, None, None)

    with tempfile.TemporaryDirectory(prefix="dlcli-thr-") as tmp:
        train(recipe, rt, Path(tmp) / "run", data_dir=data_dir, callbacks=Clock())
    return steps * recipe.batch_size / (marks["t2"] - marks["t1"])


def aten_calls(prof: Any) -> collections.Counter[str]:
    """The profiled ATen calls made from Python or autograd (not from inside another ATen op): each is one
    pass through the dispatcher, and on a GPU the ones that compute are kernel launches, i.e. the host work
    a step costs when its kernels are tiny."""
    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::")
                               and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")))


def count_ops(recipe: Any, x: Any, y: Any, mean: Any, std: Any, warmup: int, steps: int,
              data_dir: str | None) -> dict[str, Any]:
    """ATen calls per step of each loop over the same timed steps (torch.profiler, CPU activity: the host
    side, which is what a launch-bound GPU step waits on), and the ops whose counts differ most."""
    from torch.profiler import ProfilerActivity, profile

    profs = {k: profile(activities=[ProfilerActivity.CPU]) for k in ("dlcli", "bare")}
    dlcli_loop(recipe, warmup, steps, data_dir, window=profs["dlcli"])
    bare_loop(recipe, x, y, mean, std, warmup, steps, window=profs["bare"])
    ops = {k: aten_calls(p) for k, p in profs.items()}
    diff = {op: (ops["dlcli"][op] - ops["bare"][op]) / steps for op in ops["dlcli"] | ops["bare"]}
    return {"dlcli_ops_per_step": sum(ops["dlcli"].values()) / steps,
            "bare_ops_per_step": sum(ops["bare"].values()) / steps,
            "largest_differences": dict(sorted(((k, v) for k, v in diff.items() if v),
                                               key=lambda kv: -abs(kv[1]))[:12])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="resnet20-cifar10")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    p.add_argument("--data-dir", default=os.environ.get("DLCLI_DATA"))
    p.add_argument("--ops", action="store_true", help="also count the ATen calls each loop makes per step "
                   "(torch.profiler, one more run of each): the host work of a launch-bound GPU step")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch

    from dlcli.config import apply_overrides, load_recipe, parse_set
    from dlcli.data import load_data
    from dlcli.runtime import Runtime, device_name

    user = dict(map(parse_set, args.set))
    base = apply_overrides(load_recipe(args.recipe), user)
    if base.schedule.name == "onecycle" and (args.warmup + args.steps) * base.schedule.pct_start == 1:
        args.warmup += 1  # torch's OneCycleLR divides by zero when its warm-up phase is exactly one step
    n = (args.warmup + args.steps) * base.batch_size  # exactly the steps timed: one epoch, no partial batch
    overrides: dict[str, Any] = {"device": args.device, "epochs": 1, "data.args.train_size": n,
                                 "data.args.val_size": 100, "data.args.test_size": 100}
    recipe = apply_overrides(base, {**overrides, **user})
    if recipe.data is None or recipe.data.source != "cifar10":
        raise SystemExit(f"{args.recipe}: this benchmark is for the CIFAR-10 recipes")
    data = load_data("cifar10", recipe.data.args, args.data_dir, recipe.seed)
    assert data.train is not None
    x, y = data.train.x, data.train.y
    mean, std = torch.tensor(data.mean), torch.tensor(data.std)
    rt = Runtime.from_config(recipe)
    rows: dict[str, list[float]] = {"dlcli": [], "bare": []}
    for i in range(args.repeats):
        for which in (("dlcli", "bare") if i % 2 == 0 else ("bare", "dlcli")):
            v = (dlcli_loop(recipe, args.warmup, args.steps, args.data_dir) if which == "dlcli"
                 else bare_loop(recipe, x, y, mean, std, args.warmup, args.steps))
            rows[which].append(v)
            print(f"  [{i + 1}/{args.repeats}] {which}: {v:.1f} images/s", file=sys.stderr, flush=True)
    d, b = statistics.median(rows["dlcli"]), statistics.median(rows["bare"])
    res = {"recipe": recipe.name, "model": recipe.model.name, "device": device_name(rt.device),
           "precision": rt.precision, "channels_last": recipe.channels_last, "batch_size": recipe.batch_size,
           "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "threads": torch.get_num_threads(),
           "dlcli_images_per_s": round(d, 1), "bare_images_per_s": round(b, 1), "ratio": round(d / b, 3),
           "all": rows, "torch": torch.__version__, "date": dt.date.today().isoformat(),
           "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    if args.ops:
        res["ops"] = count_ops(recipe, x, y, mean, std, args.warmup, args.steps, args.data_dir)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['recipe']} ({res['model']}, batch {res['batch_size']}, {res['precision']}) on {res['device']}: "
              f"dlcli {d:.1f} images/s, bare loop {b:.1f} images/s, ratio {d / b:.3f} "
              f"(medians of {args.repeats}; load average {res['load_average']})")
        if args.ops:
            o = res["ops"]
            print(f"ATen calls per step: dlcli {o['dlcli_ops_per_step']:.1f}, bare loop {o['bare_ops_per_step']:.1f}; "
                  "largest differences per step: " + ", ".join(f"{k} {v:+.2f}" for k, v in
                                                                o["largest_differences"].items()))


if __name__ == "__main__":
    main()
