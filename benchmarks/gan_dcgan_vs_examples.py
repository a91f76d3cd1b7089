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
timed window) and stopping right after the window (no end-of-epoch checkpoint or final measures: they are
not training speed, and skipping them keeps a contestant's process short). Images/s = batch x timed steps
/ time between the first and last timed step; warm-up steps (untimed) first.

Variants: dlcli runs once per ``--variant NAME=KEY=VALUE[,KEY=VALUE...]`` (repeatable; recipe overrides as
``--set`` takes them, applied after ``--set``), e.g. ``--variant fp32=precision=fp32`` or ``--variant
graphs=compile=reduce-overhead``; without any, two: ``recipe`` (the recipe as it stands: on a GPU bf16
autocast, channels_last, fused Adam and the whole step as one CUDA graph) and ``fp32`` (``precision=fp32``,
main.py's precision; cuDNN's TF32 off, as dlcli's fp32 means, where main.py keeps torch's default TF32
convolutions). ``--variant eager=task_args.cuda_graph=false`` times the step without the CUDA graph.
``--also-32`` adds ``32px`` (the recipe at its own 32x32, MNIST padded by 2), ``--memory-format-ab`` adds
``nchw`` (``channels_last=false``). Every contestant
(main.py and each variant) runs ``--repeats`` times in its own process, main.py first and the variants after
it, the order reversed every other repeat; the table quotes medians, each variant's ratio to main.py, and
each process's start-up (process start to the first step done: imports, data, model, cuDNN's first
choices, compilation) and wall time. A variant that fails is reported with its error and the others go on.

Time to FLD (``--fld-epochs N``): ``dcgan-mnist`` as the recipe stands, with the Fréchet LeNet distance of
10,000 samples to the validation images after every epoch (the feature network: ``--features RUN``, else a
``lenet`` trained first by this script); the table gives the training wall time (evaluation time subtracted)
at which the distance first falls below each of ``--fld-targets``.

Usage:
    python benchmarks/gan_dcgan_vs_examples.py --examples-main ~/examples/dcgan/main.py --data-dir ../shared/data \
        --steps 20 --warmup 3 --repeats 1                      # CPU: a few steps (64x64 DCGAN steps are slow)
    python benchmarks/gan_dcgan_vs_examples.py --examples-main ~/examples/dcgan/main.py --device cuda \
        --steps 200 --warmup 20 --variant recipe= --variant eager=task_args.cuda_graph=false \
        --variant fp32=precision=fp32 --json-out gan_gpu.json     # GPU: main.py and three variants, ~50 s
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # this process's start, for the contestants' start-up times

import argparse
import collections
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
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
        # a session of its own: the DataLoader workers go down with main.py (orphans would hold the pipes open
        # until they notice, seconds later)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                start_new_session=True)
        stamps: list[float] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if LINE.match(line):
                    stamps.append(time.perf_counter())
                    if len(stamps) >= need:
                        break
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            err = proc.communicate()[1]
        if len(stamps) < need:
            raise SystemExit(f"main.py stopped after {len(stamps)} steps: {err.strip().splitlines()[-1:]}")
    a, b = stamps[args.warmup], stamps[args.warmup + args.steps]
    return {"images_per_s": args.batch_size * args.steps / (b - a), "ms_per_step": 1000 * (b - a) / args.steps,
            "first_step_s": stamps[0] - t0, "command": " ".join(cmd)}


class _WindowDone(Exception):
    """Raised from the clock once the timed window is over: the run stops there."""


