"""Glue between a trained classifier and the attacks: run one, compute the report numbers, write its files.

Every ``run_*`` function takes a loaded classifier (``dlcli.runs.Classifier``: ``.model`` maps [0, 1] pixels
to logits, normalisation inside) and CPU tensors, times the attack alone (device synchronised, no file I/O),
writes the output folder and returns a plain, JSON-ready dict. Nothing here prints.

Headline numbers are those of the images the command writes, which are always valid images in [0, 1]; the
paper's protocol (the unconstrained iteration, ρ measured before any clipping) is reported beside them under
``paper_protocol``. The universal perturbation's runner is ``dlcli.attacks.runner_universal``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from dlcli.attacks.common import check_norm, model_device
from dlcli.attacks.deepfool import STEP_EPS, DeepFoolResult, check_clip, deepfool
from dlcli.attacks.fgsm import FGSMResult, fgsm_direction, fgsm_min_eps
from dlcli.attacks.figures import save_side_by_side, save_triptych
from dlcli.runtime import Runtime, device_name

Progress = Callable[[int, int], None]

# The DeepFool paper's ρ_adv (Moosavi-Dezfooli et al. 2016; Table 1 is ℓ2, Table 2 is ℓ∞) by data set: the rows
# beside which dlcli's ρ is reported. A row whose model family matches the run's is its direct counterpart
# (``paper``); the others are anchors for the same data (``paper_anchors``).
PAPER_ROWS: dict[str, list[dict[str, Any]]] = {
    "mnist": [
        {"model": "LeNet", "family": "lenet", "deepfool": {"2": 0.20, "inf": 0.10}, "fgsm": {"2": 1.0, "inf": 0.26}},
        {"model": "FC500-150-10", "family": "mlp", "deepfool": {"2": 0.11}, "fgsm": {}},
    ],
    "cifar10": [
        {"model": "NIN", "family": "nin", "deepfool": {"2": 0.023}, "fgsm": {}},
        {"model": "LeNet", "family": "lenet", "deepfool": {"2": 0.030}, "fgsm": {}},
    ],
    "imagenet": [
        {"model": "CaffeNet", "family": "alexnet", "deepfool": {"2": 0.0027}, "fgsm": {}},
        {"model": "GoogLeNet", "family": "googlenet", "deepfool": {"2": 0.0019}, "fgsm": {}},
    ],
}
DATA_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "imagenet": "ILSVRC 2012"}

PERCENTILES = (5, 25, 50, 75, 95)
FIGURE_EXAMPLES = 8


def _data_key(source: str) -> str:
    s = str(source).lower().replace("-", "").replace("_", "")
    return "imagenet" if s.startswith("imagenet") or s.startswith("ilsvrc") else s


def paper_anchors(recipe: Any, method: str, norm: str) -> list[dict[str, Any]]:
    """Every row of the DeepFool paper's tables for this run's data set and norm: [{"row", "rho_adv"}]."""
    key = _data_key(recipe.data.source)
    table = 1 if norm == "2" else 2
    return [{"row": f"{r['model']} on {DATA_NAMES[key]}, DeepFool paper Table {table}", "model": r["model"],
             "rho_adv": r[method][norm]} for r in PAPER_ROWS.get(key, []) if norm in r.get(method, {})]


def paper_reference(recipe: Any, method: str, norm: str) -> dict[str, Any] | None:
    """The paper's ρ for this model, data and norm, when the model's family matches a row of its tables."""
    name = str(recipe.model.name).lower()
    key = _data_key(recipe.data.source)
    for r in PAPER_ROWS.get(key, []):
        if name.startswith(r["family"]) and norm in r.get(method, {}):
            return {"rho_adv": r[method][norm], "row": f"{r['model']} on {DATA_NAMES[key]}, DeepFool paper "
                                                       f"Table {1 if norm == '2' else 2}"}
    return None


def select(images: Tensor, labels: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``n`` images of a split (all when fewer), with their indices in the split."""
    n = min(n, images.shape[0])
    return images[:n], labels[:n], torch.arange(n)


def timed(model: torch.nn.Module, fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds), with the model's device synchronised before and after."""
    runtime = Runtime(device=model_device(model))
    runtime.synchronize()
    t0 = time.perf_counter()
    result = fn()
    runtime.synchronize()
    return result, time.perf_counter() - t0


def mean(t: Tensor) -> float:
    return float(t.double().mean()) if t.numel() else float("nan")


