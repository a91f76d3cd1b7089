"""``dlcli eval`` for image classifiers: metrics, per-class accuracy, confusion matrix, worst mistakes.

Everything is rebuilt from the checkpoint alone (``dlcli.classifier.load_classifier``: recipe, class names and
normalisation are saved in it); only the evaluation images are read from the data folder. The numbers are
plain functions of one (N, K) logit matrix, so a test can recompute them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dlcli.classifier import accuracy_and_loss, load_classifier, predict
from dlcli.errors import UsageError
from dlcli.plots import pyplot
from dlcli.runs import load_bundle, split_of
from dlcli.tasks.base import EvalResult, TaskContext

TOP_K = 5  # reported when the data has at least TOP_K_MIN_CLASSES classes
TOP_K_MIN_CLASSES = 10
MATRIX_TABLE_MAX_CLASSES = 20  # wider confusion matrices go to --json only
GRID_COLUMNS = 8
GRID_IMAGES = 32  # the most confidently misclassified images shown in the figure


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    flat = target.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """Headline metrics and the confusion matrix from logits (N, K) and labels (N,), both on the CPU."""
    n, k = logits.shape
    pred = logits.argmax(1)
    cm = confusion_matrix(pred, target, k)
    metrics: dict[str, Any] = {
        "accuracy": int((pred == target).sum()) / n,  # exact count ratio, not a float32 mean
        "loss": float(F.cross_entropy(logits, target)),  # mean over the split, nats
    }
    if k >= TOP_K_MIN_CLASSES:
        topk = logits.topk(TOP_K, dim=1).indices  # (N, TOP_K)
        metrics[f"top{TOP_K}_accuracy"] = int((topk == target[:, None]).any(1).sum()) / n
    metrics["samples"] = n
    metrics["errors"] = int((pred != target).sum())
    support = cm.sum(1)  # (K,) samples per true class
    per_class = cm.diag().double() / support.clamp(min=1)
    return {"metrics": metrics, "confusion": cm, "per_class_accuracy": per_class, "support": support}


def worst_mistakes(logits: torch.Tensor, target: torch.Tensor, count: int) -> list[dict[str, Any]]:
    """The ``count`` misclassified samples with the highest predicted-class probability, most confident first."""
    prob = logits.softmax(1)
    conf, pred = prob.max(1)
    wrong = (pred != target).nonzero().flatten()
    order = conf[wrong].argsort(descending=True)[:count]
    return [{"index": int(i), "true": int(target[i]), "predicted": int(pred[i]), "confidence": float(conf[i]),
             "true_probability": float(prob[i, target[i]])} for i in wrong[order]]


def mistakes_figure(images: torch.Tensor, mistakes: list[dict[str, Any]], class_names: list[str],
                    path: Path, title: str) -> Path:
    """A grid of images (N, C, H, W) in [0, 1], each titled 'true → predicted (confidence)'."""
    plt = pyplot()
    cols = min(GRID_COLUMNS, len(mistakes))
    rows = -(-len(mistakes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.85 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, mistakes):
        img = images[m["index"]].float().clamp(0, 1)
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).numpy())  # (H, W, C) for matplotlib
        ax.set_title(f"{_short(class_names, m['true'])} → {_short(class_names, m['predicted'])}\n"
                     f"p={m['confidence']:.2f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(names: list[str], i: int) -> str:
    return names[i] if i < len(names) else str(i)


def trained_with_flips(recipe: Any) -> bool:
    """The run saw mirrored training images: ``task_args.flip`` (CIFAR recipes) or an image folder, whose
    training loader flips at random."""
    return bool(recipe.task_args.get("flip")) or recipe.data.source == "imagefolder"


def flip_tta_logits(model: torch.nn.Module, x: torch.Tensor, runtime: Any,
                    batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain logits, the mean of the logits of each image and of its left-right mirror), both (N, K) on the CPU:
    horizontal-flip test-time augmentation, as airbench (Jordan 2024) evaluates."""
    plain = predict(model, x, runtime, batch_size).cpu()
    mirrored = predict(model, x.flip(-1), runtime, batch_size).cpu()
    return plain, (plain + mirrored) / 2


def evaluate_classifier(checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
    """Metrics, tables and the worst-mistakes figure of the checkpoint's model on ``split`` (val | test);
    ``eval_options['tta'] == 'flip'`` scores the flip-averaged logits and reports the plain accuracy beside."""
    runtime = ctx.runtime
    clf = load_classifier(checkpoint, device=runtime.device)
    tta = (ctx.eval_options or {}).get("tta")
    if tta == "flip" and not trained_with_flips(clf.recipe):
        raise UsageError(f"--tta flip: {clf.recipe.name} was not trained with mirrored images (task_args.flip is "
                         "off), so a mirror image is not its kind of input (a mirrored digit is not a digit); "
                         "evaluate it without --tta")
    data = load_bundle(clf.recipe, ctx.data_dir)
    x, y = split_of(data, clf.recipe, split)  # float [0, 1] (N, C, H, W), int64 (N,), on the CPU
    if tta == "flip":
        plain, logits = flip_tta_logits(clf.model, x, runtime, clf.recipe.eval_batch_size)
    else:
        plain = logits = predict(clf.model, x, runtime, clf.recipe.eval_batch_size).cpu()  # (N, K) float32
    k = logits.shape[1]
    names = clf.class_names if len(clf.class_names) == k else [str(i) for i in range(k)]
    m = classification_metrics(logits, y)
    cm, per_class, support = m["confusion"], m["per_class_accuracy"], m["support"]
    metrics = {**m["metrics"], "epoch": checkpoint.get("epoch")}
    if tta == "flip":  # every figure above is of the averaged logits; the plain model's accuracy beside them
        metrics = {"tta": "flip", **metrics, "accuracy_without_tta": accuracy_and_loss(plain, y)[0]}

    per_class_rows = []
    for c in range(k):
        off = cm[c].clone()
        off[c] = 0  # the most frequent wrong prediction for this true class
        confused = f"{names[int(off.argmax())]} ({int(off.max())})" if int(off.max()) > 0 else "-"
        per_class_rows.append([names[c], int(support[c]), int(cm[c, c]), float(per_class[c]), confused])
    tables: list[tuple[str, list[str], list[list[Any]]]] = [
        ("per-class accuracy", ["class", "samples", "correct", "accuracy", "most often predicted instead"],
         per_class_rows),
    ]
    if k <= MATRIX_TABLE_MAX_CLASSES:
        tables.append(("confusion matrix (rows: true class, columns: predicted class)", ["true \\ pred", *names],
                       [[names[c], *(int(v) for v in cm[c])] for c in range(k)]))

    mistakes = worst_mistakes(logits, y, GRID_IMAGES)
    figures = []
    if mistakes:
        out_dir.mkdir(parents=True, exist_ok=True)
        title = (f"{clf.recipe.name}: the {len(mistakes)} most confidently misclassified {split} images "
                 f"(true → predicted, p = predicted-class probability)")
        figures.append(str(mistakes_figure(x, mistakes, names, out_dir / "misclassified.png", title)))

    details = {
        "data_notes": list(data.extra.get("notes", [])),  # which files were read (CIFAR-10: which copy)
        "class_names": names,
        "confusion_matrix": cm.tolist(),
        "per_class_accuracy": {names[c]: float(per_class[c]) for c in range(k)},
        "most_confident_mistakes": [{**mm, "true": names[mm["true"]], "predicted": names[mm["predicted"]]}
                                    for mm in mistakes],
    }
    return EvalResult(metrics=metrics, tables=tables, figures=figures, details=details)
