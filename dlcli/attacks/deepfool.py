"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016), batched over images on one device.

The model maps images in [0, 1] pixel space, shape (B, C, H, W), to logits (B, K); any input
normalisation lives inside it. For each image the attack linearises the classifier around the current
iterate and takes the smallest step onto the nearest linearised decision boundary among the top
``candidates`` classes by clean logit (Algorithm 2; the ℓ∞ variant of section 3.3), until the predicted
label changes or ``max_iter`` steps were taken. As in the authors' reference code, 1e-4 is added to every
step length and the overshoot multiplies the accumulated perturbation: x_{i+1} = x + (1 + η)·r_tot.

Batching: all images of a chunk advance together. Images are independent in an eval-mode model, so the
gradient of Σ_b (f_{k_b}(x_b) − f_{k̂_b}(x_b)) with respect to the batch is the stack of the per-image
gradients: one backward pass per candidate class gives every image's w'_k. Images leave the batch as soon
as their label flips, so late iterations only pay for the few images still running.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

NORMS = ("2", "inf")
CLIP_MODES = ("final", "step")
STEP_EPS = 1e-4  # added to every step length by the authors' reference implementation
_TINY = 1e-12  # guards divisions by a zero gradient norm

Progress = Callable[[int, int], None]  # (images finished, images in total)


class PerImageOutcome:
    """What every per-image attack result derives from its tensors (DeepFool's and FGSM's alike)."""

    attacked: Tensor  # (B,) bool
    clean_pred: Tensor  # (B,) int64, k̂(x)
    adv_pred: Tensor  # (B,) int64, the prediction the attack's own criterion saw
    adv_pred_clipped: Tensor  # (B,) int64, k̂ of the valid (clamped) image
    r_norm: Tensor  # (B,) ‖r‖_p
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
        return self.r_norm / self.x_norm.clamp_min(_TINY)


