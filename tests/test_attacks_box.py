"""DeepFool against plain references on small synthetic models: the box-constrained step, the paper's iteration.

Everything here is synthetic (no data files) and runs in well under a second per test. The references are
written independently of ``dlcli.attacks``: the box-constrained step by bisection on its scalar in float64,
the paper's Algorithm 2 one image at a time in float64 with full Jacobians.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dlcli.attacks import box_step, deepfool, free_step
from dlcli.attacks.linear_step import UNREACHABLE, smallest_step

# ----------------------------------------------------------------------------------- the box-constrained step


def bisect_box_step(w: torch.Tensor, c: float, lo: torch.Tensor, hi: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest-‖r‖_p r with w·r = c and lo ≤ r ≤ hi, by bisection on its scalar (float64, one row).

    ℓ2: r = clip(s·w, lo, hi); ℓ∞: r = clip(s·sign(w), lo, hi); w·r grows with s, so bisect s until w·r = c.
    """
    w, lo, hi = w.double(), lo.double(), hi.double()
    u = w if norm == "2" else w.sign()

    def r_of(s: float) -> torch.Tensor:
        return torch.minimum(torch.maximum(s * u, lo), hi)

    a, b = 0.0, 1.0
    while float(w @ r_of(b)) < c:
        b *= 2
    for _ in range(200):
        m = (a + b) / 2
        a, b = (m, b) if float(w @ r_of(m)) < c else (a, m)
    return r_of(b)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_box_step_is_the_bisection_solution_and_lands_on_the_boundary(norm):
    g = torch.Generator().manual_seed(0)
    d = 50
    w = torch.randn(6, d, generator=g)
    x = torch.rand(6, d, generator=g)
    x[:, :20] = torch.where(torch.rand(6, 20, generator=g) < 0.5, 0.0, 1.0)  # pixels at a bound, as on MNIST
    lo, hi = -x, 1 - x
    free = (w.abs() * torch.where(w > 0, hi, -lo)).sum(1)
    c = 0.5 * free  # half of what moving every pixel to its bound achieves: reachable, and pixels saturate
    r, key = box_step(w, c, lo, hi, norm, step_eps=0.0)
    assert ((r >= lo - 1e-6) & (r <= hi + 1e-6)).all()
    assert torch.allclose((w * r).sum(1), c, rtol=1e-4)
    for i in range(6):
        ref = bisect_box_step(w[i], float(c[i]), lo[i], hi[i], norm)
        assert torch.allclose(r[i].double(), ref, atol=1e-5), (i, (r[i].double() - ref).abs().max())
        p = 2 if norm == "2" else float("inf")
        assert float(key[i]) == pytest.approx(float(ref.norm(p=p)), rel=1e-5)
    unconstrained, _ = free_step(w, c, norm, 0.0)
    assert ((x + unconstrained < 0) | (x + unconstrained > 1)).any()  # the box did bind in this case


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_box_step_without_binding_pixels_is_the_papers_step(norm):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 30, generator=g)
    c = torch.full((4,), 0.01)  # a tiny step: nothing reaches a bound of a mid-grey image
    lo, hi = torch.full((4, 30), -0.5), torch.full((4, 30), 0.5)
    r, key = box_step(w, c, lo, hi, norm, step_eps=1e-4)
    ref, dist = free_step(w, c, norm, step_eps=1e-4)
    assert torch.allclose(r, ref, atol=1e-7)
    assert torch.equal(key.argsort(), dist.argsort())  # the same ranking of candidates


def test_an_unreachable_boundary_ranks_last_and_moves_every_pixel_to_its_bound():
    w = torch.tensor([[1.0, -2.0, 0.5], [1.0, 1.0, 1.0]])
    x = torch.tensor([[0.9, 0.1, 0.5], [0.5, 0.5, 0.5]])
    lo, hi = -x, 1 - x
    c = torch.tensor([10.0, 0.3])  # row 0 can reach at most 0.1 + 0.2 + 0.25 = 0.55
    r, key = box_step(w, c, lo, hi, "2", step_eps=0.0)
    assert key[0] >= UNREACHABLE and key[1] < 1
    assert torch.allclose(r[0], torch.tensor([0.1, -0.1, 0.5]))
    assert torch.allclose((w[1] * r[1]).sum(), torch.tensor(0.3))



