"""DeepFool, the fast gradient sign baseline and universal perturbations against cases with a known answer.

Linear classifiers have closed-form minimal perturbations, computed here independently of the attack code
(least-norm solutions via the pseudo-inverse, in float64). A small CNN trained for a few hundred steps on real
MNIST (cached for the module) checks batching, bookkeeping and the universal perturbation.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dlcli.attacks import (
    deepfool,
    fgsm_direction,
    fgsm_min_eps,
    fooling_matrix,
    fooling_rate,
    project,
    random_like,
    universal_perturbation,
)
from dlcli.attacks.deepfool import check_norm

# ------------------------------------------------------------------------------------------ linear models


def linear_model(k: int, shape=(1, 6, 6), seed: int = 0) -> nn.Module:
    """Logits W·x + b on flattened images; weights large enough that the boundaries lie inside [0, 1]^D."""
    torch.manual_seed(seed)
    d = int(torch.tensor(shape).prod())
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.normal_(0, 1.0)
        lin.bias.normal_(0, 1.0)
    return nn.Sequential(nn.Flatten(), lin).eval()


def weights(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    lin = model[1]
    return lin.weight.detach().double(), lin.bias.detach().double()


def least_norm_step(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The smallest-ℓ2 r with a·r = c (one row a), via the pseudo-inverse: an independent closed form."""
    return (torch.linalg.pinv(a.unsqueeze(0)) @ c.reshape(1, 1)).squeeze(1)


def closed_form_l2(model: nn.Module, x: torch.Tensor, classes: list[int] | None = None) -> torch.Tensor:
    """(B, D): the minimal ℓ2 perturbation reaching the nearest boundary k̂ | k, over ``classes`` (all if None)."""
    w, b = weights(model)
    out = []
    for xi in x.flatten(1).double():
        f = w @ xi + b
        kh = int(f.argmax())
        best = None
        for k in classes if classes is not None else range(len(f)):
            if k == kh:
                continue
            # the boundary between k̂ and k: (w_k - w_k̂)·(x + r) + (b_k - b_k̂) = 0
            r = least_norm_step(w[k] - w[kh], -(f[k] - f[kh]))
            if best is None or r.norm() < best.norm():
                best = r
        out.append(best)
    return torch.stack(out)


def images(b: int, shape=(1, 6, 6), seed: int = 1) -> torch.Tensor:
    return torch.rand((b, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [2, 5])
def test_first_step_on_a_linear_classifier_is_the_closed_form_minimal_perturbation(k):
    model = linear_model(k)
    x = images(32)
    expected = closed_form_l2(model, x).float()
    # one step, no overshoot, no 1e-4: exactly the projection onto the nearest boundary
    res = deepfool(model, x, norm="2", overshoot=0.0, step_eps=0.0, max_iter=1, candidates=k, clip="none")
    got = res.perturbation.flatten(1)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()
    assert (res.iterations == 1).all()


@pytest.mark.parametrize("k", [2, 5])
def test_with_the_papers_settings_the_label_flips_after_one_step(k):
    model = linear_model(k)
    x = images(32)
    step = closed_form_l2(model, x).float()
    res = deepfool(model, x, norm="2", clip="none")  # overshoot 0.02, 1e-4 added to the step length
    assert res.fooled.all() and (res.iterations == 1).all()
    unit = step / step.norm(dim=1, keepdim=True)
    expected = 1.02 * (step + 1e-4 * unit)  # the overshoot multiplies the accumulated perturbation
    assert torch.allclose(res.perturbation.flatten(1), expected, atol=1e-5, rtol=0)
    with torch.no_grad():  # and the label really changed at x + r̂
        assert (model(x + res.perturbation).argmax(1) != model(x).argmax(1)).all()
    assert res.grad_evals.tolist() == [k - 1] * 32


def test_candidates_restrict_the_search_to_the_top_classes_by_clean_logit():
    model = linear_model(6, seed=3)
    x = images(16, seed=4)
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).indices
    res = deepfool(model, x, overshoot=0.0, step_eps=0.0, max_iter=1, candidates=2, clip="none")
    for i in range(16):  # only the runner-up class's boundary is considered
        expected = closed_form_l2(model, x[i : i + 1], classes=top2[i].tolist()).float()
        assert torch.allclose(res.perturbation[i].flatten(), expected[0], atol=1e-5)
    full = deepfool(model, x, overshoot=0.0, step_eps=0.0, max_iter=1, candidates=6, clip="none")
    assert (full.r_norm <= res.r_norm + 1e-6).all()  # searching more classes never finds a farther boundary
    assert (full.r_norm < res.r_norm - 1e-4).any()