@dataclass
class DeepFoolResult(PerImageOutcome):
    """Per-image DeepFool results; every tensor is on the CPU, indexed like the input batch.

    ``perturbation`` is r̂ = (1 + η)·r_tot in pixel units. With ``clip="final"`` it is the paper's,
    unclipped perturbation and ``adversarial`` = clamp(x + r̂, 0, 1) may differ from x + r̂; with
    ``clip="step"`` every iterate was clipped, so r̂ = adversarial − x exactly.
    """

    perturbation: Tensor  # (B, C, H, W) float32, zero where not attacked
    adversarial: Tensor  # (B, C, H, W) float32, clamp(x + r̂, 0, 1)
    norm: str  # "2" or "inf": the norm of the attack and of ``r_norm``
    r_norm: Tensor  # (B,) ‖r̂‖_p
    r_norm_clipped: Tensor  # (B,) ‖clamp(x + r̂, 0, 1) − x‖_p, the perturbation a valid image carries
    x_norm: Tensor  # (B,) ‖x‖_p, so that ρ = r_norm / x_norm
    clean_pred: Tensor  # (B,) int64, k̂(x)
    adv_pred: Tensor  # (B,) int64, k̂(x + r̂): the iterate the algorithm stopped at
    adv_pred_clipped: Tensor  # (B,) int64, k̂(clamp(x + r̂, 0, 1))
    attacked: Tensor  # (B,) bool; False for images already misclassified (when labels were given)
    iterations: Tensor  # (B,) int64, DeepFool steps taken
    grad_evals: Tensor  # (B,) int64, vector-Jacobian products (one per candidate class and step)

    @property
    def rho_clipped(self) -> Tensor:
        """(B,) ‖clamp(x + r̂, 0, 1) − x‖_p / ‖x‖_p."""
        return self.r_norm_clipped / self.x_norm.clamp_min(_TINY)


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
    """Eval mode (no batch-norm coupling between images, no dropout) and no parameter gradients.

    Gradients are only needed with respect to the input; switching them off for the weights keeps autograd
    from building (and the backward pass from computing) weight gradients. Both are restored afterwards.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def deepfool(
    model: nn.Module,
    x: Tensor,
    labels: Tensor | None = None,
    *,
    norm: str = "2",
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int = 10,
    batch_size: int | None = None,
    clip: str = "final",
    step_eps: float = STEP_EPS,
    progress: Progress | None = None,
) -> DeepFoolResult:
    """Run DeepFool on ``x`` (B, C, H, W) in [0, 1]; returns per-image perturbations and bookkeeping.

    ``labels`` (B,) are the true classes: images the model already gets wrong are not attacked (zero
    perturbation, ``attacked`` False). Without labels every image is attacked away from its own prediction.
    ``candidates`` is the number of classes searched, the clean prediction included (the reference code's
    top 10 by clean logit). ``batch_size`` images are attacked at once (all of them when None).
    ``clip="final"`` iterates as the paper does and clips only the returned adversarial images;
    ``clip="step"`` clips every iterate to [0, 1], so the label flip is checked on valid images.
    """
    norm = check_norm(norm)
    if clip not in CLIP_MODES:
        raise ValueError(f"clip {clip!r}: expected one of {', '.join(CLIP_MODES)}")
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    if candidates < 2:
        raise ValueError(f"candidates must be at least 2 (the clean class and one other), got {candidates}")
    if overshoot < 0:
        raise ValueError(f"overshoot must be non-negative, got {overshoot}")
    n = x.shape[0]
    chunk = n if not batch_size or batch_size >= n else int(batch_size)
    device = model_device(model)
    parts: list[dict[str, Tensor]] = []
    done = 0
    with frozen_eval(model):
        for start in range(0, max(n, 1), max(chunk, 1)):
            xb = x[start : start + chunk].to(device, torch.float32)
            yb = None if labels is None else labels[start : start + chunk].to(device)
            parts.append(
                _deepfool_chunk(model, xb, yb, norm, overshoot, max_iter, candidates, clip, step_eps)
            )
            done += xb.shape[0]
            if progress is not None:
                progress(done, n)
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return DeepFoolResult(norm=norm, **cat)


def _deepfool_chunk(
    model: nn.Module,
    x0: Tensor,
    labels: Tensor | None,
    norm: str,
    overshoot: float,
    max_iter: int,
    candidates: int,
    clip: str,
    step_eps: float,
) -> dict[str, Tensor]:
    """DeepFool on one chunk that fits the device at once; returns CPU tensors for :class:`DeepFoolResult`."""
    b = x0.shape[0]
    scale = 1.0 + overshoot
    with torch.no_grad():
        logits0 = model(x0)  # (b, K)
    k = min(candidates, logits0.shape[1])
    cand = logits0.topk(k, dim=1).indices  # (b, k); column 0 is the clean prediction k̂(x)
    clean = cand[:, 0]
    attacked = torch.ones(b, dtype=torch.bool, device=x0.device) if labels is None else clean == labels

    r_tot = torch.zeros_like(x0)  # accumulated steps, before the overshoot
    iterations = torch.zeros(b, dtype=torch.long, device=x0.device)
    adv_pred = clean.clone()
    idx = attacked.nonzero().squeeze(1)  # images still running
    for it in range(max_iter + 1):
        if idx.numel() == 0:
            break
        xi = _iterate(x0[idx], r_tot[idx], scale, clip).requires_grad_(True)
        logits = model(xi)  # (a, K)
        pred = logits.argmax(dim=1)
        adv_pred[idx] = pred.detach()
        running = pred == clean[idx]
        if it == max_iter or not running.any():
            break
        if not running.all():  # drop the flipped images; a fresh forward costs less than backward passes over them
            idx = idx[running]
            xi = _iterate(x0[idx], r_tot[idx], scale, clip).requires_grad_(True)
            logits = model(xi)
        r_tot[idx] += _step(logits, xi, cand[idx], norm, step_eps)
        iterations[idx] += 1

    # Each step evaluated k - 1 gradients of f_k - f_k̂ (one backward pass each).
    grad_evals = iterations * (k - 1)
    r_hat = torch.where(attacked.view(-1, 1, 1, 1), r_tot * scale, torch.zeros_like(r_tot))
    adversarial = (x0 + r_hat).clamp(0.0, 1.0)
    if clip == "step":
        r_hat = adversarial - x0  # the iterates were clipped, so this is the perturbation that was applied
    with torch.no_grad():
        adv_pred_clipped = _predict(model, adversarial)
    adv_pred_clipped = torch.where(attacked, adv_pred_clipped, clean)
    return {
        "perturbation": r_hat.cpu(),
        "adversarial": adversarial.cpu(),
        "r_norm": lp_norm(r_hat, norm).cpu(),
        "r_norm_clipped": lp_norm(adversarial - x0, norm).cpu(),
        "x_norm": lp_norm(x0, norm).cpu(),
        "clean_pred": clean.cpu(),
        "adv_pred": adv_pred.cpu(),
        "adv_pred_clipped": adv_pred_clipped.cpu(),
        "attacked": attacked.cpu(),
        "iterations": iterations.cpu(),
        "grad_evals": grad_evals.cpu(),
    }


def _iterate(x0: Tensor, r_tot: Tensor, scale: float, clip: str) -> Tensor:
    """x_i = x + (1 + η)·r_tot, clipped to [0, 1] in ``clip="step"`` mode."""
    xi = x0 + scale * r_tot
    return xi.clamp(0.0, 1.0) if clip == "step" else xi


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(dim=1)


def _step(logits: Tensor, xi: Tensor, cand: Tensor, norm: str, step_eps: float) -> Tensor:
    """One DeepFool step for every image of the batch: (a, C, H, W) in pixel units.

    ``logits`` (a, K) were computed from ``xi`` (a, C, H, W) with autograd on; ``cand`` (a, k) holds the
    candidate classes, the clean prediction first. Candidates are visited one at a time (one backward pass
    each) keeping, per image, the one with the smallest distance to its linearised boundary; only two
    (a, D) gradient buffers are alive at once, whatever k is.
    """
    f = logits.gather(1, cand)  # (a, k)
    f_diff = f[:, 1:] - f[:, :1]  # (a, k-1): f'_k = f_k - f_k̂, negative while the label holds
    a, k1 = f_diff.shape
    best_dist = torch.full((a,), float("inf"), device=xi.device)
    best_w = torch.zeros(a, xi[0].numel(), device=xi.device)  # (a, D) w'_l of the chosen class
    for j in range(k1):
        (grad,) = torch.autograd.grad(f_diff[:, j].sum(), xi, retain_graph=j < k1 - 1)
        w = grad.flatten(1)  # (a, D): ∇f_k - ∇f_k̂, per image because images do not interact
        w_norm = w.norm(dim=1) if norm == "2" else w.abs().sum(dim=1)  # dual norm of the attack's norm
        dist = f_diff[:, j].detach().abs() / w_norm.clamp_min(_TINY)
        better = dist < best_dist
        best_dist = torch.where(better, dist, best_dist)
        best_w = torch.where(better.unsqueeze(1), w, best_w)
    length = best_dist + step_eps  # (a,) step length in the attack's norm
    if norm == "2":
        direction = best_w / best_w.norm(dim=1, keepdim=True).clamp_min(_TINY)
    else:
        direction = best_w.sign()  # ℓ∞: |f'_l| / ‖w'_l‖₁ · sign(w'_l)
    return (length.unsqueeze(1) * direction).view_as(xi)
