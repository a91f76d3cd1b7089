"""The Neocognitron: S-cells and C-cells against hand-computed values, the competitive learning rule against a
brute-force loop over positions, and tiny end-to-end runs on slices of real MNIST (train, eval, the classifier
that attacks load, resume in the middle of a learning stage and of a readout epoch, bad input)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from dlcli.checkpoint import load_checkpoint
from dlcli.classifier import load_classifier
from dlcli.models.neocognitron import c_cell_response, gaussian, s_cell_response
from dlcli.tasks.neocognitron import BLANK_FRACTION, competitive_step

# ---------------------------------------------------------------------------------------------- the cells


def test_s_cell_response_matches_a_hand_computed_value():
    template = torch.eye(3).reshape(1, 1, 3, 3)  # |X| = sqrt(3)
    x = torch.tensor([[1.0, 1, 0], [0, 1, 0], [0, 0, 0]]).reshape(1, 1, 3, 3)
    # uniform window: X·x = 2, v = |x| = sqrt(3), s = 2/3; u = v (s - θ) / (1 - θ) = sqrt(3) (1/6) / (1/2)
    u = s_cell_response(x, template, torch.ones(3, 3), theta=0.5)
    assert u.shape == (1, 1, 3, 3)
    assert float(u[0, 0, 1, 1]) == pytest.approx(math.sqrt(3) / 3, rel=1e-6)
    assert float(s_cell_response(x, template, torch.ones(3, 3), theta=0.7)[0, 0, 1, 1]) == 0.0  # s < θ: silent
    # window sqrt(c) = 1 at the centre, 0.5 around it: x̃ = (.5, .5, 0; 0, 1, 0; 0, 0, 0), v = sqrt(1.5),
    # X̂·x̃ = 1.5 / sqrt(3), so u = (1.5 / sqrt(3) - 0.5 sqrt(1.5)) / 0.5
    window = torch.full((3, 3), 0.5)
    window[1, 1] = 1.0
    u = s_cell_response(x, template, window, theta=0.5)
    assert float(u[0, 0, 1, 1]) == pytest.approx((1.5 / math.sqrt(3) - 0.5 * math.sqrt(1.5)) / 0.5, rel=1e-6)
    # a template's length does not matter, a zero template is silent
    assert torch.allclose(s_cell_response(x, 7 * template, window, 0.5), u)
    assert float(s_cell_response(x, torch.zeros(1, 1, 3, 3), window, 0.0).abs().max()) == 0.0


def test_c_cells_blur_subsample_and_saturate():
    blur = gaussian(5, 1.0)
    u = torch.zeros(1, 2, 6, 6)
    u[0, 0, 2, 2] = 1.0  # a single active S-cell
    u[0, 1] = 1.0  # a plane active everywhere
    c = c_cell_response(u, blur)
    assert c.shape == (1, 2, 3, 3)  # every second position
    g = float(blur[2, 2])
    assert float(c[0, 0, 1, 1]) == pytest.approx(g / (1 + g), rel=1e-6)  # ψ of the blur's centre weight
    assert float(c[0, 0, 1, 2]) == pytest.approx(float(blur[2, 0]) / (1 + float(blur[2, 0])), rel=1e-6)
    assert float(c[0, 1, 1, 1]) == pytest.approx(0.5, rel=1e-6)  # the blur sums to 1: ψ(1) = 1/2


# ------------------------------------------------------------------------------------------- the learning


def _brute_force_step(templates, x, window, theta_learn, q, compete):
    """The rule written one position at a time: the expected templates and wins after one batch."""
    k = templates.shape[-1]
    new, wins = templates.clone(), torch.zeros(len(templates))
    pad = F.pad(x, (k // 2,) * 4)
    b, _, h, w = x.shape
    xt = [[[pad[i, :, r:r + k, c:c + k] * window for c in range(w)] for r in range(h)] for i in range(b)]
    v = torch.tensor([[[float(p.norm()) for p in row] for row in img] for img in xt])
    best = torch.zeros(b, h, w)
    winner = torch.zeros(b, h, w, dtype=torch.long)
    for i in range(b):
        for r in range(h):
            for c in range(w):
                if v[i, r, c] <= BLANK_FRACTION * v.max():
                    continue
                s = [float((t * xt[i][r][c]).sum() / (t.norm() * v[i, r, c])) for t in templates]
                winner[i, r, c] = max(range(len(s)), key=s.__getitem__)
                best[i, r, c] = max(s)
    for i in range(b):
        for r in range(h):
            for c in range(w):
                near = best[i, max(0, r - compete):r + compete + 1, max(0, c - compete):c + compete + 1]
                if best[i, r, c] >= theta_learn and best[i, r, c] >= near.max():
                    new[winner[i, r, c]] += q * xt[i][r][c]
                    wins[winner[i, r, c]] += 1
    return new, wins


@pytest.mark.parametrize("compete", [0, 1])
def test_winner_take_all_reinforces_only_the_winner_of_each_column(compete):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 5, 5, generator=g) ** 3  # non-negative like C-cell outputs, mostly dim
    templates = torch.rand(4, 2, 3, 3, generator=g)
    window = gaussian(3, 1.5).sqrt()
    want, want_wins = _brute_force_step(templates, x, window, 0.65, 0.5, compete)
    got, count, wins = templates.clone(), torch.tensor(4), torch.zeros(4)
    stats = competitive_step(got, count, wins, x, window, 0.65, q=0.5, compete=compete)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(wins, want_wins)
    assert stats["reinforced"] == int(want_wins.sum()) > 0 and stats["seeded"] == 0  # full: nothing to add
    unchanged = (got == templates).flatten(1).all(1)
    assert unchanged.any() and not unchanged.all()  # some planes won nowhere and stayed exactly as they were


def test_add_if_silent_seeds_planes_from_silent_patches_until_every_one_is_answered():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 6, 6, generator=g)
    window = torch.ones(3, 3)
    templates, count, wins = torch.zeros(50, 1, 3, 3), torch.tensor(0), torch.zeros(50)
    stats = competitive_step(templates, count, wins, x, window, 0.95, generator=torch.Generator().manual_seed(0))
    n = int(count)
    assert stats["seeded"] == n > 1 and stats["reinforced"] == 0  # an empty layer: every column silent
    patches = F.unfold(x, 3, padding=1)[0].T  # (36, 9)
    seeds = templates[:n].flatten(1)
    # each new template is one of the patches, and every patch now has a plane that answers (s >= θ_L)
    assert all(bool((seeds[i] - patches).abs().amax(1).min() < 1e-6) for i in range(n))
    cos = F.normalize(patches, dim=1) @ F.normalize(seeds, dim=1).T
    assert bool((cos.max(1).values >= 0.95 - 1e-6).all())
    among = F.normalize(seeds, dim=1) @ F.normalize(seeds, dim=1).T - 2 * torch.eye(n)
    assert bool((among < 0.95).all())  # a patch some earlier seed answers to seeds no plane of its own
    assert bool((templates[n:] == 0).all())


# ----------------------------------------------------------------------------------------- end to end


def _recipe(tmp_path: Path, **overrides) -> Path:
    """Two tiny S/C stages on 256 MNIST images, two readout epochs."""
    recipe = {
        "task": "neocognitron",
        "task_args": {"learn_images": [96, 96], "learn_batch": 32},
        "model": {"name": "neocognitron",
                  "args": {"planes": [4, 8], "kernels": [3, 3], "theta": [0.5, 0.5], "theta_learn": [0.7, 0.6]}},
        "data": {"source": "mnist", "args": {"val_size": 200, "train_size": 256}},
        "optim": {"name": "adam", "lr": 0.01},
        "schedule": {"name": "cosine"},
        "epochs": 4,
        "batch_size": 64,
        "seed": 2,
        "device": "cpu",
        **overrides,
    }
    path = tmp_path / "tinyneo.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(recipe, run folder) of one uninterrupted tiny training, shared by the tests below."""
    from dlcli.cli import main

    folder = tmp_path_factory.mktemp("neocognitron")
    recipe, run = _recipe(folder), folder / "straight"
    try:
        main(["train", str(recipe), "--out", str(run), "--data-dir", str(data_dir), "--json"])
    except SystemExit as e:
        assert not e.code, f"the tiny training failed with exit code {e.code}"
    return recipe, run


