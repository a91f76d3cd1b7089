"""Training curves of one recipe side by side, epoch by epoch: bf16 against fp32 (issue 10), or any runs.

Issue 10 asks to show that bf16 autocast reaches fp32's accuracy for each CIFAR recipe (same seed, same
epochs). This reads the per-epoch test accuracy of two or more runs and prints them in one table, with each
run's difference from the first: the largest gap over the epochs both reached, the mean gap, and the gap at
the last common epoch. Put a repeat of the same configuration beside them (same precision, same seed) and
the table also shows how far two runs differ anyway (cuDNN's kernels are not deterministic).

Each CURVE is LABEL=PATH, where PATH is one of
  - a result of ``cifar_time_to_accuracy.py --json`` (its ``history``),
  - that script's ``--progress`` file (one JSON line per epoch, kept when a run is cut short),
  - ``gpu_suite.sh``'s ``results.json#STEP`` (the ``data`` of that step: such a result, or the epochs it
    finished when its time limit stopped it).

Usage:
    python benchmarks/precision_twins.py \\
        bf16=benchmarks/gpu-results/2026-11-26-h200-b/resnet20-cifar10-solo.json \\
        fp32=benchmarks/gpu-results/2026-11-26-h100-e/resnet20-cifar10-fp32.json --every 10
    python benchmarks/precision_twins.py bf16=A.json fp32=B.progress.jsonl --png twins.png   # and a figure
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dlcli import timing


def load_curve(path: str) -> dict[int, dict[str, float]]:
    """Epoch -> that epoch's record (test_accuracy, train_accuracy, ...) from any of the three sources."""
    try:
        return _load_curve(path)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
        raise SystemExit(f"{path}: not a time-to-accuracy result, progress file or results.json#STEP "
                         f"({type(e).__name__}: {e})") from None


def _load_curve(path: str) -> dict[int, dict[str, float]]:
    file, _, step = path.partition("#")
    text = Path(file).read_text(encoding="utf-8")
    if step:
        steps = {s["name"]: s for s in json.loads(text)["steps"]}
        if step not in steps or not isinstance(steps[step].get("data"), dict):
            raise SystemExit(f"{file}: no step {step!r} with data (steps: {', '.join(sorted(steps))})")
        data = steps[step]["data"]  # a step its time limit stopped keeps the epochs it finished
        rows = data.get("history") or data.get("partial_history", [])
    else:
        try:
            whole = json.loads(text)
            rows = whole.get("history", [whole])
        except json.JSONDecodeError:  # a progress file of several lines
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    curve = {int(r["epoch"]): r for r in rows if r.get("test_accuracy") is not None}
    if not curve:
        raise SystemExit(f"{path}: no epoch with a test accuracy")
    return curve


def steady_epoch_s(curve: dict[int, dict[str, float]]) -> float | None:
    """Median training seconds of epochs 2, 3, ... (the first carries compilation and warm-up), from the
    cumulative ``train_time_s`` of consecutive epochs (``dlcli.timing.steady_epoch_s``); None where the curve
    has no times (files written before the script recorded them)."""
    return timing.steady_epoch_s((e, r.get("train_time_s")) for e, r in curve.items())


