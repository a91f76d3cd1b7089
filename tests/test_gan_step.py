"""The GAN update itself: one alternating step against a plain reference written here (D step, then G step
through the updated D with D's weights frozen), fused optimisers against the per-parameter loop, and a
compiled step against the eager one. Tiny DCGANs on a few real MNIST images."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from dlcli.config import apply_overrides, load_recipe, recipe_from_dict
from dlcli.errors import ConfigError
from dlcli.runtime import Runtime, seed_everything
from dlcli.tasks.base import TaskContext


def _task(data_dir, **top):
    """A GANTask for a DCGAN with 4 filters per layer on 16 MNIST images (batch 16; 32 px, padded)."""
    from dlcli.tasks.gan import GANTask

    spec = {"description": "tiny dcgan", "task": "gan", "model": {"name": "dcgan", "args": {"ngf": 4, "ndf": 4}},
            "optim": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}, "batch_size": 16, "epochs": 1,
            "data": {"source": "mnist", "args": {"val_size": 100, "train_size": 16}}, "seed": 3, "device": "cpu",
            **top}
    recipe = recipe_from_dict(spec, "test", "tinydcgan")
    seed_everything(recipe.seed)
    return GANTask(TaskContext(recipe, Runtime.from_config(recipe), str(data_dir)), **recipe.task_args)


def _reference_step(task, x: torch.Tensor, precision: str):
    """pytorch/examples' update on copies of the task's networks, with its own Adam optimisers: D on real and
    G(z).detach(), then G through the updated D with D's weights frozen (requires_grad off)."""
    G, D = copy.deepcopy(task.G_raw), copy.deepcopy(task.D_raw)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    noise = torch.Generator().manual_seed(0)
    noise.set_state(task.noise_rng.get_state())  # the z the task is about to draw
    z = torch.randn(len(x), 100, generator=noise)
    real = F.pad(x, (2, 2, 2, 2)) * 2 - 1  # 28 -> 32 px, [0, 1] -> tanh's [-1, 1]
    ones, zeros = torch.ones(len(x)), torch.zeros(len(x))

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    with autocast():
        out_real, fake = D(real), G(z)
        out_fake = D(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(out_real.float(), ones)
                  + F.binary_cross_entropy_with_logits(out_fake.float(), zeros))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    D.requires_grad_(False)
    with autocast():
        g_loss = F.binary_cross_entropy_with_logits(D(fake).float(), ones)
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    D.requires_grad_(True)
    return G, D, d_loss, g_loss


def _same(a: torch.nn.Module, b: torch.nn.Module, grads: bool = True) -> list[str]:
    """Names of the parameters, gradients and buffers (batch-norm statistics) that differ."""
    out = [f"{k} (weights)" for (k, p), q in zip(a.named_parameters(), b.parameters()) if not torch.equal(p, q)]
    if grads:
        out += [f"{k} (gradient)" for (k, p), q in zip(a.named_parameters(), b.parameters())
                if (p.grad is None) != (q.grad is None) or (p.grad is not None and not torch.equal(p.grad, q.grad))]
    out += [f"{k} (buffer)" for (k, p), q in zip(a.named_buffers(), b.buffers()) if not torch.equal(p, q)]
    return out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_alternating_step_equals_the_frozen_discriminator_reference(data_dir, precision):
    # bf16 on the CPU (emulated, slow, but 16 tiny images) also checks that the G step does not reuse the
    # low-precision copies of D's weights that autocast made before the D step changed them
    task = _task(data_dir, precision=precision, task_args={"cuda_graph": True})
    assert not task.graphed  # the CPU runs the step eagerly, and the run header says why
    assert "task_args.cuda_graph: eager steps (CUDA graphs need a CUDA device, not cpu)" in task.runtime.notes
    x = next(task.batches.epoch(0))[0]
    G, D, d_loss, g_loss = _reference_step(task, x, precision)
    got_d, got_g = task._step(x)[:2]
    assert torch.equal(got_d, d_loss.detach()) and torch.equal(got_g, g_loss.detach())
    # weights, batch-norm statistics and gradients alike: G's from its step, D's from the D step alone (the
    # G step computes and accumulates none for D)
    assert _same(task.G_raw, G) == [] and _same(task.D_raw, D) == []


