"""Universal perturbation: time to reach the target fooling rate, dlcli against the Adversarial Robustness Toolbox.

Same LeNet checkpoint, same building images (the validation split), same ξ, norm, δ and pass limit, the same
inner DeepFool (overshoot 0.02, at most 10 iterations, 10 classes). ART runs until its building-set fooling
rate reaches 1 − δ or the pass limit; dlcli then runs until it reaches the rate ART reached (the same
fooling rate), and once more until 1 − δ. Each round runs all three, one after the other; the table shows the
medians, and the fooling rate of each perturbation on held-out test images next to random noise of the same
norm (v's magnitudes shuffled over the pixels, random signs).

    pip install adversarial-robustness-toolbox     # a benchmark extra, not a dlcli dependency
    python benchmarks/uap_vs_art.py [RUN_DIR] --build-images 500 --xi 0.3 --repeats 3 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlcli.attacks import fooling_rate, random_like, universal_perturbation  # noqa: E402
from dlcli.runs import latest_run, load_classifier, load_split  # noqa: E402
from dlcli.runtime import device_name, resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="run folder (default: the newest runs/lenet-*)")
    ap.add_argument("--build-images", type=int, default=500)
    ap.add_argument("--eval-images", type=int, default=10000)
    ap.add_argument("--xi", type=float, default=0.3, help="ℓ∞ radius, pixels in [0, 1]")
    ap.add_argument("--delta", type=float, default=0.2)
    ap.add_argument("--max-passes", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    try:
        from art.attacks.evasion import UniversalPerturbation
        from art.estimators.classification import PyTorchClassifier
        import art
    except ImportError:
        sys.exit("ART is not installed: pip install adversarial-robustness-toolbox (a benchmark extra)")

    device = resolve_device(args.device)
    run = args.run or str(latest_run("lenet"))
    clf = load_classifier(run, device)
    model = clf.model
    xb, _ = load_split(clf.recipe, "val", args.data_dir)
    xe, _ = load_split(clf.recipe, "test", args.data_dir)
    xb, xe = xb[: args.build_images], xe[: args.eval_images]

    art_clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(clf.input_shape),
                                nb_classes=len(clf.class_names), clip_values=(0.0, 1.0),
                                device_type="gpu" if device.type == "cuda" else "cpu")
    xb_np = xb.numpy().astype(np.float32)

    def run_dlcli(seed: int, target: float) -> tuple[torch.Tensor, float]:
        res = universal_perturbation(model, xb, xi=args.xi, norm="inf", delta=min(1 - target + 1e-9, 0.999),
                                     max_passes=args.max_passes, seed=seed)
        return res.v, res.build_fooling_rate

    def run_art(seed: int) -> tuple[torch.Tensor, float]:
        random.seed(seed)  # ART shuffles with Python's random
        up = UniversalPerturbation(art_clf, attacker="deepfool",
                                   attacker_params={"max_iter": 10, "epsilon": 0.02, "nb_grads": 10, "verbose": False},
                                   delta=args.delta, max_iter=args.max_passes, eps=args.xi, norm=np.inf, verbose=False)
        up.generate(xb_np)
        return torch.from_numpy(up.noise[0]).float(), float(up.fooling_rate)

    def timed(fn, *a):
        t0 = time.perf_counter()
        v, rate = fn(*a)
        return time.perf_counter() - t0, v, rate

    # Per round: ART first (it stops at 1 − δ or after the pass limit), then dlcli with ART's reached rate as
    # its target ("the same fooling rate"), then dlcli with the paper's target 1 − δ.
    rows: dict[str, list[tuple[float, torch.Tensor, float, float]]] = {
        "ART UniversalPerturbation": [], "dlcli, to ART's rate": [], "dlcli, to 1 − δ": []}
    for r in range(args.repeats):
        t, v, rate = timed(run_art, r)
        rows["ART UniversalPerturbation"].append((t, v, rate, 1 - args.delta))
        art_rate = min(rate, 1 - args.delta)
        for name, target in (("dlcli, to ART's rate", art_rate), ("dlcli, to 1 − δ", 1 - args.delta)):
            t2, v2, rate2 = timed(run_dlcli, r, target)
            rows[name].append((t2, v2, rate2, target))
        print(f"round {r + 1}/{args.repeats}: " + "; ".join(f"{k} {rows[k][-1][0]:.1f} s, fooling rate "
              f"{rows[k][-1][2]:.1%}" for k in rows), file=sys.stderr)

    print(f"\nUniversal perturbation ℓ∞ ξ {args.xi} on {clf.recipe.name} ({run}): {len(xb)} building images (val), "
          f"1 − δ = {1 - args.delta:.0%}, at most {args.max_passes} passes, inner DeepFool: overshoot 0.02, "
          f"10 iterations, 10 classes; held-out: {len(xe)} test images")
    print(f"device: {device} ({device_name(device)}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"ART {art.__version__}, {date.today().isoformat()}, median of {args.repeats} rounds\n")
    print("| method | target (building set) | median s | reached (per round) | held-out fooling rate (round 1) | "
          "random noise, same norm | speed-up vs ART |")  # held-out columns: round 1's v
    print("|---|---|---|---|---|---|---|")
    art_s = statistics.median(t for t, *_ in rows["ART UniversalPerturbation"])
    for name, runs in rows.items():
        s = statistics.median(t for t, *_ in runs)
        v = runs[0][1]
        held = fooling_rate(model, xe, v)
        noise = fooling_rate(model, xe, random_like(v, "inf", torch.Generator().manual_seed(1)))
        targets = ", ".join(f"{tg:.1%}" for *_, tg in runs)
        reached = ", ".join(f"{rate:.1%}" for _, _, rate, _ in runs)
        # a speed-up only counts where dlcli reached its target in every round
        met = name.startswith("ART") or all(rate >= tg - 1e-9 for _, _, rate, tg in runs)
        speedup = f"{art_s / s:.1f}x" if met else "- (target not reached)"
        print(f"| {name} | {targets} | {s:.1f} | {reached} | {held:.1%} | {noise:.1%} | {speedup} |")


if __name__ == "__main__":
    main()