def percentiles(t: Tensor) -> dict[str, float]:
    if t.numel() == 0:
        return {}
    q = torch.quantile(t.double(), torch.tensor([p / 100 for p in PERCENTILES], dtype=torch.float64))
    out = {f"p{p}": float(v) for p, v in zip(PERCENTILES, q)}
    out["max"] = float(t.max())
    return out


def source(classifier: Any) -> dict[str, Any]:
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


def deepfool_summary(res: DeepFoolResult, labels: Tensor | None, seconds: float) -> dict[str, Any]:
    """The report numbers of one DeepFool run.

    ``fooled``, ``fooling_rate``, ``rho_adv`` and the ‖r‖ percentiles describe the images handed out
    (``res.adversarial``, valid by construction); ``iteration_*`` what the algorithm's own criterion saw,
    which differs only with ``clip="none"`` (x + r̂ unclamped, the paper's ρ).
    """
    att = res.attacked
    n, n_att = len(att), int(att.sum())
    fooled = int(res.fooled_clipped.sum())
    it_fooled = int(res.fooled.sum())
    return {
        "images": n,
        "clean_accuracy": mean(res.clean_pred == labels) if labels is not None else None,
        "misclassified": n - n_att,  # not attacked, zero perturbation
        "attacked": n_att,
        "fooled": fooled,
        "fooling_rate": fooled / n_att if n_att else float("nan"),
        "not_fooled": n_att - fooled,
        "rho_adv": mean(res.rho_clipped[att]),
        "r_norm_mean": mean(res.r_norm_clipped[att]),
        "r_norm_percentiles": percentiles(res.r_norm_clipped[att]),
        "adversarial_min": float(res.adversarial.min()) if n else 0.0,
        "adversarial_max": float(res.adversarial.max()) if n else 0.0,
        "iteration_fooled": it_fooled,
        "iteration_fooling_rate": it_fooled / n_att if n_att else float("nan"),
        "iteration_rho_adv": mean(res.rho[att]),
        "clip_undid": int((res.fooled & ~res.fooled_clipped).sum()),  # flips lost by clamping (clip "none")
        "mean_iterations": mean(res.iterations[att]),
        "max_iterations": int(res.iterations.max()) if n else 0,
        "mean_grad_evals": mean(res.grad_evals[att]),
        "seconds": seconds,
        "images_per_s": n / seconds if seconds > 0 else float("inf"),
        "ms_per_image": 1000 * seconds / n if n else float("nan"),
    }


@dataclass(frozen=True)
class DeepFoolSettings:
    """The options of one DeepFool run, as ``dlcli attack deepfool`` takes them (see :func:`deepfool`)."""

    norm: str = "2"
    overshoot: float = 0.02
    max_iter: int = 50
    candidates: int = 10
    batch_size: int | None = None
    clip: str = "box"
    grad: str = "auto"
    refine: int | None = None  # None: the attack's default for the clip mode

    def checked(self) -> "DeepFoolSettings":
        return replace(self, norm=check_norm(self.norm), clip=check_clip(self.clip))

    def report(self, res: DeepFoolResult) -> dict[str, Any]:
        """The ``settings`` of a report: as given, with what the attack resolved (gradients, refinement)."""
        return {**asdict(self), "grad": res.grad, "refine": res.refine, "step_eps": STEP_EPS}


