"""Data sources by name -> in-memory splits plus metadata (classes, input shape, normalisation).

Real data (MNIST, Fashion-MNIST, CIFAR-10) is looked for under ``--data-dir``, then ``$DLCLI_DATA``, then
``~/.cache/dlcli``, in torchvision's layout. Missing files are downloaded by torchvision when there is a
network; when that fails the error is one sentence saying which files to put where.

Small data sets are held as tensors (uint8 images, or float points) and batched by indexing, on the training
device, so the input side never limits speed. ``in_memory: false`` keeps a classic ``DataLoader`` over the
torchvision dataset for data that does not fit.

The toy sources (``linear2d``, ``xor``, ``function1d``) are generated, as in the lecture.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from dlcli.errors import DlcliError
from dlcli.registry import Registry

DATASETS: Registry[Callable[..., "DataBundle"]] = Registry("data source")
register_dataset = DATASETS.register


@dataclass
class Split:
    """One split held as tensors. Images: uint8 (N, C, H, W) in 0..255; points: float (N, D)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class DataBundle:
    kind: str  # "images" | "points"
    train: Split | None
    val: Split | None
    test: Split | None
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()  # of one sample, e.g. (1, 28, 28)
    mean: tuple[float, ...] = ()  # per channel, of pixels in [0, 1]
    std: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific (e.g. the target function)
    train_dataset: Dataset | None = None  # the DataLoader path (in_memory: false)


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir``, then ``$DLCLI_DATA``, then ``~/.cache/dlcli``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("DLCLI_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dlcli"


def load_data(source: str, args: dict[str, Any], data_dir: str | os.PathLike[str] | None, seed: int) -> DataBundle:
    builder = DATASETS.get(source)
    return builder(data_root(data_dir), seed, **args)


def images_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1 (a float input passes through)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


# ------------------------------------------------------------------------------------------- toy data


@register_dataset("linear2d", summary="generated: two linearly separable 2-D classes with a margin")
def linear2d(root: Path, seed: int, *, n: int = 100, margin: float = 0.1) -> DataBundle:
    """Points in [-1, 1]^2 labelled by a random line through the square, with a gap of ``margin`` on each side."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand((), generator=g) * 2 * math.pi
    w = torch.stack([torch.cos(angle), torch.sin(angle)])  # unit normal of the true line
    b = (torch.rand((), generator=g) - 0.5) * 0.5
    pts = []
    while sum(len(p) for p in pts) < n:
        cand = torch.rand(4 * n, 2, generator=g) * 2 - 1
        dist = cand @ w + b
        pts.append(cand[dist.abs() >= margin])
    x = torch.cat(pts)[:n]
    y = torch.where(x @ w + b > 0, 1, -1)
    split = Split(x, y)
    return DataBundle("points", split, None, split, num_classes=2, class_names=["-1", "+1"], input_shape=(2,),
                      extra={"true_w": w.tolist(), "true_b": float(b), "margin": margin})


@register_dataset("xor", summary="generated: the four XOR points, labels -1/+1")
def xor(root: Path, seed: int) -> DataBundle:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([-1, 1, 1, -1])
    split = Split(x, y)
    return DataBundle("points", split, None, split, num_classes=2, class_names=["-1", "+1"], input_shape=(2,))


FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin_mix": lambda x: torch.sin(2 * math.pi * x) + 0.5 * torch.sin(6 * math.pi * x),
    "sin": lambda x: torch.sin(2 * math.pi * x),
    "abs": lambda x: (2 * x - 1).abs(),
    "gauss_bumps": lambda x: torch.exp(-((x - 0.3) ** 2) / 0.005) - 0.7 * torch.exp(-((x - 0.7) ** 2) / 0.01),
}


@register_dataset("function1d", summary="generated: samples of a continuous function on [0, 1]")
def function1d(root: Path, seed: int, *, fn: str = "sin_mix", n_train: int = 512, n_grid: int = 4001) -> DataBundle:
    """Training points drawn uniformly from [0, 1]; the test split is a dense, evenly spaced grid."""
    if fn not in FUNCTIONS:
        raise DlcliError(f"data.args.fn: unknown function {fn!r}; valid names: {', '.join(FUNCTIONS)}")
    if n_train < 2 or n_grid < 2:
        raise DlcliError("data.args.n_train and n_grid must be at least 2")
    f = FUNCTIONS[fn]
    g = torch.Generator().manual_seed(seed)
    xt = torch.rand(n_train, 1, generator=g)
    xg = torch.linspace(0, 1, n_grid).unsqueeze(1)
    return DataBundle("points", Split(xt, f(xt)), None, Split(xg, f(xg)), input_shape=(1,), extra={"fn": fn})


# ------------------------------------------------------------------------------------------- real data

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _torchvision_dataset(cls_name: str, folder: str, root: Path, train: bool) -> Any:
    """Open a torchvision dataset, downloading when missing; offline -> one clear sentence, within seconds."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        return cls(root=str(root), train=train, download=False)
    except RuntimeError:
        pass  # not there yet: try the real download below
    raw = root / folder / "raw"
    mirrors = list(getattr(cls, "mirrors", []))
    reason = None if _any_reachable(mirrors) else "no network: none of its download servers answered"
    if reason is None:
        try:
            # torchvision prints download progress on stdout; keep stdout clean for --json.
            with contextlib.redirect_stdout(sys.stderr), _socket_timeout(DOWNLOAD_TIMEOUT_S):
                return cls(root=str(root), train=train, download=True)
        except Exception as e:
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            reason = f"the download failed: {first[:120]}"
    raise DlcliError(
        f"{folder} not found under {root} and {reason}; put the files {', '.join(_MNIST_FILES)} in {raw}, "
        f"or point --data-dir or DLCLI_DATA at a folder that has {folder}/raw/"
    )


PROBE_TIMEOUT_S = 5.0  # longest wait for any download server to accept a connection
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout while downloading (a stalled transfer fails instead of hanging)


def _any_reachable(urls: list[str], timeout: float = PROBE_TIMEOUT_S) -> bool:
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
def _socket_timeout(seconds: float) -> Any:
    import socket

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _val_split(x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int) -> tuple[Split, Split | None]:
    """Hold out ``val_size`` random training examples (a fixed permutation of ``seed``) for validation."""
    if val_size < 0 or val_size >= len(x):
        raise DlcliError(f"data.args.val_size must be in [0, {len(x) - 1}], got {val_size}")
    if val_size == 0:
        return Split(x, y), None
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(10_000 + seed))
    val, train = perm[:val_size], perm[val_size:]
    return Split(x[train], y[train]), Split(x[val], y[val])


