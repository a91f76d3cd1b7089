"""End-to-end runs of the command line on the lecture's first three models, and its bad-input messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dlcli.checkpoint import load_checkpoint, save_checkpoint


def one_line_error(res, fragment: str, code: int | None = None) -> None:
    assert res.code != 0, res
    if code is not None:
        assert res.code == code, res
    lines = [ln for ln in res.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error: ") and fragment in lines[0], res.err
    assert "Traceback" not in res.err and res.out == ""


def test_list_json_and_table_agree(cli) -> None:
    res = cli("list", "--json")
    assert res.code == 0
    rows = {r["name"]: r for r in res.json()["recipes"]}
    assert rows["perceptron"]["task"] == "perceptron" and rows["lenet"]["model"] == "lenet5"
    table = cli("list")
    for name in rows:
        assert name in table.out


def test_show_fills_defaults_and_counts_parameters(cli) -> None:
    res = cli("show", "lenet", "--json")
    assert res.json()["parameters"] == 61706
    assert res.json()["recipe"]["optim"]["name"]
    text = cli("show", "lenet").out
    assert "61,706 parameters" in text and "batch_size:" in text and "eval_batch_size:" in text


def _brute_force_margin(x: torch.Tensor, d: torch.Tensor) -> float:
    """The max margin γ* = max over unit w of min_i d_i w·(x_i, 1), by brute force: a grid over the sphere of
    directions, refined around its best point (no optimiser; the task solves the dual by Frank-Wolfe)."""
    z = d.double()[:, None] * torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    theta, phi, half_t, half_p, n = math.pi / 2, math.pi, math.pi / 2, math.pi, 181
    best = -math.inf
    for _ in range(12):
        t = torch.linspace(theta - half_t, theta + half_t, n, dtype=torch.float64).clamp(0, math.pi)
        p = torch.linspace(phi - half_p, phi + half_p, n, dtype=torch.float64)
        tt, pp = (g.reshape(-1) for g in torch.meshgrid(t, p, indexing="ij"))
        m = (torch.stack([tt.sin() * pp.cos(), tt.sin() * pp.sin(), tt.cos()], 1) @ z.T).min(1).values
        i = int(m.argmax())
        best = max(best, float(m[i]))
        theta, phi = float(tt[i]), float(pp[i])
        half_t, half_p, n = 4 * half_t / (n - 1), 4 * half_p / (n - 1), 41
    return best


def _check_novikoff(final: dict, margin: float, seed: int) -> None:
    """The bound quoted is (R/γ)² for the data's own R and a γ within 2% below the brute-force max margin (a
    margin some unit w achieves, so never above it): a loose bound (a halved γ) or an invalid one fails."""
    from dlcli.data import load_data

    data = load_data("linear2d", {"n": 100, "margin": margin}, None, seed)  # the recipe's points
    x, d = data.train.x, data.train.y
    radius = max(math.sqrt(a * a + b * b + 1) for a, b in x.double().tolist())
    gamma = _brute_force_margin(x, d)
    assert final["radius"] == pytest.approx(radius, rel=1e-12)
    assert 0.98 * gamma <= final["margin"] <= 1.005 * gamma, (final["margin"], gamma)
    assert final["novikoff_bound"] == pytest.approx((radius / final["margin"]) ** 2, rel=1e-9)
    assert 0 < final["updates"] <= final["novikoff_bound"]
    # and the run is the rule itself: its weights are those of the plain loop after as many passes
    after = _perceptron_rule(x, d, seed=seed, epochs=final["epochs_to_converge"])
    assert final["weights"] == pytest.approx(after[-1][0], abs=1e-12) and after[-1][1] == len(x)


def test_perceptron_converges_within_novikoff_bound(cli) -> None:
    res = cli("train", "perceptron", "--json")
    assert res.code == 0, res.err
    out = res.json()
    final = out["final"]
    assert final["converged"] == 1 and final["train_accuracy"] == 1.0
    assert 0 < final["updates"] <= final["novikoff_bound"]
    _check_novikoff(final, margin=0.1, seed=0)
    history = out["history"]
    assert history[-1]["mistakes"] == 0 and all(h["mistakes"] > 0 for h in history[:-1])
    assert sum(h["mistakes"] for h in history) == final["updates"]
    run = Path(out["run_dir"])
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt", "curves.png", "decision.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "summary.json").read_text())["final"]["updates"] == final["updates"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(history)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_perceptron_bound_holds_on_other_data(cli, seed: int) -> None:
    final = cli("train", "perceptron", "--seed", str(seed), "--set", "data.args.margin=0.05", "--json").json()["final"]
    assert final["converged"] == 1 and final["updates"] <= final["novikoff_bound"]
    _check_novikoff(final, margin=0.05, seed=seed)


def test_max_margin_matches_a_known_case() -> None:
    from dlcli.tasks.perceptron import max_margin

    # Points (±1, 0) labelled by sign: the best separator through the origin of (x, y, 1) is x = 0,
    # w* = (1, 0, 0), margin 1. Adding (±2, 1) keeps it.
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0], [-2.0, 1.0]])
    d = torch.tensor([1, -1, 1, -1])
    w, gamma = max_margin(x, d)
    assert gamma == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(w, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-3)


def _perceptron_rule(x: torch.Tensor, d: torch.Tensor, seed: int, epochs: int) -> list[tuple[list[float], int]]:
    """Rosenblatt's rule written out plainly: after each pass, the weights (a..., b) and how many points they
    get right. Pass e (from 0) visits the points in the order randperm(seed * 1000 + e)."""
    a, b = [0.0] * x.shape[1], 0.0
    pts, labels = x.double().tolist(), d.tolist()

    def sign(p: list[float]) -> int:
        return 1 if sum(ai * pi for ai, pi in zip(a, p)) + b > 0 else -1

    after = []
    for epoch in range(epochs):
        for i in torch.randperm(len(pts), generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist():
            if sign(pts[i]) != labels[i]:
                a, b = [ai + labels[i] * pi for ai, pi in zip(a, pts[i])], b + labels[i]
        after.append(([*a, b], sum(sign(p) == t for p, t in zip(pts, labels))))
    return after


def test_perceptron_cannot_learn_xor(cli) -> None:
    out = cli("train", "perceptron-xor", "--json").json()
    final = out["final"]
    assert final["converged"] == 0 and final["linearly_separable"] == 0 and final["novikoff_bound"] is None
    # The rule cycles without converging; the run reports its best pass (by training accuracy, the first of
    # equals). With the recipe's seed that is pass 1: a = (0, 0), b = 1, which says +1 everywhere and gets
    # 2 of the 4 points, and no pass of the 100 does better (a line could get 3). Checked against the rule
    # written out independently of dlcli.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    after = _perceptron_rule(x, torch.tensor([-1, 1, 1, -1]), seed=0, epochs=100)
    correct = [c for _, c in after]
    best = correct.index(max(correct))
    assert [h["train_accuracy"] for h in out["history"]] == [c / 4 for c in correct]
    assert final["best_epoch"] == best + 1 == 1
    assert final["weights"] == after[best][0] == [0.0, 0.0, 1.0]
    assert final["train_correct"] == max(correct) == 2


def test_mlp_solves_xor_and_eval_reproduces_it(cli) -> None:
    res = cli("train", "mlp-xor", "--json")
    out = res.json()
    assert out["final"]["train_accuracy"] == 1.0
    signs = [1 if v > 0 else -1 for v in out["final"]["outputs"]]
    assert signs == [-1, 1, 1, -1]
    ev = cli("eval", out["run_dir"], "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["outputs"] == pytest.approx(out["final"]["outputs"], abs=1e-6)
    assert Path(ev.json()["figures"][0]).is_file()
    table = cli("eval", out["run_dir"]).out
    assert "(1, 1)" in table and "train_accuracy" in table


def test_lecture_xor_weights_give_the_lecture_outputs(cli) -> None:
    out = cli("train", "mlp-xor-lecture", "--json").json()
    assert out["final"]["outputs"] == [-1.0, 1.0, 1.0, -1.0]
    assert cli("eval", out["run_dir"], "--json").json()["metrics"]["outputs"] == [-1.0, 1.0, 1.0, -1.0]


def test_approximation_error_falls_with_training(cli) -> None:
    short = cli("train", "approx", "--epochs", "1", "--set", "task_args.steps_per_epoch=20", "--json").json()
    longer = cli("train", "approx", "--epochs", "3", "--set", "task_args.steps_per_epoch=400", "--json").json()
    assert longer["final"]["max_abs_error"] < 0.1 < short["final"]["max_abs_error"]
    assert longer["final"]["mean_abs_error"] < longer["final"]["max_abs_error"]
    assert (Path(longer["run_dir"]) / "fit.png").is_file()


def test_verify_exit_codes(cli, tmp_path: Path) -> None:
    ok = cli("verify", "mlp-xor-lecture", "--json")
    assert ok.code == 0 and ok.json()["met"] is True
    table = cli("verify", "perceptron")
    assert table.code == 0 and "expectation met" in table.out
    impossible = tmp_path / "xor-converges.yaml"  # the perceptron rule never converges on XOR
    impossible.write_text("task: perceptron\nmodel: {name: perceptron}\ndata: {source: xor}\nepochs: 3\n"
                          "device: cpu\nexpect: {converged: '== 1'}\n", encoding="utf-8")
    failed = cli("verify", str(impossible), "--json")
    assert failed.code == 1 and failed.json()["met"] is False and failed.json()["expect"][0]["met"] is False
    failed_table = cli("verify", str(impossible))
    assert failed_table.code == 1 and "EXPECTATION NOT MET" in failed_table.out


def record_train_steps(monkeypatch: pytest.MonkeyPatch, task_cls: type) -> list[tuple[int, int]]:
    """(epoch, start_step) of each call of ``task_cls.train_steps`` from now on: the epochs a process really
    trained. A resume that retrained from scratch with the same seed would reproduce every result exactly."""
    calls: list[tuple[int, int]] = []
    train_steps = task_cls.train_steps

    def recording(self, epoch: int, start_step: int):
        calls.append((epoch, start_step))
        return train_steps(self, epoch, start_step)

    monkeypatch.setattr(task_cls, "train_steps", recording)
    return calls


def test_resume_continues_a_stopped_run(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlcli.tasks.regress import RegressTask

    first = cli("train", "mlp-xor", "--epochs", "2", "--json").json()
    calls = record_train_steps(monkeypatch, RegressTask)
    more = cli("train", "--resume", first["run_dir"], "--epochs", "4", "--json")
    assert more.code == 0, more.err
    assert calls == [(2, 0), (3, 0)]  # epochs 3 and 4 only, not 1 and 2 again
    assert [h["epoch"] for h in more.json()["history"]] == [1, 2, 3, 4]
    assert more.json()["history"][:2] == first["history"]
    full = cli("train", "mlp-xor", "--epochs", "4", "--json").json()
    assert more.json()["final"]["outputs"] == full["final"]["outputs"]


# ------------------------------------------------------------------------------------------ bad input


def test_unknown_recipe(cli) -> None:
    res = cli("train", "lenet9")
    one_line_error(res, "unknown recipe 'lenet9'; valid names: ", code=2)
    assert all(name in res.err for name in ("approx", "lenet", "perceptron-xor"))


def test_bad_yaml_file(cli, tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("model: [unclosed\n")
    one_line_error(cli("train", str(p)), f"{p}: line 2", code=2)


def test_unknown_key_in_yaml(cli, tmp_path: Path) -> None:
    p = tmp_path / "typo.yaml"
    p.write_text("task: perceptron\nmodel: {name: perceptron}\ndata: {source: xor}\nlearning_rate: 3\n")
    one_line_error(cli("train", str(p)), "unknown key 'learning_rate'", code=2)


def test_wrong_type_in_yaml(cli, tmp_path: Path) -> None:
    p = tmp_path / "types.yaml"
    p.write_text("task: perceptron\nmodel: {name: perceptron}\ndata: {source: xor}\nbatch_size: lots\n")
    one_line_error(cli("train", str(p)), "batch_size: expected an integer", code=2)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "optim.lr"], "expected KEY=VALUE"),
        (["--set", "optim.lr=fast"], "optim.lr: expected a number"),
        (["--set", "nope=1"], "unknown key 'nope'"),
        (["--epochs", "0"], "epochs: expected an integer >= 1"),
        (["--epochs", "-3"], "epochs: expected an integer >= 1"),
        (["--batch-size", "0"], "batch_size: expected an integer >= 1"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--precision", "fp8"], "precision: expected one of"),
    ],
)
def test_bad_overrides(cli, args: list[str], fragment: str) -> None:
    one_line_error(cli("train", "mlp-xor", *args), fragment, code=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(cli) -> None:
    one_line_error(cli("train", "mlp-xor", "--device", "cuda"), "CUDA is not available", code=1)


def test_fp16_on_cpu_is_refused(cli) -> None:
    one_line_error(cli("train", "mlp-xor", "--device", "cpu", "--precision", "fp16"), "fp16 needs a CUDA device")


def test_resume_without_checkpoint(cli, tmp_path: Path) -> None:
    (tmp_path / "empty-run").mkdir()
    one_line_error(cli("train", "--resume", str(tmp_path / "empty-run")), "no last.pt in this folder")


def test_resume_of_a_finished_run_says_how_to_extend(cli) -> None:
    run = cli("train", "mlp-xor-lecture", "--json").json()["run_dir"]
    one_line_error(cli("train", "--resume", run), "pass --epochs N")


def test_eval_of_an_unknown_split(cli) -> None:
    run = cli("train", "mlp-xor-lecture", "--json").json()["run_dir"]
    one_line_error(cli("eval", run, "--split", "bogus"), "--split 'bogus': expected val or test", code=2)


def test_eval_of_foreign_and_truncated_files(cli, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    one_line_error(cli("eval", str(foreign)), "not a dlcli checkpoint")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    one_line_error(cli("eval", str(text)), "not a readable dlcli checkpoint")
    run = Path(cli("train", "mlp-xor-lecture", "--json").json()["run_dir"])
    data = (run / "best.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    one_line_error(cli("eval", str(truncated)), "truncated or corrupt")
    one_line_error(cli("eval", str(tmp_path / "missing")), "no such file or run folder")


def test_debug_variable_shows_the_traceback(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlcli.errors import UsageError

    monkeypatch.setenv("DLCLI_DEBUG", "1")
    with pytest.raises(UsageError):
        from dlcli.cli import main

        main(["train", "lenet9"])


def test_checkpoint_write_is_atomic_and_safe_to_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlcli.checkpoint

    path = save_checkpoint(tmp_path / "x.pt", {"recipe": {"name": "t"}, "model": {"w": torch.ones(3)}})
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary file left behind
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "dlcli-checkpoint" and torch.equal(ckpt["model"]["w"], torch.ones(3))
    assert isinstance(ckpt["torch_version"], str) and ckpt["dlcli_version"]

    # A write that dies half-way (disk full, a crash) must leave the previous checkpoint whole and no
    # partial file: written elsewhere first, renamed over the old one only once complete.
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if hasattr(f, "truncate"):
            f.truncate(100)  # what is on disk when the process dies
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dlcli.checkpoint.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"recipe": {"name": "t"}, "model": {"w": torch.zeros(3)}})
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
