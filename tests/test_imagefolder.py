"""The ``imagefolder`` source and its recipes on a tiny image folder built on the fly (with a corrupt JPEG, an
empty file and the bad layouts a user can hand it), and fine-tuning from torchvision weights in the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dlcli.config import load_recipe
from dlcli.data import ImageFolderTrainSet, load_data, scan_image_folder
from dlcli.errors import DlcliError
from dlcli.registry import build_model

CLASSES = ("cat", "dog", "fox")


def make_folder(root: Path, per_class: dict[str, int] | None = None, val_per_class: int = 2,
                size: tuple[int, int] = (40, 52)) -> Path:
    """root/train/<class>/*.jpg and root/val/<class>/*.jpg of random colour images (not square, as photos)."""
    from torchvision.io import encode_jpeg, write_file

    g = torch.Generator().manual_seed(0)
    per_class = per_class or {c: 4 for c in CLASSES}
    for split, counts in (("train", per_class), ("val", {c: val_per_class for c in per_class})):
        for c, n in counts.items():
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = (torch.rand(3, *size, generator=g) * 255).to(torch.uint8)
                write_file(str(d / f"{i}.jpg"), encode_jpeg(img))
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "pets")


def test_layout_classes_and_sizes(folder):
    b = load_data("imagefolder", {"path": str(folder), "size": 32, "resize": 36}, None, seed=0)
    assert b.class_names == list(CLASSES) and b.num_classes == 3 and b.input_shape == (3, 32, 32)
    assert b.train is None and len(b.train_dataset) == 12  # training images are decoded by DataLoader workers
    assert b.val.x.shape == (6, 3, 32, 32) and b.val.x.dtype == torch.uint8 and b.val.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert b.test is b.val and any("no test/ folder" in n for n in b.extra["notes"])
    x, y = b.train_dataset[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and y == 1


def test_eval_images_are_resized_then_centre_cropped(folder):
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    b = load_data("imagefolder", {"path": str(folder), "size": 32, "resize": 36}, None, seed=0)
    img = decode_jpeg(read_file(str(folder / "val" / "cat" / "0.jpg")))  # (3, 40, 52)
    expected = TF.center_crop(TF.resize(img, [36], antialias=True), [32, 32])  # shorter side 36 -> 36x47
    assert torch.equal(b.val.x[0], expected)


def test_a_test_folder_is_scored_apart_from_val(folder):
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    make_folder(folder / "test_src", val_per_class=3, size=(36, 48))  # images of their own, 3 per class
    (folder / "test_src" / "val").rename(folder / "test")
    b = load_data("imagefolder", {"path": str(folder), "size": 32, "resize": 32}, None, seed=0)
    assert b.test is not b.val and len(b.test) == 9 and len(b.val) == 6
    assert b.test.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for split, got in (("test", b.test.x[7]), ("val", b.val.x[5])):  # fox/1.jpg: each split's own file's pixels
        img = decode_jpeg(read_file(str(folder / split / "fox" / "1.jpg")))
        assert torch.equal(got, TF.center_crop(TF.resize(img, [32], antialias=True), [32, 32]))


def test_corrupt_and_empty_files_are_skipped_and_counted(folder, capfd):
    (folder / "val" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated download")
    (folder / "train" / "fox" / "empty.jpg").write_bytes(b"")
    b = load_data("imagefolder", {"path": str(folder), "size": 32, "resize": 32}, None, seed=0)
    notes = " ".join(b.extra["notes"])
    assert "val/: skipped 1 of 7" in notes and "broken.jpg" in notes
    assert "train/: skipped 1 empty image file(s)" in notes and len(b.val) == 6 and len(b.train_dataset) == 12
    # a training image that cannot be decoded is replaced by the next one, with a line naming it
    (folder / "train" / "cat" / "1.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    ds = ImageFolderTrainSet(scan_image_folder(folder / "train"), 32)
    x, y = ds[1]  # cat/1.jpg is broken: cat/2.jpg comes instead
    assert x.shape == (3, 32, 32) and y == 0 and "cat/1.jpg" in capfd.readouterr().err


@pytest.mark.parametrize("case,message", [
    ("missing", "expected .*/train/<class>/<image> and .*/val/<class>/<image>"),
    ("no_path", "no image folder given: give the folder with --set data.args.path=DIR"),
    ("one_class", "images of one class only \\(cat\\); a classifier needs at least two class folders"),
    ("no_images", "has no images"),
])
def test_bad_folders_are_one_clear_line(tmp_path, case, message):
    args: dict = {"size": 32, "resize": 32}
    if case == "missing":
        args["path"] = str(tmp_path / "nowhere")
    elif case == "one_class":
        args["path"] = str(make_folder(tmp_path / "one", {"cat": 3}))
    elif case == "no_images":
        for split in ("train", "val"):
            (tmp_path / "empty" / split / "cat").mkdir(parents=True)
            (tmp_path / "empty" / split / "cat" / "notes.txt").write_text("no images here")
        args["path"] = str(tmp_path / "empty")
    with pytest.raises(DlcliError, match=message) as e:
        load_data("imagefolder", args, None, seed=0)
    assert "\n" not in str(e.value)


