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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from dlcli.errors import DlcliError

PROBE_TIMEOUT_S = 5.0  # longest wait for any download server to accept a connection
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout while downloading (a stalled transfer fails instead of hanging)
T = TypeVar("T")


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


def guarded(urls: list[str], failure: str, hint: str, action: Callable[[], T]) -> T:
    """Run the download ``action`` when a server of ``urls`` answers, with a socket timeout and torchvision's
    and torch.hub's progress output kept off stdout; otherwise, or when it fails, one ``DlcliError`` line:
    "<failure> and <reason>; <hint>" (``failure`` says what is not there, ``hint`` which files to put where)."""
    reason = None if any_reachable(urls) else "no network: none of its download servers answered"
    if reason is None:
        try:
            with contextlib.redirect_stdout(sys.stderr), socket_timeout(DOWNLOAD_TIMEOUT_S):
                return action()
        except Exception as e:
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            reason = f"the download failed: {first[:120]}"
    raise DlcliError(f"{failure} and {reason}; {hint}")


def torchvision_dataset(cls_name: str, root: Path, what: str, hint: str, **kwargs: Any) -> Any:
    """``torchvision.datasets.<cls_name>(root, **kwargs)``, downloaded into ``root`` when missing (one line
    "<what> not found under <root> and <reason>; <hint>" when that cannot be done)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        return cls(root=str(root), download=False, **kwargs)
    except RuntimeError:
        pass  # not there yet (or damaged): try the real download below
    return guarded(download_urls(cls), f"{what} not found under {root}", hint,
                   lambda: cls(root=str(root), download=True, **kwargs))


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
    """Download ``url`` to ``dest`` as torch.hub does (a temporary file renamed when complete, its SHA-256
    checked against the prefix in its name), replacing a damaged file there; offline or failing, one line."""
    import torch.hub

    def download() -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dest), hash_prefix(dest), progress=True)

    state = "is damaged" if dest.exists() else "not found"
    guarded([url], f"{what} {state} at {dest}", hint, download)
