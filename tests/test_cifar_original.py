"""CIFAR-10 from the original python batches (``cifar-10-batches-py/``, what torchvision downloads), beside the
image folders: reading them, choosing between the copies, refusing damaged or doctored files, the download and
the offline message.

The original files are not on these machines, so the tests write small batches in the original's format
(a Python-2-style pickle of a dict with a uint8 array (N, 3072) and a list of labels) from real CIFAR-10
images: the JPEG copy's pixels, decoded by torchvision, which the reader's output is checked against.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import pickle
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy
import pytest
import torch
from test_cifar import real_cifar

import dlcli.data_cifar as dc
import dlcli.download
from dlcli.data import load_data
from dlcli.errors import DlcliError, UsageError

pytestmark = pytest.mark.skipif(real_cifar() is None, reason="real CIFAR-10 (cifar10-jpg/) not found")
PER_BATCH, TEST = 4, 10  # images per training batch file (5 files) and in test_batch


def _jpegs(split: str, n: int) -> list[tuple[Path, int]]:
    """``n`` real CIFAR-10 JPEGs of ``split``, classes in turn (class c's i-th file for image c + 10 i)."""
    root = real_cifar() / "cifar10-jpg" / split
    classes = sorted(p.name for p in root.iterdir())
    return [(root / classes[k % 10] / f"{k // 10:04d}.jpg", k % 10) for k in range(n)]


def _decode(files: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.io import decode_jpeg, read_file

    return (torch.stack([decode_jpeg(read_file(str(p))) for p, _ in files]),
            torch.tensor([label for _, label in files]))


def _write_batch(path: Path, files: list[tuple[Path, int]]) -> None:
    x, y = _decode(files)
    rows = x.reshape(len(x), 3 * 32 * 32).numpy()  # the original's row: 1024 red, 1024 green, 1024 blue values
    entry = {"batch_label": path.name, "labels": y.tolist(), "data": rows, "filenames": [p.name for p, _ in files]}
    path.write_bytes(pickle.dumps(entry, protocol=2))


def write_original(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small ``root/cifar-10-batches-py`` in the original's format, its MD5s made the expected ones."""
    folder = root / dc.ORIGINAL_FOLDER
    folder.mkdir(parents=True)
    train = _jpegs("train", 5 * PER_BATCH)
    for i, name in enumerate(dc.TRAIN_BATCHES):
        _write_batch(folder / name, train[i * PER_BATCH:(i + 1) * PER_BATCH])
    _write_batch(folder / "test_batch", _jpegs("test", TEST))
    names = sorted(p.name for p in (real_cifar() / "cifar10-jpg" / "train").iterdir())
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2))
    monkeypatch.setattr(dc, "ORIGINAL_MD5", {name: hashlib.md5((folder / name).read_bytes()).hexdigest()
                                             for name in dc.ORIGINAL_MD5})
    return folder


def test_the_published_md5s_are_torchvision_s():
    from torchvision.datasets import CIFAR10

    listed = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    assert dc.ORIGINAL_MD5 == {**listed, CIFAR10.meta["filename"]: CIFAR10.meta["md5"]}
    assert (dc.TARBALL, dc.TARBALL_URL, dc.TARBALL_MD5) == (CIFAR10.filename, CIFAR10.url, CIFAR10.tgz_md5)
    assert dc.ORIGINAL_FOLDER == CIFAR10.base_folder


def test_the_original_batches_give_the_images_they_hold(tmp_path, monkeypatch):
    write_original(tmp_path, monkeypatch)
    b = load_data("cifar10", {"val_size": 0}, tmp_path, seed=0)
    x, y = _decode(_jpegs("train", 5 * PER_BATCH))  # the files' order: batch 1's images first
    assert b.train.x.dtype == torch.uint8 and torch.equal(b.train.x, x) and torch.equal(b.train.y, y)
    xt, yt = _decode(_jpegs("test", TEST))
    assert torch.equal(b.test.x, xt) and torch.equal(b.test.y, yt)
    assert b.class_names[:3] == ["airplane", "automobile", "bird"] and b.num_classes == 10
    notes = b.extra["notes"]
    assert any("read from the original batches" in n for n in notes)
    assert not any("JPEG" in n for n in notes)  # the caveat of the JPEG copy does not apply
    held = load_data("cifar10", {"val_size": 5, "test_size": 3}, tmp_path, seed=1)
    assert (len(held.train), len(held.val), len(held.test)) == (15, 5, 3)
    together = torch.cat([held.train.x, held.val.x])  # the hold-out is a permutation of the same 20 images
    assert sorted(map(bytes, together.flatten(1).numpy())) == sorted(map(bytes, x.flatten(1).numpy()))


def test_auto_prefers_the_original_and_files_images_picks_the_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("DLCLI_CACHE", str(tmp_path / "cache"))
    write_original(tmp_path, monkeypatch)
    (tmp_path / "cifar10-jpg").symlink_to(real_cifar() / "cifar10-jpg")  # both copies side by side
    auto = load_data("cifar10", {"val_size": 0}, tmp_path, seed=0)
    assert len(auto.train) == 5 * PER_BATCH and any("original batches" in n for n in auto.extra["notes"])
    jpeg = load_data("cifar10", {"val_size": 0, "files": "images", "train_size": 7, "test_size": 2,
                                 "cache": False}, tmp_path, seed=0)
    assert len(jpeg.train) == 7 and any("JPEG files, not the original pixels" in n for n in jpeg.extra["notes"])
    with pytest.raises(UsageError, match="data.args.files must be one of auto, original, images, got 'jpeg'"):
        load_data("cifar10", {"files": "jpeg"}, tmp_path, seed=0)


def test_damaged_or_doctored_batches_are_refused(tmp_path, monkeypatch):
    folder = write_original(tmp_path, monkeypatch)
    good = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(DlcliError, match="data_batch_3 is not the original CIFAR-10 file \\(its MD5") as e:
        load_data("cifar10", {}, tmp_path, seed=0)
    assert "\n" not in str(e.value)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DlcliError, match="data_batch_3 is missing"):
        load_data("cifar10", {}, tmp_path, seed=0)

    class Payload:  # what a doctored file would do when unpickled: run a command
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Payload(), "labels": []}, protocol=2))
    monkeypatch.setitem(dc.ORIGINAL_MD5, "data_batch_3", hashlib.md5((folder / "data_batch_3").read_bytes()).hexdigest())
    with pytest.raises(DlcliError, match="data_batch_3 cannot be read as a CIFAR-10 batch \\(it names .*system"):
        load_data("cifar10", {}, tmp_path, seed=0)
    assert not (tmp_path / "ran").exists()
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": numpy.zeros((4, 100), numpy.uint8), "labels": [0] * 4}))
    monkeypatch.setitem(dc.ORIGINAL_MD5, "data_batch_3", hashlib.md5((folder / "data_batch_3").read_bytes()).hexdigest())
    with pytest.raises(DlcliError, match="does not hold 32x32 colour images"):
        load_data("cifar10", {}, tmp_path, seed=0)