def test_relative_paths_are_found_under_the_data_folder(tmp_path):
    make_folder(tmp_path / "data" / "pets")
    b = load_data("imagefolder", {"path": "pets", "size": 32, "resize": 32}, tmp_path / "data", seed=0)
    assert b.num_classes == 3


def test_imagefolder_recipes_follow_the_torchvision_references():
    r50, alex = load_recipe("resnet50-imagefolder"), load_recipe("alexnet-imagefolder")
    assert (r50.optim.lr, r50.batch_size, r50.optim.weight_decay, r50.task_args["label_smoothing"]) == (0.1, 256, 1e-4, 0.1)
    assert r50.schedule.name == "cosine" and r50.schedule.warmup_epochs > 0
    assert alex.optim.lr == 0.01 and alex.model.name == "alexnet" and r50.model.name == "resnet50"
    for r in (r50, alex):
        assert r.data.source == "imagefolder" and r.precision == "auto" and r.task_args["workers"] >= 1


@pytest.mark.parametrize("recipe", ["resnet50-imagefolder", "alexnet-imagefolder"])
def test_imagefolder_recipes_train_and_eval_a_tiny_folder(cli, folder, tmp_path, recipe):
    size = "64" if recipe.startswith("alexnet") else "32"  # torchvision's AlexNet needs at least 63 pixels
    run = tmp_path / "run"
    res = cli("train", recipe, "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--set",
              f"data.args.path={folder}", "--set", f"data.args.size={size}", "--set", f"data.args.resize={size}",
              "--set", "task_args.workers=0", "--out", str(run), "--json")
    assert res.code == 0, res.err
    result = res.json()
    assert result["header"]["train_samples"] == 12 and result["header"]["steps_per_epoch"] == 3
    ev = cli("eval", str(run), "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["samples"] == 6


# ------------------------------------------------------------------------------------------ fine-tuning


def test_pretrained_weights_are_loaded_then_the_head_is_replaced(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DlcliError, match="place resnet50-0676ba61.pth .* in the folder .*checkpoints/"):
        build_model("resnet50", pretrained=True, num_classes=3)
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(0)
    saved = build_model("resnet50").state_dict()  # stands in for torchvision's ImageNet file
    torch.save(saved, tmp_path / "checkpoints" / "resnet50-0676ba61.pth")
    model = build_model("resnet50", pretrained=True, num_classes=3)
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 3
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    assert torch.equal(model.layer4[2].conv3.weight, saved["layer4.2.conv3.weight"])
    alex_saved = build_model("alexnet").state_dict()
    torch.save(alex_saved, tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth")
    alex = build_model("alexnet", pretrained=True, num_classes=5)
    assert alex.classifier[6].out_features == 5 and torch.equal(alex.features[0].weight, alex_saved["features.0.weight"])


def test_train_pretrained_flag_reaches_the_model_or_says_which_recipes_have_weights(cli, folder, tmp_path,
                                                                                  monkeypatch):
    """``dlcli train RECIPE --pretrained``: the imagefolder recipes look for torchvision's file in the hub cache
    (one line naming the file and the folder when it is missing); a model without weights is one usage line."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    res = cli("train", "alexnet-imagefolder", "--pretrained", "--set", f"data.args.path={folder}",
              "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert res.code == 1 and "alexnet-owt-7be5be79.pth" in res.err and str(tmp_path / "torchhome") in res.err, res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    res = cli("train", "lenet", "--pretrained", "--epochs", "1", "--out", str(tmp_path / "run2"))
    assert res.code == 2 and "--pretrained: lenet's model has no pretrained weights" in res.err, res.err
