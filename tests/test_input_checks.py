"""Input checks from the error-handling audit (items 4-8 and 10, and the perceptron n=0 case).

Each bad value is one ``error:`` line naming the key and exit code 2, found before any training starts and
before a run folder exists: linear2d's margin and n (a margin no point fits made the sampler loop forever),
seeds at or above 2**32 (recipes and every ``--seed`` option), a recipe file that is not UTF-8 (also as one
invalid row of ``dlcli list``), negative or zero LeNet sizes and torch errors while a model is built,
non-finite optimiser and schedule numbers, MNIST / Fashion-MNIST normalisation, and recipe names that are not
one plain folder name.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlcli.config import SEED_LIMIT, check_seed
from dlcli.errors import UsageError

TRAIN = ("--device", "cpu")
# The recipe-level checks run on the perceptron recipe: were a check missing, it would train in a moment and
# fail the test, instead of starting a long LeNet run.


def assert_usage_error(res, key: str, tmp_path: Path) -> str:
    """Exit 2, exactly one non-empty stderr line, ``error:`` + ``key`` in it, not the bug line; no run folder."""
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert res.code == 2, res.err
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error:") and key in lines[0], lines[0]
    assert "DLCLI_DEBUG" not in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()
    return lines[0]


# ----------------------------------------------------------------------------------- linear2d (item 4)


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Without the margin check the sampler never ends: fail after 30 s instead of hanging the suite."""
    if not hasattr(signal, "SIGALRM"):  # Windows
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise TimeoutError("still sampling after 30 s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("margin", ["2", "0.75", "-0.1", ".nan", ".inf"])
def test_linear2d_margin_out_of_range(cli, tmp_path: Path, no_hang: None, margin: str) -> None:
    res = cli("train", "perceptron", "--set", f"data.args.margin={margin}", *TRAIN)
    line = assert_usage_error(res, "data.args.margin", tmp_path)
    assert "[0, 0.75)" in line


@pytest.mark.parametrize("n", ["0", "-5"])
def test_linear2d_needs_a_point(cli, tmp_path: Path, n: str) -> None:
    res = cli("train", "perceptron", "--set", f"data.args.n={n}", *TRAIN)
    line = assert_usage_error(res, "data.args.n", tmp_path)
    assert ">= 1" in line


def test_linear2d_margin_just_below_the_bound_finishes(no_hang: None) -> None:
    from dlcli.data import MAX_MARGIN, linear2d

    for seed in range(20):  # lines at many angles and offsets: every one leaves room, in one or two draws
        bundle = linear2d(Path("."), seed, n=50, margin=MAX_MARGIN - 1e-3)
        w, b = bundle.extra["true_w"], bundle.extra["true_b"]
        assert abs(w[0] ** 2 + w[1] ** 2 - 1) < 1e-6  # a unit normal: dist below is the distance to the line
        dist = bundle.train.x[:, 0] * w[0] + bundle.train.x[:, 1] * w[1] + b
        assert len(bundle.train.x) == 50 and bool((dist.abs() >= MAX_MARGIN - 1e-3).all())
        assert bundle.train.y.tolist() == [1 if d > 0 else -1 for d in dist.tolist()]  # the side of the line


# ------------------------------------------------------------------------------------------ seeds (item 5)


@pytest.mark.parametrize("argv", [
    ("train", "perceptron", "--seed", str(2**32), *TRAIN),
    ("train", "perceptron", "--seed", "-1", *TRAIN),
    ("attack", "universal", "--seed", str(2**70)),
    ("sample", "no-such-run", "--seed", str(2**70)),
    ("bench", "lenet5", "--mode", "infer", "--steps", "1", "--warmup", "0", "--seed", str(2**70)),
])
def test_seed_options_are_below_2_32(cli, tmp_path: Path, argv: tuple[str, ...]) -> None:
    line = assert_usage_error(cli(*argv), "--seed", tmp_path)
    assert "[0, 4294967295]" in line  # 2**32 - 1, written out: not the code's own SEED_LIMIT


def test_recipe_seed_is_below_2_32(cli, tmp_path: Path) -> None:
    res = cli("train", "perceptron", "--set", f"seed={2**40}", *TRAIN)
    assert_usage_error(res, "seed", tmp_path)
    recipe = tmp_path / "big-seed.yaml"
    recipe.write_text(f"model: {{name: perceptron}}\ntask: perceptron\ndata: {{source: linear2d}}\n"
                      f"seed: {2**32}\n",
                      encoding="utf-8")
    line = assert_usage_error(cli("show", str(recipe)), "seed", tmp_path)
    assert str(recipe) in line


def test_largest_seed_fits_every_generator() -> None:
    import torch

    from dlcli.batches import ImageBatches
    from dlcli.runtime import seed_everything

    assert SEED_LIMIT == 2**32  # numpy's limit; the checks below use the number itself
    check_seed(2**32 - 1)
    check_seed(0)
    check_seed(None)
    with pytest.raises(UsageError):
        check_seed(2**32)
    seed_everything(2**32 - 1)
    batches = ImageBatches(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4), 2, 2**32 - 1)
    batches.augment_generator(epoch=100_000, step=2**20 - 1)  # (seed * 1000 + epoch) << 20 stays in int64
    batches.permutation(100_000)