def class_balanced(y: torch.Tensor, labels: int, num_classes: int, seed: int) -> torch.Tensor:
    """Positions in ``y`` of a seeded class-balanced subset of ``labels`` examples: ``labels // num_classes``
    of each class, one more for the first ``labels % num_classes`` classes; sorted."""
    counts = torch.bincount(y, minlength=num_classes)
    if not num_classes <= labels <= len(y):
        raise DlcliError(f"data.args.labels must be in [{num_classes}, {len(y)}] (a class-balanced labelled subset "
                         f"of the {len(y)} training images; null for all), got {labels}")
    quota = [labels // num_classes + (1 if c < labels % num_classes else 0) for c in range(num_classes)]
    short = [c for c in range(num_classes) if quota[c] > counts[c]]
    if short:
        top = num_classes * int(counts.min())
        raise DlcliError(f"data.args.labels {labels} cannot be class-balanced: class {short[0]} has only "
                         f"{int(counts[short[0]])} training images; at most {top}, or null for all labels")
    g = torch.Generator().manual_seed(30_000 + seed)
    picked = []
    for c in range(num_classes):
        where = (y == c).nonzero().flatten()
        picked.append(where[torch.randperm(len(where), generator=g)[:quota[c]]])
    return torch.cat(picked).sort().values


def _idx_images(source: str, folder: str, root: Path, seed: int, val_size: int, in_memory: bool,
                mean: float, std: float, train_size: int | None = None, labels: int | None = None) -> DataBundle:
    train_ds = _torchvision_dataset(source, folder, root, train=True)
    test_ds = _torchvision_dataset(source, folder, root, train=False)
    # torchvision keeps IDX data as uint8 tensors (N, 28, 28): use them directly, no PIL round trip.
    x = train_ds.data.unsqueeze(1).contiguous()
    y = train_ds.targets.long()
    if train_size is not None and not 1 <= train_size <= len(x) - val_size:
        raise DlcliError(f"data.args.train_size must be in [1, {len(x) - val_size}] (or null for all), "
                         f"got {train_size}")
    train, val = _val_split(x, y, val_size, seed)
    if train_size is not None:  # a random subset (the split is already a seeded permutation): for quick runs
        train = Split(train.x[:train_size], train.y[:train_size])
    test = Split(test_ds.data.unsqueeze(1).contiguous(), test_ds.targets.long())
    extra: dict[str, Any] = {}
    if labels is not None:  # a label budget: the rest of the training images stay, unlabelled (y = -1)
        if not in_memory:
            raise DlcliError("data.args.labels needs in_memory: true")
        pos = class_balanced(train.y, labels, len(train_ds.classes), seed)
        rest = torch.ones(len(train), dtype=torch.bool)
        rest[pos] = False
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(10_000 + seed))  # as _val_split's
        extra = {"unlabelled": Split(train.x[rest], torch.full((int(rest.sum()),), -1)),
                 "labelled_index": perm[val_size:][pos], "val_index": perm[:val_size]}  # into the 60k images
        train = Split(train.x[pos], train.y[pos])
    bundle = DataBundle("images", train, val, test, num_classes=len(train_ds.classes),
                        class_names=[c.split(" - ")[-1] for c in train_ds.classes], input_shape=(1, 28, 28),
                        mean=(mean,), std=(std,), extra=extra)
    if not in_memory:
        from torchvision import transforms

        tds = _torchvision_dataset(source, folder, root, train=True)
        tds.transform = transforms.PILToTensor()
        bundle.train_dataset = torch.utils.data.Subset(tds, _train_indices(len(x), val_size, seed)[:train_size])
    return bundle


