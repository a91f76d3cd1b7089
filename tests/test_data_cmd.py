"""``dlcli data``: what it reports for the real data sets and torchvision's ImageNet weights (found, missing,
incomplete, damaged; which copy of CIFAR-10; which recipes use each), and ``--download`` (offline: one line;
online: the original CIFAR-10 and a weights file from a local server, through the real download code)."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from test_cifar import real_cifar
from test_cifar_original import _tarball, http_server, serving, write_original

import dlcli.data_cifar as dc
import dlcli.data_status
import dlcli.download


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """The torch hub cache (where the weights go) in the test's folder, empty."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def _rows(res) -> dict[str, dict]:
    assert res.code == 0, res.err
    return {r["name"]: r for r in res.json()["data_sets"]}


def test_the_shared_data_is_found_with_its_recipes(cli, data_dir):
    res = cli("data", "--data-dir", str(data_dir), "--json")
    rows = _rows(res)
    assert res.json()["data_root"] == str(data_dir) and res.json()["from"] == "--data-dir"
    assert rows["mnist"]["state"] == "found" and "the 4 IDX files" in rows["mnist"]["detail"]
    assert {"lenet", "lenet-modern", "sdae", "dbn"} <= set(rows["mnist"]["recipes"])
    assert "lenet" not in rows["fashion-mnist"]["recipes"] and "lenet-fashion" in rows["fashion-mnist"]["recipes"]
    if real_cifar() == data_dir:
        assert rows["cifar10"]["state"] == "found"
        assert "image folders, 50,000 + 10,000 images (not the original pixels" in rows["cifar10"]["detail"]
        assert set(rows["cifar10"]["recipes"]) == {"alexnet-cifar10", "resnet18-cifar10", "resnet20-cifar10",
                                                   "resnet56-cifar10"}
    table = cli("data", "mnist", "--data-dir", str(data_dir))
    assert table.code == 0 and "found" in table.out and "lenet-modern" in table.out and "cifar10" not in table.out


def test_missing_incomplete_and_damaged_files_are_told_apart(cli, tmp_path, data_dir):
    empty = cli("data", "--data-dir", str(tmp_path))
    assert empty.code == 0 and "dlcli data --download" in empty.out  # says how to get them
    assert {r["state"] for r in _rows(cli("data", "--data-dir", str(tmp_path), "--json")).values()} == {"missing"}
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(data_dir / "MNIST" / "raw" / name, raw / name)
    row = _rows(cli("data", "mnist", "--data-dir", str(tmp_path), "--json"))["mnist"]
    assert row["state"] == "incomplete" and row["detail"].endswith("missing t10k-images-idx3-ubyte")
    (raw / "t10k-images-idx3-ubyte").write_bytes((data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
                                                 .read_bytes()[:-784])  # one image short: a cut download
    row = _rows(cli("data", "mnist", "--data-dir", str(tmp_path), "--json"))["mnist"]
    assert row["state"] == "damaged" and "7,839,232 bytes, not 7,840,016" in row["detail"]


@pytest.mark.skipif(real_cifar() is None, reason="real CIFAR-10 (cifar10-jpg/) not found")
def test_the_original_cifar_batches_are_checked(cli, tmp_path, monkeypatch):
    folder = write_original(tmp_path, monkeypatch)
    row = _rows(cli("data", "cifar10", "--data-dir", str(tmp_path), "--json"))["cifar10"]
    assert row["state"] == "found" and "the original batches, each with its published MD5" in row["detail"]
    batch = folder / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")
    row = _rows(cli("data", "cifar10", "--data-dir", str(tmp_path), "--json"))["cifar10"]
    assert row["state"] == "damaged" and row["detail"].startswith(f"{batch} is not the original CIFAR-10 file (its MD5")


def test_unknown_names_and_offline_downloads_are_one_line(cli, tmp_path, monkeypatch):
    bad = cli("data", "imagenet")
    assert bad.code == 2 and ("unknown data set or weights 'imagenet'; expected one of: mnist, fashion-mnist, "
                              "cifar10, alexnet-imagenet, resnet18-imagenet, resnet50-imagenet") in bad.err
    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)
    res = cli("data", "mnist", "--download", "--data-dir", str(tmp_path))
    lines = [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("fetching")]
    assert res.code == 1 and len(lines) == 1 and lines[0].startswith("error: MNIST not found under")