def test_linf_step_is_the_minimal_linf_perturbation_of_a_binary_linear_classifier():
    model = linear_model(2, seed=5)
    x = images(32, seed=6)
    w, b = weights(model)
    a = w[1] - w[0]
    res = deepfool(model, x, norm="inf", overshoot=0.0, step_eps=0.0, max_iter=1, clip="none")
    g = x.flatten(1).double() @ (w[0] - w[1]) + (b[0] - b[1])  # f_0 - f_1
    sgn = torch.where(g > 0, 1.0, -1.0).double()  # class 0 predicted where g > 0
    dist = g.abs() / a.abs().sum()  # Hölder: the least ℓ∞ norm of r with a·r = ±g is |g| / ‖a‖₁
    r = res.perturbation.flatten(1).double()
    assert torch.allclose(res.r_norm.double(), dist, atol=1e-6, rtol=1e-5)
    assert torch.allclose(r @ a, sgn * g.abs(), atol=1e-4)  # it lands on the boundary
    assert torch.allclose(r.abs(), dist.unsqueeze(1).expand_as(r), atol=1e-6)  # every pixel moves by ±dist
    flipped = deepfool(model, x, norm="inf", clip="none")
    assert flipped.fooled.all() and (flipped.iterations == 1).all()


def test_bad_arguments_are_value_errors():
    model = linear_model(3)
    x = images(2)
    for kwargs in ({"norm": "3"}, {"max_iter": 0}, {"candidates": 1}, {"clip": "never"}, {"overshoot": -1},
                   {"grad": "never"}):
        with pytest.raises(ValueError):
            deepfool(model, x, **kwargs)
    assert check_norm(2) == "2" and check_norm(float("inf")) == "inf" and check_norm("Linf") == "inf"
    assert deepfool(model, x, clip="final").clip == "none"  # the mode's old name still works


# ----------------------------------------------------------------------------------- a small MNIST model


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(),  # (B, 8, 12, 12)
            nn.Conv2d(8, 16, 5, stride=2), nn.ReLU(),  # (B, 16, 4, 4)
            nn.Flatten(), nn.Linear(256, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x in [0, 1]: the normalisation lives inside
        return self.net((x - 0.1307) / 0.3081)


@pytest.fixture(scope="module")
def mnist(data_dir):
    """Real MNIST digits from the 10k test file only (quick to read): 8,000 to train on, 2,000 held out."""
    from torchvision.datasets import MNIST

    test = MNIST(str(data_dir), train=False)
    x = test.data[:, None].float() / 255  # (N, 1, 28, 28) in [0, 1]
    return x[2000:], test.targets[2000:], x[:2000], test.targets[:2000]


def train_small_cnn(xtr: torch.Tensor, ytr: torch.Tensor) -> nn.Module:
    """300 Adam steps of 64 images: over 90% held-out accuracy, trained in seconds."""
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(xtr), (64,), generator=g)
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def cnn(mnist):
    xtr, ytr, xte, yte = mnist
    model = train_small_cnn(xtr, ytr)
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean()
    assert acc > 0.9
    return model


def test_batched_and_one_at_a_time_deepfool_agree(cnn, mnist):
    x, y = mnist[2][:12], mnist[3][:12]
    for norm in ("2", "inf"):
        batched = deepfool(cnn, x, y, norm=norm)
        single = deepfool(cnn, x, y, norm=norm, batch_size=1)
        assert torch.equal(batched.iterations, single.iterations)
        assert torch.equal(batched.adv_pred, single.adv_pred)
        assert torch.allclose(batched.perturbation, single.perturbation, atol=1e-5, rtol=1e-4)


