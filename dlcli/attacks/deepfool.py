"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016), batched over images on one device.

The model maps images in [0, 1] pixel space, shape (B, C, H, W), to logits (B, K); any input
normalisation lives inside it. For each image the attack linearises the classifier around the current
iterate and takes the smallest step onto the nearest linearised decision boundary among the top
``candidates`` classes by clean logit (Algorithm 2; the ℓ∞ variant of section 3.3), until the predicted
label changes or ``max_iter`` steps were taken. As in the authors' reference code, 1e-4 is added to every
step length and the overshoot multiplies the accumulated perturbation: x_{i+1} = x + (1 + η)·r_tot.

Three ways to deal with the valid pixel range [0, 1] (``clip``):

* ``"box"`` (the default): each linearised step is solved subject to the box, x_{i+1} ∈ [0, 1]
  (:func:`dlcli.attacks.linear_step.box_step`): pixels at a bound that the step would push further out leave
  the step and its length is recomputed on the rest. Every iterate is a valid image, the label flip is
  checked on it, and the returned adversarial image is the iterate that flipped, overshoot included. When no
  pixel meets a bound this is the paper's iteration exactly.
* ``"none"``: the paper's iteration, unconstrained. ρ is the paper's; the written images are
  clamp(x + r̂, 0, 1) and may no longer fool the model (reported apart).
* ``"step"``: the paper's steps, but every iterate is clamped to [0, 1] while r_tot keeps the unclamped
  steps (what torchattacks does, the like-for-like mode in benchmarks).

Batching: all images of a chunk advance together and leave as soon as their label flips. Images are
independent in an eval-mode model, so the gradient of Σ_b (f_{k_b}(x_b) − f_{k̂_b}(x_b)) with respect to
the batch is the stack of the per-image gradients. ``grad="loop"`` takes one backward pass per candidate
class; ``grad="batched"`` takes all of them in one call (vector-Jacobian products batched with
``torch.autograd.grad(..., is_grads_batched=True)``). Which is faster depends on the device and the model
(``benchmarks/attack_gpu_bench.py`` measures both); ``"auto"`` picks the measured winner per device type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from dlcli.attacks.common import (  # re-exported: older code imports them from here
    NORMS,
    PerImageOutcome,
    check_norm,
    frozen_eval,
    lp_norm,
    model_device,
)
from dlcli.attacks.linear_step import smallest_step
from dlcli.attacks.refine import refine as refine_adversarials

__all__ = ["CLIP_MODES", "GRAD_MODES", "NORMS", "DeepFoolResult", "PerImageOutcome", "check_clip", "check_norm",
           "deepfool", "frozen_eval", "lp_norm", "model_device", "resolve_grad", "resolve_refine"]

CLIP_MODES = ("box", "none", "step")
CLIP_ALIASES = {"final": "none"}  # the name "none" had before box mode existed
GRAD_MODES = ("auto", "loop", "batched")
# grad="auto" per device type: measured with benchmarks/attack_gpu_bench.py (benchmarks/RESULTS.md, "Attacks").
AUTO_GRAD = {"cpu": "loop", "cuda": "batched"}
STEP_EPS = 1e-4  # added to every step length by the authors' reference implementation
STACK_ELEMENTS = 1 << 22  # grad="loop": floats of the candidate gradients solved together, (group, a, C·H·W)

Progress = Callable[[int, int], None]  # (images finished, images in total)


