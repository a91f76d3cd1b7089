"""Bad paths and options on the command line: one `error:` line, exit 2 (1 for a failure), nothing written.

Covers `train/verify --out` (a file, a folder that already holds a run; an empty folder is fine), `train
--resume` with `--out`, `eval --out` and `attack ... --out` naming a file, the empty `eval-SPLIT/` folder a
failed evaluation used to leave, `eval --episodes/--render/--features` on a run of a kind that ignores them,
`sample --out` without a .png name (an existing folder gets the default name), `bench --csv` naming a folder
or a path inside a file (checked before anything is benchmarked) and `bench ,` (no model named).

Run folders are built once per module and cheaply: `approx` (5 steps, no data), and, where real MNIST is
found, a LeNet-5 on 256 images and a tiny DCGAN; every test works on a copy inside its own tmp_path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

TINY_APPROX = ["--epochs", "1", "--set", "task_args.steps_per_epoch=5"]


def _main(*args: str) -> None:
    """``dlcli ARGS`` in this process, for module fixtures (the ``cli`` fixture is per test); must succeed."""
    from dlcli.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        assert e.code in (0, None), args


def _snapshot(root: Path) -> dict[str, str]:
    """Every folder and file under ``root`` -> 'dir' or its content's hash: what a command left behind."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def _one_error(res, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one non-empty stderr line, starting with ``error:`` and holding ``fragments``."""
    assert res.code == code, (res.code, res.err)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    assert "Traceback" not in res.err and "DLCLI_DEBUG" not in res.err, res.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def approx_run(tmp_path_factory) -> Path:
    """A finished ``approx`` run (regress task, no data set): about a second."""
    run = tmp_path_factory.mktemp("approx") / "run"
    _main("train", "approx", *TINY_APPROX, "--out", str(run), "--json")
    return run


@pytest.fixture(scope="module")
def lenet_run(data_dir, tmp_path_factory) -> Path:
    """A finished ``lenet`` run (classify task) on 256 MNIST images, one epoch on the CPU."""
    run = tmp_path_factory.mktemp("lenet") / "run"
    _main("train", "lenet", "--epochs", "1", "--set", "data.args.train_size=256", "--set", "data.args.val_size=256",
          "--device", "cpu", "--out", str(run), "--data-dir", str(data_dir), "--json")
    return run


