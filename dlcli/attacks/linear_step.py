"""One linearised DeepFool step: the smallest perturbation that reaches a linearised decision boundary.

Around the current image x_i, f'_k(x_i + r) ≈ f'_k + w'_k·r with f'_k = f_k − f_k̂ < 0 while the label
holds and w'_k = ∇f_k − ∇f_k̂. The step solves w'_k·r = |f'_k| (reaching the boundary) with the smallest
‖r‖_p:

* unconstrained, as in the paper (Moosavi-Dezfooli et al. 2016, eqs. 8 and 13 with Algorithm 2):
  ℓ2 r = |f'| w / ‖w‖₂², ℓ∞ r = |f'| sign(w) / ‖w‖₁;
* inside a box lo ≤ r ≤ hi (lo ≤ 0 ≤ hi per pixel: x_i + r must stay a valid image). The optimality
  conditions of min ‖r‖₂ subject to w·r = c and the box give r_j = clip(s·w_j, lo_j, hi_j) for one scalar
  s ≥ 0; for ℓ∞ (min max_j |r_j|) every pixel moves by min(s, room_j) in the direction sign(w_j). With
  room_j = how far pixel j may move in w_j's direction, the boundary term
  g(s) = Σ_j |w_j|·min(s·|u_j|, room_j) (u = w for ℓ2, sign(w) for ℓ∞) is increasing, concave and
  piecewise linear, so Newton's method from s = 0 approaches the root from below and stops exactly once no
  further pixel reaches its bound. Its first iteration is "drop the pixels at a bound that the step would
  push further out, and recompute the step length on the rest"; later iterations do the same for the
  pixels the longer step brings to a bound. When no pixel meets a bound the step is the unconstrained one.
  When even moving every pixel to its bound does not reach the boundary (g(∞) < c), the candidate is
  unreachable in this linearisation; if every candidate is, the step moves every pixel to its bound towards
  the candidate that gets closest (the largest fraction g(∞)/c).

Shapes: ``w`` (..., D) with any leading dims (candidates, images), ``f_abs`` (...,), ``lo``/``hi``
broadcastable to ``w``. Everything is elementwise or a sum over D, so one call serves all candidates of all
images of a batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dlcli.attacks.common import TINY

NEWTON_ROUNDS = 100  # each round brings at least one more pixel to its bound; a few rounds suffice in practice
UNREACHABLE = 1e30  # selection key offset for candidates whose linearised boundary lies outside the box


def dual_norm(w: Tensor, norm: str) -> Tensor:
    """(..., D) -> (...,): ‖w‖₂ for ℓ2 steps, ‖w‖₁ for ℓ∞ steps (the norm that divides |f'|)."""
    return w.norm(dim=-1) if norm == "2" else w.abs().sum(dim=-1)


def free_step(w: Tensor, f_abs: Tensor, norm: str, step_eps: float) -> tuple[Tensor, Tensor]:
    """The paper's step onto the boundary, 1e-4 added to its length as in the reference code.

    Returns (r (..., D), key (...,)): key = |f'| / ‖w‖_dual, the distance the candidate is chosen by.
    """
    dist = f_abs / dual_norm(w, norm).clamp_min(TINY)
    length = (dist + step_eps).unsqueeze(-1)
    if norm == "2":
        return length * w / w.norm(dim=-1, keepdim=True).clamp_min(TINY), dist
    return length * w.sign(), dist


def box_step(w: Tensor, f_abs: Tensor, lo: Tensor, hi: Tensor, norm: str, step_eps: float,
             max_rounds: int = NEWTON_ROUNDS) -> tuple[Tensor, Tensor]:
    """The smallest step onto the linearised boundary with lo ≤ r ≤ hi (see the module docstring).

    ``step_eps`` lengthens the step as the reference code's 1e-4 does: the target is w·r = |f'| + ε·‖w_F‖,
    F the pixels that can move in w's direction, so that the result equals :func:`free_step` when no pixel
    meets a bound. Returns (r (..., D), key (...,)): key = ‖r‖_p for a reachable boundary, and
    ``UNREACHABLE`` · (2 − g(∞)/c) for one outside the box, so reachable candidates always come first.
    """
    mag = w.abs()
    u_abs = mag if norm == "2" else (mag > 0).to(w.dtype)  # |u_j|: how fast pixel j moves as s grows
    room = torch.where(w > 0, hi, -lo).expand_as(w).clamp_min(0)  # (..., D) how far pixel j may move
    w_room = mag * room
    slope_all = mag * u_abs  # w_j² (ℓ2) or |w_j| (ℓ∞): d g / d s while pixel j is free
    free = (room > 0) & (u_abs > 0)
    target = f_abs + step_eps * dual_norm(torch.where(free, w, torch.zeros_like(w)), norm)  # (...,)
    reach = w_room.sum(dim=-1)  # g(∞): every pixel at its bound
    feasible = reach >= target
    free &= feasible.unsqueeze(-1)  # an unreachable boundary: every pixel goes to its bound
    s = torch.full_like(target, float("inf"))
    for _ in range(max_rounds):
        slope = (slope_all * free).sum(dim=-1)
        fixed = (w_room * ~free).sum(dim=-1)  # what the pixels already at their bound contribute
        s = torch.where(slope > 0, (target - fixed) / slope.clamp_min(TINY), torch.full_like(s, float("inf")))
        s = torch.where(feasible, s, torch.full_like(s, float("inf")))
        newly = free & (s.unsqueeze(-1) * u_abs >= room)
        if not bool(newly.any()):
            break
        free &= ~newly
    moved = torch.where(free, s.unsqueeze(-1).clamp_max(UNREACHABLE) * u_abs, room)  # |r_j|
    r = w.sign() * moved
    size = r.norm(dim=-1) if norm == "2" else r.abs().amax(dim=-1)
    key = torch.where(feasible, size, UNREACHABLE * (2 - reach / target.clamp_min(TINY)))
    return r, key
