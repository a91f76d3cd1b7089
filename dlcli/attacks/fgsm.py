"""The fast gradient sign method (Goodfellow, Shlens, Szegedy 2015) under the DeepFool paper's protocol.

x_adv = x + ε·sign(∇ₓ loss(x, k̂(x))), with ε the smallest value that changes the prediction of at least
90% of the attacked images; ρ is then computed for that ε (DeepFool paper, Tables 1 and 2).

The gradient sign does not depend on ε, so it is computed once (one backward pass per image) and the
search over ε only costs forward passes: a coarse grid finds the first ε that reaches the target rate, then
bisection narrows the interval between it and the grid point below.

Valid images by default (``clip=True``): the criterion looks at clamp(x + ε·s, 0, 1), the image a user gets,
which is the box treatment of DeepFool for a single step (a pixel at a bound that the sign pushes further
out does not move). ``clip=False`` is the paper's protocol, x + ε·s unclamped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dlcli.attacks.common import PerImageOutcome, check_norm, frozen_eval, lp_norm, model_device


@dataclass
class FGSMDirection:
    """sign(∇ₓ loss) for every image, with the bookkeeping shared with DeepFool."""

    sign: Tensor  # (B, C, H, W) float32 in {-1, 0, 1}, CPU
    clean_pred: Tensor  # (B,) int64
    attacked: Tensor  # (B,) bool; False where the model already misclassifies (labels given)


@dataclass
class FGSMResult(PerImageOutcome):
    """The smallest ε that reaches the target fooling rate, and the per-image results at that ε."""

    eps: float | None  # None when even ``eps_max`` does not reach the target
    target_rate: float  # e.g. 0.9
    clip: bool  # whether the fooling criterion used the valid image clamp(x + ε·s, 0, 1)
    norm: str  # the norm ρ is measured in ("2" or "inf")
    r_norm: Tensor  # (B,) ‖r‖_p of the perturbation the criterion used (clipped when ``clip``); 0 if not attacked
    r_norm_clipped: Tensor  # (B,) ‖clamp(x + ε·sign, 0, 1) − x‖_p
    x_norm: Tensor  # (B,) ‖x‖_p
    clean_pred: Tensor  # (B,)
    adv_pred: Tensor  # (B,) prediction at ε under the search's criterion
    adv_pred_clipped: Tensor  # (B,) prediction of the valid image clamp(x + ε·sign, 0, 1)
    attacked: Tensor  # (B,) bool
    searched: list[tuple[float, float]] = field(default_factory=list)  # (ε, fooling rate) evaluated


def fgsm_direction(model: nn.Module, x: Tensor, labels: Tensor | None = None, *, batch_size: int = 256) -> FGSMDirection:
    """sign(∇ₓ cross-entropy(f(x), k̂(x))) for every image: one backward pass per batch of images.

    The loss uses the clean prediction, which equals the true label for every attacked image; images the
    model already misclassifies (when ``labels`` are given) are marked not attacked and get a zero sign.
    """
    device = model_device(model)
    signs, preds = [], []
    with frozen_eval(model):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device, torch.float32).requires_grad_(True)
            logits = model(xb)
            pred = logits.argmax(dim=1)
            # sum, not mean: the sign is unaffected and per-image gradients do not shrink with the batch size
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, pred, reduction="sum"), xb)
            signs.append(grad.sign().cpu())
            preds.append(pred.detach().cpu())
    sign = torch.cat(signs)
    clean = torch.cat(preds)
    attacked = torch.ones_like(clean, dtype=torch.bool) if labels is None else clean == labels.cpu()
    sign[~attacked] = 0.0
    return FGSMDirection(sign=sign, clean_pred=clean, attacked=attacked)


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, sign: Tensor, eps: float, clip: bool, batch_size: int) -> Tensor:
    device = model_device(model)
    preds = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device, torch.float32)
        xa = xb + eps * sign[start : start + batch_size].to(device)
        if clip:
            xa = xa.clamp(0.0, 1.0)
        preds.append(model(xa).argmax(dim=1).cpu())
    return torch.cat(preds)


def fgsm_min_eps(
    model: nn.Module,
    x: Tensor,
    direction: FGSMDirection,
    *,
    target_rate: float = 0.9,
    norm: str = "2",
    clip: bool = True,
    eps_max: float = 1.0,
    grid: int = 32,
    bisect_steps: int = 16,
    batch_size: int = 1024,
) -> FGSMResult:
    """The smallest ε (pixel units) whose fooling rate over the attacked images is ≥ ``target_rate``.

    The fooling rate is not guaranteed to grow with ε, so "smallest" means: the first of ``grid`` evenly
    spaced values in (0, eps_max] that reaches the target, refined by bisection against the value below it
    (resolution eps_max / grid / 2**bisect_steps). ``clip`` decides whether the criterion looks at
    clamp(x + ε·s, 0, 1) (valid images, the default) or at x + ε·s as the paper did.
    """
    norm = check_norm(norm)
    if not 0 < target_rate <= 1:
        raise ValueError(f"target_rate must be in (0, 1], got {target_rate}")
    att = direction.attacked
    xa, sa, ca = x[att], direction.sign[att], direction.clean_pred[att]
    searched: list[tuple[float, float]] = []

    def rate(eps: float) -> float:
        # an exact fraction: a float32 mean of 180 hits in 200 is 0.89999998 < 0.9
        r = int((_predict(model, xa, sa, eps, clip, batch_size) != ca).sum()) / len(ca) if len(ca) else 0.0
        searched.append((eps, r))
        return r

    with frozen_eval(model):
        lo, hi = 0.0, None
        for i in range(1, grid + 1):
            eps = eps_max * i / grid
            if rate(eps) >= target_rate:
                hi = eps
                break
            lo = eps
        if hi is not None:
            for _ in range(bisect_steps):
                mid = (lo + hi) / 2
                if rate(mid) >= target_rate:
                    hi = mid
                else:
                    lo = mid
        eps_used = hi if hi is not None else eps_max
        adv = _predict(model, x, direction.sign, eps_used, clip, batch_size)
        adv_clipped = adv if clip else _predict(model, x, direction.sign, eps_used, True, batch_size)

    r = eps_used * direction.sign  # (B, C, H, W), zero where not attacked
    r_clipped = (x.float() + r).clamp(0.0, 1.0) - x.float()
    keep = direction.attacked
    r_norm_clipped = torch.where(keep, lp_norm(r_clipped, norm), torch.zeros(len(keep)))
    return FGSMResult(
        eps=hi,
        target_rate=target_rate,
        clip=clip,
        norm=norm,
        r_norm=r_norm_clipped if clip else lp_norm(r, norm),
        r_norm_clipped=r_norm_clipped,
        x_norm=lp_norm(x.float(), norm),
        clean_pred=direction.clean_pred,
        adv_pred=torch.where(keep, adv, direction.clean_pred),
        adv_pred_clipped=torch.where(keep, adv_clipped, direction.clean_pred),
        attacked=keep,
        searched=searched,
    )