# ---------------------------------------------------------------------------------- non-UTF-8 file (item 6)

LATIN1 = "description: caf\u00e9 au lait\nmodel: {name: perceptron}\ntask: perceptron\ndata: {source: linear2d}\n"


@pytest.mark.parametrize("command", ["show", "train"])
def test_recipe_not_utf8_names_the_file(cli, tmp_path: Path, command: str) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes(LATIN1.encode("latin-1"))
    line = assert_usage_error(cli(command, str(recipe), *(TRAIN if command == "train" else ())), "UTF-8", tmp_path)
    assert str(recipe) in line and "line 1" in line


def test_list_shows_a_non_utf8_recipe_as_invalid(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "good.yaml").write_text(LATIN1.replace("\u00e9", "e"), encoding="utf-8")
    (folder / "latin1.yaml").write_bytes(LATIN1.encode("latin-1"))
    monkeypatch.setenv("DLCLI_RECIPES", str(folder))
    res = cli("list", "--json")
    assert res.code == 0, res.err
    rows = {row["name"]: row for row in res.json()["recipes"]}
    assert rows["good"]["model"] == "perceptron"
    assert rows["latin1"]["description"].startswith("invalid recipe:") and "UTF-8" in rows["latin1"]["description"]


# ----------------------------------------------------------------------------------- model sizes (item 7)


@pytest.mark.parametrize("value", ["-1", "0"])
def test_lenet_num_classes_at_least_1(cli, tmp_path: Path, value: str) -> None:
    line = assert_usage_error(cli("show", "lenet", "--set", f"model.args.num_classes={value}"), "num_classes",
                              tmp_path)
    assert "lenet5: num_classes and in_channels must be at least 1" in line


def test_lenet_num_classes_checked_before_training(cli, tmp_path: Path, data_dir: Path) -> None:
    res = cli("train", "lenet", "--set", "model.args.num_classes=-1", "--data-dir", str(data_dir), *TRAIN)
    assert "at least 1" in assert_usage_error(res, "num_classes", tmp_path)


def test_torch_error_while_building_is_a_usage_error(cli, tmp_path: Path) -> None:
    # perceptron's builder has no check of its own: torch's refusal becomes the line
    line = assert_usage_error(cli("show", "perceptron", "--set", "model.args.in_features=-3"), "in_features=-3",
                              tmp_path)
    assert "'perceptron'" in line


