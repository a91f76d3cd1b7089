"""Fukushima's Neocognitron (1980; 2003 version): S-layers of template-matching cells, C-layers that blur and pool.

Layers, for an image x in [0, 1] (B, 1, H, W):

``UG``  contrast extraction (Fukushima 2003): a difference of Gaussians, rectified into an on-centre and an
        off-centre plane, so uniform areas are silent and S1 sees edges and strokes.
``S_l`` S-cells. Each plane k has one template X_k (C, k, k), shared over positions. At a position the cell
        sees the input patch x; both are weighted by sqrt(c), c a fixed Gaussian window (Fukushima's c(ν)),
        giving x̃. With s = X̂_k·x̃ / ‖x̃‖ (X̂ = X / ‖X‖: s is the cosine of template and patch) and the
        V-cell v = ‖x̃‖ (the inhibitory cell: the root of the weighted energy of the patch), the response is
            u = v · φ[s − θ] / (1 − θ) = φ[X̂·x̃ − θ v] / (1 − θ),     φ[a] = max(a, 0)
        (Fukushima 2003, eq. for u_S): excitation minus θ times the V-cell, rectified. θ in [0, 1) sets the
        selectivity: the cell answers only to patches within the angle arccos θ of its template.
``C_l`` C-cells: a fixed Gaussian blur of each S-plane, subsampled by 2, then the saturation ψ[a] = a / (1 + a).
        They make the response tolerant to small shifts and deformations.

The templates are not parameters: they are buffers that the learning rule in ``dlcli.tasks.neocognitron``
fills without labels and without gradients (competitive learning, winner-take-all, add-if-silent). Each
S-layer has room for ``planes[l]`` templates; ``count_l`` of them are in use (the others are zero and silent).
The final C-layer, standardised with statistics of the training set, is read by one linear layer — the only
part trained with labels. Every step is differentiable almost everywhere, so gradient attacks (DeepFool) run on
the whole network.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.registry import register_model

EPS = 1e-12  # added to v² so that ∂v/∂x is 0, not NaN, on blank patches


def gaussian(size: int, sigma: float) -> torch.Tensor:
    """(size, size) Gaussian that sums to 1."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
    return (g / g.sum()).float()


