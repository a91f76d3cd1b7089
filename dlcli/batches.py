"""Batches of in-memory images, for every image task: seeded, resumable, sharded by rank, augmented on the device.

The data set lives on the training device as uint8 tensors (N, C, H, W). An epoch is a permutation that
depends only on (seed, epoch), cut into global batches of ``batch_size``; under torchrun each rank takes its
own contiguous part of every global batch, so N processes see exactly the samples one process would, and
the optimisation is the same. Augmentations draw from a generator seeded per (seed, epoch, step), so an
epoch resumed at step k draws exactly what the uninterrupted epoch drew there. No Python work per sample.

Augmentations (each a pure function of the batch and a generator, usable on its own):
``shift``  translate by up to N pixels, zero fill (LeCun's distortions, lite; MNIST)
``crop``   zero-pad by N pixels, then a random H x W crop (the CIFAR standard, He et al. 2015)
``flip``   random horizontal flip with probability 1/2
``resize`` bilinear resize to a square side, after the other augmentations
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F


def images_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1 (a float input passes through)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


@dataclass
class AugmentDraw:
    """The random numbers of one global batch: per-sample offsets (pixels) and flips."""

    dx: torch.Tensor | None = None  # (n,) int64, 0..2*pad
    dy: torch.Tensor | None = None
    flip: torch.Tensor | None = None  # (n,) bool

    def rows(self, part: slice) -> "AugmentDraw":
        return AugmentDraw(*(None if t is None else t[part] for t in (self.dx, self.dy, self.flip)))


def draw_augment(n: int, pad: int, flip: bool, generator: torch.Generator) -> AugmentDraw:
    """Draw shifts of up to ``pad`` pixels and flips for ``n`` samples, in a fixed order (dx, dy, flip)."""
    d = AugmentDraw()
    if pad > 0:
        d.dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        d.dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    if flip:
        d.flip = torch.rand(n, generator=generator) < 0.5
    return d


def apply_augment(x: torch.Tensor, pad: int, d: AugmentDraw) -> torch.Tensor:
    """Zero-pad each image (B, C, H, W) by ``pad`` and cut the H x W window at (dy, dx) — shifts of up to
    ``pad`` pixels in each direction, both the MNIST shift and the CIFAR pad-and-crop — then mirror the
    flipped ones left-right."""
    if pad > 0 and d.dx is not None and d.dy is not None:
        b, _, h, w = x.shape
        padded = F.pad(x, (pad,) * 4)
        rows = d.dy.to(x.device)[:, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
        cols = d.dx.to(x.device)[:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
        idx_b = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        x = x.permute(0, 3, 1, 2).contiguous()
    if d.flip is not None:
        x = torch.where(d.flip.to(x.device)[:, None, None, None], x.flip(3), x)
    return x


def translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``pad`` pixels (zero fill) of a batch (B, C, H, W)."""
    return apply_augment(x, pad, draw_augment(len(x), pad, False, generator))


@dataclass
class ImageBatches:
    """Seeded, resumable, rank-sharded batches of uint8 images (N, C, H, W) already on the training device.

    ``batch_size`` is the global batch (all ranks together); ``steps()`` global batches per epoch, the last
    one partial. ``epoch(e, start_step)`` yields ``(x, y, n_global)``: this rank's float images in [0, 1],
    augmented, its labels, and the size of the global batch they belong to (to normalise a summed loss so
    that N processes give the gradient of one).
    """

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    seed: int
    shift: int = 0
    crop: int = 0
    flip: bool = False
    resize: int | None = None
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.world_size > 1 and self.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the {self.world_size} processes; "
                             f"choose a multiple of {self.world_size}")

    def __len__(self) -> int:
        return len(self.x)

    def steps(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return torch.randperm(len(self.x), generator=g)

    def augment_generator(self, epoch: int, step: int) -> torch.Generator:
        # one generator per step: a resumed epoch draws exactly the same augmentations
        return torch.Generator().manual_seed(((self.seed * 1000 + epoch) << 20) + step)

    @property
    def pad(self) -> int:
        return max(self.shift, self.crop)

    def augment(self, x: torch.Tensor, d: AugmentDraw) -> torch.Tensor:
        """float images (B, C, H, W) in [0, 1] -> augmented, same shape (or ``resize`` square)."""
        x = apply_augment(x, self.pad, d)
        if self.resize and x.shape[-1] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        perm = self.permutation(epoch).to(self.x.device)
        for step in range(start_step, self.steps()):
            idx = perm[step * self.batch_size:(step + 1) * self.batch_size]  # the global batch
            n_global = len(idx)
            # The random numbers are drawn for the whole global batch and each rank keeps its rows, so a
            # sample is augmented identically whatever the number of processes.
            draw = draw_augment(n_global, self.pad, self.flip, self.augment_generator(epoch, step))
            part = shard(n_global, self.rank, self.world_size)
            yield self.augment(images_to_float(self.x[idx[part]]), draw.rows(part)), self.y[idx[part]], n_global


def shard(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` items: sizes differ by at most one, none repeated or dropped."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))