def test_misclassified_images_are_counted_apart_with_zero_perturbation(cnn, mnist):
    x = mnist[2][:40]
    with torch.no_grad():
        y = cnn(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10  # every fourth label disagrees with the model: those images count as misclassified
    res = deepfool(cnn, x, y)
    wrong = res.clean_pred != y
    assert torch.equal(wrong.nonzero().squeeze(1), torch.arange(0, 40, 4))
    assert torch.equal(res.attacked, ~wrong)
    assert (res.perturbation[wrong] == 0).all() and (res.iterations[wrong] == 0).all()
    assert not res.fooled[wrong].any()
    att = res.attacked
    assert res.fooled[att].all()  # the LeNet-like model is fooled within 50 iterations
    assert res.iterations[att].float().mean() < 4  # "usually converges in fewer than 3 iterations"
    with torch.no_grad():  # adv_pred is what the model says at x + r̂
        assert torch.equal(cnn(x[att] + res.perturbation[att]).argmax(1), res.adv_pred[att])


def test_step_clipping_gives_valid_fooling_images_and_unconstrained_clipping_is_reported(cnn, mnist):
    x, y = mnist[2][:16], mnist[3][:16]
    paper = deepfool(cnn, x, y, clip="none")
    att = paper.attacked
    with torch.no_grad():
        clipped_pred = cnn((x + paper.perturbation).clamp(0, 1)).argmax(1)
    assert torch.equal(paper.adv_pred_clipped[att], clipped_pred[att])
    assert torch.equal(paper.fooled_clipped, att & (clipped_pred != paper.clean_pred))
    assert torch.equal(paper.adversarial, (x + paper.perturbation).clamp(0, 1))
    step = deepfool(cnn, x, y, clip="step")
    assert step.fooled_clipped[step.attacked].all()
    assert ((step.adversarial >= 0) & (step.adversarial <= 1)).all()
    assert torch.allclose(step.adversarial - x, step.perturbation, atol=1e-6)
    assert torch.allclose(step.r_norm, step.r_norm_clipped, atol=1e-5)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_by_default_every_written_image_is_valid_and_fools_the_model(cnn, mnist, norm):
    x, y = mnist[2][:64], mnist[3][:64]
    res = deepfool(cnn, x, y, norm=norm)
    assert res.clip == "box"
    att = res.attacked
    assert ((res.adversarial >= 0) & (res.adversarial <= 1)).all()
    assert torch.equal(res.perturbation, res.adversarial - x)  # the perturbation is exactly what was written
    with torch.no_grad():
        pred = cnn(res.adversarial).argmax(1)
    assert (pred[att] != res.clean_pred[att]).all()  # every written image fools the model
    assert res.fooled_clipped[att].all() and torch.equal(res.adv_pred[att], res.adv_pred_clipped[att])
    assert res.iterations[att].float().mean() < 4
    # The box mattered: the paper's iteration leaves [0, 1] and clamping its images undoes flips.
    paper = deepfool(cnn, x, y, norm=norm, clip="none")
    assert ((x + paper.perturbation < 0) | (x + paper.perturbation > 1)).any()
    assert (paper.fooled & ~paper.fooled_clipped).any()
    # Valid images at a price in ρ: pixels at 0 or 1 cannot move outwards, so the others move more (in ℓ∞ every
    # pixel moves by the same amount, so there the price is higher). Measured 1.12x (ℓ2) and 1.38x (ℓ∞).
    assert res.rho[att].mean() < {"2": 1.25, "inf": 1.5}[norm] * paper.rho[att].mean()


def test_linf_norms_are_max_abs_and_rho_divides_by_the_image_norm(cnn, mnist):
    x, y = mnist[2][:16], mnist[3][:16]
    res = deepfool(cnn, x, y, norm="inf")
    assert torch.allclose(res.r_norm, res.perturbation.flatten(1).abs().amax(1))
    assert torch.allclose(res.rho, res.r_norm / x.flatten(1).abs().amax(1))
    l2 = deepfool(cnn, x, y, norm="2")
    assert torch.allclose(l2.rho, l2.perturbation.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1))


# ---------------------------------------------------------------------------------- fast gradient sign