def test_tiny_training_evaluates_draws_its_templates_and_loads_as_a_classifier(cli, data_dir, tiny_run, tmp_path):
    _, run = tiny_run
    out = json.loads((run / "summary.json").read_text())
    assert out["final"]["planes"] == [4, 8] and out["final"]["test_accuracy"] > 0.5  # far above chance (0.1)
    assert [h.get("layer") for h in out["history"]] == [1, 2, None, None]  # two S stages, then the readout
    assert out["final"]["best_epoch"] in (3, 4)  # chosen among the readout epochs only
    # (the S stages report no val_accuracy, so the line above holds even if they counted as final: ask the task)
    from types import SimpleNamespace

    from dlcli.tasks.neocognitron import NeocognitronTask

    assert [NeocognitronTask.is_final_stage(SimpleNamespace(layers=2), e) for e in range(4)] == [False, False, True,
                                                                                               True]
    assert (run / "templates.png").stat().st_size > 5_000

    res = cli("eval", str(run), "--split", "val", "--data-dir", str(data_dir), "--out", str(tmp_path / "ev"), "--json")
    assert res.code == 0, res.err
    ev = res.json()
    assert ev["metrics"]["accuracy"] == pytest.approx(out["final"]["val_accuracy"], abs=1e-9)
    assert ev["metrics"]["planes"] == [4, 8]
    assert (tmp_path / "ev" / "templates.png").is_file()

    # what `dlcli attack` loads: the whole network, pixels to logits, with finite, non-zero input gradients
    clf = load_classifier(run)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    clf.model(x).max(1).values.sum().backward()
    assert bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