@pytest.mark.parametrize("norm", ["2", "inf"])
def test_smallest_step_is_the_argmin_of_every_candidates_box_step(norm):
    """Solving only the candidates whose lower bound can win gives the same step and key as solving all."""
    g = torch.Generator().manual_seed(2)
    n, a, d = 7, 40, 60
    x = torch.rand(a, d, generator=g)
    x[:, :30] = torch.where(torch.rand(a, 30, generator=g) < 0.5, 0.0, 1.0)
    lo, hi = -x, 1 - x
    w = torch.randn(n, a, d, generator=g)
    f_abs = torch.rand(n, a, generator=g) * 10 ** (3 * torch.rand(n, a, generator=g) - 2)  # 0.01 to 10
    f_abs[:, :5] = 1e4  # images whose candidates are all unreachable
    w[3, 5:10], f_abs[3, 5:10] = w[1, 5:10], f_abs[1, 5:10]  # exact ties: the first candidate wins
    # Candidate 0 of images 10-29 looks closest unconstrained (large gradient) but the box blocks most of it:
    # its gradient pushes the saturated pixels outwards, so the smallest lower bound is not the winner.
    w[0, 10:30, :30] = 50 * torch.where(x[10:30, :30] > 0.5, 1.0, -1.0)
    r, key = box_step(w, f_abs, lo, hi, norm, step_eps=1e-4)  # (n, a, D), (n, a): every candidate
    best = key.argmin(dim=0)
    r_s, key_s = smallest_step(w, f_abs, norm, 1e-4, (lo, hi))
    assert torch.equal(key_s, key[best, torch.arange(a)])
    assert torch.equal(r_s, r[best, torch.arange(a)])
    assert (key_s[:5] >= UNREACHABLE).all() and (key_s[5:] < UNREACHABLE).all()
    bound = f_abs / (w.norm(dim=2) if norm == "2" else w.abs().sum(dim=2))
    assert (best != bound.argmin(dim=0)).sum() >= 5  # the pruning had candidates to solve beyond the first


# --------------------------------------------------------------------- the paper's iteration, one image at a time


def relu_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 6)).eval()


def reference_deepfool(model: nn.Module, x: torch.Tensor, norm: str, overshoot: float = 0.02, max_iter: int = 50,
                       candidates: int = 10, step_eps: float = 1e-4) -> tuple[torch.Tensor, list[int]]:
    """Algorithm 2 as the authors' reference code writes it, one image at a time, float64, full Jacobians."""
    m64 = copy.deepcopy(model).double()
    out, iters = [], []
    for img in x.double():
        img = img.unsqueeze(0)
        with torch.no_grad():
            order = m64(img)[0].argsort(descending=True)[:candidates].tolist()
        label = order[0]
        r_tot = torch.zeros_like(img)
        x_i, i = img.clone(), 0
        while i < max_iter and int(m64(x_i)[0].argmax()) == label:
            f = m64(x_i)[0].detach()
            jac = torch.autograd.functional.jacobian(lambda z: m64(z)[0], x_i)  # (K, 1, C, H, W)
            pert, w = float("inf"), None
            for k in order[1:]:
                w_k = (jac[k] - jac[label]).flatten()
                f_k = float(f[k] - f[label])
                pert_k = abs(f_k) / float(w_k.norm() if norm == "2" else w_k.abs().sum())
                if pert_k < pert:
                    pert, w = pert_k, w_k
            r_i = (pert + step_eps) * (w / w.norm() if norm == "2" else w.sign())
            r_tot = r_tot + r_i.view_as(img)
            x_i = img + (1 + overshoot) * r_tot
            i += 1
        out.append(((1 + overshoot) * r_tot)[0])
        iters.append(i)
    return torch.stack(out), iters


