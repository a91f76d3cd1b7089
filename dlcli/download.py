"""Downloading a public data set or weights file, or saying in one sentence where to put its files.

``stream`` is dlcli's one downloader (a data set's files, CIFAR-10's tarball, torchvision's weights): it
streams a URL into a temporary file beside its destination, hashes it on the way (the MD5 or SHA-256 prefix
its publisher gives), and renames it into place only when complete and correct, so an interrupted or damaged
download never looks like data. Progress goes to stderr through ``progress_display``, which the command line
sets to a rich bar (``dlcli.report.download_bar``). Around it, ``guarded`` adds what a command line needs: a
quick probe, so that a machine without a network fails within seconds instead of stalling in name
resolution, and one clear line when it cannot work; ``stream``'s socket timeout makes a stalled transfer
fail instead of hanging.

The bottom of the data modules with ``dlcli.data_core``: it imports neither them nor torch at module level.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

from dlcli.errors import DlcliError

PROBE_TIMEOUT_S = 5.0  # longest wait for any download server to accept a connection
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout while downloading (a stalled transfer fails instead of hanging)
CHUNK = 1 << 20  # bytes read, hashed and written at a time
T = TypeVar("T")


@contextlib.contextmanager
def _no_display(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


#: ``(label, total bytes or None) -> context manager yielding advance(bytes)``: shows a download's progress.
#: Silent by default (dlcli used as a library); the command line sets ``dlcli.report.download_bar``.
progress_display: Callable[[str, int | None], AbstractContextManager[Callable[[int], None]]] = _no_display


def any_reachable(urls: list[str], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when some server of ``urls`` accepts a TCP connection within ``timeout`` seconds.

    Probed in daemon threads, because name resolution ignores socket timeouts and can stall for tens of
    seconds on a machine without a network. No URLs (a dataset class without mirrors) and a configured
    HTTP proxy (direct connections may be blocked while the proxy works) count as reachable.
    """
    import socket
    import threading
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    hosts = {(u.hostname, u.port or (443 if u.scheme == "https" else 80)) for u in map(urlsplit, urls) if u.hostname}
    if not hosts or any(scheme != "no" for scheme in getproxies()):  # no_proxy alone configures no proxy
        return True
    ok = threading.Event()

    def probe(host: str, port: int) -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.set()
        except OSError:
            pass

    threads = [threading.Thread(target=probe, args=hp, daemon=True) for hp in hosts]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    while not ok.is_set() and any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        ok.wait(0.05)
    return ok.is_set()


def guarded(urls: list[str], failure: str, hint: str, action: Callable[[], T]) -> T:
    """Run the download ``action`` when a server of ``urls`` answers; otherwise, or when it fails, one
    ``DlcliError`` line: "<failure> and <reason>; <hint>" (``failure`` says what is not there, ``hint`` which
    files to put where). A stalled transfer fails through ``stream``'s socket timeout."""
    reason = None if any_reachable(urls) else "no network: none of its download servers answered"
    if reason is None:
        try:
            return action()
        except DlcliError:  # already one line (e.g. a disk that cannot take the file)
            raise
        except Exception as e:
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            reason = f"the download failed: {_clip(first, 400)}"
    raise DlcliError(f"{failure} and {reason}; {hint}")


def _clip(text: str, n: int) -> str:
    """``text`` cut to at most ``n`` characters at a word boundary, with "…" where it was cut."""
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " …"


@contextlib.contextmanager
def folder_lock(folder: Path, name: str, stale: tuple[str, ...] = ()) -> Iterator[None]:
    """Held while files are downloaded or unpacked into ``folder`` (the lock file ``folder/name``): runs started
    together on one folder (a sweep, a job array, torchrun on several nodes sharing a disk) fetch each file once,
    the others wait and then find it there. Temporary files matching the ``stale`` globs found while it is held
    were left by a process that was killed (SIGTERM and SIGKILL skip ``finally``), and are removed. A folder
    that cannot be written is one line."""
    import shutil

    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / name, "a")  # noqa: SIM115  (held for the block)
    except OSError as e:
        raise DlcliError(f"cannot write in {folder} ({e.strerror}): make it writable, or point --data-dir or "
                         "DLCLI_DATA at a writable folder") from None
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): concurrent fetches are not guarded there
            pass
        for pattern in stale:
            for path in folder.glob(pattern):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        yield
    finally:
        handle.close()  # releases the lock