@pytest.fixture(scope="module")
def gan_run(data_dir, tmp_path_factory) -> Path:
    """A tiny DCGAN (one epoch of two steps) to sample from."""
    tmp = tmp_path_factory.mktemp("gan")
    spec = {"description": "tiny gan", "task": "gan", "epochs": 1, "seed": 5, "device": "cpu", "batch_size": 32,
            "model": {"name": "dcgan", "args": {"ngf": 4, "ndf": 4}},
            "optim": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
            "data": {"source": "mnist", "args": {"val_size": 256, "train_size": 64}},
            "task_args": {"eval_samples": 64}}
    recipe = tmp / "tinygan.yaml"
    recipe.write_text(yaml.safe_dump(spec), encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(tmp)  # no runs/lenet-* here: the final measures skip the feature network (and stay fast)
    try:
        _main("train", str(recipe), "--out", str(tmp / "run"), "--data-dir", str(data_dir), "--json")
    finally:
        os.chdir(cwd)
    return tmp / "run"


def _copy(run: Path, tmp_path: Path, name: str = "old") -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


# ------------------------------------------------------------------------------------------ train --out


def test_train_out_naming_a_file_or_a_path_inside_one(cli, tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")
    before = _snapshot(tmp_path)
    _one_error(cli("train", "approx", *TINY_APPROX, "--out", "afile"), 2, "--out afile is a file")
    _one_error(cli("train", "approx", *TINY_APPROX, "--out", "afile/run"), 2, "inside afile, which is a file")
    _one_error(cli("verify", "approx", "--out", "afile"), 2, "--out afile is a file")
    assert _snapshot(tmp_path) == before


def test_train_out_holding_a_run_is_refused_and_the_run_left_as_it_was(cli, tmp_path, approx_run):
    _copy(approx_run, tmp_path)  # ./old
    half = tmp_path / "half"  # a run that never saved a checkpoint: --resume cannot continue it
    half.mkdir()
    (half / "config.yaml").write_text("name: approx\n")
    before = _snapshot(tmp_path)
    line = _one_error(cli("train", "approx", *TINY_APPROX, "--set", "optim.lr=0.5", "--out", "old"), 2,
                      "--out old already holds a run", "pick another folder", "dlcli train --resume old")
    assert "config.yaml" in line and "last.pt" in line
    _one_error(cli("train", "approx", *TINY_APPROX, "--out", "half"), 2, "--out half already holds a run",
               "remove this one")
    _one_error(cli("verify", "approx", "--out", "old"), 2, "--out old already holds a run")
    assert _snapshot(tmp_path) == before  # old's config.yaml was overwritten before the check existed


def test_train_into_an_existing_empty_folder_is_fine(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("train", "approx", *TINY_APPROX, "--out", "empty", "--json")
    assert res.code == 0, res.err
    assert (tmp_path / "empty" / "summary.json").is_file() and (tmp_path / "empty" / "last.pt").is_file()


@pytest.mark.parametrize("setting,fragment", [("data.args.fn=foo", "unknown function 'foo'"),
                                             ("data.args.n_train=1", "must be at least 2")])
def test_a_bad_data_value_is_a_usage_error(cli, tmp_path, setting, fragment):
    """A data source's range check is input the user fixes in the recipe: exit 2, like every other bad value."""
    res = cli("train", "approx", *TINY_APPROX, "--set", setting, "--out", str(tmp_path / "run"))
    _one_error(res, 2, "data.args.", fragment)
    assert not (tmp_path / "run").exists()


def test_resume_with_out_is_refused(cli, tmp_path, approx_run):
    old = _copy(approx_run, tmp_path)
    before = _snapshot(tmp_path)
    _one_error(cli("train", "--resume", str(old), "--epochs", "2", "--out", "other"), 2,
               "--out cannot be combined with --resume", "continues in its own folder")
    assert _snapshot(tmp_path) == before  # neither other/ made nor old/ trained further


# ---------------------------------------------------------------------------------- eval and attack --out


def test_eval_out_naming_a_file(cli, tmp_path, approx_run):
    old = _copy(approx_run, tmp_path)
    (tmp_path / "afile").write_text("not a folder\n")
    before = _snapshot(tmp_path)
    _one_error(cli("eval", str(old), "--out", "afile"), 2, "--out afile is a file", "folder for the figures")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("attack", ["deepfool", "fgsm", "universal"])
def test_attack_out_naming_a_file(cli, tmp_path, approx_run, attack):
    # checked before the run is loaded, so any run folder will do (approx is not even a classifier)
    old = _copy(approx_run, tmp_path)
    (tmp_path / "afile").write_text("not a folder\n")
    before = _snapshot(tmp_path)
    _one_error(cli("attack", attack, str(old), "--out", "afile", "--json"), 2, "--out afile is a file")
    assert _snapshot(tmp_path) == before


def test_failed_eval_leaves_no_empty_folder(cli, tmp_path, approx_run, monkeypatch):
    from dlcli.errors import DlcliError
    from dlcli.tasks.regress import RegressTask

    def fails(cls, checkpoint, ctx, split, out_dir):
        assert out_dir.is_dir()  # the task may write its figures there
        raise DlcliError("the evaluation data cannot be read")

    old = _copy(approx_run, tmp_path)
    monkeypatch.setattr(RegressTask, "evaluate", classmethod(fails))
    before = _snapshot(tmp_path)
    _one_error(cli("eval", str(old)), 1, "cannot be read")
    _one_error(cli("eval", str(old), "--out", "a/b/c"), 1, "cannot be read")
    assert _snapshot(tmp_path) == before  # neither old/eval-test/ nor a/b/c/ (nor a/) left behind


# ------------------------------------------------------------------------------------------ eval options


@pytest.mark.parametrize("option, kind", [(("--episodes", "5"), "reinforcement learning runs"),
                                          (("--render",), "reinforcement learning runs"),
                                          (("--features", "nonexistent"), "generative runs")])
def test_eval_options_of_another_kind_of_run_are_refused(cli, tmp_path, lenet_run, data_dir, option, kind):
    old = _copy(lenet_run, tmp_path)
    before = _snapshot(tmp_path)
    _one_error(cli("eval", str(old), *option, "--data-dir", str(data_dir), "--device", "cpu", "--json"), 2,
               f"{option[0]} applies to {kind}", "'classify' run (lenet)")
    assert _snapshot(tmp_path) == before


def test_tta_flip_is_refused_where_mirror_images_are_not_the_data(cli, tmp_path, lenet_run, approx_run, data_dir):
    """--tta flip on a run trained without flips (digits), on a run that is not a classifier, or a bad value:
    one line, exit 2, no eval-test/ folder left."""
    old, approx = _copy(lenet_run, tmp_path), _copy(approx_run, tmp_path, "approx")
    before = _snapshot(tmp_path)
    common = ("--data-dir", str(data_dir), "--device", "cpu", "--json")
    _one_error(cli("eval", str(old), "--tta", "flip", *common), 2, "lenet was not trained with mirrored images")
    _one_error(cli("eval", str(approx), "--tta", "flip", *common), 2, "--tta applies to image classifier runs")
    _one_error(cli("eval", str(old), "--tta", "mirror", *common), 2, "--tta 'mirror': expected none or flip")
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------- sample --out


def test_sample_out_must_be_a_png_name_or_an_existing_folder(cli, tmp_path, gan_run):
    old = _copy(gan_run, tmp_path)
    (tmp_path / "afile").write_text("not a folder\n")
    before = _snapshot(tmp_path)
    _one_error(cli("sample", str(old), "--n", "4", "--out", "gridout"), 2, "--out gridout: expected a .png file name")
    _one_error(cli("sample", str(old), "--n", "4", "--out", "afile/grid.png"), 2, "inside afile, which is a file")
    assert _snapshot(tmp_path) == before
    (tmp_path / "grids").mkdir()
    res = cli("sample", str(old), "--n", "4", "--seed", "2", "--out", "grids", "--json")
    assert res.code == 0, res.err
    assert res.json()["path"] == str(Path("grids") / "sample-n4-seed2.png")
    assert (tmp_path / "grids" / "sample-n4-seed2.png").is_file()


# ------------------------------------------------------------------------------------------------- bench


def test_bench_csv_naming_a_folder_is_refused_before_benchmarking(cli, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("not a folder\n")
    before = _snapshot(tmp_path)
    quick = ("--device", "cpu", "--mode", "infer", "--steps", "1", "--warmup", "0", "--json")
    res = cli("bench", "lenet5", *quick, "--csv", "folder")
    _one_error(res, 2, "--csv folder is a folder", "takes a file name")
    assert res.out == ""  # nothing was benchmarked (the results used to be printed, then the error)
    res = cli("bench", "lenet5", *quick, "--csv", "afile/bench.csv")
    _one_error(res, 2, "inside afile, which is a file")
    assert res.out == ""
    assert _snapshot(tmp_path) == before


def test_bench_with_no_model_named_lists_the_valid_ones(cli):
    res = cli("bench", ",", "--json")
    _one_error(res, 2, "no model named in ','", "valid names: ", "lenet5", "or all")
    assert res.out == ""


# ----------------------------------------------------------------------------------------- one process only


@pytest.mark.parametrize("recipe, task", [("dcgan-mnist", "gan"), ("dqn-cartpole", "dqn"), ("autoencoder", "autoencode"),
                                          ("sdae", "pretrain"), ("neocognitron", "neocognitron")])
def test_a_one_process_task_is_refused_before_torchrun_starts(cli, tmp_path, monkeypatch, recipe, task):
    import dlcli.cli

    def started(*a):
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(dlcli.cli, "_torchrun", started)
    res = cli("train", recipe, "--nproc-per-node", "2", "--device", "cpu")
    _one_error(res, 2, f"--nproc-per-node 2: the {task} task runs in one process (", "start it without torchrun")
    assert not (tmp_path / "runs").exists()


def test_a_one_process_task_started_by_torchrun_itself_is_refused_in_each_rank():
    from types import SimpleNamespace

    from dlcli.config import load_recipe
    from dlcli.registry import TASKS
    from dlcli.tasks.base import TaskContext

    ctx = TaskContext(load_recipe("dcgan-mnist"), SimpleNamespace(distributed=True))
    with pytest.raises(ValueError, match=r"the gan task runs in one process \(DDP around its two discriminator"):
        TASKS.get("gan")(ctx)
