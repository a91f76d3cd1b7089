"""A user's own image files as a batch for ``dlcli attack deepfool --images DIR``, and 8-bit image output.

Every regular file in the folder that Pillow can read is loaded, scaled to [0, 1] and resized (bilinear,
antialiased) to the model's input size. The number of channels must be the model's: a grey image (or a
colour file whose three bands are equal) for a 1-channel model, a colour image for a 3-channel one; an
alpha band is dropped. Anything else is one clear error rather than a silent conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from dlcli.errors import DlcliError


def _pixels(im: Any) -> np.ndarray:
    """A Pillow image -> (H, W, bands) float32 in [0, 1], alpha dropped, bands 1 or 3."""
    mode = im.mode
    if mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535
    elif mode == "I":  # 32-bit integers; Pillow opens 16-bit PNGs this way
        arr = np.clip(np.asarray(im, dtype=np.int64).astype(np.float32) / 65535, 0, 1)
    elif mode == "F":
        arr = np.clip(np.asarray(im, dtype=np.float32), 0, 1)
    elif mode in ("1", "L", "LA"):
        arr = np.asarray(im.convert("L"), dtype=np.float32) / 255
    else:  # RGB, RGBA, P (palette), CMYK, YCbCr, ...
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    return arr[:, :, None] if arr.ndim == 2 else arr


def load_image_folder(folder: str | Path, input_shape: Sequence[int]) -> tuple[Tensor, list[str], list[str]]:
    """(N, C, H, W) float32 in [0, 1] at the model's input size, the file names, and the files skipped.

    Raises :class:`DlcliError` (one line) when the folder has no readable image, or when an image has
    another number of channels than the model's input.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(folder)
    if not root.is_dir():
        raise DlcliError(f"--images {folder}: no such folder")
    c, h, w = (int(v) for v in input_shape)
    batch, names, skipped = [], [], []
    files = sorted(p for p in root.iterdir() if p.is_file())
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
                arr = _pixels(im)
        except (UnidentifiedImageError, OSError, ValueError):
            skipped.append(path.name)
            continue
        bands = arr.shape[2]
        grey = bands == 3 and np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2])
        if grey and c == 1:
            arr, bands = arr[:, :, :1], 1  # a grey picture stored as colour
        if bands != c:
            what = "a colour image (3 channels)" if bands == 3 else "a grey image (1 channel)"
            raise DlcliError(f"--images {path}: {what}, but the model takes {c}-channel input; convert it "
                             f"to {'greyscale' if c == 1 else 'RGB'} first")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)  # (1, C, H0, W0)
        if t.shape[2:] != (h, w):
            t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        batch.append(t.clamp(0, 1))
        names.append(path.name)
    if not batch:
        tried = f"{len(files)} file(s), none an image Pillow can read" if files else "the folder is empty"
        raise DlcliError(f"--images {folder}: no readable image ({tried})")
    return torch.cat(batch), names, skipped


def quantize8(x: Tensor) -> Tensor:
    """Images in [0, 1] as an 8-bit file stores them: round(255·x) / 255."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def save_image8(path: Path, x: Tensor) -> None:
    """(C, H, W) in [0, 1] -> an 8-bit PNG (grey or RGB)."""
    from PIL import Image

    arr = (quantize8(x) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path)
