"""Glue for ``dlcli attack universal``: build v, measure it against random noise, and the cross-model matrix.

With target runs, a perturbation is built on every model (the run's and each target's, same building images
and settings) and each is measured on every model: the universal-perturbation paper's table of how
perturbations generalise across networks, rows the model v was built on, columns the model it is applied
to, plus a row of random noise with the norm of the v built on that column's model. Fooling rates are
always those of valid images, clamp(x + v, 0, 1); ``clip=False`` only builds v without the clamp and adds the
unclamped rate to the report. Nothing here prints.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from dlcli.attacks.common import check_norm
from dlcli.attacks.figures import save_heatmap, save_triptych
from dlcli.attacks.runner import FIGURE_EXAMPLES, mean, name, source, timed, write_json
from dlcli.attacks.universal import (
    PassProgress,
    fooling_matrix,
    fooling_rate,
    predict,
    random_like,
    universal_perturbation,
)


def default_xi(norm: str, data_source: str, input_shape: Sequence[int]) -> float:
    """ξ in [0, 1] pixel units when none is given.

    The paper's ImageNet radii (ℓ∞ 10 and ℓ2 2,000 on the 0-255 scale of 224x224x3 images) rescaled to [0, 1]
    pixels and, for ℓ2, to the image size at the same per-pixel energy. MNIST-like digits are far more robust
    to one shared perturbation (a digit is a few strokes on a flat background, and clipping to [0, 1] removes
    any change that pushes a black or white pixel further out), so they get the radii at which LeNet-5's
    held-out fooling rate approaches the paper's 80% (measured: docs/attacks.md).
    """
    norm = check_norm(norm)
    if str(data_source).lower() in ("mnist", "fashion-mnist"):
        return 0.3 if norm == "inf" else 5.0
    if norm == "inf":
        return 10 / 255
    dim = math.prod(input_shape)
    return 2000 / 255 * math.sqrt(dim / (224 * 224 * 3))


def model_labels(classifiers: Sequence[Any]) -> list[str]:
    """Recipe names, made unique with the run folder's name where two runs share a recipe."""
    names = [c.recipe.name for c in classifiers]
    return [n if names.count(n) == 1 else f"{n} ({Path(c.run_dir).name})" for n, c in zip(names, classifiers)]


def run_universal(
    classifier: Any,
    build_images: Tensor,
    eval_images: Tensor,
    *,
    xi: float,
    norm: str = "inf",
    delta: float = 0.2,
    max_passes: int = 10,
    fold_batch: int = 32,
    clip: bool = True,
    seed: int = 0,
    targets: Sequence[Any] = (),
    build_split: str = "val",
    eval_split: str = "test",
    out_dir: Path | None = None,
    progress: PassProgress | None = None,
) -> dict[str, Any]:
    """Algorithm 1 on the building images; fooling rates of valid images on the held-out images, v vs noise."""
    norm = check_norm(norm)
    models = [classifier, *targets]
    labels = model_labels(models)

    def build(clf: Any) -> tuple[Any, float]:
        return timed(clf.model, lambda: universal_perturbation(
            clf.model, build_images, xi=xi, norm=norm, delta=delta, max_passes=max_passes, fold_batch=fold_batch,
            clip=clip, seed=seed, progress=progress))

    res, seconds = build(classifier)
    model = classifier.model
    noise = random_like(res.v, norm, torch.Generator().manual_seed(seed + 1))
    clean_eval = predict(model, eval_images)
    rate_v = fooling_rate(model, eval_images, res.v, clean_pred=clean_eval, clip=True)
    rate_noise = fooling_rate(model, eval_images, noise, clean_pred=clean_eval, clip=True)
    v = res.v
    report: dict[str, Any] = {
        "attack": "universal",
        **source(classifier),
        "settings": {"norm": norm, "xi": xi, "delta": delta, "max_passes": max_passes, "fold_batch": fold_batch,
                     "clip": clip, "seed": seed, "inner": "DeepFool ℓ2, overshoot 0.02, at most 10 iterations"},
        "clamped": True,  # the fooling rates below are those of clamp(x + v, 0, 1)
        "build_split": build_split,
        "build_images": int(build_images.shape[0]),
        "eval_split": eval_split,
        "eval_images": int(eval_images.shape[0]),
        "passes": res.passes,
        "best_pass": res.best_pass,
        "build_fooling_history": res.fooling_history,
        "build_fooling_rate": res.build_fooling_rate,
        "build_clamped": clip,
        "reached_target": res.reached_target,
        "target_rate": 1 - delta,
        "deepfool_images": res.deepfool_images,
        "updates": res.updates,
        "fooling_rate": rate_v,
        "noise_fooling_rate": rate_noise,
        "unclamped_fooling_rate": None if clip else fooling_rate(model, eval_images, v, clean_pred=clean_eval,
                                                                  clip=False),
        "v_norm_l2": float(v.norm()),
        "v_norm_linf": float(v.abs().max()),
        "mean_x_norm_l2": mean(eval_images.flatten(1).norm(dim=1)),
        "seconds": seconds,
        "matrix": None,
    }
    if targets:
        report["matrix"] = cross_model_matrix(models, labels, build, res, seconds, eval_images, norm, seed)
    if out_dir is not None:
        report["files"] = write_universal_files(out_dir, res.v, noise, eval_images, clean_eval, model,
                                                classifier.class_names, report)
    return report