def _train_indices(n: int, val_size: int, seed: int) -> list[int]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))
    return perm[val_size:].tolist()


@register_dataset("mnist", summary="real: MNIST digits, 60k train + 10k test, 28x28 grey")
def mnist(root: Path, seed: int, *, val_size: int = 5000, in_memory: bool = True,
          mean: float = 0.1307, std: float = 0.3081, train_size: int | None = None,
          labels: int | None = None) -> DataBundle:
    """``train_size`` keeps that many of the remaining training images (null: all of them). ``labels`` keeps
    the labels of a seeded class-balanced subset of them (the training split); the others stay available,
    unlabelled, as ``extra["unlabelled"]`` (for pretraining); validation is never among either."""
    return _idx_images("MNIST", "MNIST", root, seed, val_size, in_memory, mean, std, train_size, labels)


@register_dataset("fashion-mnist", summary="real: Fashion-MNIST clothing, 60k + 10k, 28x28 grey")
def fashion_mnist(root: Path, seed: int, *, val_size: int = 5000, in_memory: bool = True,
                  mean: float = 0.2860, std: float = 0.3530, train_size: int | None = None) -> DataBundle:
    return _idx_images("FashionMNIST", "FashionMNIST", root, seed, val_size, in_memory, mean, std, train_size)


# ------------------------------------------------------------------------------------- image folders
# CIFAR-10 as JPEG folders and any ImageFolder tree a user has (train/<class>/*, val/<class>/*).

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")  # what torchvision.io.decode_image reads
# torchvision >= 0.29 warns on every decode that TorchCodec will take decoding over; the functions still work
# and dlcli supports torchvision from 0.19 on, so the notice is silenced (only that one).
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)
_JPEG = (".jpg", ".jpeg")
DECODE_CHUNK = 512  # files per decoding task; one list-form decode_jpeg call per chunk


@dataclass
class FolderIndex:
    """The image files of one split folder ``<split>/<class>/<file>``, sorted by class then name."""

    root: Path
    classes: list[str]
    files: list[str]
    labels: list[int]
    skipped: list[str] = field(default_factory=list)  # empty files, never decodable

    def __len__(self) -> int:
        return len(self.files)


def scan_image_folder(split_dir: Path, classes: list[str] | None = None) -> FolderIndex:
    """List ``split_dir/<class>/<image>``; ``classes`` (the training split's) fixes the label numbering.

    Class folders are sorted by name, as torchvision's ImageFolder numbers them; files with other extensions
    are ignored, and empty (zero-byte) image files are skipped and counted.
    """
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DlcliError(f"{split_dir} has class folder(s) that the training split lacks: {', '.join(unknown[:5])}")
    files: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, name in enumerate(classes):
        d = split_dir / name
        if not d.is_dir():
            continue
        for e in sorted(os.scandir(d), key=lambda e: e.name):
            if not e.is_file() or not e.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if e.stat().st_size == 0:
                skipped.append(e.path)
                continue
            files.append(e.path)
            labels.append(label)
    return FolderIndex(split_dir, list(classes), files, labels, skipped)