@pytest.mark.skipif(real_cifar() is None, reason="real CIFAR-10 (cifar10-jpg/) not found")
def test_download_fetches_what_is_missing(cli, tmp_path, monkeypatch, data_dir):
    root = tmp_path / "data"
    shutil.copytree(data_dir / "MNIST", root / "MNIST")  # found: left alone
    shutil.copytree(data_dir / "FashionMNIST", root / "FashionMNIST")
    with serving(_tarball(tmp_path, monkeypatch), monkeypatch):
        res = cli("data", "mnist", "fashion-mnist", "cifar10", "--download", "--data-dir", str(root), "--json")
    rows = _rows(res)
    assert res.json()["fetched"] == ["cifar10"]
    assert rows["cifar10"]["state"] == "found" and "original batches" in rows["cifar10"]["detail"]
    assert (root / dc.ORIGINAL_FOLDER / "data_batch_5").is_file() and not (root / "MNIST" / "raw" / "MNIST").exists()


def test_imagenet_weights_are_found_fetched_and_checked(cli, tmp_path, monkeypatch, empty_hub):
    row = _rows(cli("data", "alexnet-imagenet", "--json"))["alexnet-imagenet"]
    assert row["state"] == "missing" and row["detail"] == (
        f"not in the torch hub cache: {empty_hub / 'alexnet-owt-7be5be79.pth'} "
        "(from https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)")
    assert row["recipes"] == ["alexnet-imagefolder (pretrained)"]
    probe = dlcli.download.any_reachable
    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)
    off = cli("data", "alexnet-imagenet", "--download")
    assert off.code == 1 and off.err.strip().splitlines()[-1] == (
        f"error: alexnet-imagenet not found at {empty_hub / 'alexnet-owt-7be5be79.pth'} and no network: none of "
        f"its download servers answered; place alexnet-owt-7be5be79.pth (from https://download.pytorch.org/models/"
        f"alexnet-owt-7be5be79.pth) in {empty_hub}/ (TORCH_HOME moves it)")
    monkeypatch.setattr(dlcli.download, "any_reachable", probe)
    served = tmp_path / "served"
    served.mkdir()
    payload = b"stand-in for a state dict" * 1000
    name = f"alexnet-owt-{hashlib.sha256(payload).hexdigest()[:8]}.pth"  # torch.hub's name: its hash prefix
    (served / name).write_bytes(payload)
    (served / "alexnet-owt-00000000.pth").write_bytes(payload)  # a file that is not what its name promises
    with http_server(served, monkeypatch) as base:
        monkeypatch.setattr(dlcli.data_status, "weights_url", lambda n: f"{base}/alexnet-owt-00000000.pth")
        bad = cli("data", "alexnet-imagenet", "--download")
        assert bad.code == 1 and (f"the download failed: not the published file (its SHA-256 is "
                                  f"{hashlib.sha256(payload).hexdigest()[:8]}, expected 00000000)") in bad.err
        assert "downloaded" not in bad.err  # the bar's closing line is for a file that arrived whole
        assert [p.name for p in empty_hub.iterdir()] == [".download.lock"]  # nothing half-written left behind
        monkeypatch.setattr(dlcli.data_status, "weights_url", lambda n: f"{base}/{name}")
        res = cli("data", "alexnet-imagenet", "--download", "--json")
    row = _rows(res)["alexnet-imagenet"]
    assert res.json()["fetched"] == ["alexnet-imagenet"] and row["state"] == "found"
    assert (empty_hub / name).read_bytes() == payload
    assert sorted(p.name for p in empty_hub.iterdir()) == [".download.lock", name]  # nothing half-written left
    (empty_hub / name).write_bytes(payload[:-5])  # a cut download
    row = _rows(cli("data", "alexnet-imagenet", "--json"))["alexnet-imagenet"]
    assert row["state"] == "damaged" and "SHA-256 does not start with" in row["detail"]


def test_the_weights_urls_are_torchvision_s():
    import torchvision.models as tvm

    enums = {"alexnet-imagenet": tvm.AlexNet_Weights, "resnet18-imagenet": tvm.ResNet18_Weights,
             "resnet50-imagenet": tvm.ResNet50_Weights}
    assert {n: url for n, (_, url) in dlcli.data_status.WEIGHTS.items()} == \
        {n: e.IMAGENET1K_V1.url for n, e in enums.items()}


