"""Data sources by name -> in-memory splits plus metadata (classes, input shape, normalisation).

Real data (MNIST, Fashion-MNIST, CIFAR-10) is looked for under ``--data-dir``, then ``$DLCLI_DATA``, then
``~/.cache/dlcli``, in torchvision's layout (CIFAR-10 also as image folders); MNIST's IDX files are read here,
without importing torchvision. Missing files are downloaded from torchvision's mirrors when there is a network
(``dlcli.download``: MD5 checked, a bar on stderr); when that fails the error is one sentence saying which files
to put where.

Small data sets are held as tensors (uint8 images, or float points) and batched by indexing, on the training
device, so the input side never limits speed. ``in_memory: false`` keeps a classic ``DataLoader`` over the
torchvision dataset for data that does not fit.

The toy sources (``linear2d``, ``xor``, ``function1d``) are generated, as in the lecture.

This module is the one to import for data: it holds the toy and MNIST sources, ``load_data`` and
``data_root``, and re-exports the rest. The layers, lowest first (no module imports a higher one):
``dlcli.data_core`` (registry, ``Split``, ``DataBundle``) and ``dlcli.download`` (the downloads, or one line
saying where to put the files) <- ``dlcli.data_images`` (image folders: scanning, decoding, the
cache; registers ``imagefolder``) <- ``dlcli.data_cifar`` (CIFAR-10 from the original batches or image
folders; registers ``cifar10``) <- ``dlcli.data`` (imports them at the top, so importing it registers every
built-in source before ``load_data`` or a recipe check looks one up).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import torch

from dlcli.data_cifar import CIFAR10_MEAN, CIFAR10_STD, cifar10  # noqa: F401  (re-exported)
from dlcli.data_core import DATASETS, DataBundle, Split, _val_split, register_dataset
from dlcli.data_images import (  # noqa: F401  (re-exported: `from dlcli.data import ...` reaches every source)
    DECODE_CHUNK,
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderIndex,
    ImageFolderTrainSet,
    cache_dir,
    decode_images,
    imagefolder,
    scan_image_folder,
)
from dlcli.download import fetch_idx
from dlcli.errors import DlcliError, UsageError


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

#: linear2d's line passes at most this far from the centre of the square [-1, 1]^2 (|b| <= 0.25)
LINE_OFFSET = 0.25
#: margins below this leave room on both sides of every such line (each side of it reaches at least
#: 1 - LINE_OFFSET from it, the worst case being a line parallel to an edge) and let over a fifth of the square's
#: points qualify, so the rejection sampler below ends; wider gaps can leave a side, or the whole square, empty
MAX_MARGIN = 1 - LINE_OFFSET


@register_dataset("linear2d", summary="generated: two linearly separable 2-D classes with a margin")
def linear2d(root: Path, seed: int, *, n: int = 100, margin: float = 0.1) -> DataBundle:
    """Points in [-1, 1]^2 labelled by a random line through the square, with a gap of ``margin`` on each side."""
    if n < 1:
        raise UsageError(f"data.args.n: expected the number of points, an integer >= 1, got {n}")
    if not (math.isfinite(margin) and 0 <= margin < MAX_MARGIN):
        raise UsageError(f"data.args.margin: expected a number in [0, {MAX_MARGIN}), got {margin}: the points lie in "
                         f"[-1, 1]^2 and the line passes up to {LINE_OFFSET} from its centre, so a wider gap can "
                         "leave one side of it empty")
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand((), generator=g) * 2 * math.pi
    w = torch.stack([torch.cos(angle), torch.sin(angle)])  # unit normal of the true line
    b = (torch.rand((), generator=g) - 0.5) * (2 * LINE_OFFSET)
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
        raise UsageError(f"data.args.fn: unknown function {fn!r}; valid names: {', '.join(FUNCTIONS)}")
    if n_train < 2 or n_grid < 2:
        raise UsageError("data.args.n_train and n_grid must be at least 2")
    f = FUNCTIONS[fn]
    g = torch.Generator().manual_seed(seed)
    xt = torch.rand(n_train, 1, generator=g)
    xg = torch.linspace(0, 1, n_grid).unsqueeze(1)
    return DataBundle("points", Split(xt, f(xt)), None, Split(xg, f(xg)), input_shape=(1,), extra={"fn": fn})


# ------------------------------------------------------------------------------------------- real data

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _fetch_idx(cls_name: str, folder: str, root: Path) -> None:
    """Download the IDX files missing from ``root/folder/raw``; offline -> one clear sentence, within seconds."""
    raw = root / folder / "raw"
    fetch_idx(cls_name, raw, folder, f"put the files {', '.join(_MNIST_FILES)} (or the .gz files they come in) in "
              f"{raw}, or point --data-dir or DLCLI_DATA at a folder that has {folder}/raw/")


def class_balanced(y: torch.Tensor, labels: int, num_classes: int, seed: int) -> torch.Tensor:
    """Positions in ``y`` of a seeded class-balanced subset of ``labels`` examples: ``labels // num_classes``
    of each class, one more for the first ``labels % num_classes`` classes; sorted."""
    counts = torch.bincount(y, minlength=num_classes)
    if not num_classes <= labels <= len(y):
        raise UsageError(f"data.args.labels must be in [{num_classes}, {len(y)}] (a class-balanced labelled subset "
                         f"of the {len(y)} training images; null for all), got {labels}")
    quota = [labels // num_classes + (1 if c < labels % num_classes else 0) for c in range(num_classes)]
    short = [c for c in range(num_classes) if quota[c] > counts[c]]
    if short:
        top = num_classes * int(counts.min())
        raise UsageError(f"data.args.labels {labels} cannot be class-balanced: class {short[0]} has only "
                         f"{int(counts[short[0]])} training images; at most {top}, or null for all labels")
    g = torch.Generator().manual_seed(30_000 + seed)
    picked = []
    for c in range(num_classes):
        where = (y == c).nonzero().flatten()
        picked.append(where[torch.randperm(len(where), generator=g)[:quota[c]]])
    return torch.cat(picked).sort().values


# torchvision's class names (``MNIST.classes`` "0 - zero" -> "zero", ``FashionMNIST.classes``), kept here so that
# reading the files does not import torchvision (seconds per process: it imports torch._dynamo)
IDX_CLASSES = {
    "MNIST": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "FashionMNIST": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"],
}


def read_idx(path: Path) -> torch.Tensor:
    """One IDX file of unsigned bytes (LeCun's MNIST format: bytes 0, 0, 0x08, the number of dimensions, each
    dimension as a big-endian int32, then the data) as a uint8 tensor of those dimensions."""
    raw = path.read_bytes()
    ndim = raw[3] if len(raw) >= 4 and raw[:3] == b"\x00\x00\x08" else 0
    if not 1 <= ndim <= 3:
        raise DlcliError(f"{path} is not an IDX file of unsigned bytes (MNIST's format): replace it with the "
                         f"original file")
    head = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if min(dims) < 1 or len(raw) != head + math.prod(dims):
        raise DlcliError(f"{path} has {len(raw):,} bytes where its header promises {head + math.prod(dims):,} "
                         f"(truncated or corrupt): replace it with the original file")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=head).view(dims)


def _idx_split(source: str, folder: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one split, read straight from ``root/folder/raw``;
    missing files are downloaded first (or one line says where to put them)."""
    prefix = "train" if train else "t10k"
    raw = root / folder / "raw"
    images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    if not (images.is_file() and labels.is_file()):
        _fetch_idx(source, folder, root)
    x, y = read_idx(images), read_idx(labels).long()
    if x.dim() != 3 or y.dim() != 1 or len(x) != len(y) or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < 10):
        raise DlcliError(f"{images.name} and {labels.name} in {images.parent} do not belong together "
                         f"({tuple(x.shape)} images, {tuple(y.shape)} labels): replace them with the original files")
    return x, y


