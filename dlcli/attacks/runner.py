"""Glue between a trained classifier and the attacks: run one, compute the report numbers, write its files.

Every ``run_*`` function takes a loaded classifier (``dlcli.runs.Classifier``: ``.model`` maps [0, 1] pixels
to logits, normalisation inside) and CPU tensors, times the attack alone (device synchronised, no file I/O),
writes the output folder and returns a plain, JSON-ready dict. Nothing here prints.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from dlcli.attacks.deepfool import STEP_EPS, DeepFoolResult, check_norm, deepfool, model_device
from dlcli.attacks.fgsm import FGSMResult, fgsm_direction, fgsm_min_eps
from dlcli.attacks.universal import (
    PassProgress,
    fooling_rate,
    predict,
    random_like,
    universal_perturbation,
)
from dlcli.runtime import Runtime, device_name

Progress = Callable[[int, int], None]

# The papers' numbers for the rows our models match (REFERENCES.md). DeepFool paper, Table 1 (ℓ2, ρ_adv) and
# Table 2 (ℓ∞); fast gradient sign in the same tables. Keyed by (model family, data source).
PAPER_RHO: dict[tuple[str, str], dict[str, Any]] = {
    ("lenet", "mnist"): {
        "row": "LeNet on MNIST",
        "deepfool": {"2": 0.20, "inf": 0.10},
        "fgsm": {"2": 1.0, "inf": 0.26},
    },
    ("lenet", "cifar10"): {
        "row": "LeNet on CIFAR-10",
        "deepfool": {"2": 0.030},
        "fgsm": {},
    },
}

PERCENTILES = (5, 25, 50, 75, 95)
FIGURE_EXAMPLES = 8


def paper_reference(recipe: Any, method: str, norm: str) -> dict[str, Any] | None:
    """The paper's ρ for this model, data and norm, when the model matches a row of its tables."""
    name = str(recipe.model.name).lower()
    family = "lenet" if name.startswith("lenet") else name
    entry = PAPER_RHO.get((family, str(recipe.data.source).lower()))
    if entry is None or norm not in entry.get(method, {}):
        return None
    table = 1 if norm == "2" else 2  # Table 1 is ℓ2, Table 2 is ℓ∞
    return {"rho_adv": entry[method][norm], "row": f"{entry['row']}, DeepFool paper Table {table}"}