def _check_classes(index: FolderIndex, what: str) -> None:
    if not index.files:
        raise DlcliError(f"{index.root} has no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders "
                         f"{index.root.name}/<class>/<image>; {what}")
    used = sorted({index.classes[i] for i in set(index.labels)})
    if len(used) < 2:
        raise DlcliError(f"{index.root} has images of one class only ({used[0]}); a classifier needs at least "
                         f"two class folders {index.root.name}/<class>/<image>")


def _fit(img: torch.Tensor, size: int | None, resize: int | None) -> torch.Tensor:
    """Evaluation geometry: shorter side to ``resize`` (antialiased), then the central ``size`` x ``size``."""
    if size is None:
        return img
    from torchvision.transforms.v2 import functional as TF

    img = TF.resize(img, [resize or size], antialias=True)
    return TF.center_crop(img, [size, size])


def _decode_chunk(paths: list[str], size: int | None, resize: int | None
                  ) -> tuple[list[torch.Tensor | None], list[tuple[str, str]]]:
    """Decode files to uint8 RGB (C, H, W); a file that fails gives None and (path, reason)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

    datas = []
    failures: list[tuple[str, str]] = []
    for p in paths:
        try:
            datas.append(read_file(p))
        except (OSError, RuntimeError) as e:
            datas.append(None)
            failures.append((p, str(e).splitlines()[0][:100] if str(e) else type(e).__name__))
    imgs: list[torch.Tensor | None] = [None] * len(paths)
    ok = [i for i, d in enumerate(datas) if d is not None]
    if ok and all(paths[i].lower().endswith(_JPEG) for i in ok):
        try:  # the list form decodes a whole chunk in one call (about 3x faster than one call per image)
            for i, img in zip(ok, decode_jpeg([datas[i] for i in ok], mode=ImageReadMode.RGB)):
                imgs[i] = _fit(img, size, resize)
            return imgs, failures
        except RuntimeError:
            pass  # a corrupt file in the chunk: decode one by one below to find it
    for i in ok:
        try:
            imgs[i] = _fit(decode_image(datas[i], mode=ImageReadMode.RGB), size, resize)
        except RuntimeError as e:
            failures.append((paths[i], str(e).splitlines()[0][:100] or "cannot be decoded"))
    return imgs, failures


def decode_images(paths: list[str], *, size: int | None = None, resize: int | None = None,
                  threads: int | None = None) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Decode image files into one uint8 tensor (N, 3, H, W), in parallel threads (decoding releases the GIL).

    ``size`` given: every image is resized (shorter side ``resize``) and centre-cropped to ``size`` x
    ``size``; otherwise all images must already share one shape. Returns the tensor, the indices of
    ``paths`` it holds, and (path, reason) for each file that could not be read or decoded.
    """
    from concurrent.futures import ThreadPoolExecutor

    chunks = [paths[i:i + DECODE_CHUNK] for i in range(0, len(paths), DECODE_CHUNK)]
    workers = max(1, min(threads or os.cpu_count() or 1, 16, len(chunks)))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda c: _decode_chunk(c, size, resize), chunks))
    imgs = [img for r, _ in results for img in r]
    failures = [f for _, fs in results for f in fs]
    kept = [i for i, img in enumerate(imgs) if img is not None]
    if not kept:
        return torch.empty(0, 3, size or 0, size or 0, dtype=torch.uint8), kept, failures
    shapes = {tuple(imgs[i].shape) for i in kept}  # type: ignore[union-attr]
    if len(shapes) > 1:
        raise DlcliError(f"images of different sizes {sorted(shapes)[:3]} under {Path(paths[0]).parent.parent}; "
                         "every image of this data set must have the same size")
    return torch.stack([imgs[i] for i in kept]), kept, failures  # type: ignore[misc]


