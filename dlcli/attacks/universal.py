"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, CVPR 2017), Algorithm 1.

One image-agnostic perturbation v, with ‖v‖_p ≤ ξ, that changes the model's prediction on most images.
Passes over the shuffled building images: wherever k̂(x + v) = k̂(x), the minimal (ℓ2, as in the paper's
Algorithm 1) DeepFool perturbation Δv of x + v is added to v, and v is projected back onto the ℓp ball of
radius ξ. Stops once the fooling rate on the building set reaches 1 − δ, or after ``max_passes`` passes.

Batching (the paper's loop is sequential over images): the building images are visited in mini-batches of
``fold_batch``. One forward pass finds the images of the mini-batch that v does not fool yet, DeepFool runs on
all of them at once (batched on the device), and their Δv are then folded into v one by one, with the
projection after each, exactly as the sequential algorithm folds them. The only difference from the paper is
that the Δv of one mini-batch are all computed for the v at the start of the mini-batch; with
``fold_batch=1`` the loop is the paper's. The projection after every single Δv is what keeps this close to
the sequential algorithm: summing a mini-batch's Δv before one projection lets a few large steps dominate.
As in the authors' code, a Δv is only used where DeepFool reached another class within its iteration limit.

With ``clip=True`` (the default) every perturbed image is clamp(x + v, 0, 1), while building and when
measuring, so the fooling rates are those of valid images. The inner DeepFool is the paper's unconstrained
iteration on the (valid) image x + v: Δv is folded into a perturbation shared by all images, and each image
is clamped with its own bounds afterwards.

:func:`fooling_matrix` measures several perturbations on several models: the paper's table of how
universal perturbations generalise across networks (rows: the model v was built on, columns: the model it
is applied to).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from dlcli.attacks.common import check_norm, frozen_eval, model_device
from dlcli.attacks.deepfool import deepfool

PassProgress = Callable[[int, int, float], None]  # (images visited in this pass, pass size, fooling rate so far)


@dataclass
class UniversalResult:
    """A universal perturbation and how it was built."""

    v: Tensor  # (C, H, W) float32 on the CPU, pixel units, ‖v‖_p ≤ ξ; the best v at the end of a pass
    norm: str  # "2" or "inf": the ball v lives in
    xi: float  # radius of that ball, pixel units ([0, 1] range)
    passes: int  # passes over the building images
    fooling_history: list[float] = field(default_factory=list)  # building-set fooling rate after each pass
    deepfool_images: int = 0  # images DeepFool was run on (x + v not fooled yet)
    updates: int = 0  # Δv folded into v (DeepFool converged)
    reached_target: bool = False  # building-set fooling rate ≥ 1 − δ
    best_pass: int = 0  # the pass whose v is returned (the highest building-set fooling rate)

    @property
    def build_fooling_rate(self) -> float:
        """Building-set fooling rate of the returned v."""
        return self.fooling_history[self.best_pass - 1] if self.best_pass else 0.0


def project(v: Tensor, xi: float, norm: str) -> Tensor:
    """P_{p,ξ}: the closest point of the ℓp ball of radius ξ (ℓ∞: clip each coordinate; ℓ2: scale down)."""
    if norm == "inf":
        return v.clamp(-xi, xi)
    n = float(v.norm())
    return v * (xi / n) if n > xi else v


def perturb(x: Tensor, v: Tensor, clip: bool = True) -> Tensor:
    """x (B, C, H, W) + v (C, H, W), clamped to the valid pixel range [0, 1] when ``clip``."""
    xv = x + v
    return xv.clamp(0.0, 1.0) if clip else xv


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, v: Tensor | None = None, *, clip: bool = True, batch_size: int = 1024) -> Tensor:
    """(B,) int64 predictions on the CPU for ``x`` (+ ``v``), computed in chunks on the model's device."""
    device = model_device(model)
    preds = []
    vd = None if v is None else v.to(device)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device, torch.float32)
        if vd is not None:
            xb = perturb(xb, vd, clip)
        preds.append(model(xb).argmax(dim=1).cpu())
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def fooling_rate(
    model: nn.Module,
    x: Tensor,
    v: Tensor,
    *,
    clean_pred: Tensor | None = None,
    clip: bool = True,
    batch_size: int = 1024,
) -> float:
    """The paper's fooling rate: fraction of images whose predicted label changes when v is added."""
    with frozen_eval(model):
        clean = predict(model, x, batch_size=batch_size) if clean_pred is None else clean_pred
        pert = predict(model, x, v, clip=clip, batch_size=batch_size)
    return int((pert != clean).sum()) / len(clean) if len(clean) else 0.0  # exact, not a float32 mean