def test_fgsm_eps_on_a_binary_linear_classifier_is_the_90th_percentile_of_minimal_linf_distances():
    # For two linear classes the loss gradient's sign is ±sign(w_1 - w_0), so x + ε·sign crosses the
    # boundary exactly when ε exceeds the image's minimal ℓ∞ distance |g| / ‖a‖₁ (DeepFool ℓ∞, exact here).
    model = linear_model(2, seed=7)
    x = images(200, seed=8)
    w, b = weights(model)  # the closed form |g| / ‖a‖₁, not DeepFool's answer (itself under test elsewhere)
    dist = ((x.flatten(1).double() @ (w[0] - w[1]) + (b[0] - b[1])).abs() / (w[1] - w[0]).abs().sum()).float()
    d = fgsm_direction(model, x)
    res = fgsm_min_eps(model, x, d, target_rate=0.9, norm="inf", eps_max=dist.max().item() * 1.01, bisect_steps=24,
                       clip=False)  # the paper's protocol: x + ε·sign unclamped
    k = int(torch.tensor(0.9 * 200).ceil())
    quantile = dist.sort().values[k - 1]  # the smallest ε that fools 180 of the 200 images
    assert res.eps == pytest.approx(float(quantile), rel=1e-4)
    assert res.fooled.float().mean() >= 0.9
    assert torch.allclose(res.rho, res.eps / x.flatten(1).amax(1))


def test_fgsm_skips_misclassified_images(cnn, mnist):
    x = mnist[2][:50]
    with torch.no_grad():
        y = cnn(x).argmax(1)
    y[:5] = (y[:5] + 1) % 10
    d = fgsm_direction(cnn, x, y)
    assert not d.attacked[:5].any() and (d.sign[:5] == 0).all()
    res = fgsm_min_eps(cnn, x, d, norm="2")
    assert res.eps is not None and 0 < res.eps < 1
    assert res.fooled[d.attacked].float().mean() >= 0.9
    assert (res.r_norm[:5] == 0).all()


def test_fgsm_searches_eps_on_valid_images_by_default(cnn, mnist):
    x, y = mnist[2][:100], mnist[3][:100]
    d = fgsm_direction(cnn, x, y)
    box = fgsm_min_eps(cnn, x, d)
    assert box.clip and box.eps is not None
    with torch.no_grad():
        pred = cnn((x + box.eps * d.sign).clamp(0, 1)).argmax(1)
    fooled = d.attacked & (pred != d.clean_pred)
    assert int(fooled.sum()) / int(d.attacked.sum()) >= 0.9 and torch.equal(fooled, box.fooled_clipped)
    paper = fgsm_min_eps(cnn, x, d, clip=False)  # the paper's criterion looks at x + ε·sign unclamped
    assert not paper.clip and paper.eps != box.eps
    assert torch.equal(paper.fooled, d.attacked & (paper.adv_pred != d.clean_pred))


# --------------------------------------------------------------------------------- universal perturbations


def test_projection_onto_the_lp_ball():
    v = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    p2 = project(v, 2.0, "2")
    assert p2.norm() == pytest.approx(2.0, rel=1e-6) and torch.allclose(p2 / p2.norm(), v / v.norm())
    assert torch.equal(project(v * 1e-3, 2.0, "2"), v * 1e-3)  # inside the ball: unchanged
    pinf = project(v, 0.5, "inf")
    assert pinf.abs().max() == 0.5 and torch.equal(pinf[v.abs() <= 0.5], v[v.abs() <= 0.5])