def run_deepfool(
    classifier: Any,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    settings: DeepFoolSettings = DeepFoolSettings(),
    *,
    paper_protocol: bool = True,
    split: str = "test",
    out_dir: Path | None = None,
    compare_fgsm: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """DeepFool on ``images`` (N, C, H, W) in [0, 1]; files go to ``out_dir`` when given.

    With ``paper_protocol`` and a clip mode other than "none", the paper's unconstrained iteration is run
    as well on the same images (timed apart) so that its ρ can be shown beside the written images' ρ.
    """
    settings = settings.checked()
    norm, clip = settings.norm, settings.clip
    model = classifier.model
    res, seconds = timed(model, lambda: deepfool(model, images, labels, progress=progress, **asdict(settings)))
    summary = deepfool_summary(res, labels, seconds)
    report: dict[str, Any] = {
        "attack": "deepfool",
        **source(classifier),
        "split": split,
        "settings": settings.report(res),
        **summary,
        "paper": paper_reference(classifier.recipe, "deepfool", norm),
        "paper_anchors": paper_anchors(classifier.recipe, "deepfool", norm),
        "paper_protocol": None,
    }
    if clip == "none":
        report["paper_protocol"] = _protocol(summary, same_run=True)
    elif paper_protocol:
        paper = asdict(replace(settings, clip="none", refine=None))
        plain, t_plain = timed(model, lambda: deepfool(model, images, labels, **paper))
        report["paper_protocol"] = _protocol(deepfool_summary(plain, labels, t_plain), same_run=False)
    if compare_fgsm:
        fg = run_fgsm(classifier, images, labels, indices, norm=norm, clip="none" if clip == "none" else "box",
                      split=split)
        report["fgsm"] = {k: fg[k] for k in ("eps", "target_rate", "reached_target", "attacked", "fooling_rate",
                                              "rho_adv", "seconds", "ms_per_image", "paper", "paper_protocol")}
    if out_dir is not None:
        report["files"] = write_deepfool_files(out_dir, res, images, labels, indices, classifier.class_names, report)
    return report


def _protocol(s: dict[str, Any], same_run: bool) -> dict[str, Any]:
    """The paper's numbers from an unconstrained ("none") run: ρ before clipping, flips of x + r̂ unclamped."""
    return {"rho_adv": s["iteration_rho_adv"], "fooling_rate": s["iteration_fooling_rate"],
            "fooled": s["iteration_fooled"], "fooling_rate_after_clip": s["fooling_rate"],
            "mean_iterations": s["mean_iterations"], "seconds": s["seconds"], "same_run": same_run}


def write_deepfool_files(out_dir: Path, res: DeepFoolResult, images: Tensor, labels: Tensor, indices: Tensor,
                         class_names: Sequence[str], report: dict[str, Any]) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "deepfool.csv"
    p = "linf" if res.norm == "inf" else "l2"
    header = ["index", "true", "clean_pred", "adv_pred", "attacked", "fooled", f"r_norm_{p}", "rho", "iterations",
              "grad_evals"]
    columns = [indices, labels, res.clean_pred, res.adv_pred_clipped, res.attacked.long(), res.fooled_clipped.long(),
               res.r_norm_clipped, res.rho_clipped, res.iterations, res.grad_evals]
    if res.clip == "none":  # the paper's unclamped x + r̂ beside the written (clamped) image
        header += ["adv_pred_unclipped", "fooled_unclipped", f"r_norm_{p}_unclipped", "rho_unclipped"]
        columns += [res.adv_pred, res.fooled.long(), res.r_norm, res.rho]
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows(columns))
    pt_path = out_dir / "perturbations.pt"
    torch.save({"perturbation": res.perturbation.contiguous(), "index": indices.clone(), "norm": res.norm,
                "clip": res.clip, "overshoot": report["settings"]["overshoot"],
                "adversarial": "clamp(x + perturbation, 0, 1)" if res.clip == "none" else "x + perturbation",
                "checkpoint": report["checkpoint"], "split": report["split"]}, pt_path)
    png_path = out_dir / "deepfool.png"
    att = res.attacked.nonzero().squeeze(1)[:FIGURE_EXAMPLES]
    title = (f"DeepFool ℓ{'∞' if res.norm == 'inf' else '2'} (clip {res.clip}) on {report['recipe']}: "
             f"fooling rate {report['fooling_rate']:.1%}, ρ_adv {report['rho_adv']:.3f} (images shown)")
    save_triptych(png_path, images[att], res.adversarial[att] - images[att], res.adversarial[att],
                  [name(class_names, int(res.clean_pred[i])) for i in att],
                  [name(class_names, int(res.adv_pred_clipped[i])) for i in att],
                  [f"‖r‖={float(res.r_norm_clipped[i]):.3g}" for i in att], title)
    summary_path = out_dir / "summary.json"
    files = {"per_image": str(csv_path), "perturbations": str(pt_path), "figure": str(png_path),
             "summary": str(summary_path)}
    write_json(summary_path, {**report, "files": files})
    return files


