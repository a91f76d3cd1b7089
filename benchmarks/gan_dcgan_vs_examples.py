"""DCGAN training speed: ``dlcli train dcgan-mnist`` against pytorch/examples ``dcgan/main.py``, and the wall
time of ``dcgan-mnist`` to a stated Fréchet LeNet distance.

Throughput. pytorch/examples' main.py is run unmodified, by path (``--examples-main``; this repository never
holds a copy: ``git clone https://github.com/pytorch/examples`` and point at ``examples/dcgan/main.py``), on
MNIST from ``--data-dir`` (``--dataset mnist --dataroot DIR``; it finds the files there and downloads nothing).
Its generator and discriminator are built for 64x64 images only, so both contestants run at 64x64 with the
same architecture (dlcli's ``dcgan`` at ``image_size: 64`` is main.py's layer list, state_dict keys
included), the same batch (64), the same data (MNIST resized 28 -> 64, bilinear) and the same device.
main.py prints one line per step (after its per-step ``.item()`` synchronisations); the script stamps each
line as it arrives (``python -u``: unbuffered) and stops the process once enough have come. dlcli runs in a
fresh process through its trainer, stamping ``on_step`` (synchronising the device at the two ends of the
timed window). Images/s = batch x timed steps / time between the first and last timed step; warm-up steps
(untimed) first. Each contestant runs ``--repeats`` times, alternating, and the table quotes medians.
``--also-32`` adds dlcli at its recipe's own 32x32 (MNIST padded by 2), for information;
``--memory-format-ab`` adds dlcli without the recipe's ``channels_last`` (the recipe's claim that it is faster).

Time to FLD (``--fld-epochs N``): ``dcgan-mnist`` as the recipe stands, with the Fréchet LeNet distance of
10,000 samples to the validation images after every epoch (the feature network: ``--features RUN``, else a
``lenet`` trained first by this script); the table gives the training wall time (evaluation time subtracted)
at which the distance first falls below each of ``--fld-targets``.

Usage:
    python benchmarks/gan_dcgan_vs_examples.py --examples-main ~/examples/dcgan/main.py --data-dir ../shared/data \
        --steps 20 --warmup 3 --repeats 1                      # CPU: a few steps (64x64 DCGAN steps are slow)
    python benchmarks/gan_dcgan_vs_examples.py --examples-main ~/examples/dcgan/main.py --device cuda \
        --steps 300 --fld-epochs 5 --json-out gan_gpu.json       # GPU: under 2 minutes on an H100
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's dlcli, also when it is not installed

LINE = re.compile(r"^\[(\d+)/(\d+)\]\[(\d+)/(\d+)\] Loss_D")


# ------------------------------------------------------------------------------------------- contestants


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """pytorch/examples dcgan/main.py as a child process; images/s from the arrival times of its step lines."""
    need = args.warmup + args.steps + 1  # line k arrives when step k is done: steps warmup..warmup+steps
    with tempfile.TemporaryDirectory(prefix="dcgan-examples-") as out:
        cmd = [sys.executable, "-u", args.examples_main, "--dataset", "mnist", "--dataroot", args.data_dir,
               "--imageSize", str(args.image_size), "--batchSize", str(args.batch_size), "--niter", "1",
               "--outf", out, "--manualSeed", "0", "--workers", str(args.workers)]
        if args.device != "cpu":
            cmd.append("--accel")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        stamps: list[float] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if LINE.match(line):
                    stamps.append(time.perf_counter())
                    if len(stamps) >= need:
                        break
        finally:
            proc.kill()
            err = proc.communicate()[1]
        if len(stamps) < need:
            raise SystemExit(f"main.py stopped after {len(stamps)} steps: {err.strip().splitlines()[-1:]}")
    a, b = stamps[args.warmup], stamps[args.warmup + args.steps]
    return {"images_per_s": args.batch_size * args.steps / (b - a), "ms_per_step": 1000 * (b - a) / args.steps,
            "start_s": stamps[0] - t0, "command": " ".join(cmd)}


def run_dlcli(args: argparse.Namespace, image_size: int, channels_last: bool | None = None) -> dict[str, Any]:
    """``dlcli train dcgan-mnist`` at ``image_size`` in this process, stamped at every step (``channels_last``
    None: the recipe's setting)."""
    import torch

    from dlcli.config import apply_overrides, load_recipe
    from dlcli.runtime import Runtime
    from dlcli.train import NoCallbacks, train

    total = args.warmup + args.steps + 1
    overrides = {"device": args.device, "batch_size": args.batch_size, "epochs": 1,
                 "model.args.image_size": image_size, "task_args.fit": "pad" if image_size == 32 else "resize",
                 "data.args.train_size": total * args.batch_size, "task_args.eval_samples": 100,
                 "task_args.log_every": 10 ** 6, **dict(_parse_set(s) for s in args.set or [])}
    if channels_last is not None:
        overrides["channels_last"] = channels_last
    recipe = apply_overrides(load_recipe(args.recipe), overrides)
    stamps: dict[int, float] = {}
    dev = torch.device("cpu")

    class Clock(NoCallbacks):
        def on_step(self, epoch: int, step: int, metrics: dict[str, Any], samples: int) -> None:
            if step - 1 in (args.warmup, args.warmup + args.steps):  # ends of the timed window
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                stamps[step - 1] = time.perf_counter()

    runtime = Runtime.from_config(recipe)
    dev = runtime.device
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dcgan-dlcli-") as tmp:
        os.chdir(tmp)  # the evaluation at the end looks for runs/ here: none, so it stays short
        try:
            result = train(recipe, runtime, Path(tmp) / "run", data_dir=args.data_dir, callbacks=Clock())
        finally:
            os.chdir(cwd)
    a, b = stamps[args.warmup], stamps[args.warmup + args.steps]
    return {"images_per_s": args.batch_size * args.steps / (b - a), "ms_per_step": 1000 * (b - a) / args.steps,
            "image_size": image_size, "device": result.header["device_name"], "precision": recipe.precision,
            "channels_last": recipe.channels_last, "compile": recipe.compile}


def run_time_to_fld(args: argparse.Namespace) -> dict[str, Any]:
    """``dcgan-mnist`` for ``--fld-epochs`` epochs with the FLD measured after each one."""
    import torch

    from dlcli.config import apply_overrides, load_recipe
    from dlcli.runtime import Runtime
    from dlcli.train import NoCallbacks, train

    tmp = Path(tempfile.mkdtemp(prefix="dcgan-fld-"))
    features = args.features
    if not features:  # a feature network first (not timed)
        lenet = apply_overrides(load_recipe("lenet"), {"device": args.device})
        train(lenet, Runtime.from_config(lenet), tmp / "lenet", data_dir=args.data_dir)
        features = str(tmp / "lenet")
    recipe = apply_overrides(load_recipe(args.recipe), {
        "device": args.device, "epochs": args.fld_epochs, "task_args.fld_every_epoch": True,
        "task_args.features": features, **dict(_parse_set(s) for s in args.set or [])})
    epochs: list[dict[str, Any]] = []
    runtime = Runtime.from_config(recipe)

    class Clock(NoCallbacks):
        def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
            if runtime.device.type == "cuda":
                torch.cuda.synchronize(runtime.device)
            now = time.perf_counter() - t0
            eval_s = sum(e["fld_time_s"] for e in epochs) + metrics["fld_time_s"]
            epochs.append({"epoch": epoch + 1, "wall_s": now, "train_s": now - eval_s, "fld": metrics["fld"],
                           "fld_time_s": metrics["fld_time_s"]})
            print(f"  epoch {epoch + 1}: FLD {metrics['fld']:.2f} at {now - eval_s:.1f}s of training",
                  file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    result = train(recipe, runtime, tmp / "dcgan", data_dir=args.data_dir, callbacks=Clock())
    reached = {}
    for target in args.fld_targets:
        hit = next((e for e in epochs if e["fld"] <= target), None)
        reached[str(target)] = {"train_s": hit["train_s"], "epoch": hit["epoch"]} if hit else None
    return {"epochs": epochs, "reached": reached, "features": features, "final": result.final,
            "device": result.header["device_name"], "run_dir": str(tmp / "dcgan")}


def _parse_set(item: str) -> tuple[str, Any]:
    from dlcli.config import parse_set

    return parse_set(item)


# ------------------------------------------------------------------------------------------------ driver


def _worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.worker == "baseline":
        res = run_baseline(args)
    elif args.worker == "fld":
        res = run_time_to_fld(args)
    else:  # dlcli-SIZE, or dlcli-SIZE-nchw: the default memory format instead of the recipe's channels_last
        parts = args.worker.split("-")
        res = run_dlcli(args, int(parts[1]), False if parts[-1] == "nchw" else None)
    sys.stdout.write(json.dumps(res, default=str) + "\n")


def _spawn(which: str, argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    before = _load()
    out = subprocess.run([sys.executable, __file__, *argv, "--worker", which], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["load_average"] = [before, _load()]
    return res


def _load() -> float | None:
    return round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None


def machine(device: str) -> dict[str, Any]:
    import torch

    from dlcli.runtime import device_name, resolve_device

    return {"device": device_name(resolve_device(device)), "cpu": device_name(torch.device("cpu")),
            "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "date": dt.date.today().isoformat(), "load_average": _load()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples-main", help="path of pytorch/examples dcgan/main.py (never copied here)")
    p.add_argument("--data-dir", default=os.environ.get("DLCLI_DATA", "../shared/data"))
    p.add_argument("--device", default="cpu", help="cpu or cuda (main.py gets --accel)")
    p.add_argument("--recipe", default="dcgan-mnist")
    p.add_argument("--image-size", type=int, default=64, help="the size main.py's networks are built for")
    p.add_argument("--batch-size", type=int, default=64, help="main.py's default")
    p.add_argument("--steps", type=int, default=20, help="timed steps per contestant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--workers", type=int, default=2, help="main.py's DataLoader workers (its default: 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for each contestant")
    p.add_argument("--omp-wait-policy", default="PASSIVE", choices=("PASSIVE", "ACTIVE", "inherit"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--also-32", action="store_true", help="also time dlcli at the recipe's own 32x32")
    p.add_argument("--memory-format-ab", action="store_true",
                   help="also time dlcli without the recipe's channels_last (contestants dlcli-SIZE-nchw)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override dlcli's recipe (repeatable)")
    p.add_argument("--fld-epochs", type=int, default=0, help="also train the recipe this many epochs for the "
                   "time to a Fréchet LeNet distance (0: skip)")
    p.add_argument("--fld-targets", type=float, nargs="+", default=[10.0, 5.0, 2.0])
    p.add_argument("--features", help="classify run for the FLD (default: train lenet first)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--json-out", help="write every result as one JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args)
        return
    argv = [a for a in sys.argv[1:]]
    info = machine(args.device)
    out: dict[str, Any] = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "worker"}}
    if not args.skip_throughput:
        if not args.examples_main or not Path(args.examples_main).is_file():
            raise SystemExit("--examples-main PATH: pytorch/examples' dcgan/main.py is needed (git clone "
                             "https://github.com/pytorch/examples); or pass --skip-throughput")
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], f"dlcli-{args.image_size}": []}
        if args.also_32:
            runs["dlcli-32"] = []
        if args.memory_format_ab:
            runs[f"dlcli-{args.image_size}-nchw"] = []
            if args.also_32:
                runs["dlcli-32-nchw"] = []
        for i in range(args.repeats):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for which in order:
                runs[which].append(_spawn(which, argv, args))
                r = runs[which][-1]
                print(f"[{i + 1}/{args.repeats}] {which}: {r['images_per_s']:.1f} images/s "
                      f"({r['ms_per_step']:.1f} ms/step; load {r['load_average']})", file=sys.stderr, flush=True)
        med = {k: statistics.median(r["images_per_s"] for r in v) for k, v in runs.items()}
        ratio = med[f"dlcli-{args.image_size}"] / med["baseline"]
        out["throughput"] = {"runs": runs, "median_images_per_s": med, "ratio": ratio}
        print(f"\n{info['device']} (torch {info['torch']}, {info['date']}), {args.image_size}x{args.image_size}, "
              f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, {args.threads} thread(s), "
              f"{args.repeats} repeat(s), medians:")
        for k, v in med.items():
            print(f"  {k:12s} {v:9.1f} images/s")
        print(f"  ratio dlcli / pytorch/examples at {args.image_size}x{args.image_size}: {ratio:.2f} (target >= 3)")
    if args.fld_epochs:
        out["time_to_fld"] = _spawn("fld", argv, args)
        for target, hit in out["time_to_fld"]["reached"].items():
            print(f"  FLD <= {target}: " + (f"{hit['train_s']:.1f} s of training (epoch {hit['epoch']})" if hit
                                             else "not reached"))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
