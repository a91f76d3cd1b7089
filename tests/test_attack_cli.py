"""``dlcli attack deepfool | fgsm | universal`` end to end on a briefly trained LeNet-5, and their bad-input lines."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from typing import Any

import pytest
import torch


def one_line_error(res, fragment: str, code: int) -> None:
    assert res.code == code, res
    lines = [ln for ln in res.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error: ") and fragment in lines[0], res.err
    assert "Traceback" not in res.err and res.out == ""


def train_tiny(recipe: str, run: Path, data_dir: Path) -> Path:
    """The real recipe, 16 steps on 2,048 images: a weak but real classifier run folder."""
    from dlcli.cli import main

    try:
        main(["train", recipe, "--epochs", "1", "--set", "data.args.train_size=2048", "--set",
              "data.args.val_size=1000", "--device", "cpu", "--out", str(run), "--data-dir", str(data_dir), "--json"])
    except SystemExit as e:
        assert e.code in (0, None)
    return run


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, data_dir) -> Path:
    return train_tiny("lenet", tmp_path_factory.mktemp("attack") / "lenet-20260101-000000", data_dir)


@pytest.fixture(scope="module")
def modern_run(tmp_path_factory, data_dir) -> Path:
    """A second architecture with the same input size (ReLU and max pooling) for the cross-model matrix."""
    return train_tiny("lenet-modern", tmp_path_factory.mktemp("attack") / "lenet-modern-20260101-000000", data_dir)


def split_images(run: Path, data_dir: Path, n: int) -> tuple[torch.Tensor, torch.nn.Module, Any]:
    """The run's first ``n`` test images in [0, 1] and its classifier, as the attack commands load them."""
    from dlcli.runs import load_classifier, load_split

    clf = load_classifier(run, "cpu")
    x, _ = load_split(clf.recipe, "test", str(data_dir))
    return x[:n], clf.model, clf


def test_deepfool_reports_the_papers_numbers_and_writes_its_files(cli, lenet_run, data_dir, tmp_path):
    out = tmp_path / "df"
    res = cli("attack", "deepfool", str(lenet_run), "--n", "60", "--out", str(out), "--data-dir", str(data_dir),
              "--json")
    assert res.code == 0, res.err
    r = res.json()
    assert r["settings"]["clip"] == "box" and r["settings"]["grad"] in ("loop", "batched")
    assert r["images"] == 60 and r["attacked"] + r["misclassified"] == 60
    assert r["attacked"] == round(r["clean_accuracy"] * 60)
    assert r["fooled"] == r["attacked"] and r["fooling_rate"] == 1.0 and r["not_fooled"] == 0
    assert 0 <= r["adversarial_min"] and r["adversarial_max"] <= 1
    assert 0 < r["rho_adv"] < 1
    pp = r["paper_protocol"]  # the unconstrained iteration on the same images, run apart
    assert not pp["same_run"] and pp["fooling_rate"] == 1.0 and 0 < pp["rho_adv"] < 1
    assert r["settings"]["refine"] == 1  # box mode refines by default (its ρ can fall below the paper protocol's)
    assert r["paper"]["row"] == "LeNet on MNIST, DeepFool paper Table 1"
    assert 1 <= r["mean_iterations"] <= 50
    # 9 candidates per DeepFool step, then one product for the projection and at most 5 to cross back
    assert 9 * r["mean_iterations"] + 1 <= r["mean_grad_evals"] + 1e-9 <= 9 * r["mean_iterations"] + 6
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
    assert saved["perturbation"].shape == (60, 1, 28, 28) and saved["norm"] == "2" and saved["clip"] == "box"
    norms = saved["perturbation"].flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.tensor([float(row["r_norm_l2"]) for row in rows]), rtol=1e-4, atol=1e-6)
    # Every written image is valid and fools the model: rebuild them from the saved perturbations.
    x, model, _ = split_images(lenet_run, data_dir, 60)
    adv = x + saved["perturbation"]
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        clean, pred = model(x).argmax(1), model(adv).argmax(1)
    att = torch.tensor([row["attacked"] == "1" for row in rows])
    assert (pred[att] != clean[att]).all()
    assert pred.tolist() == [int(row["adv_pred"]) for row in rows]
    assert (out / "deepfool.png").stat().st_size > 10_000
    assert json.loads((out / "summary.json").read_text())["rho_adv"] == pytest.approx(r["rho_adv"])


