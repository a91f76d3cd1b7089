"""CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images"): the ``cifar10`` data
source, read from whichever copy a user has, as uint8 tensors (N, 3, 32, 32) held in memory.

- **The original** (``files: original``): the python batches ``cifar-10-batches-py/`` (``data_batch_1`` to
  ``_5`` and ``test_batch``, 10,000 images each, and ``batches.meta``), the folder torchvision's ``CIFAR10``
  downloads from the author's page. Each file is checked against its published MD5 before it is read, and
  read by an unpickler that answers numpy's globals with inert stand-ins, so a doctored file can neither run
  code nor reach numpy.
- **Image folders** (``files: images``): ``<folder>/{train,test}/<class>/*.jpg``, torchvision's ImageFolder
  layout, decoded once (in parallel threads) and cached. This project's machines hold a JPEG quality-75 copy
  of this kind, which costs airbench about 3 points of accuracy (benchmarks/RESULTS.md); runs on it say so.
- ``files: auto`` (the default) reads the original when ``cifar-10-batches-py/`` is there, else the image
  folders when they are there, else the original's tarball ``cifar-10-python.tar.gz`` when it is there
  (extracted once), else downloads that tarball (163 MB, ``dlcli.download.stream``) and reads it. Without a network
  the error is one sentence saying which files to put where.

Layering: imports ``dlcli.data_core``, ``dlcli.data_images`` (scanning, decoding, the cache) and
``dlcli.download``; ``dlcli.data`` imports this module (which registers ``cifar10``) and re-exports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from dlcli.data_core import DataBundle, Split, _val_split, register_dataset
from dlcli.data_images import (
    FolderIndex,
    _check_classes,
    _listing_key,
    _load_cache,
    _save_cache,
    cache_dir,
    decode_images,
    scan_image_folder,
)
from dlcli.download import file_hash, folder_lock, guarded, stream
from dlcli.errors import DlcliError, UsageError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel, of the training pixels in [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

ORIGINAL_FOLDER = "cifar-10-batches-py"  # what the author's tarball holds
TARBALL = "cifar-10-python.tar.gz"
TARBALL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
#: the published MD5 of each file of ORIGINAL_FOLDER (torchvision's CIFAR10 lists the same; tested)
ORIGINAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
FILES = ("auto", "original", "images")

# ------------------------------------------------------------------------------- the original batches


class OriginalProblem(DlcliError):
    """A file of the original batches is missing (``kind`` "incomplete") or not the published one ("damaged")."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Array:
    """A numpy array as a batch's pickle describes it (numpy's ``_reconstruct``, then its state), kept as plain
    data: nothing of the pickle ever reaches numpy, and ``pixels`` accepts a uint8 C-order array only."""

    def __init__(self, subtype: object, shape: object, code: object) -> None:
        if subtype is not _Array:  # numpy.ndarray's stand-in (see _PICKLE_GLOBALS)
            raise pickle.UnpicklingError("an array that is not a plain numpy array")
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def pixels(self) -> torch.Tensor | None:
        """The array as a uint8 tensor of its shape, or None when it is anything else (checked before any
        memory is taken: the shape must fit the bytes there are)."""
        state = getattr(self, "state", None)  # (absent when a pickle built the object without __init__)
        if not (isinstance(state, tuple) and len(state) == 5):
            return None
        _, shape, dtype, fortran, raw = state
        if isinstance(raw, str):  # Python 2's str, decoded as latin-1 by the unpickler
            try:
                raw = raw.encode("latin1")
            except UnicodeEncodeError:  # not what the unpickler makes of bytes
                return None
        if not (isinstance(shape, tuple) and 0 < len(shape) <= 4 and all(type(n) is int and 0 <= n < 2**31
                                                                        for n in shape)
                and fortran is False and isinstance(dtype, _Dtype) and getattr(dtype, "spec", None) == "u1"
                and isinstance(raw, bytes) and len(raw) == math.prod(shape)):
            return None
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(shape) if raw else torch.zeros(shape,
                                                                                                      dtype=torch.uint8)