def test_nothing_there_and_offline_is_one_sentence_naming_both_copies(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def must_not_download(*args, **kwargs):
        raise AssertionError("download attempted although no server answered")

    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)
    monkeypatch.setattr(CIFAR10, "download", must_not_download)
    monkeypatch.setattr(dc, "stream", must_not_download)  # dlcli's own download (CIFAR10.download is never used)
    with pytest.raises(DlcliError) as e:
        load_data("cifar10", {}, tmp_path, seed=0)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"CIFAR-10 not found under {tmp_path} and no network")
    assert "cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)" in msg
    assert f"cifar-10-batches-py/ folder it holds in {tmp_path}" in msg
    assert f"{tmp_path}/cifar10-jpg/{{train,test}}/<class>/*.jpg" in msg
    with pytest.raises(DlcliError, match="image folders .*cifar10-jpg/train/<class>/\\*.jpg .*files: images"):
        load_data("cifar10", {"files": "images"}, tmp_path, seed=0)


def _tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The small original packed as the author's tarball (in its own folder), its MD5 made the expected one."""
    src = tmp_path / "src"
    write_original(src, monkeypatch)
    served = tmp_path / "served"
    served.mkdir()
    tar = served / dc.TARBALL
    with tarfile.open(tar, "w:gz") as t:
        t.add(src / dc.ORIGINAL_FOLDER, arcname=dc.ORIGINAL_FOLDER)
    monkeypatch.setattr(dc, "TARBALL_MD5", hashlib.md5(tar.read_bytes()).hexdigest())
    return tar


def test_a_placed_tarball_is_extracted_without_a_network(tmp_path, monkeypatch):
    tar = _tarball(tmp_path, monkeypatch)
    root = tmp_path / "data"
    root.mkdir()
    (root / dc.TARBALL).write_bytes(tar.read_bytes())
    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)
    b = load_data("cifar10", {"val_size": 0}, root, seed=0)
    assert len(b.train) == 5 * PER_BATCH and (root / dc.ORIGINAL_FOLDER / "test_batch").is_file()
    assert any("extracted from" in n for n in b.extra["notes"])
    import shutil

    shutil.rmtree(root / dc.ORIGINAL_FOLDER)
    (root / dc.TARBALL).write_bytes(tar.read_bytes()[:-10])  # a cut download
    with pytest.raises(DlcliError, match="is not the original CIFAR-10 tarball"):
        load_data("cifar10", {}, root, seed=0)