def file_hash(path: Path, algorithm: str) -> str:
    """The hex digest (``"md5"`` or ``"sha256"``) of the file at ``path``, read in chunks, not held in memory."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.new(algorithm, usedforsecurity=False)).hexdigest()


def _temporary(dest: Path) -> tuple[int, Path]:
    """A new, empty file ``.<name>.<random>.part`` beside ``dest``, created exclusively (two processes never share
    one, even with one PID each in containers on one volume): its descriptor and path."""
    import tempfile

    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    return fd, Path(name)


class DownloadError(Exception):
    """A download that arrived but is not the published file (cut short, or another hash)."""


def stream(url: str, dest: Path, *, md5: str | None = None, sha256_prefix: str | None = None) -> None:
    """Download ``url`` to ``dest``: streamed into a temporary file beside it while its MD5 or SHA-256 is
    computed, checked against ``md5`` / ``sha256_prefix`` (and against the length the server announced), and
    only then renamed to ``dest`` (replacing what was there). Anything wrong raises; nothing is left behind.
    The errors do not repeat ``url``: the callers' lines name it, or the file and where to put it."""
    import hashlib
    import urllib.request

    from dlcli import __version__

    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = (hashlib.md5(usedforsecurity=False) if md5 else hashlib.sha256() if sha256_prefix else None)
    request = urllib.request.Request(url, headers={"User-Agent": f"dlcli/{__version__}"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        got = 0
        fd, part = _temporary(dest)
        try:
            with open(fd, "wb") as f, progress_display(dest.name, total) as advance:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    got += len(chunk)
                    advance(len(chunk))
                if total is not None and got != total:  # inside the display: a failure is not "downloaded"
                    raise DownloadError(f"cut short ({got:,} of {total:,} bytes)")
                if digest is not None:
                    want, have = (md5 or sha256_prefix or "").lower(), digest.hexdigest()
                    if not have.startswith(want):
                        raise DownloadError(f"not the published file (its {'MD5' if md5 else 'SHA-256'} is "
                                            f"{have[:max(len(want), 8)]}, expected {want})")
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)


def fetch_idx(cls_name: str, raw: Path, what: str, hint: str) -> None:
    """Download the four IDX files of torchvision's ``cls_name`` (MNIST, FashionMNIST) into ``raw``, as torchvision
    would: each ``.gz`` from its first mirror that serves it, MD5 checked, then unpacked beside it. Only the files
    not there yet are fetched; a ``.gz`` already there with the published MD5 (placed by hand, or left by an
    interrupted run) is unpacked without a network. Runs on one folder fetch each file once (a file lock).
    Offline or failing: one line "<what> not found under <raw> and <reason>; <hint>"."""
    import http.client

    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    mirrors: list[str] = list(cls.mirrors)
    with folder_lock(raw, ".download.lock", (".*.part",)):
        pending, damaged = [], []
        for filename, md5 in cls.resources:
            target, packed = raw / filename.removesuffix(".gz"), raw / filename
            if target.is_file():
                continue
            have = file_hash(packed, "md5") if packed.is_file() else None
            if have == md5:
                _gunzip(packed, target)
                continue
            pending.append((filename, md5))
            if have is not None:
                damaged.append(f"{packed} is not the published file (its MD5 is {have}, expected {md5}): replace it")

        def download() -> None:
            for filename, md5 in pending:
                errors = []
                for mirror in mirrors:
                    try:
                        stream(mirror + filename, raw / filename, md5=md5)
                        break
                    except (OSError, http.client.HTTPException, DownloadError) as e:  # urllib's errors are OSErrors
                        errors.append(f"{mirror}: {_clip(str(e), 160)}")
                else:  # the first mirror's error first: it is the main server
                    raise DownloadError(f"{filename} from " + "; ".join(errors))
                _gunzip(raw / filename, raw / filename.removesuffix(".gz"))

        if pending:
            guarded(mirrors, f"{what} not found under {raw}", "; ".join([hint, *damaged[:1]]), download)


def _gunzip(packed: Path, target: Path) -> None:
    """Unpack ``packed`` into ``target`` through a temporary file renamed when complete; a full or read-only
    disk is one line."""
    import gzip
    import shutil

    try:
        fd, unpacked = _temporary(target)
    except OSError as e:
        raise DlcliError(f"cannot unpack {packed.name} in {packed.parent} ({e.strerror}): make it writable, or "
                         f"unpack it there yourself (gunzip -k)") from None
    try:
        with gzip.open(packed, "rb") as src, open(fd, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        os.replace(unpacked, target)
    except OSError as e:
        raise DlcliError(f"cannot unpack {packed.name} in {packed.parent} ({e.strerror or e}): make room, or "
                         f"unpack it there yourself (gunzip -k)") from None
    finally:
        unpacked.unlink(missing_ok=True)


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub (and torchvision's ``weights=``) caches the file of ``url``:
    ``<torch.hub.get_dir()>/checkpoints/<the URL's file name>`` (``TORCH_HOME`` moves it)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def hash_prefix(path: Path) -> str | None:
    """The SHA-256 prefix torch.hub's file names carry (``alexnet-owt-7be5be79.pth``), or None."""
    import re

    import torch.hub

    m = re.search(torch.hub.HASH_REGEX, path.name)
    return m.group(1) if m else None


def fetch_file(url: str, dest: Path, what: str, hint: str) -> None:
    """Download ``url`` to ``dest`` as torch.hub would (its SHA-256 checked against the prefix in its name),
    replacing a damaged file there, under a file lock in its folder; offline or failing, one line."""
    def download() -> None:
        stream(url, dest, sha256_prefix=hash_prefix(dest))

    state = "is damaged" if dest.exists() else "not found"
    with folder_lock(dest.parent, ".download.lock", (f".{dest.name}.*.part",)):
        guarded([url], f"{what} {state} at {dest}", hint, download)
