"""DeepFool images/s on one device: box and paper modes × both gradient strategies, and torchattacks beside.

For a trained classify run (any input size) and a device, each configuration attacks the same first N test
images: ``--clip box`` (the default, valid images) and ``--clip none`` (the paper's iteration), each with
``grad="loop"`` (one backward pass per candidate class) and ``grad="batched"`` (all candidates in one batched
vector-Jacobian product). One untimed warm-up batch per configuration (CUDA context, kernels, allocator;
the attacks switch cuDNN autotuning off, since their batches shrink as images flip), then ``--repeats``
rounds that time every configuration once each, interleaved so that a drifting load slows all of them
alike, device synchronised, median reported. torchattacks' DeepFool runs on the same images and device when
it is installed, on the first ``--ta-n`` (100) images: it attacks one image at a time, hundreds of times
slower, and its images/s do not depend on how many it gets.

The table gives images/s, ms per image, mean iterations, the fooling rate of the images each method hands
out (valid, clamped to [0, 1]) and ρ of those images; ``--json-out FILE`` writes the same as JSON with the
device, torch version and settings. ``grad="auto"`` in dlcli picks per device type from such a measurement
(``dlcli.attacks.deepfool.AUTO_GRAD``).

    python benchmarks/attack_gpu_bench.py RUN_DIR --device cuda --n 10000 --json-out deepfool-gpu.json
    python benchmarks/attack_gpu_bench.py RUN_DIR --device cpu --n 64 --threads 1     # a dry run on the CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlcli.attacks import deepfool  # noqa: E402
from dlcli.attacks.common import frozen_eval  # noqa: E402
from dlcli.runs import load_classifier, load_split  # noqa: E402
from dlcli.runtime import Runtime, device_name, resolve_device  # noqa: E402


def valid_stats(model: torch.nn.Module, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Fooling rate and ρ (ℓ2) of the adversarial images ``adv`` over the correctly classified images."""
    with torch.no_grad(), frozen_eval(model):  # in float32, as the attack decided (TF32 off)
        clean = torch.cat([model(c).argmax(1) for c in x.split(1024)])
        pred = torch.cat([model(c).argmax(1) for c in adv.split(1024)])
    ok = clean == y
    rho = (adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
    valid = bool(((adv >= 0) & (adv <= 1)).all())
    return {"fooling_rate": float((pred != clean)[ok].double().mean()), "rho_adv": float(rho[ok].double().mean()),
            "valid_images": valid}


def measure(fn: Callable[[], Any], runtime: Runtime) -> tuple[Any, float]:
    """(fn(), seconds), the device synchronised before and after."""
    runtime.synchronize()
    t0 = time.perf_counter()
    out = fn()
    runtime.synchronize()
    return out, time.perf_counter() - t0


def split_mode(spec: str) -> tuple[str, int | None]:
    """'box' -> ('box', None: the attack's default rounds), 'box:0' -> ('box', 0)."""
    mode, _, rounds = spec.partition(":")
    return mode, int(rounds) if rounds else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a classify run folder or checkpoint (e.g. runs/lenet-modern-...)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=10000, help="test images attacked (the first N)")
    ap.add_argument("--batch-size", type=int, default=1024, help="dlcli: images attacked at once")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--norm", default="2", choices=["2", "inf"])
    ap.add_argument("--modes", default="box,box:0,none",
                    help="comma-separated clip modes (box, none, step), each optionally with :N refinement rounds "
                         "(box:0 is DeepFool's own iterate; box alone is the default, 1 round)")
    ap.add_argument("--grads", default="loop,batched", help="comma-separated gradient strategies")
    ap.add_argument("--ta-n", type=int, default=100, help="images for torchattacks (0: skip it); it attacks "
                                                         "one image at a time, so its images/s do not depend on N")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json-out", default=None, help="write the results as JSON to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    runtime = Runtime(device=device)
    clf = load_classifier(args.run, device)
    model = clf.model
    x, y = load_split(clf.recipe, "test", args.data_dir)
    x, y = x[: args.n].to(device), y[: args.n].to(device)
    n = x.shape[0]

    configs = [(clip.strip(), grad.strip()) for clip in args.modes.split(",") if clip.strip()
               for grad in args.grads.split(",") if grad.strip()]

    def attack(clip: str, grad: str) -> Any:
        mode, refine = split_mode(clip)
        return deepfool(model, x, y, norm=args.norm, clip=mode, grad=grad, batch_size=args.batch_size, refine=refine)

    # Rounds interleave the configurations, so that a machine whose load drifts slows all of them alike.
    for clip, grad in configs:  # warm-up on one batch: CUDA context, kernels, allocator
        mode, refine = split_mode(clip)
        deepfool(model, x[: args.batch_size], y[: args.batch_size], norm=args.norm, clip=mode, grad=grad,
                 batch_size=args.batch_size, refine=refine)
    times: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    results: dict[tuple[str, str], Any] = {}
    for r in range(args.repeats):
        for clip, grad in configs:
            results[clip, grad], t = measure(lambda c=clip, g=grad: attack(c, g), runtime)
            times[clip, grad].append(t)
            print(f"round {r + 1}/{args.repeats}: --clip {clip} --grad {grad}: {t:.3f} s", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for clip, grad in configs:
        res, s = results[clip, grad], statistics.median(times[clip, grad])
        att = res.attacked
        mode, refine = split_mode(clip)
        row = {"method": f"dlcli --clip {mode} --refine {res.refine} --grad {grad}", "clip": mode, "refine": res.refine,
               "grad": grad, "images": n,
               "median_s": s, "times_s": times[clip, grad], "images_per_s": n / s, "ms_per_image": 1000 * s / n,
               "mean_iterations": float(res.iterations[att].double().mean()),
               **valid_stats(model, x, res.adversarial.to(device), y)}
        if mode == "none":
            row["rho_adv_paper_protocol"] = float(res.rho[att].double().mean())
        rows.append(row)

    ta_version = None
    if args.ta_n > 0:
        try:
            import torchattacks
        except ImportError:
            print("torchattacks not installed: skipped (pip install torchattacks)", file=sys.stderr)
        else:
            ta_version = torchattacks.__version__
            m = min(args.ta_n, n)
            ta_attack = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
            ta_attack(x[: min(m, 8)], y[: min(m, 8)])  # warm-up
            adv, s = measure(lambda: ta_attack(x[:m], y[:m]), runtime)
            times = [s]
            rows.append({"method": "torchattacks DeepFool", "clip": "step", "grad": "per image", "images": m,
                         "median_s": s, "times_s": times, "images_per_s": m / s, "ms_per_image": 1000 * s / m,
                         "mean_iterations": None, **valid_stats(model, x[:m], adv, y[:m])})
            print(f"torchattacks: {s:.3f} s on {m} images", file=sys.stderr)

    header = {"run": str(args.run), "recipe": clf.recipe.name, "model": clf.recipe.model.name,
              "input_shape": list(clf.input_shape), "device": str(device), "device_name": device_name(device),
              "torch": torch.__version__, "torchattacks": ta_version, "threads": torch.get_num_threads(),
              "norm": args.norm, "batch_size": args.batch_size, "repeats": args.repeats, "images": n,
              "date": date.today().isoformat()}
    print(f"\nDeepFool ℓ{'∞' if args.norm == 'inf' else '2'} on {clf.recipe.name} ({args.run}), {n} test images, "
          f"batch {args.batch_size}; {header['device']} ({header['device_name']}), torch {header['torch']}, "
          f"median of {args.repeats} after one warm-up; torchattacks {ta_version or 'not run'}\n")
    print("| method | images | median s | images/s | ms/image | mean iterations | fooling rate (valid images) "
          "| ρ_adv (valid images) | ρ_adv (paper protocol) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        it = "-" if r["mean_iterations"] is None else f"{r['mean_iterations']:.2f}"
        paper = f"{r['rho_adv_paper_protocol']:.4f}" if "rho_adv_paper_protocol" in r else ""
        ips = f"{r['images_per_s']:,.0f}" if r["images_per_s"] >= 100 else f"{r['images_per_s']:.2f}"
        print(f"| {r['method']} | {r['images']} | {r['median_s']:.3f} | {ips} | "
              f"{r['ms_per_image']:.3f} | {it} | {r['fooling_rate']:.1%} | {r['rho_adv']:.4f} | {paper} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**header, "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {args.json_out}", file=sys.stderr)


if __name__ == "__main__":
    main()