def _idx_images(source: str, folder: str, root: Path, seed: int, val_size: int, in_memory: bool,
                mean: float, std: float, train_size: int | None = None, labels: int | None = None) -> DataBundle:
    if not math.isfinite(mean):  # checked before any file is read
        raise UsageError(f"data.args.mean: expected a finite number, got {mean}")
    if not (math.isfinite(std) and std > 0):  # the inputs are divided by it
        raise UsageError(f"data.args.std: expected a finite number > 0, got {std}")
    x, y = _idx_split(source, folder, root, train=True)  # uint8 (N, 28, 28): no PIL round trip
    x = x.unsqueeze(1).contiguous()
    test_x, test_y = _idx_split(source, folder, root, train=False)
    classes = IDX_CLASSES[source]
    if train_size is not None and not 1 <= train_size <= len(x) - val_size:
        raise UsageError(f"data.args.train_size must be in [1, {len(x) - val_size}] (or null for all), "
                         f"got {train_size}")
    train, val = _val_split(x, y, val_size, seed)
    if train_size is not None:  # a random subset (the split is already a seeded permutation): for quick runs
        train = Split(train.x[:train_size], train.y[:train_size])
    test = Split(test_x.unsqueeze(1).contiguous(), test_y)
    extra: dict[str, Any] = {}
    if labels is not None:  # a label budget: the rest of the training images stay, unlabelled (y = -1)
        if not in_memory:
            raise UsageError("data.args.labels needs in_memory: true")
        pos = class_balanced(train.y, labels, len(classes), seed)
        rest = torch.ones(len(train), dtype=torch.bool)
        rest[pos] = False
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(10_000 + seed))  # as _val_split's
        extra = {"unlabelled": Split(train.x[rest], torch.full((int(rest.sum()),), -1)),
                 "labelled_index": perm[val_size:][pos], "val_index": perm[:val_size]}  # into the 60k images
        train = Split(train.x[pos], train.y[pos])
    bundle = DataBundle("images", train, val, test, num_classes=len(classes), class_names=list(classes),
                        input_shape=(1, 28, 28), mean=(mean,), std=(std,), extra=extra)
    if not in_memory:
        import torchvision.datasets as tvd
        from torchvision import transforms

        # the files are there (read above); torchvision's dataset decodes one image at a time from them
        tds = getattr(tvd, source)(root=str(root), train=True, download=False, transform=transforms.PILToTensor())
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
