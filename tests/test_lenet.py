"""LeNet-5 on MNIST: the model as in the paper, its recipes, a short real training run, and the data errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dlcli.config import check_expectation, load_recipe, parse_expectation
from dlcli.errors import DlcliError, UsageError
from dlcli.models.lenet import lenet5
from dlcli.runtime import Runtime

# ------------------------------------------------------------------------------------------------ model


@pytest.mark.parametrize("variant", ["classic", "modern"])
def test_lenet5_has_the_papers_shapes_and_61706_parameters(variant):
    model = lenet5(variant=variant)
    assert sum(p.numel() for p in model.parameters()) == 61_706  # LeCun 1998 with full C3 connections
    x = torch.rand(3, 1, 28, 28)
    c1 = model.features[0](x)
    assert c1.shape == (3, 6, 28, 28)  # 28x28 padded to the paper's 32x32 field, then a 5x5 convolution
    assert model.features(x).shape == (3, 16, 5, 5)  # S4
    logits = model(x)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()


def test_classic_is_tanh_with_average_pooling_and_modern_is_relu_with_max_pooling():
    kinds = {v: {type(m) for m in lenet5(variant=v).modules()} for v in ("classic", "modern")}
    assert {nn.Tanh, nn.AvgPool2d} <= kinds["classic"] and not {nn.ReLU, nn.MaxPool2d} & kinds["classic"]
    assert {nn.ReLU, nn.MaxPool2d} <= kinds["modern"] and not {nn.Tanh, nn.AvgPool2d} & kinds["modern"]


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="classic, modern"):
        lenet5(variant="lecun89")


# ---------------------------------------------------------------------------------------------- recipes


def test_lenet_recipes_declare_honest_expectations():
    lenet, fashion = load_recipe("lenet"), load_recipe("lenet-fashion")
    assert lenet.data.source == "mnist" and fashion.data.source == "fashion-mnist"
    assert lenet.model == fashion.model  # the same LeNet-5 on both data sets
    # the bar: 99.0% on MNIST (LeCun 1998: 99.05%); Fashion-MNIST is harder, its bar must be lower
    assert check_expectation(0.990, lenet.expect["test_accuracy"])
    assert not check_expectation(0.9899, lenet.expect["test_accuracy"])
    # Fashion-MNIST is harder: its bar is the 90.0% the README states, inside the 89-91% that LeNet-5 is
    # typically reported at there and below the recipe's measured 90.99% (seed 0)
    assert parse_expectation(fashion.expect["test_accuracy"]) == (">=", 0.90)
    assert check_expectation(0.9099, fashion.expect["test_accuracy"])


def test_lenet_modern_differs_from_lenet_only_in_the_variant():
    lenet, modern = load_recipe("lenet"), load_recipe("lenet-modern")
    assert modern.model.args == {**lenet.model.args, "variant": "modern"} and lenet.model.args["variant"] == "classic"
    assert (modern.data, modern.optim, modern.schedule, modern.epochs, modern.task_args, modern.expect) == (
        lenet.data, lenet.optim, lenet.schedule, lenet.epochs, lenet.task_args, lenet.expect)


# ----------------------------------------------------------------------------------------------- runtime


def test_precision_is_validated_against_the_device():
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        Runtime.create("cpu", "fp16")
    with pytest.raises(UsageError, match="expected one of"):
        Runtime.create("cpu", "fp8")
    # bf16 autocast on the CPU: a linear layer computes in bfloat16; fp32 leaves it in float32
    layer, x = nn.Linear(4, 3), torch.randn(2, 4)
    with Runtime.create("cpu", "bf16").autocast():
        assert layer(x).dtype == torch.bfloat16
    with Runtime.create("cpu", "fp32").autocast():
        assert layer(x).dtype == torch.float32


def test_compile_keeps_the_uncompiled_model_for_saving():
    runtime = Runtime.create("cpu", compile=True)
    assert any("compile" in n for n in runtime.notes)  # the long first step is stated, not a surprise
    model, raw = runtime.prepare(lenet5())
    assert model is not raw and isinstance(raw, nn.Module)
    assert not any(k.startswith("_orig_mod") for k in raw.state_dict())  # loads into a plain lenet5


def test_channels_last_on_the_cpu_gives_the_same_logits():
    torch.manual_seed(0)
    net, x = lenet5(), torch.rand(8, 1, 28, 28)
    expected = net(x)
    rt = Runtime.create("cpu", channels_last=True)
    model, _ = rt.prepare(net)
    assert torch.allclose(model(rt.to_input(x)), expected, atol=1e-5)
    # and it did run channels_last (C3's 16x6x5x5 weight and a 3-channel input: 1-channel tensors are both layouts)
    assert model.features[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not lenet5().features[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert rt.to_input(torch.rand(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------- real MNIST


def test_a_few_hundred_steps_pass_90_percent_on_real_mnist(cli, data_dir, tmp_path):
    run = tmp_path / "run"
    # 2 x 125 steps of 64 images with the real lenet recipe (classic LeNet-5, its optimiser, schedule and
    # augmentation) on an 8,000-image subset of the training split; the full test split is scored.
    res = cli("train", "lenet", "--epochs", "2", "--batch-size", "64", "--set", "data.args.train_size=8000",
              "--set", "data.args.val_size=1000", "--device", "cpu", "--out", str(run), "--data-dir",
              str(data_dir), "--json")
    assert res.code == 0, res.err
    result = res.json()
    assert result["header"]["steps_per_epoch"] == 125 and result["header"]["parameters"] == 61_706
    assert result["header"]["test_samples"] == 10_000
    assert result["final"]["test_accuracy"] >= 0.90
    assert {"best.pt", "last.pt", "metrics.jsonl", "summary.json", "curves.png", "config.yaml"} <= {
        p.name for p in run.iterdir()}
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    # best.pt is the epoch with the highest validation accuracy (never chosen on the test split)
    best = result["final"]["best_epoch"]
    assert history[best - 1]["val_accuracy"] == max(h["val_accuracy"] for h in history)
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == best


def test_train_size_takes_a_subset_of_the_training_split(data_dir):
    from dlcli.data import load_data

    full = load_data("mnist", {"val_size": 5000}, data_dir, seed=0)
    part = load_data("mnist", {"val_size": 5000, "train_size": 1000}, data_dir, seed=0)
    assert len(full.train) == 55_000 and len(part.train) == 1000 and len(part.test) == 10_000
    assert torch.equal(part.train.x, full.train.x[:1000]) and torch.equal(part.val.x, full.val.x)
    with pytest.raises(UsageError, match="train_size"):  # a recipe value the user fixes: exit 2, not 1
        load_data("mnist", {"val_size": 5000, "train_size": 55_001}, data_dir, seed=0)


def test_the_idx_reader_gives_torchvisions_tensors_and_class_names(data_dir):
    # dlcli reads the four IDX files itself (torchvision takes seconds to import); torchvision is the reference
    import torchvision.datasets

    from dlcli.data import IDX_CLASSES, _idx_split

    for name in ("MNIST", "FashionMNIST"):
        if not (data_dir / name / "raw" / "t10k-images-idx3-ubyte").is_file():
            continue
        ref = getattr(torchvision.datasets, name)(root=str(data_dir), train=False, download=False)
        x, y = _idx_split(name, name, data_dir, train=False)
        assert x.dtype == torch.uint8 and torch.equal(x, ref.data) and torch.equal(y, ref.targets.long())
        assert IDX_CLASSES[name] == [c.split(" - ")[-1] for c in ref.classes]


def test_not_in_memory_the_loader_serves_the_same_training_images(data_dir):
    """``in_memory: false`` reads the training images one by one through torchvision's MNIST (its own IDX reader
    and PIL), in the same seeded order as the in-memory split that dlcli's reader gives."""
    from dlcli.data import load_data

    args = {"val_size": 5000, "train_size": 300}
    held, streamed = load_data("mnist", args, data_dir, seed=3), load_data("mnist", {**args, "in_memory": False},
                                                                            data_dir, seed=3)
    assert len(streamed.train_dataset) == 300
    for i in (0, 1, 299):
        image, label = streamed.train_dataset[i]
        assert torch.equal(image, held.train.x[i]) and label == int(held.train.y[i])


