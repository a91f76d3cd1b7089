"""The trainer–task contract: monitor None, stages, per-epoch step counts, extra rows, RNG coverage, what each
checkpoint holds and how often it is written, extending a finished run with a new schedule.

A toy task registered here draws from every global generator (Python ``random``, NumPy, torch) and from its own
``torch.Generator`` at every step, and trains a real model, so resume equality checks all of them at once.
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
import yaml

from dlcli.checkpoint import load_checkpoint
from dlcli.registry import register_task
from dlcli.runtime import optimizer_step
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.tasks.optim import build_optimizer, build_scheduler, load_scheduler


class ToyTask(Task):
    """y = mlp(x) on noise drawn at every step from all four generators; scores per epoch come from the recipe."""

    monitor = "score"
    monitor_mode = "max"

    def __init__(self, ctx: TaskContext, *, scores: list[float] | None = None, steps: list[int] | None = None,
                 final_stage_from: int = 0, monitor: str | None = "score", rows_every: int = 0) -> None:
        super().__init__(ctx)
        self.monitor = monitor
        self.scores = scores or [0.0] * 100
        self.steps = steps
        self.final_stage_from = final_stage_from
        self.rows_every = rows_every
        self.model, self.raw = self.runtime.prepare(self.build_model(in_features=3, out_features=1))
        self.optimizer = build_optimizer(self.recipe, self.raw.parameters())
        self.scheduler = build_scheduler(self.recipe, self.optimizer, total_steps=self.schedule_steps(),
                                         steps_per_epoch=self.steps_per_epoch(0))
        self.gen = torch.Generator().manual_seed(123)
        self.steps_seen: list[tuple[int, int]] = []
        self.total = 0

    def steps_per_epoch(self, epoch: int) -> int:
        return self.steps[epoch] if self.steps else 4

    def is_final_stage(self, epoch: int) -> bool:
        return epoch >= self.final_stage_from

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        for step in range(start_step, self.steps_per_epoch(epoch)):
            noise = [random.random(), float(np.random.rand()), float(torch.rand(()))]
            x = torch.tensor([noise]) + torch.rand(1, 3, generator=self.gen)
            loss = (self.model(x) - 1.0).pow(2).mean()
            optimizer_step(loss, self.optimizer)
            if self.scheduler is not None:
                self.scheduler.step()
            self.steps_seen.append((epoch, step))
            self.total += 1
            if self.rows_every and self.total % self.rows_every == 0:
                self.ctx.log_row("step", {"step": self.total, "toy_loss": float(loss.detach())})
            yield {"loss": float(loss.detach())}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {"score": self.scores[epoch], "lr": self.optimizer.param_groups[0]["lr"]}

    def finish(self, run_dir: Path) -> dict[str, Any]:
        return {"weight_sum": float(sum(p.detach().sum() for p in self.raw.parameters())), "total_steps": self.total,
                "steps_here": [list(s) for s in self.steps_seen]}  # (epoch, step) run by this process

    def raw_model(self) -> torch.nn.Module:
        return self.raw

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "gen": self.gen.get_state(), "total": self.total,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None}

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler(self.scheduler, state["scheduler"], restore_schedule)
        self.gen.set_state(state["gen"])
        self.total = int(state["total"])

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        return EvalResult({"epoch": checkpoint["epoch"]})


register_task("toy-test", summary="test task")(ToyTask)


def _recipe(tmp_path: Path, name: str = "toy", **overrides: Any) -> Path:
    recipe: dict[str, Any] = {
        "task": "toy-test",
        "model": {"name": "mlp", "args": {"hidden": 8}},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": {"name": "cosine"},
        "epochs": 3,
        "device": "cpu",
        "seed": 5,
    }
    for key, value in overrides.items():
        recipe[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_recipe_without_data_trains(cli, tmp_path):
    res = cli("train", str(_recipe(tmp_path)), "--out", str(tmp_path / "run"), "--json")
    assert res.code == 0, res.err
    assert res.json()["final"]["total_steps"] == 12


def test_steps_per_epoch_is_read_every_epoch(cli, tmp_path):
    path = _recipe(tmp_path, task_args={"steps": [2, 5, 3]})
    res = cli("train", str(path), "--out", str(tmp_path / "run"), "--json")
    assert res.code == 0, res.err
    assert res.json()["final"]["total_steps"] == 10


def test_best_is_chosen_in_the_final_stage_only(cli, tmp_path):
    # epoch 1 (a pretraining stage) has the highest score of all; best must be the best of epochs 2-3
    path = _recipe(tmp_path, task_args={"scores": [9.0, 1.0, 2.0], "final_stage_from": 1})
    res = cli("train", str(path), "--out", str(tmp_path / "run"), "--json")
    assert res.code == 0, res.err
    assert res.json()["final"]["best_epoch"] == 3
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 3


def test_monitor_none_reports_the_last_epoch(cli, tmp_path):
    # with a monitored metric, epoch 1 would be best (score 5) and its weights reloaded before finish
    path = _recipe(tmp_path, task_args={"scores": [5.0, 1.0, 0.0], "monitor": None})
    run = tmp_path / "run"
    res = cli("train", str(path), "--out", str(run), "--json")
    assert res.code == 0, res.err
    assert res.json()["final"]["best_epoch"] == 3
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["epoch"] == 3
    for k in last["model"]:
        assert torch.equal(best["model"][k], last["model"][k])
    expected = float(sum(v.sum() for v in last["model"].values()))
    assert res.json()["final"]["weight_sum"] == pytest.approx(expected, rel=1e-6)


def test_checkpoints_hold_what_they_should_and_are_written_once_per_epoch(cli, tmp_path, monkeypatch):
    import dlcli.train as train_module

    writes: list[str] = []
    original = train_module.save_checkpoint

    def counting(path, payload):
        writes.append(Path(path).name)
        return original(path, payload)

    monkeypatch.setattr(train_module, "save_checkpoint", counting)
    path = _recipe(tmp_path, task_args={"scores": [1.0, 2.0, 3.0]})
    res = cli("train", str(path), "--out", str(tmp_path / "run"), "--json")
    assert res.code == 0, res.err
    assert writes == ["last.pt", "best.pt"] * 3  # improving every epoch: each file once per epoch, never again
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert "task_state" not in best and "rng" not in best  # evaluation needs no optimiser
    assert {"model", "recipe", "epoch"} <= set(best)
    assert {"task_state", "rng", "log", "step", "schedule_span"} <= set(last)
    assert set(last["rng"]) >= {"torch", "python", "numpy"}


def test_extra_rows_reach_metrics_json_and_curves(cli, tmp_path):
    path = _recipe(tmp_path, task_args={"rows_every": 2})
    run = tmp_path / "run"
    out = cli("train", str(path), "--out", str(run), "--json").json()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = ["epoch" if "epoch" in r else r["row"] for r in rows]
    assert kinds == ["step", "step", "epoch"] * 3  # in the order they were written
    assert [r["step"] for r in rows if r.get("row") == "step"] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in out["rows"]] == [2, 4, 6, 8, 10, 12]
    assert (run / "curves.png").stat().st_size > 1000


def _run_with_sigint(cli, monkeypatch, args: list[str], at: tuple[int, int], twice: bool = False):
    """Run ``dlcli`` with a real SIGINT sent from inside the step callback at (epoch index, step)."""
    from dlcli.train import NoCallbacks

    import dlcli.train as train_module

    original_train = train_module.train

    class Interrupting(NoCallbacks):
        def on_step(self, epoch, step, metrics, samples):
            if (epoch, step) == at:
                os.kill(os.getpid(), signal.SIGINT)
                if twice:
                    os.kill(os.getpid(), signal.SIGINT)

    def train(recipe, runtime, run_dir, **kw):
        kw["callbacks"] = Interrupting()
        return original_train(recipe, runtime, run_dir, **kw)

    monkeypatch.setattr(train_module, "train", train)
    try:
        return cli(*args)
    finally:
        monkeypatch.setattr(train_module, "train", original_train)


@pytest.mark.parametrize("at", [(1, 2), (0, 4)], ids=["mid-epoch", "last-step-of-epoch"])
def test_every_generator_and_state_resumes_exactly(cli, tmp_path, monkeypatch, at):
    path = _recipe(tmp_path)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert cli("train", str(path), "--out", str(straight), "--json").code == 0
    res = _run_with_sigint(cli, monkeypatch, ["train", str(path), "--out", str(stopped), "--json"], at)
    assert res.code == 130, res.err
    ck = load_checkpoint(stopped / "last.pt")
    assert (ck["epoch"], ck["step"]) == at
    resumed = cli("train", "--resume", str(stopped), "--json")
    assert resumed.code == 0, resumed.err
    # the resumed process ran exactly the steps the stopped one had not (a rerun from scratch with the same seed
    # would reproduce every state compared below)
    assert resumed.json()["final"]["steps_here"] == [[e, s] for e in range(3) for s in range(4) if (e, s) >= at]
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(stopped / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    oa, ob = a["task_state"]["optimizer"], b["task_state"]["optimizer"]
    for i in oa["state"]:
        assert torch.equal(oa["state"][i]["momentum_buffer"], ob["state"][i]["momentum_buffer"])
    assert a["task_state"]["scheduler"] == b["task_state"]["scheduler"]
    assert torch.equal(a["task_state"]["gen"], b["task_state"]["gen"])
    assert a["log"] == b["log"]


def test_second_ctrl_c_aborts_at_once(cli, tmp_path, monkeypatch):
    path = _recipe(tmp_path)
    run = tmp_path / "run"
    res = _run_with_sigint(cli, monkeypatch, ["train", str(path), "--out", str(run)], (1, 1), twice=True)
    assert res.code == 130
    assert "aborted by a second Ctrl-C in epoch 2, step 1" in res.err  # no clean stop
    assert "the last checkpoint is the end of epoch 1" in res.err
    ck = load_checkpoint(run / "last.pt")
    assert (ck["epoch"], ck["step"]) == (1, 0)  # only the end-of-epoch checkpoint exists


def test_extending_a_finished_run_uses_a_new_schedule(cli, tmp_path):
    path = _recipe(tmp_path, epochs=2)
    run = tmp_path / "run"
    assert cli("train", str(path), "--out", str(run), "--json").code == 0
    before = _weights(run / "last.pt")
    res = cli("train", "--resume", str(run), "--epochs", "4", "--json")
    assert res.code == 0, res.err
    history = res.json()["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # the finished cosine schedule ended at lr 0; a new one over epochs 3-4 starts high and ends near 0 again
    lr = [h["lr"] for h in history]
    assert lr[1] == pytest.approx(0.0, abs=1e-9) and lr[2] > 0.02 and lr[3] == pytest.approx(0.0, abs=1e-9)
    after = _weights(run / "last.pt")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained (lr was not 0)
    assert load_checkpoint(run / "last.pt")["schedule_span"] == [2, 4]
    again = cli("train", "--resume", str(run), "--json")
    assert again.code == 1 and "already finished all 4 epochs" in again.err


def test_epochs_cannot_change_while_a_run_is_unfinished(cli, tmp_path, monkeypatch):
    path = _recipe(tmp_path)
    run = tmp_path / "run"
    assert _run_with_sigint(cli, monkeypatch, ["train", str(path), "--out", str(run)], (1, 2)).code == 130
    res = cli("train", "--resume", str(run), "--epochs", "5")
    assert res.code == 2 and "resume it without --epochs first" in res.err


def test_extending_approx_and_lenet(cli, tmp_path, data_dir):
    run = tmp_path / "approx"
    first = cli("train", "approx", "--epochs", "1", "--set", "task_args.steps_per_epoch=20", "--out", str(run),
                "--json")
    assert first.code == 0, first.err
    res = cli("train", "--resume", str(run), "--epochs", "2", "--json")
    assert res.code == 0, res.err
    # epoch 1 is the finished run's (a 2-epoch run from scratch has another cosine schedule in its epoch 1)
    assert [h["epoch"] for h in res.json()["history"]] == [1, 2]
    assert res.json()["history"][0] == first.json()["history"][0]
    lenet = tmp_path / "lenet"
    small = ["--set", "data.args.train_size=256", "--set", "data.args.val_size=256", "--data-dir", str(data_dir)]
    first = cli("train", "lenet-modern", "--epochs", "1", *small, "--out", str(lenet), "--json")
    assert first.code == 0, first.err
    res = cli("train", "--resume", str(lenet), "--epochs", "2", "--data-dir", str(data_dir), "--json")
    assert res.code == 0, res.err  # the one-cycle schedule used to raise "Tried to step 3 times"
    assert [h["epoch"] for h in res.json()["history"]] == [1, 2]
    assert res.json()["history"][0] == first.json()["history"][0]  # continued, not retrained


def test_precision_auto_follows_the_hardware():
    from dlcli.runtime import Runtime, _cpu_has_bf16

    rt = Runtime.create("cpu", "auto")
    assert rt.precision == ("bf16" if _cpu_has_bf16() else "fp32")
    assert any(n.startswith("precision auto: " + rt.precision) for n in rt.notes)


def test_compile_auto_records_cuda_graphs_on_one_gpu_only():
    from dlcli.runtime import Runtime, resolve_compile

    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    value, note = resolve_compile("auto", cuda, 1, has_triton=True, c_compiler="gcc")
    assert value == "reduce-overhead" and note.startswith("compile auto: reduce-overhead")
    for dev, world, triton, cc, why in ((torch.device("cpu"), 1, True, "gcc", "off on cpu"),
                                        (cuda, 2, True, "gcc", "under torchrun"), (cuda, 1, False, "gcc", "Triton"),
                                        (cuda, 1, True, None, "needs a C compiler")):
        value, note = resolve_compile("auto", dev, world, has_triton=triton, c_compiler=cc)
        assert value is False and why in note
    for asked in (False, True, "max-autotune"):
        assert resolve_compile(asked, cuda, 2, has_triton=False) == (asked, None)  # only auto is decided here
    rt = Runtime.create("cpu", "fp32", compile="auto")
    assert rt.compile is False and not rt.cuda_graphs
    assert any(n.startswith("compile auto: off on cpu") for n in rt.notes)


def test_compiling_in_fp32_silences_inductor_s_tf32_advice():
    """fp32 is full float32 on purpose; inductor's warning that TF32 is off (CUDA only) is filtered once a model
    is compiled (torch.compile is lazy: nothing compiles here), and its other warnings are not."""
    import warnings

    from dlcli.runtime import Runtime

    advice = ("TensorFloat32 tensor cores for float32 matrix multiplication available but not enabled. Consider "
              "setting `torch.set_float32_matmul_precision('high')` for better performance.")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        Runtime.create("cpu", "fp32", compile=True).prepare(torch.nn.Linear(2, 2))
        warnings.warn(advice, UserWarning)
        warnings.warn("another warning", UserWarning)
    assert [str(w.message) for w in seen] == ["another warning"]


def test_optimizer_step_clips_the_global_norm():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    loss = (w * torch.tensor([3.0, 4.0])).sum()  # gradient (3, 4): norm 5
    norm = optimizer_step(loss, opt, clip_grad_norm=1.0)
    assert float(norm) == pytest.approx(5.0)
    assert w.detach().tolist() == pytest.approx([3.0 - 0.6, 4.0 - 0.8])  # stepped along the clipped (0.6, 0.8)