def test_deepfool_clip_none_is_the_papers_iteration_and_reports_what_clamping_undid(cli, lenet_run, data_dir, tmp_path):
    res = cli("attack", "deepfool", str(lenet_run), "--n", "40", "--clip", "none", "--out", str(tmp_path / "n"),
              "--data-dir", str(data_dir), "--json")
    assert res.code == 0, res.err
    r = res.json()
    pp = r["paper_protocol"]
    assert pp["same_run"] and pp["fooling_rate"] == 1.0 and pp["rho_adv"] == r["iteration_rho_adv"]
    # the headline is the written (clamped) images: the flips clamping undid are missing from it
    assert r["fooled"] == r["iteration_fooled"] - r["clip_undid"] and r["clip_undid"] > 0
    assert r["fooling_rate"] == pytest.approx(r["fooled"] / r["attacked"])
    rows = list(csv.DictReader((tmp_path / "n" / "deepfool.csv").open()))
    assert sum(row["fooled"] == "1" for row in rows) == r["fooled"]
    assert sum(row["fooled_unclipped"] == "1" for row in rows) == r["iteration_fooled"]


def table_row(out: str, first_cell: str) -> list[str]:
    """The cells of the printed table row that starts with ``first_cell``."""
    for line in out.splitlines():
        if not line.strip().startswith("│"):  # table bodies only, not titles or captions
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0].startswith(first_cell):
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r} in:\n{out}")


def test_deepfool_linf_with_the_fgsm_comparison_prints_both_rows(cli, lenet_run, data_dir, tmp_path):
    from dlcli.report import fmt

    res = cli("attack", "deepfool", str(lenet_run), "--n", "40", "--norm", "inf", "--compare-fgsm",
              "--out", str(tmp_path / "o"), "--data-dir", str(data_dir))
    assert res.code == 0, res.err
    js = json.loads((tmp_path / "o" / "summary.json").read_text())  # what --json would print
    f = js["fgsm"]
    assert "DeepFool vs fast gradient sign, ρ_adv in ℓ∞" in res.out
    # method | ρ (images written) | ρ (paper protocol) | paper | fooling rate | ms per image
    df_row = table_row(res.out, "DeepFool")
    assert df_row[1:4] == [fmt(js["rho_adv"]), fmt(js["paper_protocol"]["rho_adv"]), "0.1"]  # Table 2: 0.10
    assert df_row[4] == f"{js['fooling_rate']:.1%}"
    fg_row = table_row(res.out, "fast gradient sign (ε")
    assert fg_row[1:4] == [fmt(f["rho_adv"]), fmt(f["paper_protocol"]["rho_adv"]), "0.26"]
    assert f["fooling_rate"] >= 0.9 and f["paper"]["row"] == "LeNet on MNIST, DeepFool paper Table 2"
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
    # "smallest", recomputed with plain torch: the sign of the input gradient of the loss at the clean prediction,
    # then the fooling rate of clamp(x + eps * sign, 0, 1) over the correctly classified images. The search's
    # resolution is 1/32 (grid) / 2**16 (bisection): at eps the rate reaches 90%, one resolution below it does not
    from dlcli.runs import load_split

    x, model, clf = split_images(lenet_run, data_dir, 50)
    y = load_split(clf.recipe, "test", str(data_dir))[1][:50]
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    clean = logits.argmax(1)
    sign = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, clean, reduction="sum"), xg)[0].sign()
    att = clean == y
    assert int(att.sum()) == r["attacked"]

    def rate(eps: float) -> float:
        with torch.no_grad():
            pred = model((x[att] + eps * sign[att]).clamp(0, 1)).argmax(1)
        return int((pred != clean[att]).sum()) / int(att.sum())

    resolution = 1 / 32 / 2**16
    assert (r["eps"] / resolution).is_integer()
    assert rate(r["eps"]) == r["fooling_rate"] >= 0.9 and rate(r["eps"] - resolution) < 0.9