def cache_dir() -> Path:
    """Where decoded data sets are cached: ``$DLCLI_CACHE``, else ``$XDG_CACHE_HOME/dlcli``, else ``~/.cache/dlcli``."""
    env = os.environ.get("DLCLI_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dlcli"


def _listing_key(indexes: list[FolderIndex]) -> str:
    """A digest of the folders' absolute paths, file names, sizes and modification times."""
    import hashlib

    h = hashlib.sha1()
    for index in indexes:
        h.update(str(index.root.resolve()).encode())
        for f in index.files:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _load_cache(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a cache from another torch version or a damaged file: decode again
        return None


def _save_cache(path: Path, payload: dict[str, Any]) -> str | None:
    """Write atomically (temporary file, then rename); returns a note when the folder is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
        return None
    except OSError as e:
        return f"decoded images not cached ({path.parent}: {e.strerror})"


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel, of the training pixels in [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@register_dataset("cifar10", summary="real: CIFAR-10, 50k + 10k, 32x32 colour (image folders of JPEGs)")
def cifar10(root: Path, seed: int, *, val_size: int = 5000, train_size: int | None = None,
            test_size: int | None = None, folder: str = "cifar10-jpg", cache: bool = True) -> DataBundle:
    """CIFAR-10 as ``<folder>/{train,test}/<class>/*.jpg`` (torchvision ImageFolder layout), decoded once into
    uint8 tensors (in parallel threads) and cached in ``cache_dir()`` for the next run (``cache: false`` to
    skip). ``val_size`` random training images are held out for validation (He et al. 2015 hold out 5k of
    the 50k); ``train_size`` keeps that many of the rest and ``test_size`` a seeded random subset of the
    10k test images (quick runs and dry runs only: results are CIFAR-10 results with the full test split).
    A file that cannot be decoded is an
    error naming it: a benchmark data set with images silently missing would not be CIFAR-10.
    """
    base = root / folder
    if not (base / "train").is_dir() or not (base / "test").is_dir():
        raise DlcliError(f"CIFAR-10 not found: expected the image folders {base}/train/<class>/*.jpg and "
                         f"{base}/test/<class>/*.jpg; point --data-dir or DLCLI_DATA at the folder that holds "
                         f"{folder}/")
    t0 = time.perf_counter()
    train_index = scan_image_folder(base / "train")
    test_index = scan_image_folder(base / "test", train_index.classes)
    for index in (train_index, test_index):
        _check_classes(index, "CIFAR-10 has 5,000 training and 1,000 test JPEGs per class")
        if index.skipped:
            raise DlcliError(f"{len(index.skipped)} empty image file(s) in {index.root}, e.g. {index.skipped[0]}; "
                             "replace them with the real images")
    notes = []
    key = _listing_key([train_index, test_index]) if cache else ""
    path = cache_dir() / f"cifar10-{key}.pt"
    cached = _load_cache(path) if cache else None
    if cached is None and (train_size is not None or test_size is not None):
        return _cifar10_subset(train_index, test_index, seed, val_size, train_size, test_size, t0)
    if cached is not None:
        x, y, xt, yt = cached["train_x"], cached["train_y"], cached["test_x"], cached["test_y"]
        notes.append(f"CIFAR-10 read from the cache {path} in {time.perf_counter() - t0:.1f} s")
    else:
        splits = []
        for index in (train_index, test_index):
            imgs, _, failures = decode_images(index.files)
            if failures:
                p, why = failures[0]
                raise DlcliError(f"{len(failures)} image(s) of {index.root} cannot be decoded, e.g. {p} ({why}); "
                                 "replace them (a benchmark data set must be complete)")
            splits += [imgs, torch.tensor(index.labels)]
        x, y, xt, yt = splits
        notes.append(f"CIFAR-10 decoded from {len(x) + len(xt):,} files in {time.perf_counter() - t0:.1f} s "
                     f"({min(os.cpu_count() or 1, 16)} threads)")
        if cache:
            failed = _save_cache(path, {"train_x": x, "train_y": y, "test_x": xt, "test_y": yt,
                                        "classes": train_index.classes})
            notes.append(failed or f"cached as {path}")
    if x.shape[1:] != (3, 32, 32):
        raise DlcliError(f"{base}: expected 32x32 colour images, found {tuple(x.shape[1:])}")
    _check_sizes(len(x), len(xt), val_size, train_size, test_size)
    train, val = _val_split(x, y, val_size, seed)
    if train_size is not None:  # a random subset (the split is already a seeded permutation)
        train = Split(train.x[:train_size], train.y[:train_size])
    if test_size is not None:
        keep = torch.randperm(len(xt), generator=torch.Generator().manual_seed(20_000 + seed))[:test_size]
        xt, yt = xt[keep], yt[keep]
    return DataBundle("images", train, val, Split(xt, yt), num_classes=len(train_index.classes),
                      class_names=list(train_index.classes), input_shape=(3, 32, 32), mean=CIFAR10_MEAN,
                      std=CIFAR10_STD, extra={"notes": notes})


def _check_sizes(n_train: int, n_test: int, val_size: int, train_size: int | None, test_size: int | None) -> None:
    if not 0 <= val_size < n_train:
        raise DlcliError(f"data.args.val_size must be in [0, {n_train - 1}], got {val_size}")
    if train_size is not None and not 1 <= train_size <= n_train - val_size:
        raise DlcliError(f"data.args.train_size must be in [1, {n_train - val_size}] (or null for all), got {train_size}")
    if test_size is not None and not 1 <= test_size <= n_test:
        raise DlcliError(f"data.args.test_size must be in [1, {n_test}] (or null for all), got {test_size}")


def _cifar10_subset(train_index: FolderIndex, test_index: FolderIndex, seed: int, val_size: int,
                    train_size: int | None, test_size: int | None, t0: float) -> DataBundle:
    """A quick run's CIFAR-10 without a cache: decode only the files its splits use. The same images, in the
    same order, as the full decode followed by ``_val_split`` and the subsets (tested), not cached."""
    _check_sizes(len(train_index), len(test_index), val_size, train_size, test_size)
    perm = (torch.randperm(len(train_index), generator=torch.Generator().manual_seed(10_000 + seed)) if val_size
            else torch.arange(len(train_index)))  # _val_split's order
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    test_idx = torch.arange(len(test_index))
    if test_size is not None:
        test_idx = torch.randperm(len(test_index), generator=torch.Generator().manual_seed(20_000 + seed))[:test_size]
    splits = []
    for index, idx in ((train_index, train_idx), (train_index, val_idx), (test_index, test_idx)):
        files = [index.files[i] for i in idx.tolist()]
        imgs, _, failures = decode_images(files)
        if failures:
            p, why = failures[0]
            raise DlcliError(f"{len(failures)} image(s) of {index.root} cannot be decoded, e.g. {p} ({why}); "
                             "replace them (a benchmark data set must be complete)")
        if len(files) and imgs.shape[1:] != (3, 32, 32):
            raise DlcliError(f"{index.root}: expected 32x32 colour images, found {tuple(imgs.shape[1:])}")
        splits.append(Split(imgs, torch.tensor(index.labels)[idx]))
    train, val, test = splits
    n = len(train) + len(val) + len(test)
    note = (f"CIFAR-10: decoded only the {n:,} files this run uses (train_size / test_size set, no cache) in "
            f"{time.perf_counter() - t0:.1f} s")
    return DataBundle("images", train, val if val_size else None, test, num_classes=len(train_index.classes),
                      class_names=list(train_index.classes), input_shape=(3, 32, 32), mean=CIFAR10_MEAN,
                      std=CIFAR10_STD, extra={"notes": [note]})


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's normalisation for its ImageNet models
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolderTrainSet(Dataset):
    """Training images decoded in DataLoader workers: torchvision's reference augmentation (a random crop of
    8-100% of the area and 3/4-4/3 aspect ratio, resized to ``size``; a horizontal flip with probability 1/2).
    Yields (uint8 (3, size, size), label). A file that cannot be decoded is replaced by the next one that can,
    with one line on stderr naming it (the count of such files is only known once an epoch has read them all).
    """

    def __init__(self, index: FolderIndex, size: int) -> None:
        self.files, self.labels, self.size = index.files, index.labels, size
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.io import ImageReadMode, decode_image, read_file
        from torchvision.transforms import v2

        for j in range(i, i + min(len(self.files), 16)):
            path = self.files[j % len(self.files)]
            try:
                img = decode_image(read_file(path), mode=ImageReadMode.RGB)
                break
            except RuntimeError as e:
                if path not in self._warned:
                    self._warned.add(path)
                    print(f"dlcli: skipped an image that cannot be decoded: {path} ({str(e).splitlines()[0][:80]})",
                          file=sys.stderr, flush=True)
        else:
            raise DlcliError(f"16 consecutive images from {self.files[i]} on cannot be decoded; check the folder")
        img = v2.RandomResizedCrop(self.size, antialias=True)(img)
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.labels[j % len(self.files)]


def _eval_split(index: FolderIndex, size: int, resize: int, notes: list[str]) -> Split:
    imgs, kept, failures = decode_images(index.files, size=size, resize=resize)
    skipped = len(index.skipped) + len(failures)
    if skipped:
        example = (index.skipped or [f for f, _ in failures])[0]
        notes.append(f"{index.root.name}/: skipped {skipped} of {len(index) + len(index.skipped)} image file(s) "
                     f"that are empty or cannot be decoded, e.g. {example}")
    if not kept:
        raise DlcliError(f"{index.root}: none of its {len(index)} image file(s) can be decoded")
    return Split(imgs, torch.tensor([index.labels[i] for i in kept]))


@register_dataset("imagefolder", summary="your images: DIR/train/<class>/*, DIR/val/<class>/* (ImageNet layout)")
def imagefolder(root: Path, seed: int, *, path: str | None = None, size: int = 224, resize: int = 256,
                train_size: int | None = None, mean: list[float] | None = None,
                std: list[float] | None = None) -> DataBundle:
    """Any ``torchvision.datasets.ImageFolder`` tree: ``path/train/<class>/<image>`` and ``path/val/<class>/<image>``
    (and ``path/test/<class>/<image>`` when there is one; without it the final score is on val/, as the
    torchvision references report ImageNet). A relative ``path`` is looked for in the current folder, then
    under the data folder (``--data-dir`` / ``DLCLI_DATA``).

    Training images are decoded by DataLoader workers, every epoch (``task_args.workers``), with random
    resized crops of ``size`` pixels and flips; val/ and test/ are decoded once, resized (shorter side
    ``resize``) and centre-cropped to ``size``, and held in memory as uint8 (150 KB per 224x224 image).
    Empty files are skipped and counted; val/test images that cannot be decoded are skipped and counted in
    the run header; training images that cannot be decoded are replaced with a line naming each.
    ``train_size`` keeps a seeded random subset of the training images (quick runs).
    """
    where = "give the folder with --set data.args.path=DIR"
    if path is None:
        raise DlcliError(f"no image folder given: {where} (a folder with train/<class>/<image> and "
                         "val/<class>/<image>)")
    base = Path(path).expanduser()
    if not base.is_absolute() and not base.is_dir():
        base = root / base
    if not (base / "train").is_dir() or not (base / "val").is_dir():
        raise DlcliError(f"image folder {base} not found or incomplete: expected {base}/train/<class>/<image> and "
                         f"{base}/val/<class>/<image> (jpg, png, ...); {where}")
    if size < 16 or resize < size:
        raise DlcliError(f"data.args: size must be >= 16 and resize >= size (got size {size}, resize {resize})")
    t0 = time.perf_counter()
    train_index = scan_image_folder(base / "train")
    _check_classes(train_index, "put each class's training images in its own folder")
    notes: list[str] = []
    if train_index.skipped:
        notes.append(f"train/: skipped {len(train_index.skipped)} empty image file(s), e.g. {train_index.skipped[0]}")
    if train_size is not None:
        if not 1 <= train_size <= len(train_index):
            raise DlcliError(f"data.args.train_size must be in [1, {len(train_index)}] (or null for all), "
                             f"got {train_size}")
        keep = sorted(torch.randperm(len(train_index), generator=torch.Generator().manual_seed(10_000 + seed))
                      [:train_size].tolist())
        train_index = FolderIndex(train_index.root, train_index.classes, [train_index.files[i] for i in keep],
                                  [train_index.labels[i] for i in keep], train_index.skipped)
    val_index = scan_image_folder(base / "val", train_index.classes)
    if not val_index.files:
        raise DlcliError(f"{base}/val has no images in class folders val/<class>/<image>")
    val = _eval_split(val_index, size, resize, notes)
    if (base / "test").is_dir():
        test = _eval_split(scan_image_folder(base / "test", train_index.classes), size, resize, notes)
    else:
        test = val
        notes.append("no test/ folder: the final score is on val/, which also chooses best.pt")
    notes.append(f"image folder {base}: {len(train_index):,} training images in {len(train_index.classes)} classes "
                 f"(decoded by DataLoader workers each epoch); val/test decoded in {time.perf_counter() - t0:.1f} s")
    c = 3
    return DataBundle("images", None, val, test, num_classes=len(train_index.classes),
                      class_names=list(train_index.classes), input_shape=(c, size, size),
                      mean=tuple(mean or IMAGENET_MEAN), std=tuple(std or IMAGENET_STD),
                      extra={"notes": notes, "root": str(base)},
                      train_dataset=ImageFolderTrainSet(train_index, size))
