"""Image data held as JPEG/PNG folders: CIFAR-10 (``cifar10``, decoded once into uint8 tensors and cached)
and any ImageFolder tree a user has (``imagefolder``: train/<class>/*, val/<class>/*), with the folder
scanning and parallel image decoding they share.

Layering: this module imports the shared pieces (registry, ``Split``, ``DataBundle``, the validation hold-out)
from ``dlcli.data_core`` and registers its two sources itself; ``dlcli.data`` imports this module at its top
and re-exports its public names, so ``from dlcli.data import scan_image_folder`` keeps working and importing
``dlcli.data`` registers these sources. This module never imports ``dlcli.data`` (no cycle).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from dlcli.data_core import DataBundle, Split, _val_split, register_dataset
from dlcli.errors import DlcliError, UsageError

# ------------------------------------------------------------------------------ scanning and decoding

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


# ------------------------------------------------------------------------------------------- CIFAR-10


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


def _jpeg_note(index: FolderIndex) -> list[str]:
    """A note when the CIFAR-10 files are JPEGs: their accuracies are not the literature's (measured cost)."""
    if not index.files or not str(index.files[0]).lower().endswith((".jpg", ".jpeg")):
        return []
    return [("CIFAR-10 read from JPEG files, not the original pixels: on the quality-75 copy airbench loses about 3 "
             "points of test accuracy (benchmarks/RESULTS.md), so the papers' accuracies are about that much higher "
             "than what a run on this copy reaches")]


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
    notes = _jpeg_note(train_index)
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
        raise UsageError(f"data.args.val_size must be in [0, {n_train - 1}], got {val_size}")
    if train_size is not None and not 1 <= train_size <= n_train - val_size:
        raise UsageError(f"data.args.train_size must be in [1, {n_train - val_size}] (or null for all), got {train_size}")
    if test_size is not None and not 1 <= test_size <= n_test:
        raise UsageError(f"data.args.test_size must be in [1, {n_test}] (or null for all), got {test_size}")


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
                      std=CIFAR10_STD, extra={"notes": [note, *_jpeg_note(train_index)]})


# ---------------------------------------------------------------------------------- ImageFolder trees


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
    for key, values in (("mean", mean), ("std", std)):  # per RGB channel; the inputs are divided by std
        ok = values is None or (isinstance(values, list) and len(values) == 3 and all(
            isinstance(v, (int, float)) and math.isfinite(v) and (key == "mean" or v > 0) for v in values))
        if not ok:
            raise UsageError(f"data.args.{key}: expected 3 finite numbers (red, green, blue)"
                             f"{', each > 0' if key == 'std' else ''}, or null for ImageNet's; got {values}")
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
        raise UsageError(f"data.args: size must be >= 16 and resize >= size (got size {size}, resize {resize})")
    t0 = time.perf_counter()
    train_index = scan_image_folder(base / "train")
    _check_classes(train_index, "put each class's training images in its own folder")
    notes: list[str] = []
    if train_index.skipped:
        notes.append(f"train/: skipped {len(train_index.skipped)} empty image file(s), e.g. {train_index.skipped[0]}")
    if train_size is not None:
        if not 1 <= train_size <= len(train_index):
            raise UsageError(f"data.args.train_size must be in [1, {len(train_index)}] (or null for all), "
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