def cross_model_matrix(models: Sequence[Any], labels: Sequence[str], build: Any, first: Any, first_seconds: float,
                       eval_images: Tensor, norm: str, seed: int) -> dict[str, Any]:
    """Build v on every model (the first one is already built) and measure every v on every model."""
    vs, seconds, history = [first.v], [first_seconds], [first.build_fooling_rate]
    for clf in models[1:]:
        res, s = build(clf)
        vs.append(res.v)
        seconds.append(s)
        history.append(res.build_fooling_rate)
    noises = [random_like(v, norm, torch.Generator().manual_seed(seed + 1)) for v in vs]
    nets = [m.model for m in models]
    rates = fooling_matrix(nets, eval_images, vs)
    noise_row = [fooling_matrix([net], eval_images, [noises[j]])[0][0] for j, net in enumerate(nets)]
    return {
        "models": list(labels),
        "checkpoints": [str(m.checkpoint.get("path", m.run_dir)) for m in models],
        "fooling": rates,  # rates[i][j]: v built on models[i], applied to models[j]
        "noise": noise_row,  # random noise with the norm of the v built on models[j], applied to models[j]
        "build_seconds": seconds,
        "build_fooling_rate": history,
        "v_norm_l2": [float(v.norm()) for v in vs],
        "v_norm_linf": [float(v.abs().max()) for v in vs],
    }


def write_universal_files(out_dir: Path, v: Tensor, noise: Tensor, images: Tensor, clean: Tensor,
                          model: torch.nn.Module, class_names: Sequence[str], report: dict[str, Any]) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    s = report["settings"]
    pt_path = out_dir / "universal.pt"
    torch.save({"v": v.contiguous(), "noise": noise.contiguous(), "norm": s["norm"], "xi": s["xi"],
                "clip": s["clip"], "checkpoint": report["checkpoint"]}, pt_path)
    k = min(FIGURE_EXAMPLES, images.shape[0])
    x = images[:k]
    xv = (x + v).clamp(0, 1)
    pert = predict(model, x, v, clip=True)
    png_path = out_dir / "universal.png"
    p = "∞" if s["norm"] == "inf" else "2"
    save_triptych(png_path, x, v.expand_as(x), xv, [name(class_names, int(c)) for c in clean[:k]],
                  [name(class_names, int(c)) for c in pert], [f"‖v‖{p}={s['xi']:.3g}"] * k,
                  f"Universal perturbation (ℓ{p}, ξ {s['xi']:.3g}) on {report['recipe']}: held-out fooling rate "
                  f"{report['fooling_rate']:.1%} (clamp(x + v, 0, 1)), random noise {report['noise_fooling_rate']:.1%}")
    summary_path = out_dir / "summary.json"
    files = {"perturbation": str(pt_path), "figure": str(png_path), "summary": str(summary_path)}
    m = report["matrix"]
    if m is not None:
        csv_path = out_dir / "transfer.csv"
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["built on \\ applied to", *m["models"]])
            for label, row in zip(m["models"], m["fooling"]):
                w.writerow([label, *(f"{r:.4f}" for r in row)])
            w.writerow(["random noise, same norm", *(f"{r:.4f}" for r in m["noise"])])
        heat_path = out_dir / "transfer.png"
        save_heatmap(heat_path, [*m["fooling"], m["noise"]], [*m["models"], "random noise"], m["models"],
                     f"Universal perturbations across models (ℓ{p}, ξ {s['xi']:.3g}; {report['eval_images']} held-out "
                     "images, valid images)")
        files.update({"matrix": str(csv_path), "heatmap": str(heat_path)})
    files["summary"] = str(summary_path)
    write_json(summary_path, {**report, "files": files})
    return files
