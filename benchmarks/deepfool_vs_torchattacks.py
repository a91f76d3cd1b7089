"""DeepFool speed and ρ: dlcli's batched attack against torchattacks' DeepFool, side by side in one run.

Same LeNet checkpoint, same MNIST test images, same overshoot and iteration limit. Each round times dlcli
(both clipping modes) and torchattacks one after the other, so that a busy machine slows all of them alike;
the table shows the median of the rounds.

torchattacks clips every iterate to [0, 1], so dlcli's ``--clip step`` is the like-for-like row; ``final``
(the paper's iteration, clipped once at the end) is shown beside it. ρ is the mean of ‖x_adv − x‖₂ / ‖x‖₂
over the images the model classifies correctly (both libraries leave the others alone).

    pip install torchattacks          # a benchmark extra, not a dlcli dependency
    python benchmarks/deepfool_vs_torchattacks.py [RUN_DIR] --n 1000 --repeats 3 --threads 1 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlcli.attacks import deepfool  # noqa: E402
from dlcli.runs import latest_run, load_classifier, load_split  # noqa: E402
from dlcli.runtime import Runtime, device_name, resolve_device  # noqa: E402


def per_image(model: torch.nn.Module, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖x_adv − x‖₂ / ‖x‖₂, fooled) per correctly classified image, for adversarial images ``adv``."""
    with torch.no_grad():
        clean = model(x).argmax(1)
        pred = model(adv).argmax(1)
    ok = clean == y
    rho = (adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    return rho[ok].cpu(), (pred != y)[ok].cpu()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="run folder (default: the newest runs/lenet-*)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--overshoot", type=float, default=0.02)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=256, help="dlcli: images attacked at once")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    try:
        import torchattacks
    except ImportError:
        sys.exit("torchattacks is not installed: pip install torchattacks (a benchmark extra)")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    run = args.run or str(latest_run("lenet"))
    clf = load_classifier(run, device)
    model = clf.model
    x, y = load_split(clf.recipe, "test", args.data_dir)
    x, y = x[: args.n].to(device), y[: args.n].to(device)

    def run_dlcli(clip: str) -> torch.Tensor:
        res = deepfool(model, x, y, overshoot=args.overshoot, max_iter=args.max_iter, clip=clip,
                       batch_size=args.batch_size)
        return res.adversarial.to(device)

    ta = torchattacks.DeepFool(model, steps=args.max_iter, overshoot=args.overshoot)

    def run_torchattacks() -> torch.Tensor:
        return ta(x, y)

    methods = {"dlcli (clip every step)": lambda: run_dlcli("step"),
               "dlcli (clip at the end, the paper's iteration)": lambda: run_dlcli("final"),
               "torchattacks DeepFool": run_torchattacks}
    times: dict[str, list[float]] = {k: [] for k in methods}
    results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    runtime = Runtime(device=device)
    run_dlcli("step")  # warm-up (allocator, kernels)
    for r in range(args.repeats):
        for name, fn in methods.items():
            runtime.synchronize()
            t0 = time.perf_counter()
            adv = fn()
            runtime.synchronize()
            times[name].append(time.perf_counter() - t0)
            results[name] = per_image(model, x, adv, y)
            print(f"round {r + 1}/{args.repeats}: {name}: {times[name][-1]:.2f} s", file=sys.stderr)

    ta_name = "torchattacks DeepFool"
    ta_s = statistics.median(times[ta_name])
    ta_rho, ta_fooled = results[ta_name]
    print(f"\nDeepFool ℓ2 on {clf.recipe.name} ({run}), {args.n} MNIST test images, overshoot {args.overshoot}, "
          f"max {args.max_iter} iterations")
    print(f"device: {device} ({device_name(device)}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"torchattacks {torchattacks.__version__}, {date.today().isoformat()}, median of {args.repeats} rounds")
    print("ρ: mean ‖x_adv − x‖₂/‖x‖₂ over the correctly classified images; ρ (both fooled): over the images that "
          "this method and torchattacks both fooled\n")
    print("| method | median s | images/s | fooling rate | ρ_adv | ρ (both fooled) | ρ vs torchattacks (both fooled) "
          "| speed-up vs torchattacks |")
    print("|---|---|---|---|---|---|---|---|")
    for name in methods:
        s = statistics.median(times[name])
        rho, fooled = results[name]
        both = fooled & ta_fooled
        common, ta_common = float(rho[both].mean()), float(ta_rho[both].mean())
        print(f"| {name} | {s:.2f} | {args.n / s:,.1f} | {float(fooled.double().mean()):.1%} | "
              f"{float(rho.mean()):.4f} | {common:.4f} | {(common - ta_common) / ta_common:+.1%} | {ta_s / s:.1f}x |")


if __name__ == "__main__":
    main()
