"""Downloading a public data set through torchvision, or saying in one sentence where to put its files.

torchvision's downloaders are the real ones (users have a network); this module adds what they lack for a
command line: a quick probe, so that a machine without a network fails within seconds instead of stalling
in name resolution; a socket timeout, so that a stalled transfer fails instead of hanging; stdout kept clean
for ``--json`` (torchvision prints its progress there); and one clear line when it cannot work.

The bottom of the data modules with ``dlcli.data_core``: it imports neither them nor torch at module level.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlcli.errors import DlcliError

PROBE_TIMEOUT_S = 5.0  # longest wait for any download server to accept a connection
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout while downloading (a stalled transfer fails instead of hanging)


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
    if not hosts or getproxies():
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


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    import socket

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_urls(cls: Any) -> list[str]:
    """The servers a torchvision dataset class downloads from: its ``mirrors`` (MNIST), else its ``url``."""
    mirrors = list(getattr(cls, "mirrors", []) or [])
    return mirrors or ([cls.url] if isinstance(getattr(cls, "url", None), str) else [])


def torchvision_dataset(cls_name: str, root: Path, what: str, hint: str, **kwargs: Any) -> Any:
    """``torchvision.datasets.<cls_name>(root, **kwargs)``, downloaded into ``root`` when missing.

    When the files are not there and no server answers, or the download fails, one ``DlcliError`` line:
    "<what> not found under <root> and <reason>; <hint>" (the hint says which files to put where).
    """
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        return cls(root=str(root), download=False, **kwargs)
    except RuntimeError:
        pass  # not there yet (or damaged): try the real download below
    reason = None if any_reachable(download_urls(cls)) else "no network: none of its download servers answered"
    if reason is None:
        try:
            # torchvision prints download progress on stdout; keep stdout clean for --json.
            with contextlib.redirect_stdout(sys.stderr), socket_timeout(DOWNLOAD_TIMEOUT_S):
                return cls(root=str(root), download=True, **kwargs)
        except Exception as e:
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            reason = f"the download failed: {first[:120]}"
    raise DlcliError(f"{what} not found under {root} and {reason}; {hint}")


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub (and torchvision's ``weights=``) caches the file of ``url``:
    ``<torch.hub.get_dir()>/checkpoints/<the URL's file name>`` (``TORCH_HOME`` moves it)."""
    import os

    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def hash_prefix(path: Path) -> str | None:
    """The SHA-256 prefix torch.hub's file names carry (``alexnet-owt-7be5be79.pth``), or None."""
    import re

    import torch.hub

    m = re.search(torch.hub.HASH_REGEX, path.name)
    return m.group(1) if m else None


def fetch_file(url: str, dest: Path, what: str, hint: str) -> None:
    """Download ``url`` to ``dest`` (a temporary file renamed when complete; its SHA-256 checked against the
    prefix in its name, as torch.hub does), or raise one line: "<what> not found at <dest> and <reason>; <hint>"."""
    import torch.hub

    reason = None if any_reachable([url]) else "no network: its server did not answer"
    if reason is None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.redirect_stdout(sys.stderr), socket_timeout(DOWNLOAD_TIMEOUT_S):
                torch.hub.download_url_to_file(url, str(dest), hash_prefix(dest), progress=True)
            return
        except Exception as e:
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            reason = f"the download failed: {first[:120]}"
    raise DlcliError(f"{what} not found at {dest} and {reason}; {hint}")