def select(images: Tensor, labels: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``n`` images of a split (all when fewer), with their indices in the split."""
    n = min(n, images.shape[0])
    return images[:n], labels[:n], torch.arange(n)


def _timed(model: torch.nn.Module, fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds), with the model's device synchronised before and after."""
    runtime = Runtime(device=model_device(model))
    runtime.synchronize()
    t0 = time.perf_counter()
    result = fn()
    runtime.synchronize()
    return result, time.perf_counter() - t0


def _mean(t: Tensor) -> float:
    return float(t.double().mean()) if t.numel() else float("nan")


def _percentiles(t: Tensor) -> dict[str, float]:
    if t.numel() == 0:
        return {}
    q = torch.quantile(t.double(), torch.tensor([p / 100 for p in PERCENTILES], dtype=torch.float64))
    out = {f"p{p}": float(v) for p, v in zip(PERCENTILES, q)}
    out["max"] = float(t.max())
    return out


def _source(classifier: Any) -> dict[str, Any]:
    device = model_device(classifier.model)
    return {
        "checkpoint": str(classifier.checkpoint.get("path", classifier.run_dir)),
        "recipe": classifier.recipe.name,
        "model": classifier.recipe.model.name,
        "data": classifier.recipe.data.source,
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------------------------ DeepFool


def deepfool_summary(res: DeepFoolResult, labels: Tensor, seconds: float) -> dict[str, Any]:
    """The report numbers of one DeepFool run (the paper's ρ_adv over the attacked images)."""
    att = res.attacked
    n, n_att = len(att), int(att.sum())
    fooled, fooled_c = int(res.fooled.sum()), int(res.fooled_clipped.sum())
    return {
        "images": n,
        "clean_accuracy": _mean(res.clean_pred == labels),
        "misclassified": n - n_att,  # not attacked, zero perturbation
        "attacked": n_att,
        "fooled": fooled,
        "fooling_rate": fooled / n_att if n_att else float("nan"),
        "not_fooled_within_max_iter": n_att - fooled,
        "fooled_after_clip": fooled_c,
        "fooling_rate_after_clip": fooled_c / n_att if n_att else float("nan"),
        "clip_undid": int((res.fooled & ~res.fooled_clipped).sum()),  # flips lost by clipping to [0, 1]
        "rho_adv": _mean(res.rho[att]),
        "rho_adv_clipped": _mean(res.rho_clipped[att]),
        "r_norm_mean": _mean(res.r_norm[att]),
        "r_norm_percentiles": _percentiles(res.r_norm[att]),
        "mean_iterations": _mean(res.iterations[att]),
        "max_iterations": int(res.iterations.max()) if n else 0,
        "mean_grad_evals": _mean(res.grad_evals[att]),
        "seconds": seconds,
        "images_per_s": n / seconds if seconds > 0 else float("inf"),
        "ms_per_image": 1000 * seconds / n if n else float("nan"),
    }


def run_deepfool(
    classifier: Any,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    *,
    norm: str = "2",
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int = 10,
    batch_size: int | None = None,
    clip: str = "final",
    split: str = "test",
    out_dir: Path | None = None,
    compare_fgsm: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """DeepFool on ``images`` (N, C, H, W) in [0, 1]; files go to ``out_dir`` when given."""
    norm = check_norm(norm)
    model = classifier.model
    res, seconds = _timed(model, lambda: deepfool(
        model, images, labels, norm=norm, overshoot=overshoot, max_iter=max_iter, candidates=candidates,
        batch_size=batch_size, clip=clip, progress=progress))
    report: dict[str, Any] = {
        "attack": "deepfool",
        **_source(classifier),
        "split": split,
        "settings": {"norm": norm, "overshoot": overshoot, "max_iter": max_iter, "candidates": candidates,
                     "batch_size": batch_size, "clip": clip, "step_eps": STEP_EPS},
        **deepfool_summary(res, labels, seconds),
        "paper": paper_reference(classifier.recipe, "deepfool", norm),
    }
    if compare_fgsm:
        fg = run_fgsm(classifier, images, labels, indices, norm=norm, clip=clip == "step", split=split)
        report["fgsm"] = {k: fg[k] for k in ("eps", "target_rate", "attacked", "fooling_rate", "fooling_rate_after_clip",
                                              "rho_adv", "rho_adv_clipped", "seconds", "ms_per_image", "paper")}
    if out_dir is not None:
        report["files"] = write_deepfool_files(out_dir, res, images, labels, indices, classifier.class_names, report)
    return report


def write_deepfool_files(out_dir: Path, res: DeepFoolResult, images: Tensor, labels: Tensor, indices: Tensor,
                         class_names: Sequence[str], report: dict[str, Any]) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "deepfool.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "true", "clean_pred", "adv_pred", "adv_pred_clipped", "attacked", "fooled",
                    "fooled_after_clip", f"r_norm_l{res.norm}", "rho", "iterations", "grad_evals"])
        columns = [indices, labels, res.clean_pred, res.adv_pred, res.adv_pred_clipped, res.attacked.long(),
                   res.fooled.long(), res.fooled_clipped.long(), res.r_norm, res.rho, res.iterations, res.grad_evals]
        w.writerows(_rows(columns))
    pt_path = out_dir / "perturbations.pt"
    torch.save({"perturbation": res.perturbation.contiguous(), "index": indices.clone(), "norm": res.norm,
                "clip": report["settings"]["clip"], "overshoot": report["settings"]["overshoot"],
                "checkpoint": report["checkpoint"], "split": report["split"]}, pt_path)
    png_path = out_dir / "deepfool.png"
    att = res.attacked.nonzero().squeeze(1)[:FIGURE_EXAMPLES]
    title = (f"DeepFool ℓ{'∞' if res.norm == 'inf' else '2'} on {report['recipe']}: ρ_adv "
             f"{report['rho_adv']:.3f}, fooling rate after clipping {report['fooling_rate_after_clip']:.1%}")
    adv_labels = [f"{_name(class_names, int(res.adv_pred[i]))}" +
                  ("" if int(res.adv_pred[i]) == int(res.adv_pred_clipped[i])
                   else f" (clipped: {_name(class_names, int(res.adv_pred_clipped[i]))})") for i in att]
    save_triptych(png_path, images[att], res.perturbation[att], res.adversarial[att],
                  [f"{_name(class_names, int(res.clean_pred[i]))}" for i in att], adv_labels,
                  [f"‖r‖={float(res.r_norm[i]):.3g}" for i in att], title)
    summary_path = out_dir / "summary.json"
    files = {"per_image": str(csv_path), "perturbations": str(pt_path), "figure": str(png_path),
             "summary": str(summary_path)}
    _write_json(summary_path, {**report, "files": files})
    return files


# ---------------------------------------------------------------------------------------------------- FGSM


def run_fgsm(
    classifier: Any,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    *,
    norm: str = "2",
    target_rate: float = 0.9,
    clip: bool = False,
    batch_size: int = 256,
    split: str = "test",
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """The fast gradient sign baseline: the smallest ε fooling ``target_rate`` of the attacked images, and its ρ."""
    norm = check_norm(norm)
    model = classifier.model
    direction, t_grad = _timed(model, lambda: fgsm_direction(model, images, labels, batch_size=batch_size))
    res, t_search = _timed(model, lambda: fgsm_min_eps(model, images, direction, target_rate=target_rate,
                                                       norm=norm, clip=clip, batch_size=max(batch_size, 1024)))
    att = res.attacked
    n, n_att = len(att), int(att.sum())
    rho_clipped = res.r_norm_clipped / res.x_norm.clamp_min(1e-12)
    report: dict[str, Any] = {
        "attack": "fgsm",
        **_source(classifier),
        "split": split,
        "settings": {"norm": norm, "target_rate": target_rate, "clip": clip},
        "images": n,
        "clean_accuracy": _mean(res.clean_pred == labels),
        "misclassified": n - n_att,
        "attacked": n_att,
        "eps": res.eps,  # None: the target rate was not reached for ε ≤ 1
        "target_rate": target_rate,
        "reached_target": res.eps is not None,
        "fooling_rate": int(res.fooled.sum()) / n_att if n_att else float("nan"),
        "fooling_rate_after_clip": int(res.fooled_clipped.sum()) / n_att if n_att else float("nan"),
        "rho_adv": _mean(res.rho[att]),
        "rho_adv_clipped": _mean(rho_clipped[att]),
        "search_evaluations": len(res.searched),
        "seconds": t_grad,  # the attack itself: one gradient per image (the search is extra, below)
        "search_seconds": t_search,
        "ms_per_image": 1000 * t_grad / n if n else float("nan"),
        "paper": paper_reference(classifier.recipe, "fgsm", norm),
    }
    if out_dir is not None:
        report["files"] = write_fgsm_files(out_dir, res, direction.sign, images, labels, indices,
                                           classifier.class_names, report)
    return report


def write_fgsm_files(out_dir: Path, res: FGSMResult, sign: Tensor, images: Tensor, labels: Tensor,
                     indices: Tensor, class_names: Sequence[str], report: dict[str, Any]) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "fgsm.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "true", "clean_pred", "adv_pred", "adv_pred_clipped", "attacked", "fooled",
                    "fooled_after_clip", f"r_norm_l{res.norm}", "rho"])
        columns = [indices, labels, res.clean_pred, res.adv_pred, res.adv_pred_clipped, res.attacked.long(),
                   res.fooled.long(), res.fooled_clipped.long(), res.r_norm, res.rho]
        w.writerows(_rows(columns))
    eps = res.eps if res.eps is not None else 1.0
    att = res.attacked.nonzero().squeeze(1)[:FIGURE_EXAMPLES]
    r = eps * sign[att]
    adv = (images[att] + r).clamp(0, 1)
    png_path = out_dir / "fgsm.png"
    save_triptych(png_path, images[att], r, adv, [_name(class_names, int(res.clean_pred[i])) for i in att],
                  [_name(class_names, int(res.adv_pred_clipped[i])) for i in att],
                  [f"ε={eps:.3g}" for _ in att],
                  f"Fast gradient sign on {report['recipe']}: ε {eps:.3f}, ρ {report['rho_adv']:.3f}")
    summary_path = out_dir / "summary.json"
    files = {"per_image": str(csv_path), "figure": str(png_path), "summary": str(summary_path)}
    _write_json(summary_path, {**report, "files": files})
    return files