class _Dtype:
    """numpy.dtype as pickled: its type code ("u1" for uint8) and state, kept as plain data."""

    def __init__(self, spec: object, align: object = False, copy: object = False) -> None:
        self.spec = spec

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Latin1:
    """How Python 3 writes bytes at pickle protocol 2: codecs.encode(str, "latin1"), and nothing else. An
    instance without attributes, so a pickle cannot alter it for the rest of the process."""

    __slots__ = ()

    def __call__(self, text: object, encoding: object = "latin1") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError("codecs.encode of anything but latin-1 text")
        try:
            return text.encode("latin1")
        except UnicodeEncodeError:
            raise pickle.UnpicklingError("codecs.encode of anything but latin-1 text") from None

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("a pickle that alters the unpickler's own helpers")


_latin1 = _Latin1()


#: the globals a batch's pickle names -> their inert stand-ins
_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _Array,  # the 2009 files' name for it
    ("numpy._core.multiarray", "_reconstruct"): _Array,  # numpy >= 2's
    ("numpy", "ndarray"): _Array, ("numpy", "dtype"): _Dtype, ("_codecs", "encode"): _latin1,
}


class _ArraysOnly(pickle._Unpickler):  # the pure-Python unpickler: its memo is a dict, not an array a pickle sizes
    """Unpickles what a CIFAR-10 batch holds (a dict of one uint8 array, lists, strings, numbers) and nothing
    else. The few globals such a pickle names are answered with inert stand-ins (``_Array``, ``_Dtype``, a
    latin-1 ``codecs.encode``) that only record what the pickle says; any other global (a function it would
    call) is refused. numpy never sees the pickle's contents, so no pickle can build an object array from its
    own bytes or reshape numpy's own types."""

    def find_class(self, module: str, name: str) -> Any:
        found = _PICKLE_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never does")
        return found


