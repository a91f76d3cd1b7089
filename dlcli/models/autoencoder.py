"""The lecture's autoencoder: h = g(W x + b), x' = g(W' h + b'), trained to make x' close to x.

x is an image flattened to D = C·H·W values in [0, 1]; W is (dim h, D), W' is (D, dim h) — its own matrix, or
Wᵀ when ``tied`` (the stacked denoising autoencoders' choice). g is the same elementwise function in both
layers; the logistic sigmoid by default, which keeps x' in (0, 1) like the pixels it reconstructs. The rows
of W are the learned filters (each a D-vector, shown as an H x W image).
"""

from __future__ import annotations

import torch
from torch import nn

from dlcli.registry import register_model

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


class Autoencoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], hidden: int, activation: str = "sigmoid",
                 tied: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.input_shape = tuple(input_shape)
        d = 1
        for s in self.input_shape:
            d *= int(s)
        self.g = ACTIVATIONS[activation]
        self.encoder = nn.Linear(d, hidden)  # W (dim h, D), b (dim h)
        self.tied = tied
        if tied:
            self.decoder_bias = nn.Parameter(torch.zeros(d))  # b' (D); W' = Wᵀ
        else:
            self.decoder = nn.Linear(hidden, d)  # W' (D, dim h), b' (D)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """h = g(W x + b): (B, C, H, W) or (B, D) -> (B, dim h)."""
        return self.g(self.encoder(x.flatten(1)))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """x' = g(W' h + b'): (B, dim h) -> (B, D)."""
        if self.tied:
            return self.g(h @ self.encoder.weight + self.decoder_bias)
        return self.g(self.decoder(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> x' of the same shape
        return self.decode(self.encode(x)).reshape(x.shape)

    def filters(self) -> torch.Tensor:
        """The rows of W as images (dim h, C, H, W)."""
        return self.encoder.weight.detach().reshape(-1, *self.input_shape)


@register_model("autoencoder", input_shape=(1, 28, 28), kind="autoencoder",
                summary="h = g(Wx + b), x' = g(W'h + b') (the lecture's autoencoder)")
def autoencoder(*, hidden: int = 64, activation: str = "sigmoid", tied: bool = False, in_channels: int = 1,
                input_size: int = 28) -> Autoencoder:
    return Autoencoder((in_channels, input_size, input_size), hidden, activation, tied)
