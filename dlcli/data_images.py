"""Image data held as JPEG/PNG folders: the folder scanning and parallel image decoding that CIFAR-10's image
folders (``dlcli.data_cifar``) and any ImageFolder tree a user has (the ``imagefolder`` source: train/<class>/*,
val/<class>/*) share, and the cache of decoded images.

Layering: this module imports the shared pieces (registry, ``Split``, ``DataBundle``, the validation hold-out)
from ``dlcli.data_core`` and registers ``imagefolder`` itself; ``dlcli.data_cifar`` builds on it, and
``dlcli.data`` imports both at its top and re-exports their public names, so ``from dlcli.data import
scan_image_folder`` keeps working and importing ``dlcli.data`` registers these sources. This module never
imports ``dlcli.data`` or ``dlcli.data_cifar`` (no cycle).
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

from dlcli.data_core import DataBundle, Split, register_dataset
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


# ----------------------------------------------------------------------------- the decoded-data cache


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