def test_universal_reports_the_noise_control_and_no_clip(cli, lenet_run, data_dir, tmp_path):
    out = tmp_path / "u"
    res = cli("attack", "universal", str(lenet_run), "--build-images", "64", "--eval-images", "300",
              "--max-passes", "2", "--norm", "2", "--xi", "4", "--no-clip", "--out", str(out),
              "--data-dir", str(data_dir), "--json")
    assert res.code == 0, res.err
    r = res.json()
    assert r["build_images"] == 64 and r["eval_images"] == 300 and r["build_split"] == "val"
    assert r["v_norm_l2"] <= 4 + 1e-4 and 1 <= r["passes"] <= 2
    assert r["fooling_rate"] > r["noise_fooling_rate"] and r["matrix"] is None
    assert r["build_clamped"] is False and r["clamped"] is True  # built unclamped, measured on valid images
    saved = torch.load(out / "universal.pt", weights_only=True)
    assert saved["v"].shape == (1, 28, 28) and saved["v"].norm() == pytest.approx(r["v_norm_l2"], rel=1e-5)
    from dlcli.attacks import fooling_rate

    x, model, _ = split_images(lenet_run, data_dir, 300)
    assert r["fooling_rate"] == fooling_rate(model, x, saved["v"], clip=True)
    assert r["unclamped_fooling_rate"] == fooling_rate(model, x, saved["v"], clip=False)
    # and by hand, not through fooling_rate: the share of images whose predicted label changes when v is added
    with torch.no_grad():
        clean = model(x).argmax(1)
        clamped = int((model((x + saved["v"]).clamp(0, 1)).argmax(1) != clean).sum()) / len(x)
        unclamped = int((model(x + saved["v"]).argmax(1) != clean).sum()) / len(x)
    assert (r["fooling_rate"], r["unclamped_fooling_rate"]) == (clamped, unclamped)
    assert (out / "universal.png").is_file()