def run_deepfool_images(
    classifier: Any,
    images: Tensor,
    names: Sequence[str],
    settings: DeepFoolSettings = DeepFoolSettings(),
    *,
    folder: str = "",
    skipped: Sequence[str] = (),
    out_dir: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """DeepFool on a user's own images (no labels: each is attacked away from the model's prediction).

    Writes, per image, ``NAME.deepfool.png`` (original, amplified perturbation, adversarial side by side) and
    ``NAME.adversarial.png`` (8-bit, at the model's input size), plus ``images.csv`` and ``summary.json``.
    8-bit rounding can undo a flip, so whether the saved PNG still fools the model is checked and reported.
    """
    from dlcli.attacks.image_files import quantize8, save_image8
    from dlcli.attacks.universal import predict

    settings = settings.checked()
    norm = settings.norm
    model = classifier.model
    res, seconds = timed(model, lambda: deepfool(model, images, None, progress=progress, **asdict(settings)))
    pred8 = predict(model, quantize8(res.adversarial))
    fooled8 = pred8 != res.clean_pred
    report: dict[str, Any] = {
        "attack": "deepfool",
        **source(classifier),
        "split": None,
        "images_folder": str(folder),
        "skipped_files": list(skipped),
        "settings": settings.report(res),
        **deepfool_summary(res, None, seconds),
        "fooled_as_8bit_png": int(fooled8.sum()),
        "paper": None,
        "paper_anchors": [],
        "paper_protocol": None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    cn = classifier.class_names
    per_image = []
    for i, file_name in enumerate(names):
        stem = Path(file_name).stem
        clean, adv = name(cn, int(res.clean_pred[i])), name(cn, int(res.adv_pred_clipped[i]))
        fig = out_dir / f"{stem}.deepfool.png"
        adv_png = out_dir / f"{stem}.adversarial.png"
        r = res.adversarial[i] - images[i]
        save_side_by_side(fig, images[i], r, res.adversarial[i],
                          [f"original: {clean}", f"perturbation ×{1 / (2 * float(r.abs().max()) + 1e-12):.3g}",
                           f"adversarial: {adv}"],
                          f"{file_name}: ‖r‖{'∞' if norm == 'inf' else '2'} {float(res.r_norm_clipped[i]):.3g}, "
                          f"ρ {float(res.rho_clipped[i]):.3g}, {int(res.iterations[i])} iterations")
        save_image8(adv_png, res.adversarial[i])
        per_image.append({"file": file_name, "clean_pred": clean, "adv_pred": adv,
                          "fooled": bool(res.fooled_clipped[i]), "fooled_as_8bit_png": bool(fooled8[i]),
                          "r_norm": float(res.r_norm_clipped[i]), "rho": float(res.rho_clipped[i]), "iterations": int(res.iterations[i]),
                          "figure": str(fig), "adversarial_png": str(adv_png)})
    csv_path = out_dir / "images.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(per_image[0]))
        w.writeheader()
        w.writerows(per_image)
    report["per_image"] = per_image
    summary_path = out_dir / "summary.json"
    report["files"] = {"per_image": str(csv_path), "summary": str(summary_path), "folder": str(out_dir)}
    write_json(summary_path, report)
    return report


# ---------------------------------------------------------------------------------------------------- FGSM


def fgsm_summary(res: FGSMResult) -> dict[str, Any]:
    """Fooling rate and ρ of the written (clamped) images at the ε found, and the search's own numbers."""
    att = res.attacked
    n_att = int(att.sum())
    return {
        "eps": res.eps,  # None: the target rate was not reached for ε ≤ eps_max
        "reached_target": res.eps is not None,
        "fooling_rate": int(res.fooled_clipped.sum()) / n_att if n_att else float("nan"),
        "rho_adv": mean(res.rho_clipped[att]),
        "criterion_fooling_rate": int(res.fooled.sum()) / n_att if n_att else float("nan"),
        "criterion_rho_adv": mean(res.rho[att]),
        "search_evaluations": len(res.searched),
    }


def run_fgsm(
    classifier: Any,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    *,
    norm: str = "2",
    target_rate: float = 0.9,
    clip: str = "box",
    paper_protocol: bool = True,
    batch_size: int = 256,
    split: str = "test",
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """The fast gradient sign baseline: the smallest ε fooling ``target_rate`` of the attacked images, and its ρ.

    ``clip="box"`` searches ε on valid images, clamp(x + ε·sign, 0, 1), the images written; ``"none"`` is the
    paper's protocol (x + ε·sign unclamped). With ``paper_protocol`` the paper's search is reported beside
    (forward passes only: the gradient sign is shared).
    """
    norm = check_norm(norm)
    if clip not in ("box", "none"):
        raise ValueError(f"clip {clip!r}: expected box or none (one step: box is the clamp)")
    model = classifier.model
    direction, t_grad = timed(model, lambda: fgsm_direction(model, images, labels, batch_size=batch_size))

    def search(valid: bool) -> tuple[FGSMResult, float]:
        return timed(model, lambda: fgsm_min_eps(model, images, direction, target_rate=target_rate, norm=norm,
                                                 clip=valid, batch_size=max(batch_size, 1024)))

    res, t_search = search(clip == "box")
    att = res.attacked
    n, n_att = len(att), int(att.sum())
    summary = fgsm_summary(res)
    report: dict[str, Any] = {
        "attack": "fgsm",
        **source(classifier),
        "split": split,
        "settings": {"norm": norm, "target_rate": target_rate, "clip": clip},
        "images": n,
        "clean_accuracy": mean(res.clean_pred == labels),
        "misclassified": n - n_att,
        "attacked": n_att,
        "target_rate": target_rate,
        **summary,
        "seconds": t_grad,  # the attack itself: one gradient per image (the search is extra, below)
        "search_seconds": t_search,
        "ms_per_image": 1000 * t_grad / n if n else float("nan"),
        "paper": paper_reference(classifier.recipe, "fgsm", norm),
        "paper_anchors": paper_anchors(classifier.recipe, "fgsm", norm),
        "paper_protocol": None,
    }
    if clip == "none":
        paper = summary
    elif paper_protocol:
        paper = fgsm_summary(search(False)[0])
    else:
        paper = None
    if paper is not None:
        report["paper_protocol"] = {"eps": paper["eps"], "rho_adv": paper["criterion_rho_adv"],
                                    "fooling_rate": paper["criterion_fooling_rate"],
                                    "fooling_rate_after_clip": paper["fooling_rate"]}
    if out_dir is not None:
        report["files"] = write_fgsm_files(out_dir, res, direction.sign, images, labels, indices,
                                           classifier.class_names, report)
    return report


def write_fgsm_files(out_dir: Path, res: FGSMResult, sign: Tensor, images: Tensor, labels: Tensor,
                     indices: Tensor, class_names: Sequence[str], report: dict[str, Any]) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "fgsm.csv"
    p = "linf" if res.norm == "inf" else "l2"
    header = ["index", "true", "clean_pred", "adv_pred", "attacked", "fooled", f"r_norm_{p}", "rho"]
    columns = [indices, labels, res.clean_pred, res.adv_pred_clipped, res.attacked.long(), res.fooled_clipped.long(),
               res.r_norm_clipped, res.rho_clipped]
    if not res.clip:  # the paper's criterion looked at x + ε·sign unclamped
        header += ["adv_pred_unclipped", "fooled_unclipped", f"r_norm_{p}_unclipped", "rho_unclipped"]
        columns += [res.adv_pred, res.fooled.long(), res.r_norm, res.rho]
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows(columns))
    eps = res.eps if res.eps is not None else 1.0
    att = res.attacked.nonzero().squeeze(1)[:FIGURE_EXAMPLES]
    adv = (images[att] + eps * sign[att]).clamp(0, 1)
    png_path = out_dir / "fgsm.png"
    save_triptych(png_path, images[att], adv - images[att], adv,
                  [name(class_names, int(res.clean_pred[i])) for i in att],
                  [name(class_names, int(res.adv_pred_clipped[i])) for i in att],
                  [f"ε={eps:.3g}" for _ in att],
                  f"Fast gradient sign (clip {report['settings']['clip']}) on {report['recipe']}: ε {eps:.3f}, "
                  f"fooling rate {report['fooling_rate']:.1%}, ρ {report['rho_adv']:.3f}")
    summary_path = out_dir / "summary.json"
    files = {"per_image": str(csv_path), "figure": str(png_path), "summary": str(summary_path)}
    write_json(summary_path, {**report, "files": files})
    return files


# ------------------------------------------------------------------------------------------------- helpers


def rows(columns: Sequence[Tensor]) -> list[list[Any]]:
    """(N,) tensors -> CSV rows: integers as they are, floats to 6 significant digits."""
    cols = [[f"{v:.6g}" for v in c.tolist()] if c.is_floating_point() else c.tolist() for c in columns]
    return [list(row) for row in zip(*cols)]


def name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if 0 <= k < len(class_names) else str(k)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    path.write_text(json.dumps(clean(obj), indent=2) + "\n")
