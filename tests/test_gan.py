"""GANs: the measures against known answers, exact resume of both optimisers, sampling from a checkpoint
alone, the collapse warnings and the bad-input lines. Tiny networks on slices of real MNIST."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

from dlcli.checkpoint import load_checkpoint
from dlcli.genmetrics import FrechetFeatures, PenultimateFeatures, class_coverage, parzen, parzen_log_likelihood

# ------------------------------------------------------------------------------------------- measures


def _brute_force_parzen(x: torch.Tensor, centres: torch.Tensor, sigma: float) -> list[float]:
    """log (1/M) sum_m prod_d N(x_d; c_md, sigma^2), one term at a time in Python floats."""
    out = []
    for xi in x.tolist():
        terms = []
        for c in centres.tolist():
            log_pdf = sum(-0.5 * ((a - b) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
                          for a, b in zip(xi, c))
            terms.append(log_pdf)
        top = max(terms)
        out.append(top + math.log(sum(math.exp(t - top) for t in terms) / len(terms)))
    return out


def test_parzen_matches_a_brute_force_computation_on_tiny_data():
    g = torch.Generator().manual_seed(0)
    centres, x = torch.rand(7, 5, generator=g), torch.rand(4, 5, generator=g)
    sigmas = [0.1, 0.3, 1.0]
    got = parzen_log_likelihood(x, centres, sigmas, chunk=3)  # a chunk boundary inside the 4 points
    for j, s in enumerate(sigmas):
        assert got[j].tolist() == pytest.approx(_brute_force_parzen(x, centres, s), rel=1e-10, abs=1e-9)

    val, test = torch.rand(6, 5, generator=g), torch.rand(5, 5, generator=g)
    res = parzen(centres, val, test, sigmas)
    val_means = [sum(_brute_force_parzen(val, centres, s)) / len(val) for s in sigmas]
    best = sigmas[max(range(len(sigmas)), key=val_means.__getitem__)]
    ll = _brute_force_parzen(test, centres, best)
    mean = sum(ll) / len(ll)
    assert res.sigma == best
    assert res.mean == pytest.approx(mean, rel=1e-10)
    assert res.se == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in ll) / len(ll)) / math.sqrt(len(ll)), rel=1e-9)


class _Identity(torch.nn.Module):
    """Vectors are their own features (what torchmetrics needs to know: ``num_features``)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def test_frechet_distance_is_zero_for_a_set_with_itself_and_the_closed_form_for_two_gaussians():
    g = torch.Generator().manual_seed(1)
    d, n = 4, 20_000
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64)
    a1 = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5
    s1 = a1 @ a1.T + torch.eye(d, dtype=torch.float64)
    s2 = torch.diag(torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64))
    x1 = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s1).T
    x2 = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s2).T

    def closed_form(m1, c1, m2, c2) -> float:
        """||m1 - m2||^2 + tr(c1 + c2 - 2 (c1 c2)^(1/2)), with tr((c1 c2)^(1/2)) = tr((r c2 r)^(1/2)) for
        r = c1^(1/2): symmetric eigendecompositions only (torchmetrics takes the eigenvalues of c1 c2)."""
        w, v = torch.linalg.eigh(c1)
        r = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
        tr_root = torch.linalg.eigvalsh(r @ c2 @ r).clamp_min(0).sqrt().sum()
        return float((m1 - m2).square().sum() + torch.trace(c1 + c2) - 2 * tr_root)

    fd = FrechetFeatures(_Identity(d), x1, batch_size=3000)
    assert abs(fd.distance(x1)) < 1e-6
    got = fd.distance(x2)
    # exactly the closed form of the two samples' own means and covariances ...
    assert got == pytest.approx(closed_form(x1.mean(0), torch.cov(x1.T), x2.mean(0), torch.cov(x2.T)), rel=1e-5)
    # ... and, within sampling error, that of the two Gaussians the samples came from
    assert got == pytest.approx(closed_form(mu1, s1, mu2, s2), rel=0.03)