# ----------------------------------------------------------------------------------------------- universal


def default_xi(norm: str, data_source: str, input_shape: Sequence[int]) -> float:
    """ξ in [0, 1] pixel units when none is given.

    The paper's ImageNet radii (ℓ∞ 10 and ℓ2 2,000 on the 0-255 scale of 224x224x3 images) rescaled to [0, 1]
    pixels and, for ℓ2, to the image size at the same per-pixel energy. MNIST-like digits are far more robust
    to one shared perturbation (a digit is a few strokes on a flat background, and clipping to [0, 1] removes
    any change that pushes a black or white pixel further out), so they get the radii at which LeNet-5's
    held-out fooling rate approaches the paper's 80% (measured: README, "Attacks").
    """
    norm = check_norm(norm)
    if str(data_source).lower() in ("mnist", "fashion-mnist"):
        return 0.3 if norm == "inf" else 5.0
    if norm == "inf":
        return 10 / 255
    dim = math.prod(input_shape)
    return 2000 / 255 * math.sqrt(dim / (224 * 224 * 3))


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
    """Algorithm 1 on the building images; fooling rates on the held-out evaluation images, v vs random noise."""
    norm = check_norm(norm)
    model = classifier.model
    res, seconds = _timed(model, lambda: universal_perturbation(
        model, build_images, xi=xi, norm=norm, delta=delta, max_passes=max_passes, fold_batch=fold_batch,
        clip=clip, seed=seed, progress=progress))
    gen = torch.Generator().manual_seed(seed + 1)
    noise = random_like(res.v, norm, gen)
    clean_eval = predict(model, eval_images)
    rate_v = fooling_rate(model, eval_images, res.v, clean_pred=clean_eval, clip=clip)
    rate_noise = fooling_rate(model, eval_images, noise, clean_pred=clean_eval, clip=clip)
    name = classifier.recipe.name
    matrix = [{"model": f"{name} (this run)", "checkpoint": _source(classifier)["checkpoint"], "fooling_rate": rate_v,
               "noise_fooling_rate": rate_noise}]
    for t in targets:
        tm = t.model
        clean_t = predict(tm, eval_images)
        matrix.append({"model": t.recipe.name, "checkpoint": str(t.checkpoint.get("path", t.run_dir)),
                       "fooling_rate": fooling_rate(tm, eval_images, res.v, clean_pred=clean_t, clip=clip),
                       "noise_fooling_rate": fooling_rate(tm, eval_images, noise, clean_pred=clean_t, clip=clip)})
    v = res.v
    report: dict[str, Any] = {
        "attack": "universal",
        **_source(classifier),
        "settings": {"norm": norm, "xi": xi, "delta": delta, "max_passes": max_passes, "fold_batch": fold_batch,
                     "clip": clip, "seed": seed, "inner": "DeepFool ℓ2, overshoot 0.02, at most 10 iterations"},
        "build_split": build_split,
        "build_images": int(build_images.shape[0]),
        "eval_split": eval_split,
        "eval_images": int(eval_images.shape[0]),
        "passes": res.passes,
        "best_pass": res.best_pass,
        "build_fooling_history": res.fooling_history,
        "build_fooling_rate": res.build_fooling_rate,
        "reached_target": res.reached_target,
        "target_rate": 1 - delta,
        "deepfool_images": res.deepfool_images,
        "updates": res.updates,
        "fooling_rate": rate_v,
        "noise_fooling_rate": rate_noise,
        "v_norm_l2": float(v.norm()),
        "v_norm_linf": float(v.abs().max()),
        "mean_x_norm_l2": _mean(eval_images.flatten(1).norm(dim=1)),
        "seconds": seconds,
        "transfer": matrix,
    }
    if out_dir is not None:
        report["files"] = write_universal_files(out_dir, res.v, noise, eval_images, clean_eval, model, clip,
                                                classifier.class_names, report)
    return report