@contextlib.contextmanager
def http_server(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local HTTP server of ``folder``'s files while in the block (no proxy in the way); yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(folder), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@contextlib.contextmanager
def serving(tar: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """dlcli downloads ``tar`` as CIFAR-10's tarball from a local HTTP server while in the block."""
    with http_server(tar.parent, monkeypatch) as base:
        monkeypatch.setattr(dc, "TARBALL_URL", f"{base}/{tar.name}")
        yield


def test_the_original_is_downloaded_when_missing(cli, tmp_path, monkeypatch):
    """The real download path: dlcli fetches the tarball over HTTP (here from a local server), checks and
    extracts it, and a run trains on it; stdout stays one JSON document (the download's lines go to stderr)."""
    root = tmp_path / "data"
    with serving(_tarball(tmp_path, monkeypatch), monkeypatch):
        res = cli("train", "resnet20-cifar10", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                  "--data-dir", str(root), "--set", "data.args.val_size=4", "--out", str(tmp_path / "run"), "--json")
    assert res.code == 0, res.err
    assert f"downloading {dc.TARBALL} (" in res.err and f"downloaded {dc.TARBALL}: " in res.err
    header = res.json()["header"]  # stdout held the JSON document and nothing else
    assert header["train_samples"] == 5 * PER_BATCH - 4
    assert any(n.startswith(f"CIFAR-10 downloaded into {root / dc.TARBALL}") and "extracted" in n for n in header["notes"])
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [".cifar-10.lock"]  # no temporary left
    assert (root / dc.TARBALL).is_file() and (root / dc.ORIGINAL_FOLDER / "batches.meta").is_file()
    ev = cli("eval", str(tmp_path / "run"), "--data-dir", str(root))  # the table, and which files it scored
    assert ev.code == 0, ev.err
    assert f"note: CIFAR-10 read from the original batches in {root / dc.ORIGINAL_FOLDER}" in ev.err


def test_bench_real_input_reads_the_original_batches(tmp_path, monkeypatch):
    from dlcli.bench.workload import RealData

    write_original(tmp_path, monkeypatch)
    real = RealData.open((3, 32, 32), str(tmp_path), seed=0)
    x, y = _decode(_jpegs("train", 5 * PER_BATCH))
    assert real.name == "CIFAR-10" and len(real.dataset) == 5 * PER_BATCH
    img, label = real.dataset[6]
    assert torch.equal(img, x[6]) and label == int(y[6])
    big, _ = RealData.open((3, 48, 40), str(tmp_path), seed=0).dataset[0]
    assert big.shape == (3, 48, 40) and big.dtype == torch.uint8


class _Call:
    """Pickles as ``f(*args)``, then ``__setstate__(state)`` when a state is given: how a doctored file is made."""

    def __init__(self, f, args, state=None):
        self.f, self.args, self.state = f, args, state

    def __reduce__(self):
        return (self.f, self.args) if self.state is None else (self.f, self.args, self.state)


def test_forged_arrays_are_refused_before_numpy_sees_them():
    """numpy.ndarray called with an object dtype over a buffer, such an array passed where a shape goes, or an
    object array's state: with numpy behind the pickle's globals each makes numpy treat the file's bytes as
    object pointers (a crash, or worse). Here the first two are refused while unpickling, the third stays
    inert data that gives no pixels; a plain uint8 array still loads."""
    import numpy as np
    from numpy._core.multiarray import _reconstruct

    def batch(data) -> bytes:
        return pickle.dumps({"data": data, "labels": [0]}, protocol=2)

    forged = _Call(np.ndarray, ((2,), "O", b"A" * 16))
    for what, obj in (("ndarray(object, buffer)", forged),
                      ("forged array as shape", _Call(_reconstruct, (np.ndarray, forged, b"b")))):
        with pytest.raises(DlcliError, match="cannot be read as a CIFAR-10 batch \\(an array that is not a plain"):
            dc._parse_batch(Path(what), batch(obj))
    objects = _Call(_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), np.dtype("O"), False, ["x"]))
    assert dc._parse_batch(Path("objects"), batch(objects))["data"].pixels() is None
    ok = dc._parse_batch(Path("ok"), batch(np.arange(6, dtype=np.uint8).reshape(2, 3)))
    assert torch.equal(ok["data"].pixels(), torch.arange(6, dtype=torch.uint8).view(2, 3))


