"""Under ``compile: reduce-overhead`` (CUDA graphs) every training step must begin a new graph iteration, or a
step may read outputs the next replay has overwritten. The trainer marks each step before the task runs it, so
every kind of task is covered, not only those that mark steps themselves. ``Runtime.mark_step`` is a no-op
without graphs; here it is counted (on the CPU) to check where it is called."""

from __future__ import annotations

import pytest

from dlcli.runtime import Runtime


@pytest.fixture
def marks(monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(Runtime, "mark_step", lambda self: calls.append("mark"))
    return calls


@pytest.mark.parametrize("recipe,sets,steps", [
    ("approx", ["task_args.steps_per_epoch=7", "epochs=3"], 21),  # regress: full-batch steps
    ("mlp-xor", ["epochs=2"], None),
])
def test_every_training_step_is_marked_as_a_new_graph_iteration(cli, tmp_path, marks, recipe, sets, steps):
    args = ["train", recipe, "--device", "cpu", "--out", str(tmp_path / "run"), "--json"]
    for s in sets:
        args += ["--set", s]
    res = cli(*args)
    assert res.code == 0, res.err
    header = res.json()["header"]
    total = header["steps_per_epoch"] * header["epochs"]
    assert steps is None or total == steps
    # one mark before each step, and one more before the task says its epoch is over (no evaluation marks
    # in these tasks: their metrics are computed eagerly)
    assert len(marks) == total + header["epochs"]


def test_the_classifier_marks_each_step_and_each_evaluation_batch(cli, tmp_path, marks, data_dir):
    res = cli("train", "lenet", "--device", "cpu", "--epochs", "1", "--batch-size", "64", "--set",
              "data.args.train_size=256", "--set", "data.args.val_size=100", "--set", "eval_batch_size=50",
              "--data-dir", str(data_dir), "--out", str(tmp_path / "run"), "--json")
    assert res.code == 0, res.err
    steps = res.json()["header"]["steps_per_epoch"]
    assert steps == 4
    # the trainer's marks, one per step and one at the epoch's end; then one per evaluation batch (each is a
    # replay of its own): validation after the epoch (100 / 50), and the final validation and test (10,000 / 50)
    assert len(marks) == (steps + 1) + 2 + (2 + 200)


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_a_regression_trains_with_cuda_graphs_on_a_gpu(cli, tmp_path):
    """A task that never marked its own steps (regress) under ``compile: reduce-overhead`` on a GPU: the trainer's
    marks let each full-batch step replay its graph, and the fit is as good as in eager mode."""
    res = cli("train", "approx", "--device", "cuda", "--set", "compile=reduce-overhead", "--set",
              "task_args.steps_per_epoch=200", "--set", "epochs=3", "--out", str(tmp_path / "run"), "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert out["header"]["compile"] == "reduce-overhead"
    assert out["final"]["max_abs_error"] < 0.3  # 600 Adam steps: 0.06 to 0.12 in eager mode on the CPU (seeds 1, 2)