def test_resume_in_the_middle_of_each_kind_of_stage_equals_an_uninterrupted_run(cli, data_dir, tiny_run, tmp_path,
                                                                                monkeypatch):
    from dlcli.tasks.neocognitron import NeocognitronTask

    recipe, straight = tiny_run
    stopped = tmp_path / "stopped"
    calls: list[tuple[int, int]] = []  # (epoch, start_step) of each train_steps call: what each process trained
    train_steps = NeocognitronTask.train_steps
    monkeypatch.setattr(NeocognitronTask, "train_steps",
                        lambda self, epoch, start: calls.append((epoch, start)) or train_steps(self, epoch, start))
    data = ("--data-dir", str(data_dir), "--json")
    # a real SIGINT after step 2 of epoch 2 (S-layer 2, competitive learning), then after step 2 of epoch 3
    # (the readout, once its features and standardisation exist), then the resumed run to the end
    ran = {2: [(0, 0), (1, 0)], 3: [(1, 2), (2, 0)]}  # the resume goes on at step 2 of epoch 2, not from scratch
    for epoch, args in ((2, ("train", str(recipe), "--out", str(stopped))), (3, ("train", "--resume", str(stopped)))):
        monkeypatch.setenv("DLCLI_FAULT_SIGINT", f"0:{epoch}:2")
        calls.clear()
        res = cli(*args, *data)
        assert res.code == 130, res.err
        assert calls == ran[epoch]
        ckpt = load_checkpoint(stopped / "last.pt")
        assert (ckpt["epoch"], ckpt["step"]) == (epoch - 1, 2)
    monkeypatch.delenv("DLCLI_FAULT_SIGINT")
    calls.clear()
    res = cli("train", "--resume", str(stopped), *data)
    assert res.code == 0, res.err
    assert calls == [(2, 2), (3, 0)]  # the rest of readout epoch 3, then epoch 4
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(straight / name)["model"], load_checkpoint(stopped / name)["model"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
    history = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert history == [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"epochs": 2}, "epochs must be more than the 2 S-layer stages"),
    ({"model": {"name": "neocognitron", "args": {"planes": [4, 8], "kernels": [5, 3], "theta": [1.2, 0.5],
                                                 "theta_learn": [0.7, 0.6]}}}, "theta: numbers in [0, 1)"),
    ({"model": {"name": "neocognitron", "args": {"planes": [4], "kernels": [5, 3], "theta": [0.5, 0.5],
                                                 "theta_learn": [0.7, 0.6]}}}, "one entry per S-layer"),
    ({"task_args": {"learn_images": [96]}}, "one count per S-layer (2)"),
])
def test_bad_input_is_one_clear_line(cli, data_dir, tmp_path, overrides, fragment):
    res = cli("train", str(_recipe(tmp_path, **overrides)), "--out", str(tmp_path / "run"), "--data-dir",
              str(data_dir))
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], res.err