@dataclass
class DeepFoolResult(PerImageOutcome):
    """Per-image DeepFool results; every tensor is on the CPU, indexed like the input batch.

    ``adversarial`` is the image the attack hands out, always in [0, 1]. With ``clip="box"`` or ``"step"``
    it is the iterate the label flipped at and ``perturbation`` = adversarial − x exactly; with
    ``clip="none"`` ``perturbation`` is the paper's unclipped r̂ = (1 + η)·r_tot and ``adversarial`` =
    clamp(x + r̂, 0, 1), which may not fool the model (``fooled`` vs ``fooled_clipped``).
    """

    perturbation: Tensor  # (B, C, H, W) float32, zero where not attacked
    adversarial: Tensor  # (B, C, H, W) float32 in [0, 1]
    norm: str  # "2" or "inf": the norm of the attack and of ``r_norm``
    clip: str  # "box", "none" or "step"
    r_norm: Tensor  # (B,) ‖r̂‖_p
    r_norm_clipped: Tensor  # (B,) ‖adversarial − x‖_p, the perturbation the written image carries
    x_norm: Tensor  # (B,) ‖x‖_p, so that ρ = r_norm / x_norm
    clean_pred: Tensor  # (B,) int64, k̂(x)
    adv_pred: Tensor  # (B,) int64, k̂ of the iterate the algorithm stopped at
    adv_pred_clipped: Tensor  # (B,) int64, k̂(adversarial)
    attacked: Tensor  # (B,) bool; False for images already misclassified (when labels were given)
    iterations: Tensor  # (B,) int64, DeepFool steps taken
    grad_evals: Tensor  # (B,) int64, vector-Jacobian products (one per candidate class and step)
    grad: str = "loop"  # how the gradients were taken: "loop" or "batched"
    refine: int = 0  # boundary-projection rounds applied to the adversarial images (dlcli.attacks.refine)


def check_clip(clip: str) -> str:
    """'box' | 'none' | 'step' (and the old name 'final' for 'none'); anything else is a ValueError."""
    c = CLIP_ALIASES.get(str(clip).strip().lower(), str(clip).strip().lower())
    if c not in CLIP_MODES:
        raise ValueError(f"clip {clip!r}: expected one of {', '.join(CLIP_MODES)}")
    return c