def compare(curves: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    """Each run's gaps to the first, over the epochs both reached (accuracies as fractions), and its steady
    time per epoch."""
    labels = list(curves)
    ref = curves[labels[0]]
    out: dict[str, Any] = {"reference": labels[0], "runs": {}}
    for label in labels:
        c = curves[label]
        run: dict[str, Any] = {"epochs": max(c), "last_test_accuracy": c[max(c)]["test_accuracy"],
                               "steady_epoch_s": steady_epoch_s(c)}
        common = sorted(set(ref) & set(c))
        if label != labels[0] and common:
            gaps = {e: c[e]["test_accuracy"] - ref[e]["test_accuracy"] for e in common}
            worst = max(gaps, key=lambda e: abs(gaps[e]))
            run.update(common_epochs=len(common), last_common_epoch=common[-1], gap_at_last=gaps[common[-1]],
                       max_abs_gap=abs(gaps[worst]), max_gap_epoch=worst,
                       mean_abs_gap=sum(abs(g) for g in gaps.values()) / len(gaps))
        out["runs"][label] = run
    return out


def table(curves: dict[str, dict[int, dict[str, float]]], every: int) -> str:
    last = max(max(c) for c in curves.values())
    epochs = sorted({1, last} | set(range(every, last + 1, every)) | {max(c) for c in curves.values()})
    head = "| epoch | " + " | ".join(curves) + " |"
    lines = [head, "|" + "---|" * (len(curves) + 1)]
    for e in epochs:
        cells = [f"{c[e]['test_accuracy']:.2%}" if e in c else "" for c in curves.values()]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(res: dict[str, Any]) -> str:
    lines = []
    ref_s = res["runs"][res["reference"]]["steady_epoch_s"]
    for label, r in res["runs"].items():
        speed = ""
        if r["steady_epoch_s"] is not None:
            speed = f"; {r['steady_epoch_s']:.3f} s per epoch after the first (median)"
            if label != res["reference"] and ref_s:
                speed += f", {r['steady_epoch_s'] / ref_s:.2f}x {res['reference']}'s"
        if "gap_at_last" not in r:
            lines.append(f"{label}: {r['epochs']} epochs, test {r['last_test_accuracy']:.2%} at the last{speed}")
            continue
        lines.append(
            f"{label} - {res['reference']}: {r['gap_at_last'] * 100:+.2f} points at epoch {r['last_common_epoch']} "
            f"(test {r['last_test_accuracy']:.2%} after {r['epochs']} epochs); largest gap "
            f"{r['max_abs_gap'] * 100:.2f} points (epoch {r['max_gap_epoch']}), mean {r['mean_abs_gap'] * 100:.2f} "
            f"over {r['common_epochs']} epochs{speed}")
    return "\n".join(lines)


def plot(curves: dict[str, dict[int, dict[str, float]]], path: Path, title: str) -> None:
    """Test accuracy per epoch of every curve (left) and each one's gap to the first in points (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(curves)
    ref = curves[labels[0]]
    fig, (acc, gap) = plt.subplots(1, 2, figsize=(11, 4))
    for label, c in curves.items():
        epochs = sorted(c)
        acc.plot(epochs, [100 * c[e]["test_accuracy"] for e in epochs], marker="o", ms=2, lw=1.2, label=label)
        common = sorted(set(c) & set(ref))
        if label != labels[0] and common:
            gap.plot(common, [100 * (c[e]["test_accuracy"] - ref[e]["test_accuracy"]) for e in common], lw=1.2,
                     label=f"{label} - {labels[0]}")
    acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy per epoch")
    gap.axhline(0, color="black", lw=0.6)
    gap.set(xlabel="epoch", ylabel="points", title=f"gap to {labels[0]}")
    for ax in (acc, gap):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("curves", nargs="+", metavar="LABEL=PATH", help="two or more runs; the first is the reference")
    p.add_argument("--every", type=int, default=5, help="table rows every this many epochs (plus first and last)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--png", type=Path, help="also draw the curves and the gaps into this PNG file")
    p.add_argument("--title", default="", help="the figure's title (default: the labels)")
    args = p.parse_args(argv)
    if len(args.curves) < 2 or any("=" not in c for c in args.curves):
        p.error("give two or more curves as LABEL=PATH")
    curves = {}
    for spec in args.curves:
        label, _, path = spec.partition("=")
        if not Path(path.partition("#")[0]).is_file():
            raise SystemExit(f"{path}: no such file")
        curves[label] = load_curve(path)
    res = compare(curves)
    if args.png is not None:
        if args.png.suffix.lower() != ".png" or not args.png.parent.is_dir():
            raise SystemExit(f"--png {args.png}: expected a .png file in an existing folder")
        plot(curves, args.png, args.title or " against ".join(curves))
    if args.json:
        res["curves"] = {k: {e: v["test_accuracy"] for e, v in c.items()} for k, c in curves.items()}
        print(json.dumps(res, indent=2))
    else:
        print(table(curves, max(1, args.every)) + "\n\n" + summary(res))


if __name__ == "__main__":
    sys.exit(main())
