"""``dlcli attack deepfool | fgsm | universal`` end to end on a briefly trained LeNet-5, and their bad-input lines."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch


def one_line_error(res, fragment: str, code: int) -> None:
    assert res.code == code, res
    lines = [ln for ln in res.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error: ") and fragment in lines[0], res.err
    assert "Traceback" not in res.err and res.out == ""


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, data_dir) -> Path:
    """The real lenet recipe, 16 steps on 2,048 images: a weak but real classifier run folder."""
    from dlcli.cli import main

    run = tmp_path_factory.mktemp("attack") / "lenet-20260101-000000"
    try:
        main(["train", "lenet", "--epochs", "1", "--set", "data.args.train_size=2048", "--set",
              "data.args.val_size=1000", "--device", "cpu", "--out", str(run), "--data-dir", str(data_dir), "--json"])
    except SystemExit as e:
        assert e.code in (0, None)
    return run


def test_deepfool_reports_the_papers_numbers_and_writes_its_files(cli, lenet_run, data_dir, tmp_path):
    out = tmp_path / "df"
    res = cli("attack", "deepfool", str(lenet_run), "--n", "60", "--out", str(out), "--data-dir", str(data_dir),
              "--json")
    assert res.code == 0, res.err
    r = res.json()
    assert r["images"] == 60 and r["attacked"] + r["misclassified"] == 60
    assert r["attacked"] == round(r["clean_accuracy"] * 60)
    assert r["fooled"] == r["attacked"] and r["fooling_rate"] == 1.0
    assert 0 < r["rho_adv"] < 1 and r["paper"]["rho_adv"] == 0.20  # LeNet on MNIST, Table 1
    assert 1 <= r["mean_iterations"] <= 50 and r["mean_grad_evals"] == pytest.approx(9 * r["mean_iterations"])
    assert r["fooled_after_clip"] <= r["fooled"] and r["clip_undid"] == r["fooled"] - r["fooled_after_clip"]
    assert r["images_per_s"] > 0 and r["ms_per_image"] == pytest.approx(1000 / r["images_per_s"])
    pct = r["r_norm_percentiles"]
    assert pct["p5"] <= pct["p50"] <= pct["p95"] <= pct["max"]
    rows = list(csv.DictReader((out / "deepfool.csv").open()))
    assert len(rows) == 60 and [int(row["index"]) for row in rows] == list(range(60))
    attacked = [row for row in rows if row["attacked"] == "1"]
    assert len(attacked) == r["attacked"]
    assert sum(float(row["rho"]) for row in attacked) / len(attacked) == pytest.approx(r["rho_adv"], rel=1e-4)
    assert all(float(row["r_norm_l2"]) == 0 for row in rows if row["attacked"] == "0")
    saved = torch.load(out / "perturbations.pt", weights_only=True)
    assert saved["perturbation"].shape == (60, 1, 28, 28) and saved["norm"] == "2"
    norms = saved["perturbation"].flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.tensor([float(row["r_norm_l2"]) for row in rows]), rtol=1e-4, atol=1e-6)
    assert (out / "deepfool.png").stat().st_size > 10_000
    assert json.loads((out / "summary.json").read_text())["rho_adv"] == pytest.approx(r["rho_adv"])


def test_deepfool_linf_with_the_fgsm_comparison_prints_both_rows(cli, lenet_run, data_dir, tmp_path):
    res = cli("attack", "deepfool", str(lenet_run), "--n", "40", "--norm", "inf", "--compare-fgsm",
              "--out", str(tmp_path / "o"), "--data-dir", str(data_dir))
    assert res.code == 0, res.err
    assert "DeepFool vs fast gradient sign" in res.out and "0.26" in res.out and "0.1" in res.out
    js = json.loads((tmp_path / "o" / "summary.json").read_text())  # what --json would print
    f = js["fgsm"]
    assert f["fooling_rate"] >= 0.9 and f["paper"]["rho_adv"] == 0.26
    # the fast gradient sign needs a larger perturbation than DeepFool's (the paper's point)
    assert f["rho_adv"] > js["rho_adv"]


def test_fgsm_finds_the_smallest_eps_for_90_percent(cli, lenet_run, data_dir, tmp_path):
    res = cli("attack", "fgsm", str(lenet_run), "--n", "50", "--out", str(tmp_path / "f"), "--data-dir",
              str(data_dir), "--json")
    assert res.code == 0, res.err
    r = res.json()
    assert r["reached_target"] and 0 < r["eps"] < 1 and r["fooling_rate"] >= 0.9
    rows = [row for row in csv.DictReader((tmp_path / "f" / "fgsm.csv").open()) if row["attacked"] == "1"]
    assert len(rows) == r["attacked"]
    assert sum(row["fooled"] == "1" for row in rows) / len(rows) == pytest.approx(r["fooling_rate"])
    # ℓ2 norm of ε·sign(∇) is ε·sqrt(number of non-zero gradient signs) ≤ ε·28
    assert all(0 < float(row["r_norm_l2"]) <= r["eps"] * 28 + 1e-6 for row in rows)
    assert (tmp_path / "f" / "fgsm.png").is_file()


def test_universal_reports_noise_control_and_transfer(cli, lenet_run, data_dir, tmp_path):
    out = tmp_path / "u"
    res = cli("attack", "universal", str(lenet_run), "--build-images", "100", "--eval-images", "500",
              "--max-passes", "2", "--norm", "2", "--xi", "4", "--target-runs", str(lenet_run), "--out", str(out),
              "--data-dir", str(data_dir), "--json")
    assert res.code == 0, res.err
    r = res.json()
    assert r["build_images"] == 100 and r["eval_images"] == 500 and r["build_split"] == "val"
    assert r["v_norm_l2"] <= 4 + 1e-4 and 1 <= r["passes"] <= 2
    assert r["fooling_rate"] > r["noise_fooling_rate"]
    # the same checkpoint as a "target": its fooling rates must be this run's own
    assert len(r["transfer"]) == 2
    assert r["transfer"][1]["fooling_rate"] == r["transfer"][0]["fooling_rate"] == r["fooling_rate"]
    saved = torch.load(out / "universal.pt", weights_only=True)
    assert saved["v"].shape == (1, 28, 28) and saved["v"].norm() == pytest.approx(r["v_norm_l2"], rel=1e-5)
    assert (out / "universal.png").is_file()


def test_without_a_run_it_attacks_the_newest_lenet_run_or_says_to_train_one(cli, lenet_run, data_dir, tmp_path):
    one_line_error(cli("attack", "deepfool"), "dlcli train lenet", 1)
    shutil.copytree(lenet_run, tmp_path / "runs" / lenet_run.name)  # the cli fixture runs in tmp_path
    res = cli("attack", "deepfool", "--n", "5", "--data-dir", str(data_dir), "--json")
    assert res.code == 0, res.err
    assert res.json()["checkpoint"].startswith(f"runs/{lenet_run.name}")
    assert (tmp_path / "runs" / lenet_run.name / "attack-deepfool-l2" / "deepfool.png").is_file()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["deepfool", "--norm", "3"], "--norm 3: expected 2 or inf"),
        (["deepfool", "--n", "0"], "--n 0: expected a positive number"),
        (["fgsm", "--norm", "1"], "--norm 1: expected 2 or inf"),
        (["universal", "--xi", "-1"], "--xi -1.0: expected a positive number"),
        (["universal", "--delta", "1.5"], "--delta 1.5"),
        (["deepfool", "--clip", "sometimes"], "--clip sometimes: expected final or step"),
        (["deepfool", "--candidates", "1"], "--candidates 1"),
        (["universal", "--threads", "0"], "--threads 0: expected a positive number"),
    ],
)
def test_bad_options_are_one_line_usage_errors(cli, args, fragment):
    one_line_error(cli("attack", *args), fragment, 2)


def test_a_run_that_is_not_a_classifier_is_one_clear_line(cli, tmp_path):
    res = cli("train", "perceptron", "--json")
    assert res.code == 0, res.err
    run = res.json()["run_dir"]
    one_line_error(cli("attack", "deepfool", run), "not an image classifier", 1)
    one_line_error(cli("attack", "universal", str(tmp_path / "nowhere")), "no such run folder", 1)


def test_default_radius_is_the_papers_rescaled_or_the_measured_mnist_one():
    from dlcli.attacks.runner import default_xi

    assert default_xi("inf", "mnist", (1, 28, 28)) == 0.3 and default_xi("2", "fashion-mnist", (1, 28, 28)) == 5.0
    assert default_xi("inf", "cifar10", (3, 32, 32)) == pytest.approx(10 / 255)
    # ℓ2 2,000 on ImageNet's 0-255 scale; the same per-pixel energy for a smaller image
    assert default_xi("2", "imagenet", (3, 224, 224)) == pytest.approx(2000 / 255)
    assert default_xi("2", "cifar10", (3, 32, 32)) == pytest.approx(2000 / 255 * (32 / 224))
