"""How much does ``dlcli bench`` cost? It against a bare hand-written timing loop and timm's benchmark.py.

For each model (resnet18 and alexnet by default), mode (infer, train) and repeat, three measurements run
side by side, each in a fresh process, in rotating order so that a change in machine load hits every tool
alike:

* bare:  this file with ``--bare``: torchvision's model, one random batch, ``perf_counter`` around the
         timed loop; the least code that can time a step (inference_mode for infer; zero_grad, forward,
         cross-entropy, backward, SGD(momentum 0.9) step for train).
* dlcli: ``python -m dlcli bench MODEL --json`` with the same batch, precision, warm-up and steps.
* timm:  timm's ``benchmark.py`` (``--timm-benchmark PATH`` or $TIMM_BENCHMARK; it is a script in timm's
         GitHub repository, not in the pip package, and timm must be importable), at the same batch and
         input size. timm has no AlexNet, so that row has no timm column.

All three report samples/s = steps * batch / wall time of the timed loop. The table shows the median over
repeats and the ratios dlcli / bare (target >= 0.97) and dlcli / timm (target >= 1.0).

A second table isolates the harness's own cost per step, which the first cannot resolve on a busy machine:
the tiny ``mlp`` model (a step takes microseconds) timed in one process by ``dlcli.bench.run_benchmark`` and
by a bare loop, alternately, many steps each; the difference of the per-step medians is what dlcli adds to
every step of any model.

    python benchmarks/bench_overhead.py                       # resnet18 + alexnet, CPU, fp32, batch 8
    python benchmarks/bench_overhead.py --repeats 5 --steps 20 --timm-benchmark /tmp/timm_benchmark.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository, so that `-m dlcli` imports this checkout
TIMM_MODELS = {"resnet18", "resnet50"}  # timm has the same ResNets; it has no AlexNet


def bare_loop(model_name: str, mode: str, batch: int, warmup: int, steps: int) -> float:
    """The reference: the least code that times ``steps`` steps after ``warmup``; returns samples/s."""
    import torch
    import torch.nn.functional as F
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None)
    x = torch.randn(batch, 3, 224, 224)  # (B, C, H, W)
    if mode == "infer":
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            t0 = time.perf_counter()
            for _ in range(steps):
                model(x)
            elapsed = time.perf_counter() - t0
    else:
        model.train()
        y = torch.randint(0, 1000, (batch,))
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        for _ in range(warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - t0
    return steps * batch / elapsed


def harness_cost(steps: int, repeats: int) -> list[tuple[str, float, float]]:
    """(mode, bare us/step, dlcli us/step): medians over ``repeats`` alternating runs in this process."""
    import torch
    import torch.nn.functional as F

    from dlcli.bench import BenchSpec, run_benchmark
    from dlcli.registry import build_model

    batch = 8
    rows = []
    for mode in ("infer", "train"):
        torch.manual_seed(0)
        model = build_model("mlp")  # 2 -> 2 -> 1, the same network run_benchmark builds
        x, y = torch.randn(batch, 2), torch.randn(batch, 1)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def bare_us() -> float:
            if mode == "infer":
                model.eval()
                with torch.inference_mode():
                    for _ in range(100):
                        model(x)
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        model(x)
                    return (time.perf_counter() - t0) / steps * 1e6
            model.train()
            for _ in range(100 + steps):
                if _ == 100:
                    t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                F.mse_loss(model(x), y).backward()
                opt.step()
            return (time.perf_counter() - t0) / steps * 1e6

        def dlcli_us() -> float:
            spec = BenchSpec("mlp", modes=(mode,), device="cpu", batch_size=batch, warmup=100, steps=steps)
            (r,) = run_benchmark(spec)
            return batch / r.samples_per_s * 1e6

        bare, dl = [], []
        for _ in range(repeats):
            bare.append(bare_us())
            dl.append(dlcli_us())
        rows.append((mode, statistics.median(bare), statistics.median(dl)))
    return rows


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def measure(tool: str, model: str, mode: str, args: argparse.Namespace, env: dict[str, str]) -> float:
    """samples/s of one tool in a fresh process; raises RuntimeError with the tool's last line on failure."""
    if tool == "bare":
        cmd = [sys.executable, __file__, "--bare", model, "--bare-mode", mode,
               "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    elif tool == "dlcli":
        cmd = [sys.executable, "-m", "dlcli", "bench", model, "--device", "cpu", "--mode", mode, "--precision",
               "fp32", "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--steps",
               str(args.steps), "--json"]
    else:
        cmd = [sys.executable, args.timm_benchmark, "--model", model, "--device", "cpu",
               "--bench", "inference" if mode == "infer" else "train", "--batch-size", str(args.batch_size),
               "--num-warm-iter", str(args.warmup), "--num-bench-iter", str(args.steps),
               "--input-size", "3", "224", "224", "--precision", "float32"]
    proc = _run(cmd, env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{tool} {model} {mode} failed: {tail}")
    if tool == "bare":
        return float(json.loads(proc.stdout)["samples_per_s"])
    if tool == "dlcli":
        return float(json.loads(proc.stdout)[0]["samples_per_s"])
    result = json.loads(proc.stdout.split("--result", 1)[1])  # timm prints "--result" then a JSON object
    prefix = "infer" if mode == "infer" else "train"
    return float(result[f"{prefix}_samples_per_sec"])


def _timm_status(path: str | None, env: dict[str, str]) -> tuple[str | None, str]:
    if not path:
        return None, "timm column skipped: pass --timm-benchmark PATH (timm's benchmark.py) or set TIMM_BENCHMARK"
    if not Path(path).is_file():
        return None, f"timm column skipped: {path} does not exist"
    probe = _run([sys.executable, "-c", "import timm; print(timm.__version__)"], env)
    if probe.returncode != 0:
        return None, "timm column skipped: timm is not importable (pip install timm, the benchmark extra)"
    return path, f"timm {probe.stdout.strip()}, benchmark script {path}"


def machine() -> str:
    import torch

    from dlcli.runtime import device_name

    cpu = device_name(torch.device("cpu"))

    threads = os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {threads} torch threads, torch "
            f"{torch.__version__}, Python {platform.python_version()}, {platform.system()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,alexnet")
    p.add_argument("--modes", default="infer,train")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every measured process (default: torch's own)")
    p.add_argument("--timm-benchmark", default=os.environ.get("TIMM_BENCHMARK"))
    p.add_argument("--harness-steps", type=int, default=5000, help="steps per run of the per-step cost table (0: skip)")
    p.add_argument("--json", dest="json_file", help="also write every measurement to this JSON file")
    p.add_argument("--bare", help=argparse.SUPPRESS)  # internal: run the bare loop for this model
    p.add_argument("--bare-mode", default="infer", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.bare:
        sps = bare_loop(args.bare, args.bare_mode, args.batch_size, args.warmup, args.steps)
        print(json.dumps({"samples_per_s": sps}))
        return

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)  # torch, and so all three tools, start with this many threads
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    timm_path, timm_note = _timm_status(args.timm_benchmark, env)
    if timm_path and args.steps < 5:
        timm_path, timm_note = None, "timm column skipped: its benchmark.py needs --steps >= 5 (it logs every steps/5)"
    args.timm_benchmark = timm_path
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"machine: {machine()}", flush=True)
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    print(timm_note, flush=True)
    print(f"batch {args.batch_size}, fp32, warm-up {args.warmup}, {args.steps} timed steps, {args.repeats} "
          "repeats, each measurement in a fresh process, tools in rotating order", flush=True)

    samples: dict[tuple[str, str, str], list[float]] = {}
    errors: list[str] = []
    started = time.time()
    for rep in range(args.repeats):
        for model in models:
            for mode in modes:
                tools = ["bare", "dlcli"] + (["timm"] if timm_path and model in TIMM_MODELS else [])
                shift = rep % len(tools)
                for tool in tools[shift:] + tools[:shift]:
                    try:
                        sps = measure(tool, model, mode, args, env)
                    except (RuntimeError, ValueError, KeyError, IndexError) as e:
                        errors.append(str(e))
                        continue
                    samples.setdefault((model, mode, tool), []).append(sps)
                    print(f"  repeat {rep + 1}: {model:9s} {mode:5s} {tool:5s} {sps:9.2f} samples/s", flush=True)

    print(f"\nmedians over {args.repeats} repeats ({time.time() - started:.0f} s in all):\n")
    print("| model | mode | batch | bare loop (samples/s) | dlcli bench (samples/s) "
          "| timm benchmark.py (samples/s) | dlcli / bare | dlcli / timm |")
    print("|---|---|---|---|---|---|---|---|")
    for model in models:
        for mode in modes:
            med = {t: statistics.median(v) for (m, md, t), v in samples.items() if (m, md) == (model, mode)}
            bare, dl, tm = med.get("bare"), med.get("dlcli"), med.get("timm")

            def cell(v: float | None) -> str:
                return "-" if v is None else f"{v:.2f}"

            r_bare = f"{dl / bare:.3f}" if dl and bare else "-"
            no_timm = "n/a (timm has no AlexNet)" if model not in TIMM_MODELS else "-"
            r_timm = f"{dl / tm:.3f}" if dl and tm else no_timm
            print(f"| {model} | {mode} | {args.batch_size} | {cell(bare)} | {cell(dl)} | {cell(tm)} "
                  f"| {r_bare} | {r_timm} |")
    harness = harness_cost(args.harness_steps, args.repeats) if args.harness_steps > 0 else []
    if harness:
        print(f"\nper-step cost of the harness (mlp, batch 8, {args.harness_steps} steps, median of {args.repeats} "
              "alternating runs in one process):\n")
        print("| mode | bare loop (us/step) | dlcli bench (us/step) | dlcli adds (us/step) |")
        print("|---|---|---|---|")
        for mode, b, d in harness:
            print(f"| {mode} | {b:.1f} | {d:.1f} | {d - b:+.1f} |")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if args.json_file:
        payload = {"machine": machine(), "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps,
                   "repeats": args.repeats, "timm": timm_note,
                   "samples_per_s": [{"model": m, "mode": md, "tool": t, "values": v}
                                     for (m, md, t), v in samples.items()],
                   "harness_us_per_step": [{"mode": m, "bare": b, "dlcli": d} for m, b, d in harness]}
        Path(args.json_file).write_text(json.dumps(payload, indent=2) + "\n")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