def test_fused_optimisers_match_the_loop_on_the_cpu():
    recipe = load_recipe("dcgan-mnist", check_builders=False)
    assert recipe.optim.fused == "auto"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    from dlcli.tasks.optim import build_optimizer, resolve_fused

    assert resolve_fused("auto", list(net.parameters())) is None  # the CPU keeps torch's default
    for name, extra in (("adam", {"optim.weight_decay": 1e-3}), ("adamw", {}), ("sgd", {"optim.momentum": 0.9})):
        weights = {}
        for fused in ("auto", False, True):
            r = apply_overrides(recipe, {"optim.name": name, "optim.lr": 0.01, "optim.fused": fused, **extra})
            m = copy.deepcopy(net)
            opt = build_optimizer(r, m.parameters())
            assert opt.defaults["fused"] is (True if fused is True else None)
            g = torch.Generator().manual_seed(1)
            for _ in range(5):
                opt.zero_grad()
                m(torch.randn(16, 6, generator=g)).square().mean().backward()
                opt.step()
            weights[fused] = torch.cat([p.detach().flatten() for p in m.parameters()])
        assert torch.equal(weights["auto"], weights[False])
        assert torch.allclose(weights[True], weights[False], rtol=1e-5, atol=1e-7), name  # another summation order
    for value, why in (("yes", "auto, true or false"), (True, "adadelta has no fused implementation")):
        with pytest.raises(ConfigError, match=why):
            apply_overrides(recipe, {"optim.name": "adadelta", "optim.fused": value})
    with pytest.raises(ConfigError, match="compile: expected true, false, auto or a torch.compile mode"):
        apply_overrides(recipe, {"compile": "fast"})


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DLCLI_COMPILE_TESTS") != "1",
                    reason="compiles with inductor (24 s on 2 cores, cold cache): DLCLI_COMPILE_TESTS=1 runs it")
def test_a_compiled_step_trains_like_the_eager_one(data_dir):
    """torch.compile of G and D (inductor; 8 px so that it compiles in about 20 s on 2 cores, a few with a warm
    cache): the discriminator's second graph (an input that requires grad) and the G step's
    ``backward(inputs=...)`` through compiled code give the eager step's gradients."""
    top = {"model": {"name": "dcgan", "args": {"ngf": 4, "ndf": 4, "image_size": 8}}, "task_args": {"fit": "resize"}}
    eager, compiled = _task(data_dir, **top), _task(data_dir, **top, compile=True)
    assert compiled.G is not compiled.G_raw and _same(eager.G_raw, compiled.G_raw) == []
    x = next(eager.batches.epoch(0))[0]
    for _ in range(2):
        d_a, g_a = eager._step(x)[:2]
        d_b, g_b = compiled._step(x)[:2]
        assert torch.isfinite(d_b) and torch.isfinite(g_b)
        assert torch.allclose(d_a, d_b, rtol=1e-4) and torch.allclose(g_a, g_b, rtol=1e-4)
    for a, b in ((eager.G_raw, compiled.G_raw), (eager.D_raw, compiled.D_raw)):
        for (k, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), k


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_graph_step_trains_like_the_eager_one(data_dir):
    """``task_args.cuda_graph``: warm-up steps, the capture and the replays give the eager steps' losses and
    weights (fp32; cuDNN may choose other algorithms for the two tasks, hence a tolerance)."""
    from dlcli.tasks.gan import GRAPH_WARMUP

    data = {"source": "mnist", "args": {"val_size": 100, "train_size": 16 * 8}}
    eager = _task(data_dir, device="cuda", precision="fp32", data=data)
    graphed = _task(data_dir, device="cuda", precision="fp32", data=data, task_args={"cuda_graph": True})
    assert graphed.graphed and not eager.graphed
    for x, _, _ in list(eager.batches.epoch(0))[:GRAPH_WARMUP + 3]:  # warm-ups, the capture, two replays
        a, b = eager._step(x), graphed._step(x)
        assert torch.allclose(a[0], b[0], rtol=1e-3) and torch.allclose(a[1], b[1], rtol=1e-3)
    assert graphed._graph is not None
    for net_a, net_b in ((eager.G_raw, graphed.G_raw), (eager.D_raw, graphed.D_raw)):
        for (k, p), q in zip(net_a.named_parameters(), net_b.parameters()):
            assert torch.allclose(p, q, atol=2e-3), k
        for (k, p), q in zip(net_a.named_buffers(), net_b.buffers()):
            assert torch.allclose(p.float(), q.float(), rtol=1e-3, atol=1e-4), k
