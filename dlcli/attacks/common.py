"""What every attack shares: norm names, ℓp norms per image, the frozen eval context, per-image bookkeeping."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

NORMS = ("2", "inf")
TINY = 1e-12  # guards divisions by a zero gradient or image norm


def check_norm(norm: str | int | float) -> str:
    """'2', 2, 'inf', float('inf') -> '2' | 'inf'; anything else is a ValueError naming the choices."""
    s = str(norm).strip().lower()
    s = {"2.0": "2", "l2": "2", "linf": "inf", "infinity": "inf"}.get(s, s)
    if s not in NORMS:
        raise ValueError(f"norm {norm!r}: expected 2 or inf")
    return s


def lp_norm(t: Tensor, norm: str) -> Tensor:
    """(B, ...) -> (B,) the ℓ2 or ℓ∞ norm of each flattened row."""
    flat = t.flatten(1)
    return flat.norm(dim=1) if norm == "2" else flat.abs().amax(dim=1)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no batch-norm coupling between images, no dropout), no parameter gradients, full float32.

    Gradients are only needed with respect to the input; switching them off for the weights keeps autograd
    from building (and the backward pass from computing) weight gradients. cuDNN's autotuning is switched off
    too: DeepFool's batch shrinks as images flip, and timing algorithms for every new batch size costs more
    than it saves. TF32 is switched off for cuDNN convolutions and CUDA matmuls (PyTorch turns it on for
    convolutions by default): an attack decides whether an image fools the model on logits a hair apart at the
    boundary, and with TF32's 10-bit mantissa that decision can change with the batch an image is evaluated
    in (on an H200, 0.7% of a CIFAR ResNet-20's box-mode adversarials did not fool a re-evaluation in
    TF32; every one did in float32 on the CPU). All are restored afterwards.
    """
    was_training = model.training
    was_benchmark = torch.backends.cudnn.benchmark
    was_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
        torch.backends.cudnn.benchmark = was_benchmark
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = was_tf32


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class PerImageOutcome:
    """What every per-image attack result derives from its tensors (DeepFool's and FGSM's alike).

    ``adv_pred`` is what the attack's own criterion saw (for DeepFool ``clip="none"`` the unclipped
    x + r̂), ``adv_pred_clipped`` the prediction of the image the attack writes, clamp(x + r, 0, 1).
    """

    attacked: Tensor  # (B,) bool
    clean_pred: Tensor  # (B,) int64, k̂(x)
    adv_pred: Tensor  # (B,) int64, the prediction the attack's own criterion saw
    adv_pred_clipped: Tensor  # (B,) int64, k̂ of the valid (clamped) image
    r_norm: Tensor  # (B,) ‖r‖_p
    r_norm_clipped: Tensor  # (B,) ‖clamp(x + r, 0, 1) − x‖_p
    x_norm: Tensor  # (B,) ‖x‖_p

    @property
    def fooled(self) -> Tensor:
        """(B,) bool: attacked and the attack's own criterion changed the label."""
        return self.attacked & (self.adv_pred != self.clean_pred)

    @property
    def fooled_clipped(self) -> Tensor:
        """(B,) bool: attacked and the valid image clamp(x + r, 0, 1) changed the label."""
        return self.attacked & (self.adv_pred_clipped != self.clean_pred)

    @property
    def rho(self) -> Tensor:
        """(B,) ‖r‖_p / ‖x‖_p, the per-image term of the paper's ρ_adv."""
        return self.r_norm / self.x_norm.clamp_min(TINY)

    @property
    def rho_clipped(self) -> Tensor:
        """(B,) ‖clamp(x + r, 0, 1) − x‖_p / ‖x‖_p: ρ of the image the attack writes."""
        return self.r_norm_clipped / self.x_norm.clamp_min(TINY)