@pytest.mark.parametrize("damage, message", [
    ("truncate", "has 1,000 bytes where its header promises 47,040,016 (truncated or corrupt)"),
    ("foreign", "is not an IDX file of unsigned bytes"),
    ("mismatch", "do not belong together ((60000, 28, 28) images, (10000,) labels)"),
])
def test_a_damaged_idx_file_is_one_clear_line(cli, data_dir, tmp_path, damage, message):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_dir / "MNIST" / "raw").iterdir():
        (raw / f.name).symlink_to(f)
    if damage == "truncate":
        (raw / "train-images-idx3-ubyte").unlink()
        with open(data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte", "rb") as f:
            (raw / "train-images-idx3-ubyte").write_bytes(f.read(1000))
    elif damage == "foreign":  # e.g. the gzip file saved under the extracted name
        (raw / "train-labels-idx1-ubyte").unlink()
        (raw / "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8b\x08\x08" + bytes(100))
    else:
        (raw / "train-labels-idx1-ubyte").unlink()
        (raw / "train-labels-idx1-ubyte").symlink_to(data_dir / "MNIST/raw/t10k-labels-idx1-ubyte")
    res = cli("train", "lenet", "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--out", str(tmp_path / "run"))
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert res.code == 1 and len(lines) == 1 and message in lines[0], res.err
    assert not (tmp_path / "run").exists()


def test_missing_mnist_offline_is_one_clear_sentence(cli, tmp_path, monkeypatch):
    """A network whose MNIST mirrors do not serve the files (a local server answering 404): every mirror is
    tried, and the error is one line naming the folder and the four files to put there."""
    import torchvision.datasets
    from test_cifar_original import http_server

    (tmp_path / "served").mkdir()
    with http_server(tmp_path / "served", monkeypatch) as base:
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"{base}/first/", f"{base}/second/"])
        res = cli("train", "lenet", "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--out",
                  str(tmp_path / "run"))
    err = res.err
    assert res.code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: MNIST not found under")
    assert (f"the download failed: train-images-idx3-ubyte.gz from {base}/first/: HTTP Error 404: File not found; "
            f"{base}/second/: HTTP Error 404: File not found; put the files") in err  # every mirror, each once
    assert str(tmp_path / "data" / "MNIST" / "raw") in err
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in err
    assert not (tmp_path / "run").exists()  # no half-made run folder
    assert [p.name for p in (tmp_path / "data").rglob("*") if p.is_file()] == [".download.lock"]  # nothing half-written