def write_universal_files(out_dir: Path, v: Tensor, noise: Tensor, images: Tensor, clean: Tensor,
                          model: torch.nn.Module, clip: bool, class_names: Sequence[str],
                          report: dict[str, Any]) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    pt_path = out_dir / "universal.pt"
    torch.save({"v": v.contiguous(), "noise": noise.contiguous(), "norm": report["settings"]["norm"],
                "xi": report["settings"]["xi"], "clip": clip, "checkpoint": report["checkpoint"]}, pt_path)
    k = min(FIGURE_EXAMPLES, images.shape[0])
    x = images[:k]
    xv = x + v
    xv = xv.clamp(0, 1) if clip else xv
    pert = predict(model, x, v, clip=clip)
    png_path = out_dir / "universal.png"
    p = "∞" if report["settings"]["norm"] == "inf" else "2"
    save_triptych(png_path, x, v.expand_as(x), xv, [_name(class_names, int(c)) for c in clean[:k]],
                  [_name(class_names, int(c)) for c in pert], [f"‖v‖{p}={report['settings']['xi']:.3g}"] * k,
                  f"Universal perturbation (ℓ{p}, ξ {report['settings']['xi']:.3g}) on {report['recipe']}: "
                  f"held-out fooling rate {report['fooling_rate']:.1%}, random noise {report['noise_fooling_rate']:.1%}")
    summary_path = out_dir / "summary.json"
    files = {"perturbation": str(pt_path), "figure": str(png_path), "summary": str(summary_path)}
    _write_json(summary_path, {**report, "files": files})
    return files