def test_a_batch_pickled_by_python_2_reads_as_written():
    """The 2009 files were written by Python 2's cPickle: numpy.core.multiarray._reconstruct, a str dtype code,
    and the pixels as a Python 2 str (here spelled out opcode by opcode, as such a file holds them)."""
    import struct

    raw = bytes(range(256)) * 24  # (2, 3072) pixels
    p = (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04"
         b"U\x01b\x87q\x05Rq\x06(K\x01K\x02M\x00\x0c\x86q\x07cnumpy\ndtype\nq\x08U\x02u1K\x00K\x01\x87Rq\x09(K\x03U\x01|"
         b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbI00\n" + b"T" + struct.pack("<i", len(raw)) + raw
         + b"tbU\x06labels]q\x0a(K\x01K\x02eu.")
    entry = dc._parse_batch(Path("py2"), p)
    assert entry["labels"] == [1, 2] and bytes(entry["data"].pixels().flatten().tolist()) == raw
    assert entry["data"].pixels().shape == (2, 3072)


def test_an_empty_batch_folder_is_not_the_original_and_a_partial_one_is_extracted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DLCLI_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    (root / dc.ORIGINAL_FOLDER).mkdir(parents=True)  # e.g. left by an interrupted extraction
    (root / "cifar10-jpg").symlink_to(real_cifar() / "cifar10-jpg")
    b = load_data("cifar10", {"files": "auto", "train_size": 5, "test_size": 5, "cache": False}, root, seed=0)
    assert any("JPEG files" in n for n in b.extra["notes"])  # the empty folder does not hide the image folders
    (root / "cifar10-jpg").unlink()
    tar = _tarball(tmp_path, monkeypatch)
    (root / dc.TARBALL).write_bytes(tar.read_bytes())
    (root / dc.ORIGINAL_FOLDER / "data_batch_1").write_bytes(b"half a file")  # a partial extraction
    b = load_data("cifar10", {"val_size": 0}, root, seed=0)
    assert len(b.train) == 5 * PER_BATCH and any(n.startswith("CIFAR-10 extracted from") for n in b.extra["notes"])
    assert sorted(p.name for p in (root / dc.ORIGINAL_FOLDER).iterdir()) == sorted(dc.ORIGINAL_MD5)
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [".cifar-10.lock"]  # no temporary left


def test_runs_started_together_extract_once_and_clear_what_killed_runs_left(tmp_path, monkeypatch):
    """Several runs on one data folder with only the tarball: one extracts (under a file lock), the others wait
    and read its result; a temporary file and folder of a killed fetch are removed."""
    import threading
    import time

    tar = _tarball(tmp_path, monkeypatch)
    root = tmp_path / "data"
    root.mkdir()
    (root / dc.TARBALL).write_bytes(tar.read_bytes())
    (root / f".{dc.TARBALL}.99999.part").write_bytes(b"half a download")  # left by a killed run
    (root / f".{dc.ORIGINAL_FOLDER}.99999.tmp" / dc.ORIGINAL_FOLDER).mkdir(parents=True)
    extract, inside, most, calls = dc._extract, [0], [0], []

    def slow_extract(r):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.3)  # long enough for the other runs to arrive meanwhile
        try:
            calls.append(1)
            return extract(r)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(dc, "_extract", slow_extract)
    results, errors = [], []

    def run():
        try:
            results.append(dc.original_tensors(root)[0])
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4 and all(torch.equal(r, results[0]) for r in results)
    assert (len(calls), most[0]) == (1, 1)  # extracted once, never two at a time
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [".cifar-10.lock"]


def test_pickles_that_would_exhaust_memory_or_alter_the_unpickler_are_refused():
    import struct
    import tracemalloc

    # a memo index of 2**24: the C unpickler would size (and zero) an array for it; a dict memo holds one entry
    huge_memo = b"\x80\x02]r" + struct.pack("<I", 2**24) + b"."
    tracemalloc.start()
    with pytest.raises(DlcliError, match="holds a list, not a CIFAR-10 batch"):
        dc._parse_batch(Path("memo"), huge_memo)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20
    # BUILD on the codecs.encode stand-in, which would set attributes on it for the rest of the process
    with pytest.raises(DlcliError, match="alters the unpickler's own helpers"):
        dc._parse_batch(Path("alter"), b"\x80\x02c_codecs\nencode\n}b.")
    assert dc._latin1("\xff") == b"\xff"
    with pytest.raises(DlcliError, match=r"\(it names os\.xxxx") as e:  # a long name is cut to one short line
        dc._parse_batch(Path("long"), b"\x80\x02cos\n" + b"x" * 100_000 + b"\n.")
    assert len(str(e.value)) < 300
