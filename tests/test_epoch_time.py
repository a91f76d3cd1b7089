"""The first epoch's wall time and the steady epoch time after it: ``dlcli.timing.steady_epoch_s`` on cases worked
out by hand, the trainer's ``first_epoch_s`` and ``epoch_time_s`` on a real (tiny) run, fresh and resumed, and
the benchmark scripts reading their curves through the same function."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from dlcli import timing
from dlcli.checkpoint import load_checkpoint
from dlcli.timing import steady_epoch_s

ROOT = Path(__file__).resolve().parents[1]
ROUNDING = 2e-3  # the figures are rounded to the millisecond, each of two terms by up to 0.5 ms


def test_steady_epoch_is_the_median_of_the_epochs_after_the_first():
    # cumulative seconds: epoch 1 compiles (50 s), then epochs of 2, 3 and 10 s (median 3, mean 5)
    assert steady_epoch_s([(1, 50.0), (2, 52.0), (3, 55.0), (4, 65.0)]) == 3.0
    assert steady_epoch_s([(4, 65.0), (2, 52.0), (1, 50.0), (3, 55.0)]) == 3.0  # order does not matter
    assert steady_epoch_s([(1, 100.0), (2, 101.0)]) == 1.0  # the first epoch's own 100 s are never counted
    # a resumed run's process starts at epoch 7: its times count from its own start
    assert steady_epoch_s([(7, 9.0), (8, 11.0), (9, 14.0)]) == 2.5


def test_steady_epoch_skips_gaps_and_missing_times():
    # epoch 2 is missing and epoch 5 has no time: only 3->4 (3 s) and 6->7 (4 s) are durations of one epoch
    times = [(1, 10.0), (3, 30.0), (4, 33.0), (5, None), (6, 40.0), (7, 44.0)]
    assert steady_epoch_s(times) == 3.5
    assert steady_epoch_s([(1, 9.0), (3, 20.0)]) is None  # not consecutive: no epoch's own time
    assert steady_epoch_s([(1, 9.0)]) is None and steady_epoch_s([]) is None
    assert steady_epoch_s([(1, None), (2, None)]) is None  # files written before times were recorded
    assert steady_epoch_s([(1, None), (2, 5.0), (3, 6.5)]) == 1.5


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_scripts_use_dlcli_s_definition(monkeypatch):
    seen = []

    def spy(times):
        seen.append(list(times))
        return 1.25

    monkeypatch.setattr(timing, "steady_epoch_s", spy)
    tta, twins = _script("cifar_time_to_accuracy"), _script("precision_twins")
    assert tta.steady_epoch_s([{"epoch": 1, "train_time_s": 5.0}, {"epoch": 2, "train_time_s": 6.0}]) == 1.25
    curve = {2: {"test_accuracy": 0.5, "train_time_s": 7.0}, 1: {"test_accuracy": 0.4}}  # an older file: no time
    assert twins.steady_epoch_s(curve) == 1.25
    assert seen[0] == [(1, 5.0), (2, 6.0)] and sorted(seen[1]) == [(1, None), (2, 7.0)]


def _check_times(final: dict, epochs: int) -> None:
    first, steady, total = final["first_epoch_s"], final["epoch_time_s"], final["train_time_s"]
    assert 0 < first <= total
    if epochs < 2:
        assert steady is None
        return
    # the first epoch plus the median of the others is at most the first plus all the others
    assert 0 < steady <= total and first + steady <= total + ROUNDING


def test_a_run_reports_its_first_and_steady_epoch(cli):
    res = cli("train", "mlp-xor", "--epochs", "4", "--json")
    assert res.code == 0, res.err
    out = res.json()
    _check_times(out["final"], 4)
    run = Path(out["run_dir"])
    assert json.loads((run / "summary.json").read_text())["final"]["epoch_time_s"] == out["final"]["epoch_time_s"]
    # the per-epoch rows stay free of wall times: resumed and multi-process runs compare them for equality
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == out["history"] and not any(k.endswith("_s") for r in rows for k in r)


def test_the_result_table_shows_both_and_one_epoch_has_no_steady_time(cli):
    res = cli("train", "mlp-xor", "--epochs", "1")
    assert res.code == 0, res.err
    assert re.search(r"first_epoch_s\s*│\s*0\.\d+\s*│", res.out), res.out
    assert re.search(r"epoch_time_s\s*│\s*-\s*│", res.out), res.out  # None: no epoch after the first
    one = cli("train", "mlp-xor", "--epochs", "1", "--json").json()["final"]
    _check_times(one, 1)


def _known_clock(monkeypatch, seconds: dict[int, float]) -> None:
    """The trainer's clock stands still except at the end of each epoch, where it moves on by ``seconds[epoch]``
    (epoch from 1): every epoch's duration is then known, and so are the times a run must report."""
    import types

    import dlcli.train
    from dlcli.tasks.regress import RegressTask

    now = [1000.0]
    monkeypatch.setattr(dlcli.train, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    end_epoch = RegressTask.end_epoch

    def timed_end_epoch(self, epoch: int):
        now[0] += seconds[epoch + 1]
        return end_epoch(self, epoch)

    monkeypatch.setattr(RegressTask, "end_epoch", timed_end_epoch)


# epoch 1 is the slow one (compiling); the others differ, so their median is neither their mean nor the median
# with epoch 1 counted
EPOCH_SECONDS = {1: 10.0, 2: 2.0, 3: 3.0, 4: 7.0, 5: 1.0}
ONE_STEP = ("--set", "task_args.steps_per_epoch=1")  # the times come from the clock, not from the work


def test_a_run_reports_the_times_of_a_known_clock(cli, monkeypatch):
    _known_clock(monkeypatch, EPOCH_SECONDS)
    final = cli("train", "mlp-xor", "--epochs", "4", *ONE_STEP, "--json").json()["final"]
    # first epoch 10 s; steady: the median of 2, 3 and 7 s (not their mean 4, nor 5 with the first one); total 22 s
    assert (final["first_epoch_s"], final["epoch_time_s"], final["train_time_s"]) == (10.0, 3.0, 22.0)


def test_a_resumed_run_times_its_own_epochs(cli, monkeypatch):
    _known_clock(monkeypatch, EPOCH_SECONDS)
    first = cli("train", "mlp-xor", "--epochs", "2", *ONE_STEP, "--json").json()
    assert load_checkpoint(Path(first["run_dir"]) / "last.pt")["elapsed_s"] == 12.0  # epochs 1-2: 10 s + 2 s
    res = cli("train", "--resume", first["run_dir"], "--epochs", "5", "--json")
    assert res.code == 0, res.err
    final = res.json()["final"]
    _check_times(final, 3)
    # epochs 3-5 ran in this process (3, 7 and 1 s): its first epoch is epoch 3, the steady epoch the median of
    # 7 and 1, and train_time_s the whole run, both processes (12 s + 11 s)
    assert (final["first_epoch_s"], final["epoch_time_s"], final["train_time_s"]) == (3.0, 4.0, 23.0)