def _rows(columns: Sequence[Tensor]) -> list[list[Any]]:
    """(N,) tensors -> CSV rows: integers as they are, floats to 6 significant digits."""
    cols = [[f"{v:.6g}" for v in c.tolist()] if c.is_floating_point() else c.tolist() for c in columns]
    return [list(row) for row in zip(*cols)]


# ------------------------------------------------------------------------------------------------- figures


def _name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if 0 <= k < len(class_names) else str(k)


def _to_image(t: Tensor) -> Any:
    """(C, H, W) in [0, 1] -> what imshow takes: (H, W) grey or (H, W, 3) colour."""
    t = t.detach().cpu().float()
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).clamp(0, 1).numpy()


def save_triptych(path: Path, originals: Tensor, perturbations: Tensor, adversarial: Tensor,
                  clean_labels: Sequence[str], adv_labels: Sequence[str], notes: Sequence[str], title: str) -> None:
    """A PNG with three rows: originals, perturbations (amplified to fill the grey range), adversarial images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(originals.shape[0], 1)
    fig, axes = plt.subplots(3, k, figsize=(1.6 * k + 0.6, 5.6), squeeze=False)
    for j in range(k):
        for row in range(3):
            axes[row][j].axis("off")
        if j >= originals.shape[0]:
            continue
        grey = originals.shape[1] == 1
        r = perturbations[j]
        amp = 0.5 + r / (2 * r.abs().max().clamp_min(1e-12))  # zero maps to mid-grey
        axes[0][j].imshow(_to_image(originals[j]), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[0][j].set_title(f"{clean_labels[j]}", fontsize=9)
        axes[1][j].imshow(_to_image(amp), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[1][j].set_title(notes[j], fontsize=7)
        axes[2][j].imshow(_to_image(adversarial[j]), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[2][j].set_title(f"→ {adv_labels[j]}", fontsize=9)
    axes[0][0].text(-0.15, 0.5, "original", rotation=90, va="center", ha="right", transform=axes[0][0].transAxes)
    axes[1][0].text(-0.15, 0.5, "perturbation\n(amplified)", rotation=90, va="center", ha="right",
                    transform=axes[1][0].transAxes)
    axes[2][0].text(-0.15, 0.5, "adversarial", rotation=90, va="center", ha="right", transform=axes[2][0].transAxes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    path.write_text(json.dumps(clean(obj), indent=2) + "\n")
