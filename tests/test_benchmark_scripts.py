"""Small benchmark scripts, checked without training: benchmarks/precision_twins.py's gaps between training curves
(against values worked out by hand, from each of the three files it reads), and the target that
benchmarks/cifar_time_to_accuracy.py times by default (the recipe's own expectation), what
benchmarks/cifar_throughput.py --ops counts as one ATen call, and benchmarks/cifar_ddp_curve.py's scaling
efficiency (worked out by hand)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    """benchmarks/NAME.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


twins = _script("precision_twins")


def _rows(accs):
    return [{"recipe": "r", "epoch": i + 1, "test_accuracy": a, "train_accuracy": 0.5} for i, a in enumerate(accs)]


def test_gaps_from_the_three_sources(tmp_path, capsys):
    ref = tmp_path / "bf16.json"  # a result of cifar_time_to_accuracy.py --json, indented like the script's
    ref.write_text(json.dumps({"recipe": "r", "history": _rows([0.50, 0.60, 0.70, 0.80])}, indent=2))
    prog = tmp_path / "fp32.progress.jsonl"  # cut after 3 epochs
    prog.write_text("".join(json.dumps(r) + "\n" for r in _rows([0.52, 0.55, 0.71])))
    suite = tmp_path / "results.json"
    suite.write_text(json.dumps({"steps": [{"name": "other", "data": None},
                                           {"name": "tta", "data": {"history": _rows([0.5, 0.6, 0.7, 0.9])}},
                                           {"name": "cut", "data": {"partial_history": _rows([0.4, 0.7])}}]}))
    res = twins.compare({"bf16": twins.load_curve(str(ref)), "fp32": twins.load_curve(str(prog)),
                         "suite": twins.load_curve(f"{suite}#tta")})
    fp32 = res["runs"]["fp32"]
    # gaps to bf16 over epochs 1..3: +0.02, -0.05, +0.01
    assert fp32["common_epochs"] == 3 and fp32["last_common_epoch"] == 3
    assert fp32["gap_at_last"] == pytest.approx(0.01)
    assert fp32["max_abs_gap"] == pytest.approx(0.05) and fp32["max_gap_epoch"] == 2
    assert fp32["mean_abs_gap"] == pytest.approx(0.08 / 3)
    assert res["runs"]["suite"]["gap_at_last"] == pytest.approx(0.10)
    assert res["runs"]["suite"]["max_gap_epoch"] == 4
    assert "gap_at_last" not in res["runs"]["bf16"] and res["runs"]["bf16"]["last_test_accuracy"] == 0.80
    cut = twins.compare({"bf16": twins.load_curve(str(ref)), "cut": twins.load_curve(f"{suite}#cut")})["runs"]["cut"]
    assert (cut["last_common_epoch"], cut["max_gap_epoch"]) == (2, 1) and cut["gap_at_last"] == pytest.approx(0.10)

    twins.main([f"bf16={ref}", f"fp32={prog}", "--every", "2"])
    out = capsys.readouterr().out.splitlines()
    # rows: epoch 1, every 2nd epoch, each curve's last (3 for fp32, 4 for bf16); epoch 4: the cut run has no entry
    assert out[:6] == ["| epoch | bf16 | fp32 |", "|---|---|---|", "| 1 | 50.00% | 52.00% |", "| 2 | 60.00% | 55.00% |",
                       "| 3 | 70.00% | 71.00% |", "| 4 | 80.00% |  |"], out
    assert out[-1] == ("fp32 - bf16: +1.00 points at epoch 3 (test 71.00% after 3 epochs); largest gap 5.00 points "
                       "(epoch 2), mean 2.67 over 3 epochs"), out  # the hand-worked gaps above, in points
    twins.main([f"bf16={ref}", f"fp32={prog}", "--every", "3"])
    assert [ln.split(" |")[0] for ln in capsys.readouterr().out.splitlines()[2:5]] == ["| 1", "| 3", "| 4"]  # no 2


def test_steady_epoch_times_and_their_ratio(capsys, tmp_path):
    # cumulative training seconds: epoch 1 compiles (50 s), then 2, 2, 3 s (bf16) and 4, 4, 6 s (fp32)
    bf16 = {e: {"test_accuracy": 0.5, "train_time_s": t} for e, t in zip((1, 2, 3, 4), (50.0, 52.0, 54.0, 57.0))}
    fp32 = {e: {"test_accuracy": 0.5, "train_time_s": t} for e, t in zip((1, 2, 3, 4), (60.0, 64.0, 68.0, 74.0))}
    assert twins.steady_epoch_s(bf16) == 2.0 and twins.steady_epoch_s(fp32) == 4.0  # medians of (2,2,3), (4,4,6)
    gappy = {1: {"test_accuracy": 0.1, "train_time_s": 9.0}, 3: {"test_accuracy": 0.2, "train_time_s": 20.0}}
    assert twins.steady_epoch_s(gappy) is None  # epochs 1 and 3 are not consecutive: no epoch's own time
    assert twins.steady_epoch_s(twins.load_curve(str(_write(tmp_path, _rows([0.1, 0.2]))))) is None  # no times
    print(twins.summary(twins.compare({"bf16": bf16, "fp32": fp32})))
    assert "4.000 s per epoch after the first (median), 2.00x bf16's" in capsys.readouterr().out