@pytest.mark.skipif(real_cifar() is None, reason="real CIFAR-10 (cifar10-jpg/) not found")
def test_cifar_copies_their_states_and_fetching_the_original_beside_the_jpegs(cli, tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "cifar10-jpg" / "train").mkdir(parents=True)
    (root / "cifar10-jpg" / "test").mkdir()
    row = _rows(cli("data", "cifar10", "--data-dir", str(root), "--json"))["cifar10"]
    assert (row["state"], row["copy"]) == ("incomplete", "images") and "0 + 0 images" in row["detail"]
    shutil.rmtree(root / "cifar10-jpg")
    (root / "cifar10-jpg").symlink_to(real_cifar() / "cifar10-jpg")
    row = _rows(cli("data", "cifar10", "--data-dir", str(root), "--json"))["cifar10"]
    assert (row["state"], row["copy"]) == ("found", "images")
    # not named (`dlcli data --download`), found image folders are left alone: only what is missing is fetched
    with monkeypatch.context() as m:
        m.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)  # the others fail at once
        every = cli("data", "--download", "--data-dir", str(root))
    tried = [ln.split()[1] for ln in every.err.splitlines() if ln.startswith("fetching ")]
    assert every.code == 1 and tried == ["mnist", "fashion-mnist", "alexnet-imagenet", "resnet18-imagenet",
                                            "resnet50-imagenet"], every.err
    # named, the download fetches the original even though the JPEG copy is there; then runs read the original
    with serving(_tarball(tmp_path, monkeypatch), monkeypatch):
        res = cli("data", "cifar10", "--download", "--data-dir", str(root), "--json")
    row = _rows(res)["cifar10"]
    assert res.json()["fetched"] == ["cifar10"] and (row["state"], row["copy"]) == ("found", "original")
    shutil.rmtree(root / dc.ORIGINAL_FOLDER)
    (root / "cifar10-jpg").unlink()
    row = _rows(cli("data", "cifar10", "--data-dir", str(root), "--json"))["cifar10"]
    assert (row["state"], row["copy"]) == ("found", "tarball")  # extracted at first use
    (root / dc.TARBALL).write_bytes((root / dc.TARBALL).read_bytes()[:-100])
    row = _rows(cli("data", "cifar10", "--data-dir", str(root), "--json"))["cifar10"]
    assert row["state"] == "damaged" and "is not the original CIFAR-10 tarball" in row["detail"]


def test_one_failed_download_does_not_stop_the_others(cli, monkeypatch):
    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)
    res = cli("data", "alexnet-imagenet", "resnet18-imagenet", "--download")
    assert res.code == 1 and res.err.count("fetching") == 2  # both tried
    last = res.err.strip().splitlines()[-1]
    assert last.startswith("error: alexnet-imagenet not found at") and last.endswith("(and 1 more: see --json)")
    assert "missing" in res.out  # the table of what is there still comes


def test_a_damaged_weights_file_is_called_damaged_when_it_cannot_be_replaced(cli, monkeypatch, empty_hub):
    empty_hub.mkdir(parents=True)
    (empty_hub / "resnet18-f37072fd.pth").write_bytes(b"cut short")
    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)
    res = cli("data", "resnet18-imagenet", "--download")
    assert res.code == 1 and f"error: resnet18-imagenet is damaged at {empty_hub / 'resnet18-f37072fd.pth'} and no " \
                              "network" in res.err


@pytest.mark.skipif(real_cifar() is None, reason="real CIFAR-10 (cifar10-jpg/) not found")
def test_empty_image_files_and_a_damaged_tarball_beside_damaged_batches_are_told(cli, tmp_path, monkeypatch):
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / "cifar10-jpg" / split / "cat").mkdir(parents=True)
        shutil.copy(real_cifar() / "cifar10-jpg" / split / "cat" / "0000.jpg", root / "cifar10-jpg" / split / "cat")
    (root / "cifar10-jpg" / "test" / "cat" / "0001.jpg").write_bytes(b"")
    row = _rows(cli("data", "cifar10", "--data-dir", str(root), "--json"))["cifar10"]
    assert row["state"] == "damaged" and row["detail"].startswith("1 empty image file(s)")
    folder = write_original(root, monkeypatch)
    (root / dc.TARBALL).write_bytes(b"not a tarball")
    (folder / "test_batch").unlink()
    row = _rows(cli("data", "cifar10", "--data-dir", str(root), "--json"))["cifar10"]
    assert row["state"] == "incomplete" and "test_batch is missing" in row["detail"]
    assert "is not the original CIFAR-10 tarball" in row["detail"]  # so extracting it again would not help