def test_build_model_turns_runtime_errors_into_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlcli.registry import MODELS, build_model

    def boom(*, width: int = 3) -> None:
        raise RuntimeError("Trying to create tensor with negative dimension -1\nmore detail")

    MODELS.names()  # load the built-in models first, so they do not land after the patch
    monkeypatch.setitem(MODELS._entries, "boom", boom)
    monkeypatch.setitem(MODELS._meta, "boom", {})
    with pytest.raises(UsageError, match=r"^model 'boom' cannot be built with width=-1: Trying .* -1$"):
        build_model("boom", width=-1)


# --------------------------------------------------------------------------------- finite numbers (item 8)


@pytest.mark.parametrize("key, value", [
    ("optim.lr", ".inf"), ("optim.lr", ".nan"),
    ("optim.weight_decay", ".nan"), ("optim.weight_decay", ".inf"),
    ("schedule.warmup_epochs", ".inf"), ("schedule.warmup_epochs", ".nan"),
])
def test_recipe_numbers_are_finite(cli, tmp_path: Path, key: str, value: str) -> None:
    res = cli("train", "perceptron", "--set", "schedule.name=cosine", "--set", f"{key}={value}", *TRAIN)
    line = assert_usage_error(res, key, tmp_path)
    assert "finite" in line


def test_lr_option_is_finite(cli, tmp_path: Path) -> None:
    assert_usage_error(cli("train", "perceptron", "--lr", "inf", *TRAIN), "optim.lr", tmp_path)


@pytest.fixture
def unreadable_data(tmp_path: Path) -> Path:
    """A data root whose MNIST and Fashion-MNIST files are not IDX files: reading any of them is an error, so
    a test passes only when its check fires before the first file is read."""
    root = tmp_path / "data"
    for folder in ("MNIST", "FashionMNIST"):
        raw = root / folder / "raw"
        raw.mkdir(parents=True)
        for split in ("train", "t10k"):
            for kind in ("images-idx3", "labels-idx1"):
                (raw / f"{split}-{kind}-ubyte").write_bytes(b"not an IDX file")
    return root


@pytest.mark.parametrize("recipe", ["lenet", "lenet-fashion"])
@pytest.mark.parametrize("key, value", [("std", "0"), ("std", "-0.3"), ("std", ".inf"), ("std", ".nan"),
                                        ("mean", ".nan")])
def test_mnist_normalisation(cli, tmp_path: Path, unreadable_data: Path, recipe: str, key: str,
                             value: str) -> None:
    res = cli("train", recipe, "--set", f"data.args.{key}={value}", "--data-dir", str(unreadable_data), *TRAIN)
    assert_usage_error(res, f"data.args.{key}", tmp_path)


@pytest.mark.parametrize("key, value", [("std", "[0.2,0,0.2]"), ("std", "[0.2,0.2]"), ("std", "[.nan,1,1]"),
                                        ("mean", "[0.5,0.5]"), ("mean", "[.inf,0,0]")])
def test_image_folder_normalisation(cli, tmp_path: Path, key: str, value: str) -> None:
    # checked before the folder is looked at (this one does not exist)
    res = cli("train", "alexnet-imagefolder", "--set", f"data.args.{key}={value}", "--set",
              f"data.args.path={tmp_path / 'none'}", *TRAIN)
    assert_usage_error(res, f"data.args.{key}: expected 3 finite numbers", tmp_path)


# ---------------------------------------------------------------------------------- recipe name (item 10)


@pytest.mark.parametrize("name", ["../escape", "", "a/b", "a\\b", ".", ".."])
def test_recipe_name_is_one_folder_name(cli, tmp_path: Path, name: str) -> None:
    line = assert_usage_error(cli("train", "perceptron", "--set", f"name={name}", *TRAIN), "name", tmp_path)
    assert "runs/<name>-<time>" in line
    assert not any(tmp_path.iterdir())  # nothing at all in the working folder (../escape would land here)


def test_recipe_name_with_a_space_is_fine(cli) -> None:
    res = cli("show", "lenet", "--json", "--set", "name=my lenet")
    assert res.code == 0, res.err
    assert res.json()["recipe"]["name"] == "my lenet"
