"""Ctrl-C (or SIGTERM) during ``dlcli train`` writes a resumable last.pt, exits 130, and resuming equals never stopping.

Runs the real command line in this process on a small slice of real MNIST (2 epochs of 16 steps). The
interruption is a real SIGINT sent to this process from inside the progress callback, so it arrives in the
middle of an epoch exactly as a user's Ctrl-C would.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch
import yaml

from dlcli.checkpoint import load_checkpoint

STEPS_PER_EPOCH = 16
INTERRUPT_AT = (1, 5)  # (epoch index, step within it): mid-way through the second epoch


def _recipe(tmp_path: Path) -> Path:
    """LeNet-5 on 2,048 MNIST images with everything that carries state across a resume: momentum, a per-step
    one-cycle schedule, random shifts drawn per step, and a fresh permutation per epoch."""
    recipe = {
        "description": "resume test",
        "task": "classify",
        "task_args": {"shift": 2},
        "model": {"name": "lenet5", "args": {"variant": "classic"}},
        "data": {"source": "mnist", "args": {"val_size": 500, "train_size": STEPS_PER_EPOCH * 128}},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "onecycle"},
        "epochs": 2,
        "batch_size": 128,
        "seed": 3,
        "device": "cpu",
    }
    path = tmp_path / "tinylenet.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_interrupt_then_resume_equals_uninterrupted_run(cli, data_dir, tmp_path, monkeypatch):
    recipe = _recipe(tmp_path)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    data = ("--data-dir", str(data_dir), "--json")

    res = cli("train", str(recipe), "--out", str(straight), *data)
    assert res.code == 0, res.err

    from dlcli.report.train import TrainProgress

    original = TrainProgress.on_step

    def ctrl_c(self, epoch, step, metrics, samples):  # the user presses Ctrl-C during this step
        original(self, epoch, step, metrics, samples)
        if (epoch, step) == INTERRUPT_AT:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(TrainProgress, "on_step", ctrl_c)
    res = cli("train", str(recipe), "--out", str(stopped), *data)
    assert res.code == 130
    assert f"resume with: dlcli train tinylenet --resume {stopped}" in res.err
    ckpt = load_checkpoint(stopped / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == INTERRUPT_AT
    assert len(ckpt["history"]) == INTERRUPT_AT[0]  # only the finished epochs
    seen = []  # the steps the resumed process runs: it must go on from the checkpoint, not start again

    def record(self, epoch, step, metrics, samples):
        seen.append((epoch, step))
        original(self, epoch, step, metrics, samples)

    monkeypatch.setattr(TrainProgress, "on_step", record)

    res = cli("train", "--resume", str(stopped), *data)
    assert res.code == 0, res.err
    epoch, step = INTERRUPT_AT
    assert seen == [(epoch, s) for s in range(step + 1, STEPS_PER_EPOCH + 1)]  # only the rest of epoch 2
    assert res.json()["header"]["resumed_at"] == f"epoch {epoch + 1}, step {step}"

    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(straight / name), load_checkpoint(stopped / name)
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), f"{name}: {key} differs after resume"
    assert _history(straight) == _history(stopped)
    final_a = json.loads((straight / "summary.json").read_text())["final"]
    final_b = json.loads((stopped / "summary.json").read_text())["final"]
    assert final_a["test_accuracy"] == final_b["test_accuracy"]
    assert final_a["test_loss"] == final_b["test_loss"]


def test_sigterm_stops_like_ctrl_c_with_a_resumable_checkpoint(cli, tmp_path, monkeypatch):
    # a batch scheduler's preemption, `timeout` or `kill`: SIGTERM in the middle of an epoch
    from dlcli.report.train import TrainProgress

    original = TrainProgress.on_step

    def sigterm(self, epoch, step, metrics, samples):
        original(self, epoch, step, metrics, samples)
        if (epoch, step) == (1, 3):
            os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum, frame):  # what runs if dlcli leaves SIGTERM to the process (which it would end)
        raise AssertionError("SIGTERM was not handled by dlcli")

    monkeypatch.setattr(TrainProgress, "on_step", sigterm)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        run = tmp_path / "run"
        res = cli("train", "approx", "--epochs", "3", "--set", "task_args.steps_per_epoch=5", "--out", str(run),
                  "--json")
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the handler before the run is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert res.code == 130, res.err
    assert f"interrupted at epoch 2, step 3; saved {run / 'last.pt'}" in res.err
    assert f"resume with: dlcli train approx --resume {run}" in res.err
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 3) and len(ckpt["history"]) == 1