_REFERENCES: dict[str, tuple[torch.Tensor, list[int]]] = {}


@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("grad", ["loop", "batched"])
def test_batched_deepfool_matches_a_float64_one_image_reference_over_several_iterations(norm, grad):
    model = relu_net(0)
    x = torch.rand(24, 1, 4, 4, generator=torch.Generator().manual_seed(10))
    if norm not in _REFERENCES:  # the same reference serves both gradient strategies
        _REFERENCES[norm] = reference_deepfool(model, x, norm)
    ref, ref_iters = _REFERENCES[norm]
    res = deepfool(model, x, norm=norm, clip="none", grad=grad, batch_size=10)  # chunks of 10: 3 batches
    assert res.iterations.tolist() == ref_iters
    assert max(ref_iters) >= 4 and sum(ref_iters) / len(ref_iters) > 2  # several iterations, not one linear step
    gap = (res.perturbation.double() - ref).abs().max()
    assert torch.allclose(res.perturbation.double(), ref, atol=2e-5, rtol=1e-4), gap
    assert res.fooled.all()


def reference_box_deepfool(model: nn.Module, x: torch.Tensor, norm: str, overshoot: float = 0.02,
                           max_iter: int = 50, step_eps: float = 1e-4) -> tuple[torch.Tensor, list[int]]:
    """Box-constrained DeepFool spelled out, one image at a time, float64, full Jacobians: each step is the
    smallest one onto a candidate's linearised boundary that keeps x + (1 + η)·r_tot in [0, 1], found by
    bisection (``bisect_box_step``, not dlcli's Newton iteration), the candidate with the smallest step taken.
    Its target carries the reference code's 1e-4 as dlcli defines it for the box (ε times the dual norm of the
    pixels that can still move); an unreachable boundary sends every pixel to its bound and ranks after every
    reachable one, by how close it gets. Returns the adversarial images minus x, and the iterations."""
    m64 = copy.deepcopy(model).double()
    scale = 1 + overshoot
    out, iters = [], []
    for img in x.double():
        img = img.unsqueeze(0)
        with torch.no_grad():
            order = m64(img)[0].argsort(descending=True).tolist()
        label = order[0]
        r_tot, x_i, i = torch.zeros_like(img), img.clone(), 0
        while i < max_iter and int(m64(x_i)[0].argmax()) == label:
            f = m64(x_i)[0].detach()
            jac = torch.autograd.functional.jacobian(lambda z: m64(z)[0], x_i)  # (K, 1, C, H, W)
            lo, hi = (-x_i / scale).flatten(), ((1 - x_i) / scale).flatten()
            best_key, best_r = float("inf"), None
            for k in order[1:]:
                w = (jac[k] - jac[label]).flatten()
                room = torch.where(w > 0, hi, -lo).clamp_min(0)  # how far each pixel may move w's way
                movable = (room > 0) & (w != 0)
                c = abs(float(f[k] - f[label])) + step_eps * float(
                    w[movable].norm() if norm == "2" else w[movable].abs().sum())
                reach = float((w.abs() * room).sum())
                if reach >= c:
                    r = bisect_box_step(w, c, lo, hi, norm)
                    key = float(r.norm() if norm == "2" else r.abs().max())
                else:
                    r, key = w.sign() * room, UNREACHABLE * (2 - reach / c)
                if key < best_key:
                    best_key, best_r = key, r
            r_tot = r_tot + best_r.view_as(img)
            x_i = (img + scale * r_tot).clamp(0, 1)
            i += 1
        out.append((x_i - img)[0])
        iters.append(i)
    return torch.stack(out), iters