def test_penultimate_features_of_lenet_are_f6():
    from dlcli.classifier import Normalized
    from dlcli.models.lenet import LeNet5

    torch.manual_seed(0)
    net = Normalized(LeNet5(), [0.1307], [0.3081]).eval()
    x = torch.rand(3, 1, 28, 28)
    feats = PenultimateFeatures(net)(x)
    with torch.no_grad():
        inner = net.net
        want = inner.classifier[:5](inner.features((x - 0.1307) / 0.3081))  # ... F6 -> tanh, before the output
    assert feats.shape == (3, 84) and torch.allclose(feats, want)


def test_class_coverage_counts_missing_classes():
    logits = torch.full((100, 10), -5.0)
    logits[:60, 3] = 5.0  # 60 samples say "3", 40 say "7": eight classes missing
    logits[60:, 7] = 5.0
    cov = class_coverage(logits, [str(i) for i in range(10)])
    assert cov["classes_covered"] == 2
    assert cov["histogram"]["3"] == 60 and cov["histogram"]["7"] == 40
    assert cov["class_tv"] == pytest.approx(0.5 * (0.5 + 0.3 + 8 * 0.1))
    assert 0.99 < cov["mean_confidence"] <= 1.0
    # a class under 1% of the samples is seen but not covered (1 of 200 = 0.5%; 2 of 200 = 1% is covered)
    logits = torch.full((200, 10), -5.0)
    logits[:197, 3], logits[197, 5], logits[198:, 8] = 5.0, 5.0, 5.0
    cov = class_coverage(logits, [str(i) for i in range(10)])
    assert cov["classes_covered"] == 2 and cov["histogram"]["5"] == 1
    # against the real images' own histogram: half 3s, half 7s; the samples are 60/40, so TV = 0.1
    ref = torch.full((50, 10), -5.0)
    ref[:25, 3], ref[25:, 7] = 5.0, 5.0
    first = torch.full((100, 10), -5.0)
    first[:60, 3], first[60:, 7] = 5.0, 5.0
    cov = class_coverage(first, [str(i) for i in range(10)], reference_logits=ref)
    assert cov["class_tv"] == pytest.approx(0.1)
    assert cov["reference_fractions"] == [0, 0, 0, 0.5, 0, 0, 0, 0.5, 0, 0]