def random_like(v: Tensor, norm: str, generator: torch.Generator | None = None) -> Tensor:
    """Random noise with the same norm as ``v``: the paper's control for a universal perturbation.

    ℓ2: a Gaussian direction scaled to ‖v‖₂. ℓ∞: v's own magnitudes, shuffled over the pixels, with random
    signs, so that ‖·‖∞ and ‖·‖₂ both equal v's; only v's structure is destroyed. (Random signs times ‖v‖∞, a
    vertex of the ball, would carry more energy than v itself whenever v is not saturated everywhere.)
    """
    norm = check_norm(norm)
    if norm == "inf":
        flat = v.flatten().abs()
        shuffled = flat[torch.randperm(flat.numel(), generator=generator)]
        signs = torch.randint(0, 2, flat.shape, generator=generator).to(v.dtype) * 2 - 1
        return (shuffled * signs).view_as(v)
    g = torch.randn(v.shape, generator=generator, dtype=v.dtype)
    return g * (v.norm() / g.norm().clamp_min(1e-12))


def universal_perturbation(
    model: nn.Module,
    x: Tensor,
    *,
    xi: float,
    norm: str = "inf",
    delta: float = 0.2,
    max_passes: int = 10,
    overshoot: float = 0.02,
    max_iter_df: int = 10,
    candidates: int = 10,
    fold_batch: int = 32,
    clip: bool = True,
    seed: int = 0,
    progress: PassProgress | None = None,
) -> UniversalResult:
    """Algorithm 1 on the building images ``x`` (N, C, H, W) in [0, 1]; returns v with ‖v‖_p ≤ ξ.

    ``max_iter_df`` = 10 and ``overshoot`` = 0.02 are the inner DeepFool's settings in the authors' code.
    ``seed`` fixes the shuffling of every pass.
    """
    norm = check_norm(norm)
    if not (math.isfinite(xi) and xi > 0):
        raise ValueError(f"xi must be a finite positive number, got {xi}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    if max_passes < 1:
        raise ValueError(f"max_passes must be at least 1, got {max_passes}")
    if fold_batch < 1:
        raise ValueError(f"fold_batch must be at least 1, got {fold_batch}")
    n = x.shape[0]
    if n == 0:
        raise ValueError("no building images")
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    result = UniversalResult(v=torch.zeros(x.shape[1:]), norm=norm, xi=float(xi), passes=0)
    best_rate = -1.0
    v = torch.zeros(x.shape[1:], device=device)  # (C, H, W)
    with frozen_eval(model):
        clean = predict(model, x).to(device)  # (N,) k̂(x), fixed for the whole run
        for p in range(max_passes):
            order = torch.randperm(n, generator=gen)
            fooled_seen = 0
            for start in range(0, n, fold_batch):
                ids = order[start : start + fold_batch]
                xv = perturb(x[ids].to(device, torch.float32), v, clip)  # (b, C, H, W)
                with torch.no_grad():
                    keeps = model(xv).argmax(dim=1) == clean[ids.to(device)]
                fooled_seen += int((~keeps).sum())
                if keeps.any():
                    df = deepfool(model, xv[keeps], norm="2", overshoot=overshoot, max_iter=max_iter_df,
                                  candidates=candidates, clip="none")
                    result.deepfool_images += int(keeps.sum())
                    steps = df.perturbation[df.fooled].to(device)  # (u, C, H, W): converged Δv only
                    for dv in steps:  # fold in order, projecting after each, as Algorithm 1 does
                        v = project(v + dv, xi, norm)
                    result.updates += steps.shape[0]
                if progress is not None:
                    done = min(start + fold_batch, n)
                    progress(done, n, fooled_seen / done)
            rate = int((predict(model, x, v, clip=clip).to(device) != clean).sum()) / n
            result.passes = p + 1
            result.fooling_history.append(rate)
            if rate > best_rate:  # keep the best v seen at the end of a pass (building set only)
                best_rate, result.v, result.best_pass = rate, v.cpu(), p + 1
            if rate >= 1 - delta:
                result.reached_target = True
                break
    return result


def fooling_matrix(models: Sequence[nn.Module], x: Tensor, perturbations: Sequence[Tensor], *,
                   clip: bool = True, batch_size: int = 1024) -> list[list[float]]:
    """rates[i][j]: the fooling rate of ``perturbations[i]`` on ``models[j]`` over the images ``x``.

    Each model's clean predictions are computed once; every perturbation (C, H, W) must fit every model's input.
    """
    rates: list[list[float]] = [[0.0] * len(models) for _ in perturbations]
    for j, model in enumerate(models):
        with frozen_eval(model):
            clean = predict(model, x, batch_size=batch_size)
        for i, v in enumerate(perturbations):
            rates[i][j] = fooling_rate(model, x, v, clean_pred=clean, clip=clip, batch_size=batch_size)
    return rates
