"""DeepFool speed and ρ: dlcli's three clip modes against torchattacks' DeepFool, on the same images.

Same checkpoint, same test images, same overshoot (0.02) and iteration limit (50). dlcli runs in its three
modes on the first ``--n`` images, ``--repeats`` rounds each (median reported); torchattacks, which attacks
one image at a time and is hundreds of times slower, runs once on the first ``--ta-n`` of those images.

* ``box`` (dlcli's default): every step solved inside [0, 1]; the images written are valid by construction.
* ``none``: the paper's iteration; its ρ is the paper's, and the images written are clamp(x + r̂, 0, 1).
* ``step``: every iterate clamped, as torchattacks does: the like-for-like mode.

Every method is judged on the images it hands out (all valid, in [0, 1]): the fooling rate and
ρ = mean ‖x_adv − x‖₂ / ‖x‖₂ over the correctly classified images, plus, for the comparison with
torchattacks, both on the ``--ta-n`` images alone and over the images both it and torchattacks fooled.
Speed-ups compare images/s.

    pip install torchattacks          # a benchmark extra, not a dlcli dependency
    python benchmarks/deepfool_vs_torchattacks.py RUN_DIR --n 10000 --ta-n 1000 --repeats 3 --threads 1 \\
        --data-dir ../shared/data
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


def per_image(model: torch.nn.Module, x: torch.Tensor, adv: torch.Tensor,
              y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖x_adv − x‖₂ / ‖x‖₂, fooled) per correctly classified image, for adversarial images ``adv``."""
    with torch.no_grad():
        clean = torch.cat([model(c).argmax(1) for c in x.split(1024)])
        pred = torch.cat([model(c).argmax(1) for c in adv.split(1024)])
    ok = clean == y
    rho = (adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    return rho[ok].cpu(), (pred != y)[ok].cpu()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="run folder (default: the newest runs/lenet-*)")
    ap.add_argument("--n", type=int, default=1000, help="images dlcli attacks")
    ap.add_argument("--ta-n", type=int, default=None, help="images torchattacks attacks (default: --n)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--overshoot", type=float, default=0.02)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=256, help="dlcli: images attacked at once")
    ap.add_argument("--grad", default="auto", help="dlcli's gradient strategy: auto, loop or batched")
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
    n = x.shape[0]
    ta_n = min(args.ta_n or n, n)
    runtime = Runtime(device=device)

    def timed(fn):
        runtime.synchronize()
        t0 = time.perf_counter()
        out = fn()
        runtime.synchronize()
        return out, time.perf_counter() - t0

    modes = {"box": "dlcli `--clip box` (default: every step inside [0, 1], then 1 round of boundary projection)",
             "box:0": "dlcli `--clip box --refine 0` (DeepFool's own iterate, valid)",
             "none": "dlcli `--clip none` (the paper's iteration; written images clamped)",
             "step": "dlcli `--clip step` (every iterate clamped, like torchattacks)"}
    deepfool(model, x[:64], y[:64], clip="box", grad=args.grad)  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {k: [] for k in modes}
    results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    paper_rho: float | None = None
    iters: dict[str, float] = {}
    for r in range(args.repeats):
        for clip in modes:
            mode, _, rounds = clip.partition(":")
            refine = int(rounds) if rounds else None
            res, s = timed(lambda m=mode, rf=refine: deepfool(model, x, y, overshoot=args.overshoot,
                                                              max_iter=args.max_iter, clip=m, grad=args.grad,
                                                              batch_size=args.batch_size, refine=rf))
            times[clip].append(s)
            results[clip] = per_image(model, x, res.adversarial.to(device), y)
            iters[clip] = float(res.iterations[res.attacked].double().mean())
            if clip == "none":
                paper_rho = float(res.rho[res.attacked].double().mean())
            print(f"round {r + 1}/{args.repeats}: {clip}: {s:.2f} s", file=sys.stderr)
    ta = torchattacks.DeepFool(model, steps=args.max_iter, overshoot=args.overshoot)
    adv, ta_s = timed(lambda: ta(x[:ta_n], y[:ta_n]))
    print(f"torchattacks: {ta_s:.1f} s on {ta_n} images", file=sys.stderr)
    ta_rho, ta_fooled = per_image(model, x[:ta_n], adv, y[:ta_n])
    ta_ips = ta_n / ta_s

    with torch.no_grad():  # the correctly classified among the first ta_n: where the per-image tensors overlap
        ok = torch.cat([model(c).argmax(1) for c in x.split(1024)]) == y
    k = int(ok[:ta_n].sum())
    print(f"\nDeepFool ℓ2 on {clf.recipe.name} ({run}): dlcli on {n} test images ({int(ok.sum())} correctly "
          f"classified), torchattacks on the first {ta_n} ({k}); overshoot {args.overshoot}, at most {args.max_iter} "
          "iterations")
    print(f"device: {device} ({device_name(device)}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"torchattacks {torchattacks.__version__}, {date.today().isoformat()}; dlcli: median of {args.repeats} "
          f"rounds, grad {args.grad}, batch {args.batch_size}; torchattacks: one run")
    print("All images judged as handed out (valid, in [0, 1]); ρ = mean ‖x_adv − x‖₂/‖x‖₂ over the correctly "
          f"classified images. The last three columns use the first {ta_n} images only.\n")
    print("| method | median s | images/s | mean iterations | fooling rate | ρ_adv | ρ_adv, first "
          f"{ta_n} | ρ over images both fooled: this / torchattacks | speed-up (images/s) vs torchattacks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for clip, label in modes.items():
        s = statistics.median(times[clip])
        rho, fooled = results[clip]
        sub_rho, sub_fooled = rho[:k], fooled[:k]
        both = sub_fooled & ta_fooled
        common = f"{float(sub_rho[both].mean()):.4f} / {float(ta_rho[both].mean()):.4f}" if both.any() else "-"
        print(f"| {label} | {s:.2f} | {n / s:,.0f} | {iters[clip]:.2f} | {float(fooled.double().mean()):.1%} | "
              f"{float(rho.mean()):.4f} | {float(sub_rho.mean()):.4f} | {common} | {n / s / ta_ips:,.0f}x |")
    print(f"| torchattacks DeepFool | {ta_s:.1f} ({ta_n} images) | {ta_ips:.2f} | - | "
          f"{float(ta_fooled.double().mean()):.1%} | - | {float(ta_rho.mean()):.4f} | - | 1x |")
    print(f"\nthe paper's protocol (`--clip none`, ρ of x + r̂ before clamping): ρ_adv {paper_rho:.4f}")


if __name__ == "__main__":
    main()