def _mean_pairwise_l2(x: torch.Tensor) -> float:
    """Mean Euclidean distance over all unordered pairs, one pair at a time in Python floats."""
    rows = x.flatten(1).double().tolist()
    d = [math.dist(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
    return sum(d) / len(d)


def test_sample_diversity_is_zero_for_identical_samples():
    from dlcli.tasks.gan import sample_diversity

    real = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert sample_diversity(real[:1].expand(16, -1, -1, -1), real) == 0.0
    assert sample_diversity(real, real) == pytest.approx(1.0)
    # a value that is not 0 or 1 by symmetry: a brute-force ratio of mean pairwise distances, and only the
    # first max_images of each set count
    g = torch.Generator().manual_seed(1)
    fake = 0.25 + 0.5 * torch.rand(12, 1, 5, 5, generator=g)  # half the spread of the real images
    real = torch.rand(14, 1, 5, 5, generator=g)
    want = _mean_pairwise_l2(fake[:10]) / _mean_pairwise_l2(real[:10])
    assert 0.3 < want < 0.7
    assert sample_diversity(fake, real, max_images=10) == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------------------- the models


def test_gan_models_make_images_and_logits():
    from dlcli.registry import build_model

    z = torch.randn(3, 100)
    for name, args, shape in [("gan-mlp", {}, (1, 28, 28)), ("dcgan", {"ngf": 8, "ndf": 8}, (1, 32, 32)),
                              ("dcgan", {"ngf": 8, "ndf": 8, "image_size": 64}, (1, 64, 64))]:
        pair = build_model(name, **args)
        img = pair.G(z)
        assert img.shape == (3, *shape) and torch.isfinite(img).all()
        assert pair.D(img).shape == (3,) and pair(z).shape == (3,)
    # 64 px is pytorch/examples' dcgan layer for layer (same state_dict keys and shapes, nc = 1)
    sd = build_model("dcgan", image_size=64).state_dict()
    assert sd["G.main.0.weight"].shape == (100, 512, 4, 4) and sd["G.main.12.weight"].shape == (64, 1, 4, 4)
    assert sd["D.main.0.weight"].shape == (64, 1, 4, 4) and sd["D.main.11.weight"].shape == (1, 512, 4, 4)


# ------------------------------------------------------------------------------------------- training


def _recipe(tmp_path: Path, model: str, **task_args) -> Path:
    """2 epochs of 4 steps of a tiny GAN: dcgan (Adam, alternating) or gan-mlp (SGD with the 2014 recipe's
    rising momentum and decaying learning rate, simultaneous updates, dropout)."""
    if model == "dcgan":
        spec = {"model": {"name": "dcgan", "args": {"ngf": 4, "ndf": 4}},
                "optim": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}, "batch_size": 32,
                "data": {"source": "mnist", "args": {"val_size": 1000, "train_size": 128}}}
    else:
        spec = {"model": {"name": "gan-mlp", "args": {"hidden": 32, "units": 8, "pieces": 2}},
                "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.5}, "batch_size": 50,
                "data": {"source": "mnist", "args": {"val_size": 1000, "train_size": 200}},
                "task_args": {"update": "simultaneous", "d_loss_scale": 0.5, "output_bias_from_data": True,
                              "lr_decay": 1.01, "momentum_final": 0.7, "momentum_start": 0, "momentum_saturate": 2}}
    spec.setdefault("task_args", {}).update({"log_every": 3, "eval_samples": 100, **task_args})
    spec.update({"description": "tiny gan", "task": "gan", "epochs": 2, "seed": 5, "device": "cpu"})
    path = tmp_path / f"tiny{model}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.mark.parametrize("model", ["dcgan", "gan-mlp"])
def test_interrupt_then_resume_restores_both_optimisers_exactly(cli, data_dir, tmp_path, monkeypatch, model):
    recipe = _recipe(tmp_path, model)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    data = ("--data-dir", str(data_dir), "--json")
    res = cli("train", str(recipe), "--out", str(straight), *data)
    assert res.code == 0, res.err

    from dlcli.report.train import TrainProgress

    original = TrainProgress.on_step

    def ctrl_c(self, epoch, step, metrics, samples):  # the user presses Ctrl-C after step 2 of epoch 2
        original(self, epoch, step, metrics, samples)
        if (epoch, step) == (1, 2):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(TrainProgress, "on_step", ctrl_c)
    assert cli("train", str(recipe), "--out", str(stopped), *data).code == 130
    seen = []  # the steps the resumed process runs: it must go on from the checkpoint, not start again

    def record(self, epoch, step, metrics, samples):
        seen.append((epoch, step))
        original(self, epoch, step, metrics, samples)

    monkeypatch.setattr(TrainProgress, "on_step", record)
    res = cli("train", "--resume", str(stopped), *data)
    assert res.code == 0, res.err
    assert seen == [(1, 3), (1, 4)]  # the rest of epoch 2 (4 steps an epoch), nothing before it

    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(stopped / "last.pt")
    assert any(k.startswith("G.") for k in a["model"]) and any(k.startswith("D.") for k in a["model"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{key} differs after resume"
    for opt in ("opt_g", "opt_d"):
        sa, sb = a["task_state"][opt]["state"], b["task_state"][opt]["state"]
        assert sa.keys() == sb.keys() and sa
        for i in sa:
            for k, v in sa[i].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[i][k])), f"{opt} state {i}.{k} differs"
        assert a["task_state"][opt]["param_groups"] == b["task_state"][opt]["param_groups"]
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert rows == [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("row") == "step"]
    assert [r["step"] for r in steps] == [3, 6]  # every log_every = 3 steps of 8
    assert {"d_loss", "g_loss", "d_x", "d_g_z", "diversity"} <= steps[0].keys()
    assert (straight / "samples" / "epoch-002.png").is_file() and (straight / "samples" / "final.png").is_file()
    final = json.loads((straight / "summary.json").read_text())["final"]
    assert math.isfinite(final["parzen_ll"]) and final["parzen_sigma"] > 0


def test_collapse_warnings_are_one_line_each_and_listed(cli, data_dir, tmp_path):
    # thresholds no real run reaches: the discriminator "collapses" at every check, diversity from epoch 2 on
    recipe = _recipe(tmp_path, "dcgan", warn_d_loss=100.0, warn_diversity=100.0)
    res = cli("train", str(recipe), "--out", str(tmp_path / "run"), "--data-dir", str(data_dir), "--json")
    assert res.code == 0, res.err
    d_lines = [ln for ln in res.err.splitlines() if "discriminator's loss collapsed" in ln]
    div_lines = [ln for ln in res.err.splitlines() if "collapsing onto few modes" in ln]
    assert len(d_lines) == 2 and len(div_lines) == 1  # one per kind and epoch; no diversity check in epoch 1
    assert all(ln.startswith("dlcli: warning: step ") for ln in d_lines + div_lines)
    assert len(res.json()["final"]["warnings"]) == 3


def _train(recipe, out: Path, data_dir: Path) -> Path:
    from dlcli.runtime import Runtime
    from dlcli.train import train

    cwd = os.getcwd()
    os.chdir(out.parent)  # runs/ of the repository (the default feature network) stays out of the fixture
    try:
        train(recipe, Runtime.from_config(recipe), out, data_dir=str(data_dir))
    finally:
        os.chdir(cwd)
    return out


@pytest.fixture(scope="module")
def gan_run(data_dir, tmp_path_factory) -> Path:
    """A tiny trained DCGAN run, shared by the tests below (which only read it)."""
    from dlcli.config import load_recipe

    tmp = tmp_path_factory.mktemp("gan")
    return _train(load_recipe(str(_recipe(tmp, "dcgan"))), tmp / "run", data_dir)


@pytest.fixture(scope="module")
def lenet_checkpoint(data_dir, tmp_path_factory) -> Path:
    """A LeNet-5 as the feature network (one epoch on 1,024 images: features, not accuracy, matter)."""
    from dlcli.config import apply_overrides, load_recipe

    recipe = apply_overrides(load_recipe("lenet"), {"epochs": 1, "data.args.train_size": 1024, "device": "cpu"})
    return _train(recipe, tmp_path_factory.mktemp("lenet") / "run", data_dir) / "best.pt"


@pytest.fixture
def lenet_run(lenet_checkpoint, tmp_path) -> Path:
    """That LeNet as the newest lenet run under runs/ of the cli fixture's working folder (tmp_path)."""
    run = tmp_path / "runs" / "lenet-20260101-000000"
    run.mkdir(parents=True)
    shutil.copy(lenet_checkpoint, run / "best.pt")
    return run


@pytest.fixture
def sample_cli(cli):
    """``dlcli sample`` mounted on the app (as dlcli.cli does once cli_gen is registered there)."""
    from dlcli import cli as cli_module
    from dlcli import cli_gen

    if not any(c.name == "sample" for c in cli_module.app.registered_commands):
        cli_gen.register(cli_module.app)
    return cli


def test_sample_from_a_checkpoint_alone(sample_cli, gan_run, tmp_path, monkeypatch):
    from PIL import Image

    alone = tmp_path / "elsewhere" / "g.pt"
    alone.parent.mkdir()
    shutil.copy(gan_run / "best.pt", alone)  # a checkpoint alone in its folder, and no data: all there is
    monkeypatch.setenv("DLCLI_DATA", str(tmp_path / "no-data-here"))
    paths = []
    for seed, name in ((3, "a.png"), (3, "b.png"), (4, "c.png")):
        res = sample_cli("sample", str(alone), "--n", "9", "--seed", str(seed), "--out", str(tmp_path / name),
                         "--json")
        assert res.code == 0, res.err
        paths.append(Path(res.json()["path"]))
    assert Image.open(paths[0]).size == (3 * 30 + 2, 3 * 30 + 2)  # 3 x 3 images of 28 + 2 px padding
    assert paths[0].read_bytes() == paths[1].read_bytes()  # the same seed, the same images
    assert paths[0].read_bytes() != paths[2].read_bytes()
    res = sample_cli("sample", str(alone), "--json")  # defaults: 64 samples into the checkpoint's folder
    assert res.code == 0 and Path(res.json()["path"]).parent == alone.parent / "samples"


def test_eval_reports_parzen_fld_with_its_floor_and_coverage(cli, gan_run, lenet_run, data_dir, tmp_path):
    from dlcli.classifier import recipe_of
    from dlcli.cli_gen import eval_options
    from dlcli.runtime import Runtime
    from dlcli.tasks.base import TaskContext
    from dlcli.tasks.gan import GANTask

    ckpt = load_checkpoint(gan_run)
    ctx = TaskContext(recipe_of(ckpt), Runtime.create("cpu"), str(data_dir),
                      eval_options=eval_options(str(lenet_run)))
    res = GANTask.evaluate(ckpt, ctx, "test", tmp_path / "eval")
    m = res.metrics
    assert m["samples"] == 100 and m["images"] == 10_000
    assert m["fld"] > m["fld_floor"] > 0  # an 8-step GAN is far from the data; real train vs test is close
    assert m["parzen_ll_real"] > m["parzen_ll"]  # real images in place of the samples: the estimate's reference
    # the histogram is the feature classifier's verdict on exactly the samples that seed draws
    from dlcli.classifier import load_classifier
    from dlcli.tasks.gan_eval import generate, load_gan

    pair, meta, recipe = load_gan(ckpt, "cpu")
    samples = generate(pair, 100, recipe.seed, meta["noise"], "cpu", meta["data_shape"], meta["fit"])
    with torch.no_grad():
        pred = load_classifier(lenet_run).model(samples).argmax(1)
    assert list(res.details["class_histogram"].values()) == torch.bincount(pred, minlength=10).tolist()
    assert m["classes_covered"] == int((torch.bincount(pred, minlength=10) >= 1).sum())  # >= 1% of 100
    assert str(lenet_run) in m["features"] and Path(res.figures[0]).is_file()
    # without --features: the newest lenet run under runs/ (the cli fixture runs in tmp_path)
    res = cli("eval", str(gan_run), "--data-dir", str(data_dir), "--json")
    assert res.code == 0, res.err
    assert res.json()["metrics"]["fld"] == pytest.approx(m["fld"])


def test_bad_input_is_one_clear_line(sample_cli, gan_run, lenet_run, data_dir, tmp_path):
    res = sample_cli("sample", str(lenet_run))
    assert res.code == 1 and len(res.err.strip().splitlines()) == 1
    assert "a 'classify' run (lenet), not a GAN" in res.err
    res = sample_cli("sample", str(gan_run), "--n", "0")
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and "--n 0" in res.err

    from dlcli.classifier import recipe_of
    from dlcli.errors import DlcliError
    from dlcli.runtime import Runtime
    from dlcli.tasks.base import TaskContext
    from dlcli.tasks.gan import GANTask

    ckpt = load_checkpoint(gan_run)
    ctx = TaskContext(recipe_of(ckpt), Runtime.create("cpu"), str(data_dir), eval_options={"features": str(gan_run)})
    with pytest.raises(DlcliError, match=r"--features .*: a 'gan' run \(tinydcgan\), not an image classifier"):
        GANTask.evaluate(ckpt, ctx, "test", tmp_path / "eval")