def test_universal_across_models_writes_the_cross_model_matrix(cli, lenet_run, modern_run, data_dir, tmp_path):
    out = tmp_path / "m"
    res = cli("attack", "universal", str(lenet_run), "--target-runs", str(modern_run), "--build-images", "64",
              "--eval-images", "300", "--max-passes", "1", "--out", str(out), "--data-dir", str(data_dir), "--json")
    assert res.code == 0, res.err
    r = res.json()
    m = r["matrix"]
    assert m["models"] == ["lenet", "lenet-modern"]
    assert len(m["fooling"]) == 2 and all(len(row) == 2 for row in m["fooling"]) and len(m["noise"]) == 2
    assert m["fooling"][0][0] == r["fooling_rate"] and m["noise"][0] == r["noise_fooling_rate"]
    assert all(v <= 0.3 + 1e-6 for v in m["v_norm_linf"])  # ℓ∞, the MNIST default ξ
    rows = list(csv.reader((out / "transfer.csv").open()))
    assert rows[0] == ["built on \\ applied to", "lenet", "lenet-modern"]
    for row, expected in zip(rows[1:3], m["fooling"]):
        assert [float(v) for v in row[1:]] == pytest.approx(expected, abs=1e-4)
    assert rows[3][0] == "random noise, same norm"
    assert (out / "transfer.png").stat().st_size > 10_000
    # the v built on the second model, measured on the first, is a real transfer number
    from dlcli.attacks import fooling_rate, universal_perturbation

    from dlcli.runs import load_split

    x, model, clf = split_images(lenet_run, data_dir, 300)
    _, modern, _ = split_images(modern_run, data_dir, 0)
    xb, _ = load_split(clf.recipe, "val", str(data_dir))
    v = universal_perturbation(modern, xb[:64], xi=0.3, norm="inf", max_passes=1).v
    assert m["fooling"][1][0] == fooling_rate(model, x, v) and m["fooling"][1][1] == fooling_rate(modern, x, v)
    with torch.no_grad():  # and by hand: the share of valid images clamp(x + v, 0, 1) whose label changes
        by_hand = [int((net((x + v).clamp(0, 1)).argmax(1) != net(x).argmax(1)).sum()) / len(x)
                   for net in (model, modern)]
    assert m["fooling"][1] == by_hand


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
        (["deepfool", "--max-iter", "0"], "--max-iter 0: expected a positive number"),
        (["deepfool", "--overshoot", "nan"], "--overshoot nan: expected a finite number"),
        (["deepfool", "--clip", "sometimes"], "--clip sometimes: expected box, none or step"),
        (["deepfool", "--grad", "fast"], "--grad fast: expected auto, loop or batched"),
        (["deepfool", "--refine", "-1"], "--refine -1: expected a non-negative number of rounds"),
        (["deepfool", "--clip", "none", "--refine", "1"], "--refine 1 with clip 'none'"),
        (["deepfool", "--candidates", "1"], "--candidates 1"),
        (["deepfool", "--images", "x", "--compare-fgsm"], "--compare-fgsm needs labelled images"),
        (["fgsm", "--norm", "1"], "--norm 1: expected 2 or inf"),
        (["fgsm", "--target-rate", "2"], "--target-rate 2.0: expected a fraction in (0, 1]"),
        (["fgsm", "--target-rate", "nan"], "--target-rate nan: expected a fraction in (0, 1]"),
        (["fgsm", "--clip", "step"], "--clip step: expected box or none"),
        (["universal", "--xi", "-1"], "--xi -1.0: expected a positive number"),
        (["universal", "--xi", "nan"], "--xi nan: expected a finite number"),
        (["universal", "--xi", "inf"], "--xi inf: expected a finite number"),
        (["universal", "--delta", "1.5"], "--delta 1.5"),
        (["universal", "--delta", "nan"], "--delta nan"),
        (["universal", "--fold-batch", "0"], "--fold-batch 0: expected a positive number"),
        (["universal", "--build-images", "0"], "--build-images 0: expected a positive number"),
        (["universal", "--threads", "0"], "--threads 0: expected a positive number"),
    ],
)
def test_bad_options_are_one_line_usage_errors(cli, args, fragment):
    one_line_error(cli("attack", *args), fragment, 2)


def test_target_runs_of_another_input_size_are_one_line(cli, lenet_run, data_dir, tmp_path):
    # The same LeNet weights declared for 32x32 input (C1 then has no padding: the weights still fit).
    ckpt = torch.load(lenet_run / "best.pt", weights_only=True)
    ckpt["data_meta"]["input_shape"] = [1, 32, 32]
    other = tmp_path / "lenet32"
    other.mkdir()
    torch.save(ckpt, other / "best.pt")
    res = cli("attack", "universal", str(lenet_run), "--target-runs", str(other), "--data-dir", str(data_dir))
    one_line_error(res, "input shape (1, 32, 32) differs from (1, 28, 28)", 2)


