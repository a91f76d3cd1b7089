"""CIFAR-10: He et al.'s CIFAR ResNets, the CIFAR ResNet-18, AlexNet at CIFAR scale, the cifar10 source, the
recipes (tiny budgets on a generated CIFAR-shaped folder), and one short real run when the real data is there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dlcli.config import check_expectation, load_recipe
from dlcli.data import load_data
from dlcli.errors import DlcliError, UsageError
from dlcli.models.alexnet_cifar import alexnet_cifar
from dlcli.models.cifar_resnet import BasicBlock, ShortcutA, he_cifar_resnet, resnet18_cifar
from dlcli.registry import build_model

CIFAR_RECIPES = ["resnet20-cifar10", "resnet56-cifar10", "resnet18-cifar10", "alexnet-cifar10"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ models


def test_resnet20_has_a_hand_counted_269722_parameters():
    # 3x3 convolutions without bias: stem 3->16; stage 1: six 16->16; stage 2: 16->32 then five 32->32;
    # stage 3: 32->64 then five 64->64. 19 batch norms (weight + bias per channel). Linear 64 -> 10.
    convs = 9 * (3 * 16 + 6 * 16 * 16 + 16 * 32 + 5 * 32 * 32 + 32 * 64 + 5 * 64 * 64)
    bns = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    fc = 64 * 10 + 10
    assert convs + bns + fc == 269_722 == n_params(he_cifar_resnet(20))  # option A adds no parameters


@pytest.mark.parametrize("depth,paper", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_resnets_match_the_papers_table_6(depth, paper):
    model = build_model(f"resnet{depth}")
    assert round(n_params(model) / 1e6, 2 if depth < 100 else 1) == paper  # He et al. 2015, Table 6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # 6n + 1 convolutions and the linear layer: every layer is a 3x3 conv
    assert all(m.kernel_size == (3, 3) for m in convs)
    assert {m.out_channels for m in convs} == {16, 32, 64}


def test_cifar_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(DlcliError, match="6n \\+ 2"):
        he_cifar_resnet(21)


def test_resnet18_cifar_is_kuangliu_s_11173962_parameter_net():
    model = resnet18_cifar()
    assert n_params(model) == 11_173_962  # kuangliu/pytorch-cifar ResNet18 (11.17 M)
    stem = model.stem[0]
    assert isinstance(stem, nn.Conv2d) and stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())  # no max pool: 32x32 stays 32x32
    x = torch.rand(2, 3, 32, 32)
    assert model.stages(model.stem(x)).shape == (2, 512, 4, 4)


def test_option_a_shortcut_subsamples_and_appends_zero_channels_by_hand():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    out = ShortcutA(2, 4, stride=2)(x)
    expected = torch.zeros(1, 4, 2, 2)
    expected[0, 0] = torch.tensor([[0.0, 2.0], [8.0, 10.0]])  # every second pixel of channel 0
    expected[0, 1] = torch.tensor([[16.0, 18.0], [24.0, 26.0]])  # ... and of channel 1; channels 2, 3 zero
    assert torch.equal(out, expected)


def test_a_downsampling_block_uses_option_a_and_has_no_shortcut_parameters():
    block = BasicBlock(16, 32, stride=2, shortcut="A")
    assert isinstance(block.shortcut, ShortcutA)
    assert n_params(block) == 9 * (16 * 32 + 32 * 32) + 2 * (32 + 32)  # two convolutions and two batch norms
    with torch.no_grad():  # silence the residual branch: the block is then relu(shortcut(x))
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    block.eval()
    x = torch.randn(2, 16, 8, 8)
    out = block(x)
    assert torch.equal(out[:, :16], torch.relu(x[:, :, ::2, ::2])) and torch.equal(out[:, 16:], torch.zeros(2, 16, 4, 4))


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet18-cifar", "alexnet-cifar"])
def test_cifar_models_give_finite_logits_for_a_batch(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_alexnet_cifar_has_alexnet_s_layer_types():
    model = alexnet_cifar()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 192, 384, 256, 256]  # the single-tower AlexNet's widths
    assert [m.kernel_size for m in convs[:2]] == [(5, 5), (5, 5)]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 3 and p.stride == 2 for p in pools)  # overlapping pooling
    lrn = [m for m in model.features if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrn) == 2 and (lrn[0].size, lrn[0].k, lrn[0].beta) == (5, 2.0, 0.75)
    assert lrn[0].alpha / lrn[0].size == pytest.approx(1e-4)  # the paper's alpha (torch divides by n)
    drops = [i for i, m in enumerate(model.classifier) if isinstance(m, nn.Dropout)]
    linears = [i for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]
    assert len(drops) == 2 and len(linears) == 3 and drops[0] < linears[0] and drops[1] < linears[1]
    assert n_params(model) == 7_706_442


def test_alexnet_cifar_18pct_is_cuda_convnet_s_net():
    model = alexnet_cifar(variant="18pct")
    # conv 5x5 3->32, 32->32, 32->64 (with biases), then one linear layer 64*4*4 -> 10
    assert n_params(model) == 25 * 3 * 32 + 32 + 25 * 32 * 32 + 32 + 25 * 32 * 64 + 64 + 1024 * 10 + 10 == 89_578
    kinds = [type(m).__name__ for m in model.features]
    assert kinds.count("MaxPool2d") == 1 and kinds.count("AvgPool2d") == 2 and kinds.count("LocalResponseNorm") == 2
    with pytest.raises(DlcliError, match="variant"):
        alexnet_cifar(variant="vgg")


# ------------------------------------------------------------------------------------------------ recipes


@pytest.mark.parametrize("name,bar", [("resnet20-cifar10", 0.9125), ("resnet56-cifar10", 0.9303),
                                      ("resnet18-cifar10", 0.94), ("alexnet-cifar10", 0.86)])
def test_cifar_recipes_declare_the_literature_s_bars(name, bar):
    r = load_recipe(name)
    assert r.data.source == "cifar10" and r.precision == "auto" and r.channels_last
    assert r.task_args["crop"] == 4 and r.task_args["flip"] is True
    assert check_expectation(bar, r.expect["test_accuracy"])
    assert not check_expectation(bar - 1e-4, r.expect["test_accuracy"])


def test_he_recipes_keep_the_paper_s_split_and_batch():
    for name in ("resnet20-cifar10", "resnet56-cifar10"):
        r = load_recipe(name)
        assert r.data.args["val_size"] == 5000 and r.batch_size == 128  # 45k/5k, batches of 128


# --------------------------------------------------------------------------------------------------- data


def make_cifar_like(root: Path, train_per_class: int = 12, test_per_class: int = 4, classes: int = 10) -> Path:
    """A CIFAR-10-shaped folder of generated 32x32 JPEGs, each class a different mean colour."""
    from torchvision.io import encode_jpeg, write_file

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            d = root / "cifar10-jpg" / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = torch.rand(3, 32, 32, generator=g) * 40
                img[c % 3] += 20 * (c // 3 + 1)
                write_file(str(d / f"{i:04d}.jpg"), encode_jpeg(img.clamp(0, 255).to(torch.uint8), quality=95))
    return root


def painted_class(x: torch.Tensor) -> torch.Tensor:
    """The class ``make_cifar_like`` painted each image (N, 3, 32, 32) with, read back from its colour alone:
    channel c % 3 lifted by 20 * (c // 3 + 1) over the others."""
    m = x.float().mean((2, 3))
    lift = m.max(1).values - m.median(1).values
    return 3 * ((lift / 20).round().long() - 1) + m.argmax(1)


@pytest.fixture
def mini_cifar(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DLCLI_CACHE", str(tmp_path / "cache"))
    return make_cifar_like(tmp_path / "data")


def test_cifar10_source_decodes_splits_and_caches(mini_cifar, tmp_path):
    b = load_data("cifar10", {"val_size": 20}, mini_cifar, seed=0)
    assert b.train.x.shape == (100, 3, 32, 32) and b.train.x.dtype == torch.uint8
    assert len(b.val) == 20 and len(b.test) == 40 and b.num_classes == 10 and b.class_names[0] == "c0"
    assert sorted(torch.bincount(torch.cat([b.train.y, b.val.y])).tolist()) == [12] * 10
    assert any("decoded" in n for n in b.extra["notes"])
    assert any("JPEG files, not the original pixels" in n for n in b.extra["notes"])  # the accuracies' caveat
    cached = list((tmp_path / "cache").glob("cifar10-*.pt"))
    assert len(cached) == 1  # written once, atomically (no temporary file left behind)
    again = load_data("cifar10", {"val_size": 20}, mini_cifar, seed=0)
    assert any("read from the cache" in n for n in again.extra["notes"])
    assert torch.equal(again.train.x, b.train.x) and torch.equal(again.test.y, b.test.y)
    for bundle in (b, again):  # every image carries its own label (checked on the colours the files were painted)
        for split in (bundle.train, bundle.val, bundle.test):
            assert torch.equal(painted_class(split.x), split.y)
    # the pixels are those of the JPEG files, decoded as torchvision decodes one file
    from torchvision.io import decode_jpeg, read_file
    first = sorted((mini_cifar / "cifar10-jpg" / "test" / "c0").glob("*.jpg"))[0]
    assert torch.equal(b.test.x[0], decode_jpeg(read_file(str(first))))


@pytest.mark.parametrize("val_size", [20, 0])
def test_cifar10_subsets_for_quick_runs(mini_cifar, tmp_path, val_size):
    """A quick run decodes only the files it uses, and gets the very images (and order) of the full decode."""
    b = load_data("cifar10", {"val_size": val_size, "train_size": 30, "test_size": 7, "cache": False}, mini_cifar,
                  seed=3)
    assert (len(b.train), len(b.val) if b.val else 0, len(b.test)) == (30, val_size, 7)
    assert any("decoded only the" in n and f"{30 + val_size + 7} files" in n for n in b.extra["notes"])
    full = load_data("cifar10", {"val_size": val_size, "cache": False}, mini_cifar, seed=3)  # all 160 files
    assert torch.equal(b.train.x, full.train.x[:30]) and torch.equal(b.train.y, full.train.y[:30])
    if val_size:
        assert torch.equal(b.val.x, full.val.x) and torch.equal(b.val.y, full.val.y)
    keep = torch.randperm(40, generator=torch.Generator().manual_seed(20_000 + 3))[:7]
    assert torch.equal(b.test.x, full.test.x[keep]) and torch.equal(b.test.y, full.test.y[keep])
    # a subset is never cached as CIFAR-10, also when the cache is on (the default)
    on = load_data("cifar10", {"val_size": val_size, "train_size": 30, "test_size": 7}, mini_cifar, seed=3)
    assert any("decoded only the" in n for n in on.extra["notes"]) and torch.equal(on.test.x, b.test.x)
    assert not list((tmp_path / "cache").glob("cifar10-*.pt"))
    with pytest.raises(UsageError, match="train_size must be in \\[1, 100\\]"):  # a recipe value: exit 2
        load_data("cifar10", {"val_size": 20, "train_size": 101, "cache": False}, mini_cifar, seed=0)


def test_missing_cifar_image_folders_name_the_expected_layout(tmp_path):
    with pytest.raises(DlcliError, match="cifar10-jpg/train/<class>/\\*.jpg") as e:
        load_data("cifar10", {"files": "images"}, tmp_path, seed=0)
    assert "\n" not in str(e.value)


def test_a_corrupt_cifar_jpeg_is_an_error_naming_the_file(mini_cifar):
    bad = mini_cifar / "cifar10-jpg" / "train" / "c3" / "0005.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    with pytest.raises(DlcliError, match="1 image\\(s\\) of .* cannot be decoded, e.g. .*c3/0005.jpg"):
        load_data("cifar10", {"cache": False}, mini_cifar, seed=0)
    bad.write_bytes(b"")
    with pytest.raises(DlcliError, match="1 empty image file"):
        load_data("cifar10", {"cache": False}, mini_cifar, seed=0)


# ------------------------------------------------------------------------------- tiny-budget recipe runs


@pytest.mark.parametrize("recipe", CIFAR_RECIPES)
def test_each_cifar_recipe_trains_one_tiny_epoch_end_to_end(cli, mini_cifar, tmp_path, recipe):
    run = tmp_path / "run"
    res = cli("train", recipe, "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--data-dir",
              str(mini_cifar), "--set", "data.args.val_size=20", "--set", "data.args.train_size=48", "--out",
              str(run), "--json")
    assert res.code == 0, res.err
    result = res.json()
    assert result["header"]["train_samples"] == 48 and result["header"]["steps_per_epoch"] == 3
    assert result["header"]["precision"] == "fp32" or torch.cuda.is_available()  # auto: no native bf16 here
    if load_recipe(recipe).compile == "auto":  # resnet56-cifar10: CUDA graphs on a GPU, nothing compiled here
        assert result["header"]["compile"] is False
        assert any(n.startswith("compile auto: off on cpu") for n in result["header"]["notes"])
    assert 0 <= result["final"]["test_accuracy"] <= 1 and {"best.pt", "last.pt"} <= {p.name for p in run.iterdir()}
    assert [e["met"] for e in result["expect"]] == [False]  # one epoch on 48 images does not reach the bar


def test_eval_and_deepfool_work_on_a_cifar_run(cli, mini_cifar, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "resnet20-cifar10", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--data-dir",
               str(mini_cifar), "--set", "data.args.val_size=20", "--out", str(run)).code == 0
    ev = cli("eval", str(run), "--data-dir", str(mini_cifar), "--json")
    assert ev.code == 0, ev.err
    metrics = ev.json()["metrics"]
    assert metrics["samples"] == 40 and "top5_accuracy" in metrics
    assert any("read from JPEG files, not the original pixels" in n for n in ev.json()["data_notes"])
    tta = cli("eval", str(run), "--data-dir", str(mini_cifar), "--tta", "flip", "--json")
    assert tta.code == 0, tta.err
    got = tta.json()["metrics"]
    assert got["tta"] == "flip" and got["accuracy_without_tta"] == metrics["accuracy"]
    # the flip-averaged accuracy recomputed with a plain loop, one image and its mirror at a time
    from dlcli.classifier import load_classifier
    from dlcli.runs import load_split

    clf = load_classifier(str(run / "best.pt"))
    x, y = load_split(clf.recipe, "test", str(mini_cifar))
    with torch.no_grad():
        mean = torch.cat([(clf.model(x[i:i + 1]) + clf.model(x[i:i + 1].flip(-1))) / 2 for i in range(len(x))])
    assert got["accuracy"] == int((mean.argmax(1) == y).sum()) / len(x)
    assert got["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(mean, y)), rel=1e-5)
    assert got["loss"] != pytest.approx(metrics["loss"], rel=1e-5)  # the mirror images did change the logits
    att = cli("attack", "deepfool", str(run), "--n", "12", "--data-dir", str(mini_cifar), "--json")
    assert att.code == 0, att.err
    out = att.json()  # one JSON object on stdout, nothing else
    assert out["recipe"] == "resnet20-cifar10" and out["images"] == 12
    assert out["attacked"] + out["misclassified"] == 12 and out["fooled"] <= out["attacked"]


# --------------------------------------------------------------------------------------------- real data


def real_cifar() -> Path | None:
    """``$DLCLI_DATA`` or ``../shared/data`` when it holds cifar10-jpg/ (as laid out for CI)."""
    import os

    for d in ([Path(os.environ["DLCLI_DATA"])] if os.environ.get("DLCLI_DATA") else []) + [
            Path(__file__).resolve().parents[2] / "shared" / "data"]:
        if (d / "cifar10-jpg" / "train").is_dir():
            return d.resolve()
    return None


@pytest.mark.slow
@pytest.mark.skipif(real_cifar() is None, reason="real CIFAR-10 (cifar10-jpg/) not found")
def test_resnet20_learns_real_cifar_in_two_short_epochs(cli, tmp_path, monkeypatch):
    # the full decoded cache when this machine has one; otherwise only the files used are decoded (no cache)
    monkeypatch.setenv("DLCLI_CACHE", str(Path.home() / ".cache" / "dlcli"))
    # 2 x 40 steps of 32 (the recipe's one-cycle squeezed into 80 steps: a gentler peak than its 0.2 per 128,
    # which 2 x 20 steps of 128 measured to diverge from), 1,000 validation and 1,000 test images
    res = cli("train", "resnet20-cifar10", "--epochs", "2", "--batch-size", "32", "--lr", "0.05", "--device", "cpu",
              "--data-dir", str(real_cifar()), "--set", "data.args.train_size=1280", "--set",
              "data.args.val_size=1000", "--set", "data.args.test_size=1000", "--out", str(tmp_path / "run"), "--json")
    assert res.code == 0, res.err
    final = res.json()["final"]
    assert final["test_accuracy"] >= 0.2  # chance is 10%
