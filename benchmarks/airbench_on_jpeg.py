"""How much does the JPEG copy of CIFAR-10 cost? airbench on the data dlcli trains on.

The CIFAR-10 these machines hold (``cifar10-jpg/``) is a JPEG quality-75 re-encoding with 2x2 chroma
subsampling, not the original pixels, so the literature's CIFAR-10 accuracies are not directly comparable
with dlcli's. This benchmark measures the gap with a reference whose accuracy on the original data is known
to two decimals: Keller Jordan's airbench (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv:2404.00498; ``legacy/airbench94.py``: 94.01% mean test accuracy over 1,000 runs, with its test-time
augmentation; ``legacy/airbench96.py``: 96.03%). It takes that repository's script by path (never copied
into dlcli), hands it the same decoded uint8 images dlcli trains on (all 50,000 training and 10,000 test
images, written in the ``{images, labels, classes}`` form its loader caches from torchvision), runs its
``main`` ``--runs`` times and reports the mean and spread of the test accuracy with and without its
test-time augmentation, beside the published figure. The difference is the JPEG copy's handicap for that
training procedure; it needs CUDA (airbench is written for one GPU).

Usage (on a CUDA machine):
    git clone https://github.com/KellerJordan/cifar10-airbench /tmp/airbench
    DLCLI_DATA=../shared/data python benchmarks/airbench_on_jpeg.py --airbench /tmp/airbench/legacy/airbench94.py \
        --runs 5 --json-out airbench.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import runpy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PUBLISHED = {  # mean test accuracy on the original CIFAR-10 (with the script's own test-time augmentation)
    "airbench94.py": (0.9401, "94.01% over n=1000 runs, 3.83 s on an A100 (the script's header)"),
    "airbench94_compiled.py": (0.9401, "94.01%, 3.09 s on an A100 (the repository's README)"),
    "airbench95.py": (0.9501, "95.01%, 10.4 s on an A100 (the repository's README)"),
    "airbench96.py": (0.9603, "96.03%, 34.7 s on an A100 (the repository's README)"),
}


def write_airbench_data(data_dir: Path, out: Path) -> dict[str, Any]:
    """Write dlcli's decoded CIFAR-10 (all 50k + 10k) as airbench's ``cifar10/{train,test}.pt`` under ``out``."""
    import torch

    from dlcli.data_cifar import cifar10

    bundle = cifar10(data_dir, 0, val_size=0, files="images")  # the JPEG copy: what this script measures
    folder = out / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", bundle.train), ("test", bundle.test)):
        images = split.x.permute(0, 2, 3, 1).contiguous()  # (N, 32, 32, 3) uint8, as torchvision's .data
        torch.save({"images": images, "labels": split.y.long(), "classes": list(bundle.class_names)},
                   folder / f"{name}.pt")
    return {"train": len(bundle.train.x), "test": len(bundle.test.x), "notes": bundle.extra.get("notes", [])}


ROW = re.compile(r"^\|(.*)\|\s*$")


def parse_rows(text: str) -> list[dict[str, str]]:
    """airbench's printed table rows (run, epoch, train_loss, train_acc, val_acc, tta_val_acc, total_time_seconds)."""
    cols = ["run", "epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc", "total_time_seconds"]
    rows = []
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if not m:
            continue
        cells = [c.strip() for c in m.group(1).split("|")]
        if len(cells) != len(cols) or cells[1] == "epoch":
            continue
        rows.append(dict(zip(cols, cells, strict=True)))
    return rows


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def run_airbench(script: Path, work: Path, runs: int) -> list[dict[str, Any]]:
    """Load airbench's module (not as __main__, so its own 25-run loop does not start) and call main(run)."""
    old = Path.cwd()
    os.chdir(work)  # its loader reads ./cifar10/{train,test}.pt
    try:
        ns = runpy.run_path(str(script), run_name="airbench_by_path")
        ns["print_columns"](ns["logging_columns_list"], is_head=True)
        results = []
        for run in range(runs):
            buf = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
                tta = ns["main"](run)
            wall = time.perf_counter() - t0
            rows = parse_rows(buf.getvalue())
            last_epoch = next((r for r in reversed(rows) if r["val_acc"]), {})
            final = next((r for r in reversed(rows) if r["tta_val_acc"]), {})
            results.append({"run": run, "tta_test_accuracy": float(tta),
                            "test_accuracy": float(last_epoch["val_acc"]) if last_epoch else None,
                            "timed_s": float(final["total_time_seconds"]) if final else None, "wall_s": wall})
        return results
    finally:
        os.chdir(old)


def summarize(script: Path, results: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    tta = [r["tta_test_accuracy"] for r in results]
    plain = [r["test_accuracy"] for r in results if r["test_accuracy"] is not None]
    timed = [r["timed_s"] for r in results[1:] if r["timed_s"] is not None]  # run 0 carries cuDNN's warm-up
    published = PUBLISHED.get(script.name)
    out: dict[str, Any] = {
        "script": script.name, "runs": results, "data": data,
        "tta_mean": statistics.mean(tta), "tta_std": statistics.stdev(tta) if len(tta) > 1 else 0.0,
        "plain_mean": statistics.mean(plain) if plain else None,
        "plain_std": statistics.stdev(plain) if len(plain) > 1 else 0.0,
        "timed_s_median": statistics.median(timed) if timed else None,
    }
    if published:
        out["published_mean"], out["published_note"] = published
        out["handicap_points"] = round(100 * (published[0] - out["tta_mean"]), 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--airbench", required=True, help="path of airbench's script (e.g. legacy/airbench94.py)")
    p.add_argument("--data-dir", default=os.environ.get("DLCLI_DATA", "../shared/data"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json-out")
    args = p.parse_args()
    script = Path(args.airbench).resolve()
    if not script.is_file():
        print(f"error: {script} not found (clone https://github.com/KellerJordan/cifar10-airbench)", file=sys.stderr)
        return 2
    import torch

    if not torch.cuda.is_available():
        print("error: airbench needs a CUDA GPU", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="airbench-"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    data = write_airbench_data(Path(args.data_dir), work)
    res = summarize(script, run_airbench(script, work, args.runs), data)
    res["gpu"] = torch.cuda.get_device_name(0)
    res["torch"] = torch.__version__
    print(f"\n{script.name} on dlcli's CIFAR-10 ({Path(args.data_dir) / 'cifar10-jpg'}), {res['gpu']}, torch {res['torch']}\n")
    print("| runs | test accuracy, its TTA (mean ± sd) | without TTA | published, original CIFAR-10 | cost of the copy | s/run (median, run 0 out) |")
    print("|---|---|---|---|---|---|")
    pub = res.get("published_note", "-")
    cost = f"{res['handicap_points']:+.2f} points" if "handicap_points" in res else "-"
    plain = "-" if res["plain_mean"] is None else f"{res['plain_mean']:.2%} ± {res['plain_std']:.2%}"
    print(f"| {args.runs} | {res['tta_mean']:.2%} ± {res['tta_std']:.2%} | {plain} "
          f"| {pub} | {cost} | {res['timed_s_median']} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