def test_deepfool_on_a_folder_of_image_files(cli, lenet_run, data_dir, tmp_path):
    import numpy as np
    from PIL import Image

    x, model, clf = split_images(lenet_run, data_dir, 3)
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(3):  # 8-bit PNGs at twice the size: resized back to 28x28 on loading
        Image.fromarray((x[i, 0] * 255).round().byte().numpy()).resize((56, 56)).save(folder / f"d{i}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "mine-out"
    res = cli("attack", "deepfool", str(lenet_run), "--images", str(folder), "--out", str(out), "--json")
    assert res.code == 0, res.err
    r = res.json()
    assert r["images"] == 3 and r["attacked"] == 3 and r["skipped_files"] == ["notes.txt"]
    assert [i["file"] for i in r["per_image"]] == ["d0.png", "d1.png", "d2.png"]
    assert r["fooled"] == 3 and r["fooled_as_8bit_png"] == sum(i["fooled_as_8bit_png"] for i in r["per_image"])
    for i in r["per_image"]:
        assert Path(i["figure"]).stat().st_size > 5_000  # original | perturbation | adversarial
        adv = torch.from_numpy(np.array(Image.open(i["adversarial_png"]))).float() / 255  # the 8-bit file
        assert adv.shape == (28, 28)
        with torch.no_grad():
            pred = model(adv[None, None]).argmax(1).item()
        assert (pred != clf.class_names.index(i["clean_pred"])) == i["fooled_as_8bit_png"]
    rows = list(csv.DictReader((out / "images.csv").open()))
    assert [row["file"] for row in rows] == ["d0.png", "d1.png", "d2.png"]


def test_image_folders_without_images_or_with_the_wrong_channels_are_one_line(cli, lenet_run, tmp_path):
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    one_line_error(cli("attack", "deepfool", str(lenet_run), "--images", str(empty)), "no readable image", 1)
    one_line_error(cli("attack", "deepfool", str(lenet_run), "--images", str(tmp_path / "nope")), "no such folder", 1)
    colour = tmp_path / "colour"
    colour.mkdir()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(colour / "red.png")
    one_line_error(cli("attack", "deepfool", str(lenet_run), "--images", str(colour)),
                   "a colour image (3 channels), but the model takes 1-channel input", 1)


def test_the_papers_rows_follow_the_runs_model_data_and_norm():
    from types import SimpleNamespace

    from dlcli.attacks.runner import paper_anchors, paper_reference

    def recipe(model: str, data: str) -> SimpleNamespace:
        return SimpleNamespace(model=SimpleNamespace(name=model), data=SimpleNamespace(source=data))

    assert paper_reference(recipe("lenet5", "mnist"), "deepfool", "2")["rho_adv"] == 0.20
    assert paper_reference(recipe("lenet5", "mnist"), "deepfool", "inf")["row"].endswith("Table 2")
    assert paper_reference(recipe("lenet5", "mnist"), "fgsm", "inf")["rho_adv"] == 0.26
    assert paper_reference(recipe("resnet18", "mnist"), "deepfool", "2") is None  # no ResNet row on MNIST
    assert [a["rho_adv"] for a in paper_anchors(recipe("resnet18", "mnist"), "deepfool", "2")] == [0.20, 0.11]
    cifar = paper_anchors(recipe("resnet20", "cifar10"), "deepfool", "2")
    assert [(a["model"], a["rho_adv"]) for a in cifar] == [("NIN", 0.023), ("LeNet", 0.030)]
    assert paper_anchors(recipe("resnet20", "cifar10"), "deepfool", "inf") == []  # Table 2 has MNIST only
    assert [a["rho_adv"] for a in paper_anchors(recipe("resnet50", "imagenet"), "deepfool", "2")] == [0.0027, 0.0019]
    assert paper_reference(recipe("alexnet", "imagenet"), "deepfool", "2")["row"].startswith("CaffeNet")


def test_a_run_that_is_not_a_classifier_is_one_clear_line(cli, tmp_path):
    res = cli("train", "perceptron", "--json")
    assert res.code == 0, res.err
    run = res.json()["run_dir"]
    one_line_error(cli("attack", "deepfool", run), "not an image classifier", 1)
    one_line_error(cli("attack", "universal", str(tmp_path / "nowhere")), "no such run folder", 1)


def test_default_radius_is_the_papers_rescaled_or_the_measured_mnist_one():
    from dlcli.attacks.runner_universal import default_xi

    assert default_xi("inf", "mnist", (1, 28, 28)) == 0.3 and default_xi("2", "fashion-mnist", (1, 28, 28)) == 5.0
    assert default_xi("inf", "cifar10", (3, 32, 32)) == pytest.approx(10 / 255)
    # ℓ2 2,000 on ImageNet's 0-255 scale; the same per-pixel energy for a smaller image
    assert default_xi("2", "imagenet", (3, 224, 224)) == pytest.approx(2000 / 255)
    assert default_xi("2", "cifar10", (3, 32, 32)) == pytest.approx(2000 / 255 * (32 / 224))