def _parse_batch(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        entry = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()  # the files were pickled by Python 2
    except Exception as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DlcliError(f"{path} cannot be read as a CIFAR-10 batch ({why}): replace it with the original file") from e
    if not isinstance(entry, dict):
        raise DlcliError(f"{path} holds a {type(entry).__name__}, not a CIFAR-10 batch: replace it with the original")
    return entry


def _checked_bytes(folder: Path, name: str) -> bytes:
    """The bytes of ``folder/name``, read once, if they have the published MD5; else ``OriginalProblem``."""
    path = folder / name
    redo = (f"put the original file back, or delete {folder} to download it again (or to extract it again from "
            f"{TARBALL} beside it)")
    if not path.is_file():
        raise OriginalProblem("incomplete", f"{path} is missing (the original CIFAR-10 has {', '.join(ORIGINAL_MD5)} "
                                            f"in {ORIGINAL_FOLDER}/): {redo}")
    raw = path.read_bytes()
    if hashlib.md5(raw).hexdigest() != ORIGINAL_MD5[name]:
        raise OriginalProblem("damaged", f"{path} is not the original CIFAR-10 file (its MD5 is not the published "
                                         f"{ORIGINAL_MD5[name]}): {redo}")
    return raw


def original_problem(folder: Path) -> tuple[str, str] | None:
    """None when every file of the original is in ``folder`` with its published MD5 (``ORIGINAL_MD5``), else
    ("incomplete" | "damaged", one line naming the file and what to do)."""
    try:
        for name in ORIGINAL_MD5:
            _checked_bytes(folder, name)
    except OriginalProblem as e:
        return e.kind, str(e)
    return None


def read_original(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """The original batches of ``folder``: train images (50000, 3, 32, 32) uint8, train labels (50000,) int64,
    test images and labels (10,000), and the 10 class names, in the files' order. Each file is read once and
    must have its published MD5 (else ``OriginalProblem``)."""
    missing = [name for name in ORIGINAL_MD5 if not (folder / name).is_file()]
    if missing:  # before reading 180 MB
        _checked_bytes(folder, missing[0])
    meta = _parse_batch(folder / "batches.meta", _checked_bytes(folder, "batches.meta"))
    classes = [str(c) for c in meta.get("label_names", [])]
    splits: list[torch.Tensor] = []
    for names in (TRAIN_BATCHES, ("test_batch",)):
        xs, ys = [], []
        for name in names:
            entry = _parse_batch(folder / name, _checked_bytes(folder, name))
            data, labels = entry.get("data"), entry.get("labels")
            pixels = data.pixels() if isinstance(data, _Array) else None  # (N, 3072) uint8
            if not (pixels is not None and pixels.dim() == 2 and pixels.shape[1] == 3 * 32 * 32
                    and isinstance(labels, list) and len(labels) == len(pixels)
                    and all(type(v) is int and 0 <= v < 2**31 for v in labels)):
                raise DlcliError(f"{folder / name} does not hold 32x32 colour images with one label each: replace "
                                 "it with the original file")
            # each row: the 1024 red values of a 32x32 image row by row, then the green, then the blue
            xs.append(pixels.view(-1, 3, 32, 32))
            ys.append(torch.tensor(labels, dtype=torch.int64))
        splits += [torch.cat(xs), torch.cat(ys)]
    x, y, xt, yt = splits
    if not classes or int(torch.cat([y, yt]).max()) >= len(classes):  # (each label was checked to be >= 0)
        raise DlcliError(f"{folder}: the labels do not match the {len(classes)} class names of batches.meta; "
                         "replace the files with the original ones")
    return x, y, xt, yt, classes


# ------------------------------------------------------------------ which copy, and fetching the original


def has_original(root: Path) -> bool:
    """``root/cifar-10-batches-py`` holds at least one file of the original (an empty folder does not count)."""
    return any((root / ORIGINAL_FOLDER / name).is_file() for name in ORIGINAL_MD5)


def choose_copy(root: Path, files: str = "auto", folder: str = "cifar10-jpg") -> str:
    """What ``files`` reads under ``root``: "original" (the batches' folder), "images" (the image folders),
    "tarball" (the original's tarball, extracted first) or "download" (the tarball, downloaded first)."""
    if files not in FILES:
        raise UsageError(f"data.args.files must be one of {', '.join(FILES)}, got {files!r}")
    if files == "images":
        return "images"
    if has_original(root):
        return "original"
    if files == "auto" and (root / folder / "train").is_dir() and (root / folder / "test").is_dir():
        return "images"
    return "tarball" if (root / TARBALL).is_file() else "download"


def tarball_problem(tarball: Path) -> str | None:
    """None when ``tarball`` has the published MD5, else one line saying what to do."""
    if tarball.is_file() and file_hash(tarball, "md5") == TARBALL_MD5:
        return None
    return (f"{tarball} is not the original CIFAR-10 tarball (its MD5 is not the published {TARBALL_MD5}): delete "
            f"it to download it again, or download it again from {TARBALL_URL}")


def _fetch_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """Held while the original is downloaded or extracted under ``root``: runs started together on one data
    folder (a sweep, a job array) fetch it once, the others wait and read it; a killed fetch's temporary files
    are removed under it (``dlcli.download.folder_lock``)."""
    return folder_lock(root, ".cifar-10.lock", (f".{TARBALL}.*.part", f".{ORIGINAL_FOLDER}.*.tmp"))


def _extract(root: Path) -> str:
    """Extract the tarball into a temporary folder beside it, then move ``cifar-10-batches-py`` into place
    (replacing a partial or damaged one): an interrupted extraction never looks like the original. Called
    with ``_fetch_lock`` held."""
    import shutil

    from torchvision.datasets.utils import extract_archive

    t0, tarball = time.perf_counter(), root / TARBALL
    problem = tarball_problem(tarball)
    if problem:
        raise DlcliError(problem)
    tmp = root / f".{ORIGINAL_FOLDER}.{os.getpid()}.tmp"
    try:
        extract_archive(str(tarball), str(tmp))
        shutil.rmtree(root / ORIGINAL_FOLDER, ignore_errors=True)
        os.replace(tmp / ORIGINAL_FOLDER, root / ORIGINAL_FOLDER)
    except OSError as e:  # a read-only or full disk
        raise DlcliError(f"cannot extract {tarball} into {root} ({e.strerror or e}): make room or make it writable, "
                         f"or extract it there yourself") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return f"CIFAR-10 extracted from {tarball} in {time.perf_counter() - t0:.1f} s"


def _download(root: Path, hint: str) -> str:
    """Download the tarball (to a temporary name, MD5 checked, then renamed), then extract it. Called with
    ``_fetch_lock`` held."""
    t0 = time.perf_counter()
    guarded([TARBALL_URL], f"CIFAR-10 not found under {root}", hint,
            lambda: stream(TARBALL_URL, root / TARBALL, md5=TARBALL_MD5))
    note = f"CIFAR-10 downloaded into {root / TARBALL} in {time.perf_counter() - t0:.0f} s"
    return f"{note}; {_extract(root)}"


def _missing_hint(root: Path, folder: str, files: str) -> str:
    original = (f"put the original {TARBALL} ({TARBALL_URL}) or the {ORIGINAL_FOLDER}/ folder it holds in "
                f"{root}")
    if files == "original":
        return f"{original}, or point --data-dir or DLCLI_DATA at a folder that has one of them"
    return (f"{original}, or image folders {root / folder}/{{train,test}}/<class>/*.jpg, or point --data-dir or "
            f"DLCLI_DATA at a folder that has one of them")


def original_tensors(root: Path, files: str = "original", folder: str = "cifar10-jpg"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str], list[str]]:
    """``read_original`` of ``root/cifar-10-batches-py``, after extracting or downloading it when it is not
    there, and extracting it again from a valid tarball beside it when it is incomplete or damaged; also
    returns notes saying what was done."""
    copy = choose_copy(root, files, folder)
    notes = []
    if copy in ("tarball", "download"):
        with _fetch_lock(root):
            copy = choose_copy(root, files, folder)  # another run may have fetched it while this one waited
            if copy == "tarball":
                notes.append(_extract(root))
            elif copy == "download":
                notes.append(_download(root, _missing_hint(root, folder, files)))
    t0 = time.perf_counter()
    try:
        out = read_original(root / ORIGINAL_FOLDER)
    except OriginalProblem:
        if copy != "original" or not (root / TARBALL).is_file():
            raise
        with _fetch_lock(root):  # a partial extraction, or a damaged file, beside the tarball
            try:
                out = read_original(root / ORIGINAL_FOLDER)  # another run may have mended it meanwhile
            except OriginalProblem:
                notes.append(_extract(root))
                out = read_original(root / ORIGINAL_FOLDER)
    notes.append(f"CIFAR-10 read from the original batches in {root / ORIGINAL_FOLDER} in "
                 f"{time.perf_counter() - t0:.1f} s")
    return (*out, notes)


# ------------------------------------------------------------------------------------- the data source


@register_dataset("cifar10", summary="real: CIFAR-10, 50k + 10k, 32x32 colour (original batches or image folders)")
def cifar10(root: Path, seed: int, *, val_size: int = 5000, train_size: int | None = None,
            test_size: int | None = None, files: str = "auto", folder: str = "cifar10-jpg",
            cache: bool = True) -> DataBundle:
    """CIFAR-10 from the original batches or from image folders (``files``: see the module's docstring).
    ``val_size`` random training images are held out for validation (He et al. 2015 hold out 5k of the 50k);
    ``train_size`` keeps that many of the rest and ``test_size`` a seeded random subset of the 10k test images
    (quick runs and dry runs only: results are CIFAR-10 results with the full test split). ``folder`` and
    ``cache`` concern the image folders. A file that cannot be read is an error naming it: a benchmark data set
    with images silently missing would not be CIFAR-10.
    """
    if choose_copy(root, files, folder) == "images":
        return _from_images(root / folder, folder, seed, val_size, train_size, test_size, cache)
    x, y, xt, yt, classes, notes = original_tensors(root, files, folder)
    return _bundle(x, y, xt, yt, classes, seed, val_size, train_size, test_size, notes)


def _bundle(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, classes: list[str], seed: int,
            val_size: int, train_size: int | None, test_size: int | None, notes: list[str]) -> DataBundle:
    """The splits of a whole CIFAR-10 (either copy): the seeded hold-out, then the optional subsets."""
    _check_sizes(len(x), len(xt), val_size, train_size, test_size)
    train, val = _val_split(x, y, val_size, seed)
    if train_size is not None:  # a random subset (the split is already a seeded permutation)
        train = Split(train.x[:train_size], train.y[:train_size])
    if test_size is not None:
        keep = torch.randperm(len(xt), generator=torch.Generator().manual_seed(20_000 + seed))[:test_size]
        xt, yt = xt[keep], yt[keep]
    return DataBundle("images", train, val, Split(xt, yt), num_classes=len(classes), class_names=list(classes),
                      input_shape=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, extra={"notes": notes})


def _check_sizes(n_train: int, n_test: int, val_size: int, train_size: int | None, test_size: int | None) -> None:
    if not 0 <= val_size < n_train:
        raise UsageError(f"data.args.val_size must be in [0, {n_train - 1}], got {val_size}")
    if train_size is not None and not 1 <= train_size <= n_train - val_size:
        raise UsageError(f"data.args.train_size must be in [1, {n_train - val_size}] (or null for all), got {train_size}")
    if test_size is not None and not 1 <= test_size <= n_test:
        raise UsageError(f"data.args.test_size must be in [1, {n_test}] (or null for all), got {test_size}")


# ------------------------------------------------------------------------------------- the image folders


def _jpeg_note(index: FolderIndex) -> list[str]:
    """A note when the CIFAR-10 files are JPEGs: their accuracies are not the literature's (measured cost)."""
    if not index.files or not str(index.files[0]).lower().endswith((".jpg", ".jpeg")):
        return []
    return [("CIFAR-10 read from JPEG files, not the original pixels: on the quality-75 copy airbench loses about 3 "
             "points of test accuracy (benchmarks/RESULTS.md), so the papers' accuracies are about that much higher "
             "than what a run on this copy reaches")]


def _decode_all(files: list[str], root: Path) -> torch.Tensor:
    """The images of ``files`` (uint8 (N, C, H, W)); one that cannot be decoded is an error naming it."""
    imgs, _, failures = decode_images(files)
    if failures:
        p, why = failures[0]
        raise DlcliError(f"{len(failures)} image(s) of {root} cannot be decoded, e.g. {p} ({why}); replace them (a "
                         "benchmark data set must be complete)")
    return imgs


def _from_images(base: Path, folder: str, seed: int, val_size: int, train_size: int | None, test_size: int | None,
                 cache: bool) -> DataBundle:
    """CIFAR-10 as ``<folder>/{train,test}/<class>/*.jpg``, decoded once into uint8 tensors (in parallel
    threads) and cached in ``cache_dir()`` for the next run (``cache: false`` to skip)."""
    if not (base / "train").is_dir() or not (base / "test").is_dir():
        raise DlcliError(f"CIFAR-10 not found: expected the image folders {base}/train/<class>/*.jpg and "
                         f"{base}/test/<class>/*.jpg (files: images); point --data-dir or DLCLI_DATA at the folder "
                         f"that holds {folder}/")
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
            splits += [_decode_all(index.files, index.root), torch.tensor(index.labels)]
        x, y, xt, yt = splits
        notes.append(f"CIFAR-10 decoded from {len(x) + len(xt):,} files in {time.perf_counter() - t0:.1f} s "
                     f"({min(os.cpu_count() or 1, 16)} threads)")
        if cache:
            failed = _save_cache(path, {"train_x": x, "train_y": y, "test_x": xt, "test_y": yt,
                                        "classes": train_index.classes})
            notes.append(failed or f"cached as {path}")
    if x.shape[1:] != (3, 32, 32):
        raise DlcliError(f"{base}: expected 32x32 colour images, found {tuple(x.shape[1:])}")
    return _bundle(x, y, xt, yt, train_index.classes, seed, val_size, train_size, test_size, notes)


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
        imgs = _decode_all(files, index.root)
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
