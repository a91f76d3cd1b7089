"""A run that cannot work fails before it writes anything, and one that fails later leaves only what can be
resumed: model arguments that do not fit the data, a failure in the first step, a GAN without validation
images, an error raised inside a DataLoader worker."""

from __future__ import annotations


import pytest
import torch

TINY = ["--epochs", "2", "--device", "cpu", "--set", "data.args.train_size=256", "--set", "data.args.val_size=256"]


def one_line(res, code: int, fragment: str) -> str:
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert res.code == code and lines and fragment in lines[-1], res.err
    assert lines[-1].startswith("error: ") and "Traceback" not in res.err, res.err
    return lines[-1]


@pytest.mark.parametrize("override, fragment", [
    ("model.args.num_classes=5", "gives (5,) outputs per image for data with 10 classes; remove model.args"),
    ("model.args.in_channels=3", "model lenet5 does not fit the data (images 1x28x28 in 10 classes): Given groups=1"),
    ("model.args.input_size=64", "model lenet5 does not fit the data (images 1x28x28 in 10 classes)"),
])
def test_model_arguments_that_do_not_fit_the_data_are_one_line_before_any_folder(cli, data_dir, tmp_path, override,
                                                                                 fragment):
    res = cli("train", "lenet", *TINY, "--set", override, "--data-dir", str(data_dir))
    one_line(res, 2, fragment)
    assert len([ln for ln in res.err.splitlines() if ln.strip()]) == 1  # not even a run header
    assert not (tmp_path / "runs").exists()


def _fail_at(monkeypatch, epoch: int) -> None:
    from dlcli.tasks.classify import ClassifyTask

    steps = ClassifyTask.train_steps

    def failing(self, e, start):
        if e == epoch:
            raise RuntimeError("a bug in the first step")
        yield from steps(self, e, start)

    monkeypatch.setattr(ClassifyTask, "train_steps", failing)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(cli, data_dir, tmp_path, monkeypatch):
    _fail_at(monkeypatch, 0)
    res = cli("train", "lenet", *TINY, "--data-dir", str(data_dir))
    one_line(res, 1, "RuntimeError: a bug in the first step")
    assert not (tmp_path / "runs").exists()  # neither the run folder nor the runs/ folder it made
    (tmp_path / "mine").mkdir()  # an empty folder given with --out stays, empty
    res = cli("train", "lenet", *TINY, "--data-dir", str(data_dir), "--out", str(tmp_path / "mine"))
    assert res.code == 1 and (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_a_run_that_fails_after_a_checkpoint_keeps_it_for_resume(cli, data_dir, tmp_path, monkeypatch):
    _fail_at(monkeypatch, 1)
    res = cli("train", "lenet", *TINY, "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    one_line(res, 1, "a bug in the first step")
    assert (tmp_path / "run" / "last.pt").is_file()  # epoch 1's checkpoint: resumable
    monkeypatch.undo()
    from dlcli.tasks.classify import ClassifyTask

    trained, steps = [], ClassifyTask.train_steps  # the epochs (from 0) the resumed process trains itself

    def recorded(self, e, start):
        trained.append(e)
        yield from steps(self, e, start)

    monkeypatch.setattr(ClassifyTask, "train_steps", recorded)
    res = cli("train", "--resume", str(tmp_path / "run"), "--data-dir", str(data_dir), "--json")
    assert res.code == 0 and [h["epoch"] for h in res.json()["history"]] == [1, 2], res.err
    # epoch 1 came from last.pt: a resume that silently retrained from scratch would train [0, 1]
    assert trained == [1] and res.json()["header"]["resumed_at"] == "epoch 2, step 0", (trained, res.json()["header"])


def test_a_gan_without_validation_images_stops_before_training(cli, data_dir, tmp_path):
    res = cli("train", "gan-mnist", "--epochs", "1", "--device", "cpu", "--set", "data.args.train_size=256", "--set",
              "data.args.val_size=0", "--data-dir", str(data_dir))
    one_line(res, 2, "keep data.args.val_size > 0")
    assert not (tmp_path / "runs").exists()


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        from dlcli.errors import DlcliError

        raise DlcliError("16 consecutive images from x/1.jpg on cannot be decoded; check the folder")


def test_an_error_raised_in_a_dataloader_worker_is_its_own_message():
    from dlcli.errors import DlcliError
    from dlcli.tasks.classify import worker_message

    with pytest.raises(DlcliError) as caught:
        next(iter(torch.utils.data.DataLoader(_Broken(), batch_size=2, num_workers=1)))
    assert "Original Traceback" in str(caught.value)  # what torch raises in this process
    assert worker_message(caught.value) == "16 consecutive images from x/1.jpg on cannot be decoded; check the folder"
    assert worker_message(DlcliError("in this process")) == "in this process"


def test_a_folder_of_undecodable_training_images_is_one_line_through_workers(cli, tmp_path):
    from PIL import Image

    root = tmp_path / "imf"
    for split, n in (("train", 20), ("val", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                if split == "train":
                    (root / split / c / f"{i}.jpg").write_text("not an image")
                else:
                    Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / c / f"{i}.jpg")
    recipe = tmp_path / "folder-lenet.yaml"  # the image-folder data path with workers, on a small net
    recipe.write_text(f"task: classify\ntask_args: {{workers: 1}}\nmodel: {{name: lenet5}}\n"
                      f"data: {{source: imagefolder, args: {{path: {root}, size: 28, resize: 28}}}}\n"
                      f"epochs: 1\nbatch_size: 8\ndevice: cpu\n", encoding="utf-8")
    res = cli("train", str(recipe))
    line = one_line(res, 1, "consecutive images from")
    assert "Original Traceback" not in res.err and line.endswith("cannot be decoded; check the folder"), res.err
    assert not (tmp_path / "runs").exists()


def test_check_fits_accepts_every_classify_recipe_as_it_is():
    # the check must not refuse a recipe that trains: each classify recipe's model on its own data shape
    from dlcli.classifier import build_classifier, check_fits, data_meta
    from dlcli.config import load_recipe, recipe_names

    shapes = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
    checked = []
    for name in recipe_names():
        r = load_recipe(name)
        if r.task != "classify" or r.data.source not in shapes:
            continue
        meta = data_meta(10, [str(i) for i in range(10)], shapes[r.data.source], [0.5] * shapes[r.data.source][0],
                         [0.25] * shapes[r.data.source][0])
        check_fits(build_classifier(r, meta), meta, r.model.name)
        checked.append(name)
    assert {"lenet", "lenet-modern", "resnet20-cifar10", "alexnet-cifar10"} <= set(checked), checked