def test_without_a_network_no_download_is_attempted(tmp_path, monkeypatch):
    import dlcli.data
    import dlcli.download

    def must_not_download(*args, **kwargs):
        raise AssertionError("download attempted although no server answered")

    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)
    monkeypatch.setattr(dlcli.download, "stream", must_not_download)
    with pytest.raises(DlcliError, match=r"FashionMNIST not found .* no network.*FashionMNIST[/\\]raw"):
        dlcli.data.load_data("fashion-mnist", {}, tmp_path, seed=0)


def test_unreachable_server_probe_gives_up_quickly(monkeypatch):
    import time
    import urllib.request

    from dlcli.download import any_reachable

    monkeypatch.setattr(urllib.request, "getproxies", lambda: {})  # direct connections only
    t0 = time.perf_counter()
    # a reserved TEST-NET-1 address (RFC 5737): never answers, so the probe must hit its own timeout
    assert any_reachable(["http://192.0.2.1:9/"], timeout=0.5) is False
    assert time.perf_counter() - t0 < 3.0
    assert any_reachable([]) is True  # nothing to probe: let torchvision try
    monkeypatch.setattr(urllib.request, "getproxies", lambda: {"no": "localhost,127.0.0.1"})
    assert any_reachable(["http://192.0.2.1:9/"], timeout=0.5) is False  # no_proxy alone configures no proxy
    monkeypatch.setattr(urllib.request, "getproxies", lambda: {"https": "http://proxy:3128"})
    assert any_reachable(["http://192.0.2.1:9/"], timeout=0.5) is True  # the proxy may well get through


def test_download_error_is_not_swallowed_for_urllib(tmp_path, monkeypatch):
    """urllib's own error (a refused connection) reaches the line, after the probe said a server answers."""
    import torchvision.datasets

    import dlcli.data
    import dlcli.download

    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: True)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:1/"])  # nothing listens there
    with pytest.raises(DlcliError, match=r"download failed: train-images-idx3-ubyte.gz from http://127.0.0.1:1/: "
                                         r"<urlopen error"):
        dlcli.data.load_data("mnist", {}, tmp_path, seed=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_auto_trains_with_cuda_graphs_on_a_gpu(cli, data_dir, tmp_path):
    """``compile: auto`` on one CUDA GPU is reduce-overhead: the step and the evaluation replay CUDA graphs (the
    classifier copies each replayed batch's logits), the header says so, and the checkpoint holds the plain
    model, which ``dlcli eval`` scores the same without compiling."""
    run = tmp_path / "run"
    res = cli("train", "lenet", "--epochs", "1", "--device", "cuda", "--precision", "fp32", "--set",
              "compile=auto", "--set", "data.args.train_size=8192", "--data-dir", str(data_dir), "--out", str(run),
              "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert out["header"]["compile"] == "reduce-overhead"
    assert any(n.startswith("compile auto: reduce-overhead") for n in out["header"]["notes"])
    acc = out["final"]["test_accuracy"]
    assert 0.5 < acc <= 1  # 8,192 images, one epoch: well above chance (10%)
    ev = cli("eval", str(run), "--device", "cuda", "--data-dir", str(data_dir), "--json")
    assert ev.code == 0, ev.err
    assert abs(ev.json()["metrics"]["accuracy"] - acc) < 2e-3  # the uncompiled model, same test split