@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("images", ["black-and-white", "bands"])
def test_box_mode_matches_a_float64_one_image_reference_over_several_iterations(norm, images):
    """Where the box binds, over several iterations: dlcli's batched box mode (Newton steps, candidate pruning,
    images leaving the batch as they flip) against the plain loop above. Black-and-white images: every pixel
    starts at a bound, as most of an MNIST digit's do. Bands: two black rows and a white one beside grey
    pixels, which the steps carry onto a bound."""
    model = relu_net(3)
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(14))
    if images == "black-and-white":
        x = (x > 0.5).float()
    else:
        x[:, :, :2], x[:, :, 3] = 0.0, 1.0
    ref, ref_iters = reference_box_deepfool(model, x, norm)
    res = deepfool(model, x, norm=norm, clip="box", refine=0, batch_size=10)  # the iteration itself, 3 chunks
    assert res.iterations.tolist() == ref_iters
    assert sum(i >= 2 for i in ref_iters) >= 8 and max(ref_iters) >= 3  # several steps, not one linear step
    free = deepfool(model, x, norm=norm, clip="none").perturbation  # the paper's unconstrained iteration
    outside = ((x + free < -1e-6) | (x + free > 1 + 1e-6)).flatten(1).any(1)
    assert outside.sum() >= len(x) // 2  # it leaves [0, 1] for most images: the box binds, it is not idle
    gap = (res.perturbation.double() - ref).abs().max()
    assert torch.allclose(res.perturbation.double(), ref, atol=1e-5, rtol=1e-4), gap
    assert ((x + res.perturbation >= 0) & (x + res.perturbation <= 1)).all() and res.fooled_clipped.all()


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_box_mode_is_the_papers_iteration_when_no_pixel_meets_a_bound(norm):
    model = relu_net(1)
    x = 0.35 + 0.3 * torch.rand(24, 1, 4, 4, generator=torch.Generator().manual_seed(11))  # mid-grey images
    free = deepfool(model, x, norm=norm, clip="none")
    final = x + free.perturbation
    assert ((final > 0.05) & (final < 0.95)).all()  # the unconstrained iteration stays far from both bounds
    assert free.iterations.max() >= 2
    box = deepfool(model, x, norm=norm, clip="box", refine=0)  # the iteration itself, before any refinement
    assert torch.equal(box.iterations, free.iterations)
    assert torch.allclose(box.perturbation, free.perturbation, atol=1e-6)
    assert torch.equal(box.adv_pred, free.adv_pred)


def test_the_two_gradient_strategies_agree_in_box_mode():
    model = relu_net(2)
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(12))
    x[:, :, :2] = 0.0  # two rows of black pixels, so the box binds
    loop = deepfool(model, x, clip="box", grad="loop")
    batched = deepfool(model, x, clip="box", grad="batched")
    assert loop.grad == "loop" and batched.grad == "batched"
    assert torch.equal(loop.iterations, batched.iterations)
    assert torch.allclose(loop.perturbation, batched.perturbation, atol=1e-5)
    assert torch.equal(loop.grad_evals, batched.grad_evals)


def test_non_finite_input_and_settings_are_refused():
    model = relu_net(0)
    x = torch.rand(2, 1, 4, 4)
    for kwargs in ({"overshoot": float("nan")}, {"overshoot": float("inf")}, {"grad": "sometimes"}):
        with pytest.raises(ValueError):
            deepfool(model, x, **kwargs)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        deepfool(model, x)


# ------------------------------------------------------------------ boundary projection (dlcli.attacks.refine)


