"""How much the GAN measures move with the sample set: ``dlcli eval RUN`` repeated with other noise seeds.

The Parzen estimate's "±" (the paper's and dlcli's) is the standard error over the test images for one set of
10,000 samples; the Fréchet LeNet distance has no error bar of its own. Drawing the samples again with other
seeds shows the part of the uncertainty that comes from the samples: this script prints, per seed, the
Parzen log-likelihood (sigma re-chosen each time, as the protocol does), the FLD and the class coverage,
then the mean and standard deviation over seeds. The feature network is ``--features RUN`` or the newest
lenet / lenet-fashion run under runs/ (as ``dlcli eval``).

Usage:
    DLCLI_DATA=../shared/data python benchmarks/gan_metric_spread.py runs/gan-mnist-... --seeds 0 1 2
    python benchmarks/gan_metric_spread.py runs/dcgan-fashion-... --features runs/lenet-fashion-... --json-out s.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's dlcli, also when it is not installed

KEYS = ("parzen_ll", "parzen_se", "parzen_sigma", "parzen_ll_real", "fld", "fld_floor", "classes_covered", "class_tv",
        "mean_confidence")


def measure(run: str, seeds: list[int], features: str | None, device: str, data_dir: str | None,
            n: int | None) -> dict[str, Any]:
    from dlcli.checkpoint import load_checkpoint
    from dlcli.classifier import recipe_of
    from dlcli.runtime import Runtime
    from dlcli.tasks.base import TaskContext
    from dlcli.tasks.gan_eval import evaluate_gan

    ckpt = load_checkpoint(run)
    recipe = recipe_of(ckpt)
    runtime = Runtime.create(device, seed=recipe.seed)
    rows = []
    for seed in seeds:
        opts: dict[str, Any] = {"seed": seed, **({"features": features} if features else {}),
                                **({"n_samples": n} if n else {})}
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            res = evaluate_gan(ckpt, TaskContext(recipe, runtime, data_dir, eval_options=opts), "test", Path(out))
        row = {"seed": seed, "time_s": round(time.perf_counter() - t0, 1),
               **{k: res.metrics[k] for k in KEYS if k in res.metrics}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: {"mean": statistics.mean(r[k] for r in rows),
                   "sd": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0}
               for k in KEYS if all(k in r for r in rows)}
    return {"run": str(run), "recipe": recipe.name, "checkpoint": ckpt["path"], "device": str(runtime.device),
            "load_average": round(os.getloadavg()[0], 1), "rows": rows, "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a GAN run folder or checkpoint")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--features", help="the classify run for FLD and coverage (default: newest lenet / lenet-fashion)")
    p.add_argument("--n", type=int, help="samples per seed (default: the recipe's eval_samples, 10,000)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json-out")
    args = p.parse_args()
    res = measure(args.run, args.seeds, args.features, args.device, args.data_dir, args.n)
    for k, v in res["summary"].items():
        print(f"{k:16s} {v['mean']:10.3f} ± {v['sd']:.3f} (sd over {len(args.seeds)} sample seeds)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
