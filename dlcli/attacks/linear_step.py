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
images of a batch. DeepFool keeps only each image's smallest step (:func:`smallest_step`), and solves a box
step only for the candidates whose unconstrained distance, a lower bound of their box step, can still win.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dlcli.attacks.common import TINY

NEWTON_ROUNDS = 100  # each round brings at least one more pixel to its bound; a few rounds suffice in practice
UNREACHABLE = 1e30  # selection key offset for candidates whose linearised boundary lies outside the box
BOUND_SLACK = 1e-3  # relative: a candidate is skipped only when its lower bound exceeds the best key by this


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
    free = (room > 0) & (u_abs > 0)
    target = f_abs + step_eps * dual_norm(torch.where(free, w, torch.zeros_like(w)), norm)  # (...,)
    reach = w_room.sum(dim=-1)  # g(∞): every pixel at its bound
    feasible = reach >= target
    free &= feasible.unsqueeze(-1)  # an unreachable boundary: every pixel goes to its bound
    s = _newton(mag * u_abs, w_room, u_abs, room, free, target, feasible, max_rounds)
    moved = torch.where(free, s.unsqueeze(-1).clamp_max(UNREACHABLE) * u_abs, room)  # |r_j|
    r = w.sign() * moved
    size = r.norm(dim=-1) if norm == "2" else r.abs().amax(dim=-1)
    key = torch.where(feasible, size, UNREACHABLE * (2 - reach / target.clamp_min(TINY)))
    return r, key


def smallest_step(w: Tensor, f_abs: Tensor, norm: str, step_eps: float,
                  box: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Per image, the smallest step among n candidates: (r (a, D), key (a,)), the first candidate on ties.

    ``w`` (n, a, D), ``f_abs`` (n, a); ``box`` = (lo, hi) (a, D) for :func:`box_step`, None for
    :func:`free_step`. The same as solving all n·a steps and taking the argmin of the keys over n, but a box
    step is only solved where it can win: every box key is at least |f'| / ‖w‖_dual (w·r ≥ |f'| and
    Cauchy–Schwarz for ℓ2, Hölder for ℓ∞), so the candidate with the smallest such bound is solved first
    (on MNIST it is the winner 98% of the time) and then only the candidates whose bound lies below its key.
    """
    a = w.shape[1]
    if box is None:
        return _smallest(*free_step(w, f_abs, norm, step_eps))
    lo, hi = box
    bound = f_abs / dual_norm(w, norm).clamp_min(TINY)  # (n, a) ≤ each candidate's key
    first = bound.argmin(dim=0)  # (a,)
    cols = torch.arange(a, device=w.device)
    r, key = box_step(w[first, cols], f_abs[first, cols], lo, hi, norm, step_eps)  # (a, D), (a,)
    keys = torch.full_like(bound, float("inf"))
    keys[first, cols] = key
    rest = bound < key * (1 + BOUND_SLACK)  # the slack covers rounding in key and bound
    rest[first, cols] = False
    j, i = rest.nonzero(as_tuple=True)  # (m,) candidate and image of each step still to solve
    if len(j) == 0:
        return r, key
    r_rest, keys[j, i] = box_step(w[j, i], f_abs[j, i], lo[i], hi[i], norm, step_eps)
    best = keys.argmin(dim=0)  # (a,)
    row = torch.full_like(keys, -1, dtype=torch.long)  # (n, a) -> row of r_rest
    row[j, i] = torch.arange(len(j), device=w.device)
    won = best != first
    r[won] = r_rest[row[best, cols][won]]
    return r, keys[best, cols]


def _smallest(r: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """(n, a, D), (n, a) -> (a, D), (a,): per image the candidate with the smallest key (the first on ties)."""
    best = key.argmin(dim=0)  # (a,)
    return r.gather(0, best.view(1, -1, 1).expand(1, -1, r.shape[2])).squeeze(0), key.gather(0, best[None]).squeeze(0)


def _newton(slope_all: Tensor, w_room: Tensor, u_abs: Tensor, room: Tensor, free: Tensor, target: Tensor,
            feasible: Tensor, max_rounds: int) -> Tensor:
    """Newton's method on g(s) = target from s = 0 (module docstring); returns s (...,), inf where infeasible.

    ``slope_all`` (..., D) is w_j² (ℓ2) or |w_j| (ℓ∞), d g / d s while pixel j is free; ``free`` (..., D) is
    updated in place to the pixels still free at the root. A row whose free set did not change in a round has
    converged (the next round would compute the same s), so once fewer than half the rows still move the
    others are dropped from the work; each row's arithmetic is the same as when all rows take every round.
    """
    d = free.shape[-1]
    free_rows = free.view(-1, d)  # (R, D), a view: writes land in ``free``
    sa, wr, ua, ro = (t.reshape(-1, d) for t in (slope_all, w_room, u_abs, room))  # (R, D)
    fr, tg, fe = free_rows, target.reshape(-1), feasible.reshape(-1)
    s = torch.full_like(tg, float("inf"))
    rows: Tensor | None = None  # the rows still worked on (None: all of them, in place)
    for _ in range(max_rounds):
        slope = (sa * fr).sum(dim=-1)
        fixed = (wr * ~fr).sum(dim=-1)  # what the pixels already at their bound contribute
        si = torch.where(slope > 0, (tg - fixed) / slope.clamp_min(TINY), float("inf"))
        si = torch.where(fe, si, float("inf"))
        if rows is None:
            s = si
        else:
            s[rows] = si
        newly = fr & (si.unsqueeze(-1) * ua >= ro)
        moving = newly.any(dim=-1)  # (R',) rows whose free set shrinks this round
        n_moving = int(moving.sum())
        if n_moving == 0:
            break
        fr &= ~newly
        if 2 * n_moving < len(moving):
            if rows is not None:
                free_rows[rows] = fr
            keep = moving.nonzero().squeeze(1)
            rows = keep if rows is None else rows[keep]
            fr, sa, wr, ua, ro, tg, fe = (t[keep] for t in (fr, sa, wr, ua, ro, tg, fe))
    if rows is not None:
        free_rows[rows] = fr
    return s.view_as(target)
