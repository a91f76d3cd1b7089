"""The autoencoder, stacked denoising autoencoders and deep belief nets: CD-k against the exact gradient of a
tiny RBM's log-likelihood, the autoencoder's equations by hand, the stage switch, the label budget, exact
resume in the middle of a pretraining stage, eval and attack on a fine-tuned stack, and the bad-input lines.
Tiny stacks on slices of real MNIST."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from dlcli.checkpoint import load_checkpoint
from dlcli.tasks.layerwise import cd_k, dae_loss, masking_noise

# --------------------------------------------------------------------------------------------- the math


def _exact_gradient(data: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
    """∂/∂(W, b, c) of the mean log p(v) over ``data``, with p(v) = Σ_h e^(−E(v, h)) / Σ_(v,h) e^(−E(v, h))
    and E = −cᵀv − bᵀh − hᵀWv, summing over every joint state (2^(V+H) of them)."""
    W, b, c = (t.clone().double().requires_grad_() for t in (W, b, c))
    H, V = W.shape
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=H)), dtype=torch.float64)  # (2^H, H)
    vs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=V)), dtype=torch.float64)  # (2^V, V)

    def neg_energy(v: torch.Tensor) -> torch.Tensor:  # (N, V) -> (N, 2^H): −E(v, h) for every h
        return (v @ c)[:, None] + (hs @ b)[None, :] + v @ W.T @ hs.T

    log_z = torch.logsumexp(neg_energy(vs).flatten(), 0)
    ll = torch.logsumexp(neg_energy(data.double()), 1).mean() - log_z
    ll.backward()
    return W.grad, b.grad, c.grad


def test_cd_k_matches_the_exact_log_likelihood_gradient_of_a_tiny_rbm():
    g = torch.Generator().manual_seed(0)
    V, H = 4, 3
    W = torch.randn(H, V, generator=g, dtype=torch.float64) * 0.7
    b = torch.randn(H, generator=g, dtype=torch.float64) * 0.5
    c = torch.randn(V, generator=g, dtype=torch.float64) * 0.5
    data = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.float64)
    exact = _exact_gradient(data, W, b, c)
    # a long chain forgets its start: CD-k tends to the exact gradient; 4,000 chains per data vector
    dW, db, dc, _ = cd_k(data.repeat(4000, 1), W, b, c, 20, torch.Generator().manual_seed(1))
    for got, want in zip((dW, db, dc), exact):
        assert torch.allclose(got, want, atol=0.02), (got, want)
    assert exact[0].abs().max() > 0.1  # the gradient is not trivially small


def test_the_autoencoders_equations_by_hand():
    from dlcli.models.autoencoder import Autoencoder

    sig = lambda t: 1 / (1 + math.exp(-t))
    x = [0.2, 0.9, 0.5]
    W, b = [[1.0, -2.0, 0.5], [0.3, 0.4, -1.0]], [0.1, -0.2]
    W2, b2 = [[0.5, -1.0], [2.0, 0.0], [-0.3, 0.7]], [0.0, 0.1, -0.1]
    h = [sig(sum(w * xi for w, xi in zip(row, x)) + bi) for row, bi in zip(W, b)]  # h = g(Wx + b)
    xr = [sig(sum(w * hi for w, hi in zip(row, h)) + bi) for row, bi in zip(W2, b2)]  # x' = g(W'h + b')
    tied = [sig(sum(W[k][j] * h[k] for k in range(2)) + b2[j]) for j in range(3)]  # W' = Wᵀ

    for is_tied, want in ((False, xr), (True, tied)):
        ae = Autoencoder((1, 1, 3), hidden=2, tied=is_tied).double()
        with torch.no_grad():
            ae.encoder.weight.copy_(torch.tensor(W, dtype=torch.float64))
            ae.encoder.bias.copy_(torch.tensor(b, dtype=torch.float64))
            if is_tied:
                ae.decoder_bias.copy_(torch.tensor(b2, dtype=torch.float64))
            else:
                ae.decoder.weight.copy_(torch.tensor(W2, dtype=torch.float64))
                ae.decoder.bias.copy_(torch.tensor(b2, dtype=torch.float64))
        xt = torch.tensor(x, dtype=torch.float64).reshape(1, 1, 1, 3)
        assert ae.encode(xt)[0].tolist() == pytest.approx(h, rel=1e-12)
        assert ae(xt).flatten().tolist() == pytest.approx(want, rel=1e-12)

    # the denoising autoencoder's loss without noise: cross-entropy of x' = σ(Wᵀh + b') to x, by hand
    Wt, bt, ct = torch.tensor(W, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), torch.tensor(b2, dtype=torch.float64)
    xent = -sum(xi * math.log(t) + (1 - xi) * math.log(1 - t) for xi, t in zip(x, tied))
    got = dae_loss(torch.tensor([x], dtype=torch.float64), Wt, bt, ct, 0.0, torch.Generator())
    assert float(got) == pytest.approx(xent, rel=1e-12)


def test_masking_noise_zeroes_the_given_fraction_and_repeats_with_its_generator():
    v = torch.ones(200, 500)
    a = masking_noise(v, 0.3, torch.Generator().manual_seed(4))
    assert float((a == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    assert torch.equal(a, masking_noise(v, 0.3, torch.Generator().manual_seed(4)))
    assert torch.equal(masking_noise(v, 0.0, torch.Generator()), v)


# ---------------------------------------------------------------------------------------------- the task


def _tiny(method: str = "dae", labels: int | None = None, **task_args) -> list[str]:
    """--set overrides for a tiny stack on 600 MNIST images (2 layers x 1 pretraining epoch, 1 fine-tuning)."""
    sets = {"data.args.train_size": 600, "data.args.val_size": 200, "model.args.layers": "[24,12]",
            "task_args.pretrain_epochs": 1, "task_args.noise": 0.2, "task_args.gibbs_steps": 5, "batch_size": 100,
            "eval_batch_size": 500, "epochs": 3, "device": "cpu", **{f"task_args.{k}": v for k, v in task_args.items()}}
    if labels is not None:
        sets["data.args.labels"] = labels
    return ["sdae" if method == "dae" else "dbn", *itertools.chain.from_iterable(("--set", f"{k}={v}")
                                                                                 for k, v in sets.items())]


def _task(data_dir: Path, tmp_path: Path, method: str = "dae", **sets):
    from dlcli.config import apply_overrides, load_recipe, parse_set
    from dlcli.registry import TASKS
    from dlcli.runtime import Runtime
    from dlcli.tasks.base import TaskContext

    args = _tiny(method, **sets)
    recipe = apply_overrides(load_recipe(args[0]), dict([*(parse_set(s) for s in args[2::2]), ("epochs", 4)]))
    ctx = TaskContext(recipe, Runtime.create("cpu", "fp32"), str(data_dir), tmp_path)
    torch.manual_seed(recipe.seed)
    return TASKS.get("pretrain")(ctx, **recipe.task_args)


def test_stages_train_one_layer_at_a_time_then_the_whole_stack(data_dir, tmp_path):
    task = _task(data_dir, tmp_path, labels=100)
    net = task.net
    start = {k: v.clone() for k, v in net.state_dict().items()}
    assert [task.steps_per_epoch(e) for e in range(4)] == [6, 6, 1, 1]  # 600 images; then 100 labelled ones
    assert [task.is_final_stage(e) for e in range(4)] == [False, False, True, True]
    assert task.schedule_steps() == 2  # the schedule spans fine-tuning only
    changed, states = [], []
    for epoch in range(4):
        before = {k: v.clone() for k, v in net.state_dict().items()}
        assert len(list(task.train_steps(epoch, 0))) == task.steps_per_epoch(epoch)
        metrics = task.end_epoch(epoch)
        assert metrics["stage"] == min(epoch + 1, 3)
        assert ("val_accuracy" in metrics) == (epoch >= 2) and ("pretrain_loss" in metrics) == (epoch < 2)
        changed.append(sorted(k for k, v in net.state_dict().items() if not torch.equal(v, before[k])))
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    assert changed[0] == ["hidden.0.bias", "hidden.0.weight", "visible_bias.0"]
    assert changed[1] == ["hidden.1.bias", "hidden.1.weight", "visible_bias.1"]
    assert changed[2] == ["hidden.0.bias", "hidden.0.weight", "hidden.1.bias", "hidden.1.weight", "out.bias",
                          "out.weight"]
    for k, v in task.pretrained.items():  # the stack as pretraining left it, kept for the figures
        assert torch.equal(v, states[1][k]), k

    off = _task(data_dir, tmp_path, labels=100, pretrain=False)  # same seed: the same start, no pretraining steps
    assert [off.steps_per_epoch(e) for e in range(4)] == [0, 0, 1, 1]
    for k, v in start.items():
        assert torch.equal(v, off.net.state_dict()[k]), k


def test_the_label_budget_is_class_balanced_disjoint_from_validation_and_keeps_the_rest(data_dir):
    from dlcli.data import load_data

    full = load_data("mnist", {}, data_dir, 0)
    d = load_data("mnist", {"labels": 105}, data_dir, 0)
    counts = torch.bincount(d.train.y, minlength=10).tolist()
    assert counts == [11] * 5 + [10] * 5  # 105 labels: 10 per class and one more for the first five
    lab, val = d.extra["labelled_index"], d.extra["val_index"]
    assert len(set(lab.tolist()) & set(val.tolist())) == 0 and len(val) == 5000
    assert len(d.extra["unlabelled"]) == 55_000 - 105 and bool((d.extra["unlabelled"].y == -1).all())
    assert torch.equal(d.val.x, full.val.x)  # validation does not depend on the label budget
    # the labelled images are those MNIST training images, with their true labels
    from torchvision.datasets import MNIST

    raw = MNIST(str(data_dir), train=True, download=False)
    assert torch.equal(d.train.x[:, 0], raw.data[lab]) and torch.equal(d.train.y, raw.targets[lab])
    assert not torch.equal(lab, load_data("mnist", {"labels": 105}, data_dir, 1).extra["labelled_index"])


def test_resume_in_the_middle_of_a_pretraining_stage_equals_the_uninterrupted_run_and_is_a_classifier(
        cli, data_dir, tmp_path, monkeypatch):
    # the RBM draws from its generator at every step (Gibbs samples), and momentum carries across steps
    common = [*_tiny("rbm"), "--data-dir", str(data_dir), "--json"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    res = cli("train", *common, "--out", str(straight))
    assert res.code == 0, res.err
    assert {Path(p).name for p in res.json()["final"]["figures"]} == {"filters.png", "samples.png"}
    monkeypatch.setenv("DLCLI_FAULT_SIGINT", "0:2:3")  # a real SIGINT after step 3 of epoch 2: layer 2
    res = cli("train", *common, "--out", str(stopped))
    monkeypatch.delenv("DLCLI_FAULT_SIGINT")
    assert res.code == 130, res.err
    assert (load_checkpoint(stopped / "last.pt")["epoch"], load_checkpoint(stopped / "last.pt")["step"]) == (1, 3)
    from dlcli.report.train import TrainProgress

    seen, original = [], TrainProgress.on_step  # the resumed process must go on from step 3 of epoch 2

    def record(self, epoch, step, metrics, samples):
        seen.append((epoch, step))
        original(self, epoch, step, metrics, samples)

    monkeypatch.setattr(TrainProgress, "on_step", record)
    assert cli("train", "--resume", str(stopped), "--data-dir", str(data_dir), "--json").code == 0
    monkeypatch.setattr(TrainProgress, "on_step", original)
    assert seen[:3] == [(1, 4), (1, 5), (1, 6)] and min(seen) == (1, 4)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(stopped / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["pretrained"]:
        assert torch.equal(a["pretrained"][k], b["pretrained"][k]), k
    assert a["log"] == b["log"]

    # the fine-tuned stack is a plain classifier: eval reports it and draws the RBM figures; DeepFool attacks it
    out = cli("eval", str(stopped), "--data-dir", str(data_dir), "--json")
    assert out.code == 0, out.err
    got = out.json()
    assert got["metrics"]["error"] == pytest.approx(1 - got["metrics"]["accuracy"])
    assert {Path(p).name for p in got["figures"]} >= {"filters.png", "samples.png"}
    attack = cli("attack", "deepfool", str(stopped), "--n", "20", "--data-dir", str(data_dir), "--device", "cpu",
                 "--json")
    assert attack.code == 0, attack.err
    report = json.loads(attack.out)
    assert report["attack"] == "deepfool" and report["images"] == 20
    assert report["attacked"] + report["misclassified"] == 20
    assert report["attacked"] >= 1 and report["fooled"] == report["attacked"]  # DeepFool fools every attacked one
    assert 0 < report["rho_adv"] < 1 and 0 <= report["adversarial_min"] <= report["adversarial_max"] <= 1


def test_the_autoencoder_trains_evaluates_and_draws(cli, data_dir, tmp_path):
    run = tmp_path / "ae"
    sets = ["--set", "data.args.train_size=1000", "--set", "data.args.val_size=200", "--set", "model.args.hidden=16",
            "--epochs", "2", "--device", "cpu"]
    res = cli("train", "autoencoder", *sets, "--compile", "--data-dir", str(data_dir), "--out", str(run), "--json")
    assert res.code == 0, res.err
    header, final = res.json()["header"], res.json()["final"]
    # its steps never run the compiled forward, so the run says it is not compiled rather than claim it
    assert header["compile"] is False and any(n.startswith("compile: off for the autoencoder") for n in header["notes"])
    assert final["recon_vs_pca"] == pytest.approx(final["test_recon_error"] / final["pca_recon_error"])
    assert {Path(p).name for p in final["figures"]} == {"reconstructions.png", "filters.png"}
    out = cli("eval", str(run), "--data-dir", str(data_dir), "--json")
    assert out.code == 0, out.err
    assert out.json()["metrics"]["recon_error"] == pytest.approx(final["test_recon_error"], rel=1e-5)


@pytest.mark.parametrize(("sets", "fragment"), [
    (["data.args.labels=0"], "data.args.labels must be in [10, 600]"),
    (["data.args.labels=601"], "data.args.labels must be in [10, 600]"),
    (["epochs=2"], "epochs 2 leave no fine-tuning"),  # 2 layers x 1 pretraining epoch
    (["task_args.noise=[0.1,0.2,0.3]"], "task_args.noise: one masking fraction"),
])
def test_bad_input_is_one_clear_line(cli, data_dir, tmp_path, sets, fragment):
    args = _tiny()
    for s in sets:
        args += ["--set", s]
    res = cli("train", *args, "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    assert res.code in (1, 2) and fragment in res.err, res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1


def test_pca_and_reconstruction_errors_against_plain_references():
    """The autoencoder's yardsticks by other means: PCA's error from an SVD (not an eigendecomposition of the
    Gram matrix), and the mean squared reconstruction error of a known map, summed over pixels, by hand."""
    from dlcli.tasks.autoencode import pca_error, reconstruction_error

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 16, generator=g, dtype=torch.float64)  # data near a 3-d subspace, plus noise
    train = (torch.randn(200, 3, generator=g, dtype=torch.float64) @ basis * 0.1 + 0.5
             + 0.01 * torch.randn(200, 16, generator=g, dtype=torch.float64)).clamp(0, 1).view(200, 1, 4, 4)
    test = train[:50] + 0.02 * torch.rand(50, 1, 4, 4, generator=g, dtype=torch.float64)
    for k in (1, 3):
        a = train.flatten(1)
        mean = a.mean(0)
        _, _, vh = torch.linalg.svd(a - mean, full_matrices=False)
        v = vh[:k].T  # the top-k right singular vectors
        t = test.flatten(1) - mean
        want = float(sum(float(((row - v @ (v.T @ row)) ** 2).sum()) for row in t) / len(t))
        assert pca_error(train, test, k) == pytest.approx(want, rel=1e-6)  # the images pass through float32
    assert pca_error(train, test, 3) < 0.5 * pca_error(train, test, 1)  # the top directions carry the data

    class Halve(torch.nn.Module):
        def forward(self, x):
            return x / 2

    x = torch.randint(0, 256, (7, 1, 3, 3), generator=g, dtype=torch.uint8)  # uint8 pixels, as stored
    by_hand = sum(sum((p / 255 - p / 255 / 2) ** 2 for p in img.flatten().tolist()) for img in x) / len(x)
    got = reconstruction_error(Halve(), x, batch_size=3, device=torch.device("cpu"))  # 3 + 3 + 1 images
    assert got == pytest.approx(by_hand, rel=1e-5)