def resolve_grad(grad: str, device: torch.device) -> str:
    """'auto' -> the measured faster strategy on this device type; 'loop' | 'batched' as given."""
    if grad not in GRAD_MODES:
        raise ValueError(f"grad {grad!r}: expected one of {', '.join(GRAD_MODES)}")
    return AUTO_GRAD.get(device.type, "loop") if grad == "auto" else grad


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
    clip: str = "box",
    grad: str = "auto",
    step_eps: float = STEP_EPS,
    refine: int | None = None,
    progress: Progress | None = None,
) -> DeepFoolResult:
    """Run DeepFool on ``x`` (B, C, H, W) in [0, 1]; returns per-image perturbations and bookkeeping.

    ``labels`` (B,) are the true classes: images the model already gets wrong are not attacked (zero
    perturbation, ``attacked`` False). Without labels every image is attacked away from its own prediction.
    ``candidates`` is the number of classes searched, the clean prediction included (the reference code's
    top 10 by clean logit). ``batch_size`` images are attacked at once (all of them when None). ``clip``,
    ``grad`` and ``refine`` (None: 1 round in box mode, 0 otherwise): see the module docstring.
    """
    norm = check_norm(norm)
    clip = check_clip(clip)
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    if candidates < 2:
        raise ValueError(f"candidates must be at least 2 (the clean class and one other), got {candidates}")
    if not overshoot >= 0 or overshoot == float("inf"):  # also refuses NaN
        raise ValueError(f"overshoot must be a finite non-negative number, got {overshoot}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    refine = resolve_refine(refine, clip)
    device = model_device(model)
    grad = resolve_grad(grad, device)
    n = x.shape[0]
    chunk = n if not batch_size or batch_size >= n else int(batch_size)
    parts: list[dict[str, Tensor]] = []
    done = 0
    with frozen_eval(model):
        for start in range(0, max(n, 1), max(chunk, 1)):
            xb = x[start : start + chunk].to(device, torch.float32)
            yb = None if labels is None else labels[start : start + chunk].to(device)
            parts.append(_deepfool_chunk(model, xb, yb, norm, overshoot, max_iter, candidates, clip, grad, step_eps,
                                         refine))
            done += xb.shape[0]
            if progress is not None:
                progress(done, n)
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return DeepFoolResult(norm=norm, clip=clip, grad=grad, refine=refine, **cat)


def resolve_refine(refine: int | None, clip: str) -> int:
    """None -> 1 round in box mode, 0 otherwise; a count must be a non-negative integer, 0 with clip "none"."""
    if refine is None:
        return 1 if clip == "box" else 0
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine {refine!r}: expected a non-negative number of rounds")
    if refine and clip == "none":
        raise ValueError(f"refine {refine} with clip 'none': the projection works on valid adversarial images, and "
                         "clip 'none' keeps the paper's iteration (use clip box or step)")
    return refine


def _refine_chunk(model: nn.Module, x0: Tensor, logits0: Tensor, adversarial: Tensor, adv_pred: Tensor,
                  clean: Tensor, attacked: Tensor, norm: str, overshoot: float, step_eps: float,
                  rounds: int) -> Tensor:
    """Boundary projections (dlcli.attacks.refine) of the chunk's valid adversarials, in place in
    ``adversarial`` and ``adv_pred``; returns the vector-Jacobian products each image took."""
    evals = torch.zeros(len(x0), dtype=torch.long, device=x0.device)
    sel = (attacked & (adv_pred != clean)).nonzero().squeeze(1)
    if sel.numel():
        adv, pred, e = refine_adversarials(model, x0[sel], adversarial[sel], clean[sel], logits0[sel], adv_pred[sel],
                                           norm=norm, overshoot=overshoot, step_eps=step_eps, rounds=rounds)
        adversarial[sel], adv_pred[sel], evals[sel] = adv, pred, e
    return evals


def _deepfool_chunk(
    model: nn.Module,
    x0: Tensor,
    labels: Tensor | None,
    norm: str,
    overshoot: float,
    max_iter: int,
    candidates: int,
    clip: str,
    grad: str,
    step_eps: float,
    refine: int = 0,
) -> dict[str, Tensor]:
    """DeepFool on one chunk that fits the device at once; returns CPU tensors for :class:`DeepFoolResult`."""
    b = x0.shape[0]
    scale = 1.0 + overshoot
    leaf = x0.detach().requires_grad_(True)
    first: Tensor | None = model(leaf)  # (b, K), with its graph: x itself is DeepFool's first iterate
    logits0 = first.detach()
    if clip != "none" and not bool(((x0 >= 0) & (x0 <= 1)).all()):
        first = None  # the first iterate is clamp(x), not x: it takes its own forward pass
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
        if first is not None:  # r_tot = 0: the clean forward pass is this iterate's
            xi, rows = leaf, (None if idx.numel() == b else idx)  # (b, C, H, W), the rows attacked
            logits = first if rows is None else first[rows]
            first = None  # its graph lives on in ``logits`` until this iteration's step
        else:
            xi, rows = _iterate(x0[idx], r_tot[idx], scale, clip).requires_grad_(True), None
            logits = model(xi)  # (a, K)
        pred = logits.argmax(dim=1)
        adv_pred[idx] = pred.detach()
        running = pred == clean[idx]
        if it == max_iter or not running.any():
            break
        if not running.all():  # drop the flipped images; a fresh forward costs less than backward passes over them
            idx = idx[running]
            xi, rows = _iterate(x0[idx], r_tot[idx], scale, clip).requires_grad_(True), None
            logits = model(xi)
        r_tot[idx] += _step(logits, xi, cand[idx], norm, step_eps, clip, scale, grad, rows)
        iterations[idx] += 1

    # Each step evaluated k - 1 gradients of f_k - f_k̂ (vector-Jacobian products, batched or not).
    grad_evals = iterations * (k - 1)
    keep = attacked.view(-1, 1, 1, 1)
    r_hat = torch.where(keep, r_tot * scale, torch.zeros_like(r_tot))
    # The iterate as _iterate built it (box mode: already valid; the clamp only removes rounding).
    adversarial = (x0 + r_hat).clamp(0.0, 1.0)
    if refine:  # box or step mode (resolve_refine refuses it with "none"): ``adversarial`` is the loop's last
        # iterate, labelled ``adv_pred``; both are shrunk / relabelled in place
        grad_evals = grad_evals + _refine_chunk(model, x0, logits0, adversarial, adv_pred, clean, attacked,
                                                norm, overshoot, step_eps, refine)
    # The images written, after any projection, are classified again in one pass over the chunk, in every mode:
    # the loop and the projection judged them in smaller batches, and a verdict a hair from the boundary must
    # hold in the batch a user evaluates it in too (2-3% of the CPU time; on a GPU with TF32, a re-evaluation
    # disagreed with the attack on 0.7% of a ResNet-20's images).
    with torch.no_grad():
        adv_pred_clipped = torch.where(attacked, model(adversarial).argmax(dim=1), clean)
    if clip != "none":
        r_hat = adversarial - x0  # the perturbation the valid image carries, exactly
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
    """x_i = x + (1 + η)·r_tot, clamped to [0, 1] unless ``clip="none"`` (in box mode it only removes rounding)."""
    xi = x0 + r_tot * scale
    return xi if clip == "none" else xi.clamp(0.0, 1.0)


def _candidate_grads(f_diff: Tensor, xi: Tensor, grad: str) -> Tensor | None:
    """(k-1, B, D) gradients with respect to ``xi`` (B, C, H, W) of every column of ``f_diff`` (a, k-1) in one
    batched call, or None for "loop"."""
    if grad != "batched":
        return None
    a, k1 = f_diff.shape
    basis = torch.eye(k1, device=xi.device, dtype=f_diff.dtype).unsqueeze(1).expand(k1, a, k1)  # (k-1, a, k-1)
    (g,) = torch.autograd.grad(f_diff, xi, grad_outputs=basis, is_grads_batched=True)
    return g.flatten(2)  # (k-1, B, C·H·W)


def _step(logits: Tensor, xi: Tensor, cand: Tensor, norm: str, step_eps: float, clip: str, scale: float,
          grad: str, rows: Tensor | None = None) -> Tensor:
    """One DeepFool step for every image of the batch: (a, C, H, W) in pixel units, before the overshoot.

    ``logits`` (a, K) were computed from ``xi`` (a, C, H, W) with autograd on, or are the ``rows`` (a,) of a
    forward pass of a larger ``xi``; ``cand`` (a, k) holds the candidate classes, the clean prediction
    first. Per image the candidate with the smallest step is kept (:func:`smallest_step`). With
    ``grad="loop"`` candidates take one backward pass each and their steps are solved in groups that keep
    the (group, a, D) buffers small whatever k is; with ``grad="batched"`` all (k-1, a, D) gradients come
    from one call and the steps of all candidates are solved at once.
    """
    f = logits.gather(1, cand)  # (a, k)
    f_diff = f[:, 1:] - f[:, :1]  # (a, k-1): f'_k = f_k - f_k̂, negative while the label holds
    a, k1 = f_diff.shape
    f_abs = f_diff.detach().abs()
    flat = xi.detach().flatten(1)  # (B, D)
    if rows is not None:
        flat = flat[rows]  # (a, D)
    lo, hi = -flat / scale, (1.0 - flat) / scale  # box mode: x + (1 + η)(r_tot + r) stays in [0, 1]

    box = (lo, hi) if clip == "box" else None
    shape = (a, *xi.shape[1:])
    grads = _candidate_grads(f_diff, xi, grad)
    if grads is not None:
        grads = grads if rows is None else grads[:, rows]
        return smallest_step(grads, f_abs.t(), norm, step_eps, box)[0].view(shape)  # from (k-1, a, D)

    def vjp(j: int) -> Tensor:  # (a, D), per image because images do not interact
        (g,) = torch.autograd.grad(f_diff[:, j].sum(), xi, retain_graph=j < k1 - 1)
        return g.flatten(1) if rows is None else g.flatten(1)[rows]

    # One backward pass per candidate; the steps of a group of candidates are solved in one call, the group
    # sized so that its (group, a, D) gradients stay small.
    group = max(1, STACK_ELEMENTS // max(flat.numel(), 1))
    best_key, best_r = None, None
    for j0 in range(0, k1, group):
        js = range(j0, min(j0 + group, k1))
        g = torch.stack([vjp(j) for j in js])  # (group, a, D)
        r, key = smallest_step(g, f_abs[:, j0 : j0 + len(js)].t(), norm, step_eps, box)
        if best_key is None:
            best_key, best_r = key, r
        else:  # ties keep the earlier candidate, as within a group
            better = key < best_key
            best_key = torch.where(better, key, best_key)
            best_r = torch.where(better.unsqueeze(1), r, best_r)
    return best_r.view(shape)