def test_random_noise_has_the_same_norm():
    v = torch.randn(1, 28, 28, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    n2 = random_like(v, "2", g)
    assert n2.norm() == pytest.approx(float(v.norm()), rel=1e-5)
    assert abs(float((n2 * v).sum() / (n2.norm() * v.norm()))) < 0.2  # a direction unrelated to v
    n = random_like(v, "inf", g)
    assert n.abs().max() == pytest.approx(float(v.abs().max()))
    assert n.norm() == pytest.approx(float(v.norm()), rel=1e-5)
    assert not torch.equal(n.abs(), v.abs())  # pixels shuffled


def test_universal_perturbation_fools_far_more_than_random_noise(cnn, mnist):
    xtr, _, xte, _ = mnist
    build, held_out = xtr[-300:], xte[:1000]  # built on the model's training images, measured on others
    res = universal_perturbation(cnn, build, xi=4.0, norm="2", max_passes=3, seed=0)
    assert res.v.norm() <= 4.0 + 1e-5
    assert res.deepfool_images > 0 and res.updates > 0 and 1 <= res.passes <= 3
    rate_v = fooling_rate(cnn, held_out, res.v)
    rate_noise = max(fooling_rate(cnn, held_out, random_like(res.v, "2", torch.Generator().manual_seed(s)))
                     for s in range(3))
    assert rate_v > 0.25 and rate_v > 4 * rate_noise, (rate_v, rate_noise)
    # the returned v is the best of the passes on the building set, and that rate is what it reports
    assert res.build_fooling_rate == pytest.approx(fooling_rate(cnn, build, res.v), abs=1e-9)
    assert res.build_fooling_rate == max(res.fooling_history)


@pytest.mark.parametrize("norm, xi, clip", [("2", 2.0, True), ("inf", 0.2, True), ("inf", 0.2, False)])
def test_universal_with_one_image_per_fold_is_the_papers_sequential_loop(cnn, mnist, norm, xi, clip):
    # Algorithm 1 written plainly, one image at a time, against fold_batch=1 (same shuffle: the seed's first
    # permutation). The batched code must fold the same steps in the same order, with and without clamping.
    build, seed = mnist[0][-24:], 4
    with torch.no_grad():
        clean = cnn(build).argmax(1)
    v = torch.zeros(1, 28, 28)
    for i in torch.randperm(24, generator=torch.Generator().manual_seed(seed)).tolist():
        xv = (build[i] + v).unsqueeze(0)
        xv = xv.clamp(0, 1) if clip else xv
        with torch.no_grad():
            if cnn(xv).argmax(1).item() != clean[i].item():
                continue  # already fooled by v
        df = deepfool(cnn, xv, norm="2", overshoot=0.02, max_iter=10, clip="none")
        if df.fooled[0]:
            v = project(v + df.perturbation[0], xi, norm)
    res = universal_perturbation(cnn, build, xi=xi, norm=norm, max_passes=1, fold_batch=1, seed=seed, clip=clip)
    assert res.updates > 5
    assert torch.allclose(res.v, v, atol=1e-5)
    if norm == "inf":
        assert res.v.abs().max() <= xi + 1e-7 and (res.v.abs() > xi - 1e-6).any()  # in the ball, and on its edge


def test_universal_stops_at_the_first_pass_whose_building_fooling_rate_reaches_one_minus_delta(cnn, mnist):
    build = mnist[0][-64:]
    kwargs = dict(xi=0.15, norm="inf", max_passes=3, seed=1)
    full = universal_perturbation(cnn, build, delta=0.0, **kwargs)  # 1 − δ = 100%: never met, all passes run
    hist = full.fooling_history
    assert full.passes == 3 and not full.reached_target and len(hist) == 3
    assert full.v.abs().max() <= 0.15 + 1e-7
    assert len(set(hist)) >= 2  # at least two different stopping points are exercised
    for h in sorted(set(hist)):
        first = next(p for p, hp in enumerate(hist, 1) if hp >= h)
        res = universal_perturbation(cnn, build, delta=1 - h + 1e-9, **kwargs)
        assert res.reached_target and res.passes == first and res.fooling_history == hist[:first], (h, hist)


def test_fooling_matrix_measures_every_perturbation_on_every_model(cnn, mnist):
    x = mnist[2][:300]
    other = copy.deepcopy(cnn)
    with torch.no_grad():
        other.net[-1].weight.mul_(-1)  # a different model with the same input size
    g = torch.Generator().manual_seed(0)
    vs = [0.3 * torch.randn(1, 28, 28, generator=g), torch.zeros(1, 28, 28)]
    rates = fooling_matrix([cnn, other], x, vs)
    assert len(rates) == 2 and len(rates[0]) == 2
    for i, v in enumerate(vs):
        for j, m in enumerate([cnn, other]):
            # a plain reference, not fooling_rate itself: the labels of the valid images x + v against x's own
            with torch.no_grad():
                changed = m((x + v).clamp(0, 1)).argmax(1) != m(x).argmax(1)
            assert rates[i][j] == int(changed.sum()) / len(x)
            assert rates[i][j] == fooling_rate(m, x, v)
    assert rates[1] == [0.0, 0.0] and rates[0][0] > 0  # a zero perturbation fools nobody
    assert rates[0][0] != rates[0][1]  # the two models tell the rows from the columns