def run_dlcli(args: argparse.Namespace, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``dlcli train dcgan-mnist`` at ``--image-size`` with a variant's ``overrides``, in this process, stamped
    at every step and stopped after the timed window."""
    import torch

    from dlcli.config import apply_overrides, load_recipe
    from dlcli.runtime import Runtime
    from dlcli.tasks.optim import resolve_fused
    from dlcli.train import NoCallbacks, train

    total = args.warmup + args.steps + 1
    base = {"device": args.device, "batch_size": args.batch_size, "epochs": 1,
            "model.args.image_size": args.image_size, "task_args.fit": "pad" if args.image_size == 32 else "resize",
            "data.args.train_size": total * args.batch_size, "task_args.eval_samples": 100,
            "task_args.log_every": 10 ** 6, **dict(_parse_set(s) for s in args.set or [])}
    recipe = apply_overrides(load_recipe(args.recipe), {**base, **overrides})
    stamps: dict[int, float] = {}
    header: dict[str, Any] = {}
    dev = torch.device("cpu")

    class Clock(NoCallbacks):
        def on_start(self, head: dict[str, Any], total_steps: int, done_steps: int) -> None:
            header.update(head)

        def on_step(self, epoch: int, step: int, metrics: dict[str, Any], samples: int) -> None:
            if step == 1 or step - 1 in (args.warmup, args.warmup + args.steps):  # ends of the timed window
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                stamps[step - 1] = time.perf_counter()
            if step - 1 == args.warmup + args.steps:
                raise _WindowDone

    runtime = Runtime.from_config(recipe)
    dev = runtime.device
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dcgan-dlcli-") as tmp:
        os.chdir(tmp)
        try:
            train(recipe, runtime, Path(tmp) / "run", data_dir=args.data_dir, callbacks=Clock())
        except _WindowDone:
            pass
        finally:
            os.chdir(cwd)
    a, b = stamps[args.warmup], stamps[args.warmup + args.steps]
    fused = resolve_fused(recipe.optim.fused, [torch.nn.Parameter(torch.empty(0, device=dev))]) is True
    return {"images_per_s": args.batch_size * args.steps / (b - a), "ms_per_step": 1000 * (b - a) / args.steps,
            "first_step_s": stamps[0] - _T0, "variant": name, "overrides": overrides,
            "image_size": recipe.model.args.get("image_size"), "device": header.get("device_name"),
            "precision": header.get("precision"), "channels_last": header.get("channels_last"),
            "compile": header.get("compile"), "cuda_graph": header.get("cuda_graph"), "fused_optimizer": fused,
            "notes": header.get("notes")}


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


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME=KEY=VALUE[,KEY=VALUE...]`` -> (NAME, overrides); ``NAME=`` is the recipe unchanged. A comma
    inside brackets belongs to its value (``optim.betas=[0.5,0.999]``)."""
    name, sep, rest = spec.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.@+-]+", name):
        raise SystemExit(f"--variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE...] (NAME of letters, digits, "
                         "_ . @ + -), e.g. --variant fp32=precision=fp32")
    items: list[str] = []
    depth = 0
    for part in rest.split(","):
        if items and depth > 0:
            items[-1] += "," + part
        else:
            items.append(part)
        depth += part.count("[") - part.count("]")
    return name, dict(_parse_set(item) for item in items if item.strip())


def variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The dlcli contestants by name: ``--variant``s, else the recipe and fp32; then the shorthands."""
    out: dict[str, dict[str, Any]] = {}
    for spec in args.variant or ["recipe=", "fp32=precision=fp32"]:
        name, overrides = parse_variant(spec)
        if name in out or name == "main.py":
            raise SystemExit(f"--variant {spec!r}: the name {name!r} is taken")
        out[name] = overrides
    if args.also_32:
        out["32px"] = {"model.args.image_size": 32, "task_args.fit": "pad"}
    if args.memory_format_ab:
        out["nchw"] = {"channels_last": False}
    return out


# ------------------------------------------------------------------------------------------------ driver


def _worker(args: argparse.Namespace) -> None:
    if args.worker != "baseline":  # main.py runs in a process of its own: no torch here
        import torch

        torch.set_num_threads(args.threads)
    if args.worker == "baseline":
        res = run_baseline(args)
    elif args.worker == "fld":
        res = run_time_to_fld(args)
    else:  # dlcli:NAME, a variant
        name = args.worker.split(":", 1)[1]
        res = run_dlcli(args, name, variants(args)[name])
    sys.stdout.write(json.dumps(res, default=str) + "\n")


def _spawn(which: str, argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    before, t0 = _load(), time.perf_counter()
    last = collections.deque(["no output"], maxlen=1)
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen([sys.executable, __file__, *argv, "--worker", which], env=env, stdout=stdout,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:  # passed on as it comes; the last line names a failure
            sys.stderr.write(line)
            if line.strip():
                last.append(line.strip())
        rc = proc.wait()
        stdout.seek(0)
        lines = stdout.read().strip().splitlines()
    wall = time.perf_counter() - t0
    if rc != 0 or not lines:
        return {"error": f"exit {rc}: {last[0]}", "wall_s": wall, "load_average": [before, _load()]}
    res = json.loads(lines[-1])
    res.update(wall_s=wall, load_average=[before, _load()])
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
    p.add_argument("--variant", action="append", metavar="NAME=KEY=VALUE[,KEY=VALUE...]",
                   help="a dlcli configuration to time (repeatable; NAME= for the recipe as it stands); default: "
                   "recipe= and fp32=precision=fp32")
    p.add_argument("--also-32", action="store_true", help="also time the variant 32px: the recipe at its own 32x32")
    p.add_argument("--memory-format-ab", action="store_true",
                   help="also time the variant nchw: the recipe without its channels_last")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override dlcli's recipe in every variant (repeatable)")
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
        contestants = ["baseline", *(f"dlcli:{name}" for name in variants(args))]
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contestants}
        for i in range(args.repeats):
            for which in contestants if i % 2 == 0 else list(reversed(contestants)):
                r = _spawn(which, argv, args)
                runs[which].append(r)
                if "error" in r:
                    print(f"[{i + 1}/{args.repeats}] {which}: FAILED ({r['error']})", file=sys.stderr, flush=True)
                    continue
                start = r["first_step_s"]
                print(f"[{i + 1}/{args.repeats}] {which}: {r['images_per_s']:.1f} images/s "
                      f"({r['ms_per_step']:.2f} ms/step; start-up {start:.1f} s, process {r['wall_s']:.1f} s; "
                      f"load {r['load_average']})", file=sys.stderr, flush=True)
        med = {k: statistics.median(r["images_per_s"] for r in v if "error" not in r) if
               any("error" not in r for r in v) else None for k, v in runs.items()}
        base = med["baseline"]
        ratios = {k: (v / base if v is not None and base else None) for k, v in med.items() if k != "baseline"}
        out["throughput"] = {"runs": runs, "median_images_per_s": med, "ratio": ratios}
        print(f"\n{info['device']} (torch {info['torch']}, {info['date']}), {args.image_size}x{args.image_size}, "
              f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, {args.threads} thread(s), "
              f"{args.repeats} repeat(s), medians; ratio = images/s over main.py's (target >= 3):")
        print(f"  {'contestant':22s} {'images/s':>9s} {'ms/step':>8s} {'ratio':>6s}  settings")
        for k, v in med.items():
            done = [r for r in runs[k] if "error" not in r]
            if v is None:
                print(f"  {k.removeprefix('dlcli:'):22s} {'failed':>9s}  {runs[k][-1]['error']}")
                continue
            ms = statistics.median(r["ms_per_step"] for r in done)
            if k == "baseline":
                print(f"  {'main.py':22s} {v:9.1f} {ms:8.2f} {'1.00':>6s}  pytorch/examples, fp32 (torch's "
                      "defaults: TF32 convolutions on CUDA)")
                continue
            r = done[-1]
            ratio = f"{ratios[k]:6.2f}" if ratios[k] is not None else f"{'-':>6s}"
            print(f"  {k.removeprefix('dlcli:'):22s} {v:9.1f} {ms:8.2f} {ratio}  {r['precision']}, channels_last "
                  f"{r['channels_last']}, compile {r['compile']}, CUDA graph {r['cuda_graph']}, fused Adam "
                  f"{r['fused_optimizer']}, {r['image_size']} px")
    if args.fld_epochs:
        out["time_to_fld"] = _spawn("fld", argv, args)
        for target, hit in out["time_to_fld"]["reached"].items():
            print(f"  FLD <= {target}: " + (f"{hit['train_s']:.1f} s of training (epoch {hit['epoch']})" if hit
                                             else "not reached"))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
