"""Image-classifier plumbing shared by training, ``eval`` and the attacks: one way to build, run and load one.

A classifier is the registered network behind its input normalisation (``Normalized``), so every consumer
feeds pixels in [0, 1], (B, C, H, W). ``build_classifier`` is the only place that assembles one: training
calls it with the data's description, loading calls it with the description saved in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.batches import images_to_float
from dlcli.checkpoint import find_checkpoint, load_checkpoint
from dlcli.config import Recipe, recipe_from_dict
from dlcli.errors import DlcliError, UsageError
from dlcli.registry import build_model_with_defaults
from dlcli.runtime import Runtime


class Normalized(nn.Module):
    """(x - mean) / std in front of a network; x is in [0, 1] pixel space, (B, C, H, W)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def data_meta(num_classes: int, class_names: Sequence[str], input_shape: Sequence[int], mean: Sequence[float],
              std: Sequence[float]) -> dict[str, Any]:
    """What a checkpoint stores so that its classifier can be rebuilt without the data."""
    c = int(input_shape[0])
    return {"num_classes": int(num_classes), "class_names": list(class_names), "input_shape": list(input_shape),
            "mean": list(mean) or [0.0] * c, "std": list(std) or [1.0] * c}


def build_classifier(recipe: Recipe, meta: dict[str, Any]) -> nn.Module:
    """The recipe's network for data described by ``meta`` (see ``data_meta``), behind its normalisation."""
    c, h = int(meta["input_shape"][0]), int(meta["input_shape"][1])
    net = build_model_with_defaults(recipe.model.name, recipe.model.args, num_classes=meta["num_classes"],
                                    in_channels=c, input_size=h)
    return Normalized(net, meta["mean"], meta["std"])


@torch.no_grad()
def check_fits(model: nn.Module, meta: dict[str, Any], name: str) -> None:
    """One blank image of the data's shape through a freshly built classifier (eval mode, so no statistics
    move and no random numbers are drawn): model arguments that do not fit the data (channels, image size,
    classes, the normalisation's length) fail here, in one line, before a run folder exists."""
    shape, k = tuple(meta["input_shape"]), int(meta["num_classes"])
    described = f"images {'x'.join(map(str, shape))} in {k} classes"
    was_training = model.training
    try:
        out = model.eval()(torch.zeros(1, *shape))
    except (RuntimeError, ValueError, IndexError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise UsageError(f"model {name} does not fit the data ({described}): {first}; check model.args and "
                         f"data.args") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, k):
        raise UsageError(f"model {name} gives {tuple(out.shape[1:])} outputs per image for data with {k} classes; "
                         f"remove model.args.num_classes (it defaults to the data's) or set it to {k}")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, runtime: Runtime, batch_size: int) -> torch.Tensor:
    """Logits (N, K) in float32 for uint8 or float images x (N, C, H, W), batched on the device."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = runtime.to_input(images_to_float(x[i:i + batch_size].to(runtime.device)))
        runtime.mark_step()  # CUDA graphs: each batch is a replay of its own (no backward marks it)
        with runtime.autocast():
            raw = model(xb)
        logits = raw.float()
        # Compiled with CUDA graphs (compile: reduce-overhead), the next replay writes its output where this
        # one is: keep a copy (``.float()`` made one from bf16 logits; from float32 ones it returns them)
        out.append(logits.clone() if runtime.cuda_graphs and logits is raw else logits)
    return torch.cat(out) if out else torch.empty(0)


def accuracy_and_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(fraction correct, mean cross-entropy in nats) of logits (N, K) against labels (N,)."""
    correct = int((logits.argmax(1) == y).sum())  # an exact count: 0.99, not float32's 0.99000001
    return correct / max(1, len(y)), float(F.cross_entropy(logits, y))


def recipe_of(checkpoint: dict[str, Any]) -> Recipe:
    """The resolved recipe a checkpoint was trained with."""
    saved = checkpoint["recipe"]
    if not isinstance(saved, dict):
        raise DlcliError(f"{checkpoint.get('path')}: the checkpoint's recipe entry is not a mapping")
    return recipe_from_dict(saved, f"{checkpoint.get('path')} (saved recipe)", saved.get("name", "run"), legacy=True)


@dataclass
class Classifier:
    """A trained classifier rebuilt from its checkpoint: ``model`` takes pixels in [0, 1], (B, C, H, W)."""

    model: nn.Module
    recipe: Recipe
    checkpoint: dict[str, Any]
    class_names: list[str]
    input_shape: tuple[int, ...]
    run_dir: Path


def classifier_meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Classes, input shape and normalisation, as saved in the checkpoint (no data access needed)."""
    meta = ckpt.get("data_meta")
    if not isinstance(meta, dict):
        raise DlcliError(f"{ckpt.get('path')}: checkpoint has no data description (written by an older dlcli?)")
    return meta


def load_classifier(path: str | Path | dict[str, Any], device: torch.device | str = "cpu",
                    data_dir: str | None = None) -> Classifier:
    """Rebuild an image classifier (normalisation inside, eval mode, on ``device``) from a run folder, a
    checkpoint file, or a checkpoint already read. ``data_dir`` is unused (kept for callers' symmetry)."""
    ckpt = path if isinstance(path, dict) else load_checkpoint(find_checkpoint(path), map_location="cpu")
    recipe = recipe_of(ckpt)
    meta = ckpt.get("data_meta")
    if recipe.task != "classify" and not (isinstance(meta, dict) and ckpt.get("classifier")):
        raise DlcliError(
            f"{ckpt['path']}: a {recipe.task!r} run ({recipe.name}), not an image classifier; "
            "attacks need a classify run such as lenet"
        )
    meta = classifier_meta(ckpt)
    model = build_classifier(recipe, meta)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise DlcliError(f"{ckpt['path']}: weights do not match model {recipe.model.name!r}: "
                         f"{str(e).splitlines()[0][:160]}") from None
    model.to(device).eval()
    return Classifier(model, recipe, ckpt, list(meta["class_names"]), tuple(meta["input_shape"]),
                      Path(ckpt["path"]).parent)