def test_the_curves_as_a_figure(tmp_path):
    ref = _write(tmp_path, _rows([0.50, 0.60, 0.70]))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in _rows([0.52, 0.58])))
    png = tmp_path / "twins.png"
    twins.main([f"bf16={ref}", f"fp32={other}", "--png", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for bad in (tmp_path / "twins.svg", tmp_path / "no" / "such" / "folder.png"):
        with pytest.raises(SystemExit, match="expected a .png file in an existing folder"):
            twins.main([f"bf16={ref}", f"fp32={other}", "--png", str(bad)])


def _write(tmp_path, rows):
    path = tmp_path / "curve.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_single_line_progress_file_and_a_missing_step(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(_rows([0.3])[0]) + "\n")
    assert twins.load_curve(str(one))[1]["test_accuracy"] == 0.3
    suite = tmp_path / "results.json"
    suite.write_text(json.dumps({"steps": [{"name": "tta", "data": None}]}))
    with pytest.raises(SystemExit, match="no step 'nope'"):
        twins.load_curve(f"{suite}#nope")
    notes = tmp_path / "notes.md"
    notes.write_text("# not a curve\n")
    with pytest.raises(SystemExit, match="notes.md: not a time-to-accuracy result"):
        twins.load_curve(str(notes))


def test_time_to_accuracy_targets_the_recipes_own_expectation():
    tta = _script("cifar_time_to_accuracy")
    from dlcli.config import load_recipe

    assert tta.recipe_target(load_recipe("resnet56-cifar10").expect) == 0.9303  # the paper's 6.97% error
    assert tta.recipe_target(load_recipe("alexnet-cifar10").expect) == 0.86
    assert tta.recipe_target(load_recipe("resnet50-imagefolder").expect) is None  # your data: no promise


def test_steady_epoch_time_leaves_out_the_first_epoch():
    tta = _script("cifar_time_to_accuracy")
    # the sixth GPU session's ResNet-56 with CUDA graphs began 52.238, 55.086, 57.591, 61.179, 63.696 s
    rows = [{"train_time_s": t} for t in (52.238, 55.086, 57.591, 61.179, 63.696)]
    # epochs 2-5 took 2.848, 2.505, 3.588, 2.517 s: the median of four is the mean of the middle two
    assert tta.steady_epoch_s(rows) == pytest.approx((2.517 + 2.848) / 2, abs=1e-3)
    assert tta.steady_epoch_s(rows[:1]) is None and tta.steady_epoch_s([]) is None


def test_aten_calls_counts_what_python_calls_not_what_runs_inside():
    from torch.profiler import ProfilerActivity, profile

    thr = _script("cifar_throughput")
    x, w = torch.ones(4, 3), torch.ones(2, 3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            torch.nn.functional.linear(x, w).add_(1)  # linear runs t and addmm inside: one call
            x.to(torch.float32)  # a no-op, still one pass through the dispatcher
    assert thr.aten_calls(prof) == {"aten::linear": 3, "aten::add_": 3, "aten::to": 3}


def test_scaling_efficiency_of_n_processes_against_one():
    ddp = _script("cifar_ddp_curve")
    header = {"train_samples": 45000}
    runs = [{"nproc": 1, "batch_size": 512, "header": header, "final": {"epoch_time_s": 10.0, "first_epoch_s": 30.0}},
            {"nproc": 2, "batch_size": 1024, "header": header, "final": {"epoch_time_s": 5.5, "first_epoch_s": 20.0}},
            {"nproc": 4, "batch_size": 2048, "header": header, "final": {"epoch_time_s": None, "first_epoch_s": 4.0}}]
    table = ddp.scaling(runs)
    assert [r["batch_per_process"] for r in table] == [512, 512, 512]
    assert [r["images_per_s"] for r in table] == pytest.approx([4500.0, 45000 / 5.5, 11250.0])
    # 45000/5.5 images/s on 2 processes against 2 x 4500: 0.909; 11250 on 4 against 4 x 4500: 0.625
    assert [r["efficiency"] for r in table] == pytest.approx([1.0, 45000 / 5.5 / 9000, 0.625])
    assert [r["steady"] for r in table] == [True, True, False]  # one epoch only: its first (compiled) epoch
    assert ddp._sets_for(4, ["epochs=3"], True, 512) == ["epochs=3", "batch_size=2048"]  # weak: batch x N
    assert ddp._sets_for(4, ["epochs=3"], False, None) == ["epochs=3"]  # strong: the recipe's global batch