def s_cell_response(x: torch.Tensor, templates: torch.Tensor, window: torch.Tensor, theta: float) -> torch.Tensor:
    """S-cell responses u (B, K, H, W) of input x (B, C, H, W) to ``templates`` (K, C, k, k) (any norm; a zero
    template is silent), ``window`` = sqrt(c) (k, k), threshold θ. Zero padding: positions see the image's
    surround as blank. u = φ[X̂·x̃ − θ‖x̃‖] / (1 − θ)."""
    k = templates.shape[-1]
    norm = templates.flatten(1).norm(dim=1).clamp_min(1e-20) * (1 - theta)  # (K,), with the 1 / (1 - θ)
    w = (templates / norm[:, None, None, None]) * window  # X̂ ⊙ sqrt(c) / (1 - θ): X̂·x̃ as one convolution
    u = F.conv2d(x, w, padding=k // 2)  # (B, K, H, W) excitation; in place below: nothing saved it for backward
    return F.relu_(u.sub_(v_cell(x, window), alpha=theta / (1 - theta)))


def v_cell(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """‖x̃‖ at every position, (B, 1, H, W): sqrt(Σ c(ν) x(n + ν)²) over the patch and all input planes."""
    k = window.shape[-1]
    energy = (x * x).sum(1, keepdim=True)  # Σ over input planes first: one plane to convolve, not C
    return F.conv2d(energy, (window * window)[None, None], padding=k // 2).add_(EPS).sqrt_()


def c_cell_response(u: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
    """C-cells: ψ[blur(u)] subsampled by 2 (stride 2, zero padding), ψ[a] = a / (1 + a). (B, K, H, W) ->
    (B, K, ceil(H / 2), ceil(W / 2)) for an odd blur kernel."""
    k = blur.shape[-1]
    kernel = blur.expand(u.shape[1], 1, k, k)
    a = F.conv2d(u, kernel, stride=2, padding=k // 2, groups=u.shape[1])
    return a / (1 + a)


class Neocognitron(nn.Module):
    """UG -> (S_l -> C_l) for each layer -> standardise -> linear readout. Takes pixels in [0, 1], (B, C, H, W)."""

    def __init__(self, *, planes: Sequence[int], kernels: Sequence[int], theta: Sequence[float],
                 theta_learn: Sequence[float], num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 contrast: bool = True, window_sigma: float = 0.5, blur_sigma: float = 1.0) -> None:
        super().__init__()
        n = len(planes)
        if n < 1 or not len(kernels) == len(theta) == len(theta_learn) == n:
            raise ValueError(f"planes, kernels, theta and theta_learn need one entry per S-layer (got {len(planes)}, "
                             f"{len(kernels)}, {len(theta)}, {len(theta_learn)})")
        if any(not isinstance(p, int) or p < 1 for p in planes):
            raise ValueError(f"planes: positive integers expected, got {list(planes)}")
        if any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernels: odd positive integers expected, got {list(kernels)}")
        for name, values in (("theta", theta), ("theta_learn", theta_learn)):
            if any(not 0 <= float(t) < 1 for t in values):
                raise ValueError(f"{name}: numbers in [0, 1) expected (Fukushima's threshold), got {list(values)}")
        if window_sigma <= 0 or blur_sigma <= 0:
            raise ValueError("window_sigma and blur_sigma must be > 0")
        self.planes, self.kernels = [int(p) for p in planes], [int(k) for k in kernels]
        self.theta, self.theta_learn = [float(t) for t in theta], [float(t) for t in theta_learn]
        self.contrast = contrast
        self.register_buffer("dog", gaussian(5, 0.6) - gaussian(5, 1.6), persistent=False)  # on-centre, sums to 0
        blur_size = 2 * math.ceil(2 * blur_sigma) + 1
        self.register_buffer("blur", gaussian(blur_size, blur_sigma), persistent=False)
        channels, side = (2 if contrast else 1) * in_channels, input_size
        for i, (p, k) in enumerate(zip(self.planes, self.kernels)):
            g = gaussian(k, window_sigma * k)
            self.register_buffer(f"window{i}", (g / g.max()).sqrt(), persistent=False)  # sqrt(c), c = 1 at the centre
            self.register_buffer(f"templates{i}", torch.zeros(p, channels, k, k))  # accumulated x̃ of the winners
            self.register_buffer(f"count{i}", torch.zeros((), dtype=torch.long))  # planes in use
            self.register_buffer(f"wins{i}", torch.zeros(p))  # reinforcements each plane received
            channels, side = p, (side + 1) // 2
        self.feature_size = channels * side * side
        self.register_buffer("feature_mean", torch.zeros(self.feature_size))
        self.register_buffer("feature_std", torch.ones(self.feature_size))
        self.readout = nn.Linear(self.feature_size, num_classes)

    @property
    def num_layers(self) -> int:
        return len(self.planes)

    def templates(self, i: int) -> torch.Tensor:
        return getattr(self, f"templates{i}")

    def window(self, i: int) -> torch.Tensor:
        return getattr(self, f"window{i}")

    def count(self, i: int) -> int:
        return int(getattr(self, f"count{i}"))

    def ug(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 2C, H, W): on- and off-centre contrast (or x itself without ``contrast``)."""
        if not self.contrast:
            return x
        c = x.shape[1]
        g = F.conv2d(x, self.dog.expand(c, 1, *self.dog.shape), padding=self.dog.shape[-1] // 2, groups=c)
        return torch.cat([F.relu(g), F.relu(-g)], 1)

    def s_layer(self, i: int, x: torch.Tensor, theta: float | None = None) -> torch.Tensor:
        return s_cell_response(x, self.templates(i), self.window(i), self.theta[i] if theta is None else theta)

    def c_layer(self, u: torch.Tensor) -> torch.Tensor:
        return c_cell_response(u, self.blur)

    def layer_input(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """What S-layer ``layer`` sees: UG, then (S, C) of every layer below it."""
        h = self.ug(x)
        for i in range(layer):
            h = self.c_layer(self.s_layer(i, h))
        return h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final C-layer, flattened: (B, feature_size)."""
        return self.layer_input(x, self.num_layers).flatten(1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.readout((features - self.feature_mean) / self.feature_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, num_classes) logits
        return self.classify(self.features(x))


@register_model("neocognitron", input_shape=(1, 28, 28), kind="classifier",
                summary="Fukushima 1980/2003: S-layers learned without labels, C-layers blur and pool; linear readout")
def neocognitron(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 planes: list[int] | None = None, kernels: list[int] | None = None, theta: list[float] | None = None,
                 theta_learn: list[float] | None = None, contrast: bool = True, window_sigma: float = 0.5,
                 blur_sigma: float = 1.0) -> Neocognitron:
    return Neocognitron(planes=planes or [16, 64, 128], kernels=kernels or [5, 5, 3],
                        theta=theta or [0.55, 0.55, 0.5], theta_learn=theta_learn or [0.7, 0.65, 0.6],
                        num_classes=num_classes, in_channels=in_channels, input_size=input_size, contrast=contrast,
                        window_sigma=window_sigma, blur_sigma=blur_sigma)