class Curved(nn.Module):
    """Two classes on two-pixel images: class 1 where g(x) = x₂ + 2(x₁ − ½)² − 0.7 > 0, a curved boundary."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.flatten(1).unbind(1)
        g = x2 + 2 * (x1 - 0.5) ** 2 - 0.7
        return torch.stack([torch.zeros_like(g), g], dim=1)


def brute_force_distance(x0: tuple[float, float]) -> float:
    """The ℓ2 distance from x0 to the nearest valid image of class 1, on a 2001 x 2001 grid of [0, 1]²."""
    grid = torch.linspace(0, 1, 2001, dtype=torch.float64)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    g = b + 2 * (a - 0.5) ** 2 - 0.7
    d = ((a - x0[0]) ** 2 + (b - x0[1]) ** 2).sqrt()
    return float(d[g > 0].min())


@pytest.mark.parametrize("x0", [(0.2, 0.2), (0.7, 0.3), (0.9, 0.05)])  # the last one's minimum lies on x₁ = 1
def test_refinement_reaches_the_brute_force_minimum_inside_the_box(x0):
    model = Curved()
    x = torch.tensor(x0).view(1, 1, 1, 2)
    best = brute_force_distance(x0)
    plain = deepfool(model, x, clip="box", refine=0)
    refined = deepfool(model, x, clip="box", refine=1)
    assert plain.r_norm.item() > 1.1 * best  # DeepFool alone stops well away from the closest boundary point
    assert refined.r_norm.item() == pytest.approx(best, rel=0.01)  # one round reaches it (overshoot included)
    assert refined.fooled_clipped.all() and refined.adversarial.min() >= 0 and refined.adversarial.max() <= 1


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_refined_images_are_valid_fool_and_are_never_larger(norm):
    model = relu_net(3)
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(13))
    x[:, :, :2] = 0.0  # black rows: the box binds
    plain = deepfool(model, x, norm=norm, clip="box", refine=0)
    refined = deepfool(model, x, norm=norm, clip="box", refine=2)
    assert refined.refine == 2 and plain.refine == 0
    assert refined.adversarial.min() >= 0 and refined.adversarial.max() <= 1
    with torch.no_grad():
        assert (model(refined.adversarial).argmax(1) != refined.clean_pred).all()
    assert torch.allclose(refined.perturbation, refined.adversarial - x)
    assert (refined.r_norm <= plain.r_norm + 1e-6).all()
    assert refined.r_norm.mean() < 0.97 * plain.r_norm.mean()  # and smaller on average
    assert torch.equal(refined.iterations, plain.iterations)  # DeepFool's own steps are unchanged
    assert (refined.grad_evals > plain.grad_evals).all()  # the projections are counted


def test_refine_defaults_and_refusals():
    model = relu_net(0)
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(14))
    assert deepfool(model, x).refine == 1  # box mode: one round by default
    assert deepfool(model, x, clip="none").refine == 0 and deepfool(model, x, clip="step").refine == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="refine"):
            deepfool(model, x, refine=bad)
    with pytest.raises(ValueError, match="paper"):
        deepfool(model, x, clip="none", refine=1)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_refine_keeps_the_input_where_a_smaller_candidate_does_not_fool(norm):
    """With no re-crossing steps and no flip search, a round's candidate is the box projection of x onto the
    linearised boundary: smaller than the adversarial, and on a curved boundary often still classified clean.
    Such a candidate must be refused (the image is replaced only by a smaller image that fools)."""
    from dlcli.attacks.refine import refine

    model = relu_net(3)
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(13))
    x[:, :, :2] = 0.0
    plain = deepfool(model, x, norm=norm, clip="box", refine=0)
    att = plain.fooled_clipped
    x0, adv = x[att], plain.adversarial[att]
    with torch.no_grad():
        logits0 = model(x0)
    clean = logits0.argmax(1)
    out, pred, _ = refine(model, x0, adv, clean, logits0, plain.adv_pred_clipped[att], norm=norm, overshoot=0.02,
                          step_eps=1e-4, max_recross=0, flip_steps=0)
    with torch.no_grad():
        got = model(out).argmax(1)
    assert (got != clean).all()  # every returned image fools the model ...
    assert torch.equal(pred, got)  # ... and carries its true label
    p = 2 if norm == "2" else float("inf")
    assert ((out - x0).flatten(1).norm(p=p, dim=1) <= (adv - x0).flatten(1).norm(p=p, dim=1) + 1e-6).all()
    kept = (out == adv).flatten(1).all(1)
    assert kept.any() and not kept.all()  # some candidates were refused, others taken: both paths ran
