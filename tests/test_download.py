"""dlcli's downloader (``dlcli.download.stream``, ``fetch_idx``) over real HTTP from local servers: MNIST's real
files arrive byte for byte from the first mirror that serves them; a file cut short or not the published one
(MD5, SHA-256 prefix) raises and leaves nothing behind, under its name or a temporary one; progress is a rich
bar on a terminal and a line per file otherwise."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torchvision.datasets
from rich.console import Console
from test_cifar_original import http_server

import dlcli.download
from dlcli import report
from dlcli.download import DownloadError, stream

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def mnist_gz(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """The real MNIST IDX files gzipped into a folder to serve, and their (name, MD5) list as torchvision's
    ``MNIST.resources`` gives it for the published ``.gz`` files (these are gzipped here, so their MD5s differ)."""
    served = tmp_path_factory.mktemp("mirror")
    resources = []
    for name in IDX:
        packed = gzip.compress((data_dir / "MNIST" / "raw" / name).read_bytes(), compresslevel=1)
        (served / f"{name}.gz").write_bytes(packed)
        resources.append((f"{name}.gz", hashlib.md5(packed).hexdigest()))
    return served, resources


def test_mnist_arrives_whole_from_the_first_mirror_that_serves_it(cli, mnist_gz, data_dir, tmp_path, monkeypatch):
    """``dlcli data mnist --download`` through the real downloader: the first mirror answers 404, the second
    serves; the four unpacked files equal the originals byte for byte, each announced on stderr, and stdout
    stays one JSON document."""
    served, resources = mnist_gz
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    root = tmp_path / "data"
    asked = []  # every URL the downloader requests, in order
    real = dlcli.download.stream
    monkeypatch.setattr(dlcli.download, "stream", lambda url, dest, **kw: (asked.append(url), real(url, dest, **kw)))
    with http_server(served.parent, monkeypatch) as base:
        mirrors = [f"{base}/nowhere/", f"{base}/{served.name}/", f"{base}/{served.name}/./"]  # the third serves too
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", mirrors)
        res = cli("data", "mnist", "--download", "--data-dir", str(root), "--json")
    assert res.code == 0, res.err
    # the mirrors in their order, stopping at the first that serves: the third is never asked
    assert asked == [m + f"{name}.gz" for name in IDX for m in mirrors[:2]], asked
    row = {r["name"]: r for r in res.json()["data_sets"]}["mnist"]
    assert res.json()["fetched"] == ["mnist"] and row["state"] == "found"
    raw = root / "MNIST" / "raw"
    for name in IDX:
        assert (raw / name).read_bytes() == (data_dir / "MNIST" / "raw" / name).read_bytes(), name
        size = (served / f"{name}.gz").stat().st_size
        assert f"downloading {name}.gz ({size / 1e6:,.1f} MB)" in res.err or f"downloading {name}.gz ({size / 1e3:,.1f} kB)" in res.err
    assert [p.name for p in raw.iterdir() if p.name.startswith(".")] == [".download.lock"]  # no temporary file left


def test_only_the_missing_files_are_fetched(mnist_gz, data_dir, tmp_path, monkeypatch):
    served, resources = mnist_gz
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX[:3]:
        (raw / name).write_bytes((data_dir / "MNIST" / "raw" / name).read_bytes())
    (raw / ".t10k-labels-idx1-ubyte.gz.k1ll3d.part").write_bytes(b"left by a process that was killed")
    fetched = []
    real = dlcli.download.stream
    monkeypatch.setattr(dlcli.download, "stream", lambda url, dest, **kw: (fetched.append(dest.name), real(url, dest, **kw)))
    with http_server(served, monkeypatch) as base:
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"{base}/"])
        dlcli.download.fetch_idx("MNIST", raw, "MNIST", "put them there")
    assert fetched == ["t10k-labels-idx1-ubyte.gz"]
    assert not list(raw.glob("*.part"))  # a killed fetch's temporary file is removed under the lock
    assert (raw / IDX[3]).read_bytes() == (data_dir / "MNIST" / "raw" / IDX[3]).read_bytes()


def test_placed_gz_files_are_unpacked_without_a_network(cli, mnist_gz, data_dir, tmp_path, monkeypatch):
    """The .gz files MNIST comes in, placed by hand on a machine without a network: unpacked when their MD5 is the
    published one, never downloaded; a damaged one is not unpacked, and the line says what to put where."""
    import shutil

    from dlcli.data import load_data
    from dlcli.errors import DlcliError

    served, resources = mnist_gz
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)
    monkeypatch.setattr(dlcli.download, "stream", lambda *a, **kw: pytest.fail("a download was attempted"))
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX:
        shutil.copy(served / f"{name}.gz", raw)
    (raw / f"{IDX[1]}.gz").write_bytes(gzip.compress(b"damaged", mtime=0))
    row = {r["name"]: r for r in cli("data", "mnist", "--data-dir", str(tmp_path), "--json").json()["data_sets"]}["mnist"]
    assert row["state"] == "missing" and row["detail"] == (
        f"no IDX files in {raw} ({', '.join(f'{n}.gz' for n in IDX)} are there: --download or a run unpacks them, "
        "MD5 checked)")
    damaged_md5 = hashlib.md5(gzip.compress(b"damaged", mtime=0)).hexdigest()
    with pytest.raises(DlcliError, match=r"MNIST not found under .* no network.* \(or the \.gz files they come in\)") as e:
        load_data("mnist", {}, tmp_path, seed=0)
    assert str(e.value).endswith(f"; {raw / IDX[1]}.gz is not the published file (its MD5 is {damaged_md5}, expected "
                                 f"{resources[1][1]}): replace it")  # the file in the way is named
    assert not (raw / IDX[1]).exists()
    shutil.copy(served / f"{IDX[1]}.gz", raw)
    bundle = load_data("mnist", {"val_size": 0}, tmp_path, seed=0)
    assert len(bundle.train) == 60000 and len(bundle.test) == 10000
    for name in IDX:
        assert (raw / name).read_bytes() == (data_dir / "MNIST" / "raw" / name).read_bytes(), name


def test_a_file_that_is_not_the_published_one_is_refused_and_removed(tmp_path, monkeypatch):
    payload = b"not the file you are looking for" * 100
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "f.bin").write_bytes(payload)
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"an older damaged copy")
    with http_server(tmp_path / "served", monkeypatch) as base:
        with pytest.raises(DownloadError, match=rf"^not the published file \(its MD5 is "
                                                rf"{hashlib.md5(payload).hexdigest()}, expected 0123456789abcdef0123456789abcdef\)"):
            stream(f"{base}/f.bin", dest, md5="0123456789abcdef0123456789abcdef")
        assert dest.read_bytes() == b"an older damaged copy"  # not replaced by another wrong file
        with pytest.raises(DownloadError, match=r"its SHA-256 is [0-9a-f]{8}, expected 00000000"):
            stream(f"{base}/f.bin", dest, sha256_prefix="00000000")
        assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]  # no temporary file left
        stream(f"{base}/f.bin", dest, md5=hashlib.md5(payload).hexdigest())  # the right sum: replaced
        assert dest.read_bytes() == payload
        stream(f"{base}/f.bin", dest, sha256_prefix=hashlib.sha256(payload).hexdigest()[:8])
    assert dest.read_bytes() == payload and [p.name for p in dest.parent.iterdir()] == ["f.bin"]


@contextlib.contextmanager
def short_server(payload: bytes, announced: int) -> Iterator[str]:
    """Serves ``payload`` while announcing ``announced`` bytes, then closes: a transfer cut short."""

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(announced))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/x.bin"
    finally:
        server.shutdown()


def test_a_transfer_cut_short_is_refused_even_without_a_sum(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    dest = tmp_path / "x.bin"
    with short_server(b"x" * 1000, announced=5000) as url, pytest.raises(DownloadError, match=r"cut short \(1,000 of 5,000 bytes\)"):
        stream(url, dest)
    assert not any(tmp_path.iterdir())


def _recorded(terminal: bool) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=120, color_system=None, highlight=False)


def test_progress_is_a_bar_on_a_terminal_and_two_lines_in_a_log(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 4000  # 1.0 MB
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "w.pth").write_bytes(payload)
    monkeypatch.setattr(dlcli.download, "progress_display", report.download_bar)
    with http_server(tmp_path / "served", monkeypatch) as base:
        for terminal in (False, True):
            console = _recorded(terminal)
            monkeypatch.setattr(report, "err", console)
            stream(f"{base}/w.pth", tmp_path / str(terminal) / "w.pth")
            text = console.file.getvalue()
            if terminal:
                assert "downloading w" in text and "1.0/1.0 MB" in text, text  # rich's bar: bytes of total
            else:
                lines = text.strip().splitlines()
                assert lines[0] == "downloading w.pth (1.0 MB)" and len(lines) == 2, lines
                assert lines[1].startswith("downloaded w.pth: 1.0 MB in ") and lines[1].endswith("MB/s)")


def test_temporary_files_are_unique_even_with_one_pid(tmp_path, monkeypatch):
    """Containers sharing a data volume each run dlcli as PID 1: their temporary files must still differ."""
    import os

    monkeypatch.setattr(os, "getpid", lambda: 1)
    (fd1, a), (fd2, b) = dlcli.download._temporary(tmp_path / "x.gz"), dlcli.download._temporary(tmp_path / "x.gz")
    os.close(fd1), os.close(fd2)
    assert a != b and a.name.startswith(".x.gz.") and a.name.endswith(".part") and a.parent == tmp_path


def test_a_full_disk_while_unpacking_is_one_line(tmp_path, monkeypatch):
    import shutil

    from dlcli.errors import DlcliError

    packed = tmp_path / "t.gz"
    packed.write_bytes(gzip.compress(b"x" * 1000))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(DlcliError, match=r"^cannot unpack t.gz in .* \(No space left on device\): make room, or "
                                         r"unpack it there yourself \(gunzip -k\)$"):
        dlcli.download._gunzip(packed, tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gz"]  # nothing half-unpacked


def test_a_long_reason_is_cut_at_a_word():
    clip = dlcli.download._clip
    assert clip("short reason", 40) == "short reason"
    assert clip("alpha beta gamma delta", 13) == "alpha beta …"  # not "alpha beta ga"


def test_the_finished_bar_of_a_download_without_a_length_shows_what_arrived(monkeypatch):
    console = _recorded(True)
    monkeypatch.setattr(report, "err", console)
    with report.download_bar("n.bin", None) as advance:
        advance(2_500_000)
    last = console.file.getvalue().replace("\r", "\n").strip().splitlines()[-2:]
    assert any("2.5/2.5 MB" in line for line in last), last


def test_ctrl_c_outside_training_says_interrupted(cli, monkeypatch):
    """typer turns a KeyboardInterrupt into Exit(130): the line must still be there (e.g. Ctrl-C in a download)."""
    import dlcli.data_status

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dlcli.data_status, "inspect", interrupted)
    res = cli("data", "mnist")
    assert res.code == 130 and res.err.strip().splitlines()[-1] == "error: interrupted"
