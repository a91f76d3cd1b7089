"""Generator / discriminator pairs: Goodfellow et al. 2014's MNIST GAN and Radford et al. 2015's DCGAN.

A registered GAN model is a ``GANPair``: ``G`` maps noise z (B, nz) to images (B, C, H, W), ``D`` maps images
to one logit per image (B,) (the sigmoid lives in the loss, ``binary_cross_entropy_with_logits``, which is the
references' sigmoid + BCE computed stably and safe under autocast). ``GANPair.forward(z)`` is D(G(z)), so
``dlcli bench`` and ``dlcli show`` can treat the pair as one network.

``gan-mlp`` (Goodfellow et al. 2014, the authors' ``mnist.yaml``): G 100 -> 1200 -> 1200 (ReLU) -> 784 (sigmoid),
weights U(-0.05, 0.05); D maxout 784 -> 240x5 -> 240x5 -> 1 with dropout (keep 0.8 on the input, 0.5 on
each hidden layer, inverted-dropout scaling as pylearn2's input scales 1.25 and 2), weights U(-0.005, 0.005);
biases 0 (the task sets G's output bias from the pixel marginals, as the authors' ``init_sigmoid_bias_from_marginals``).

``dcgan`` (Radford et al. 2015, as pytorch/examples ``dcgan/main.py`` builds it): G is transposed 4x4
convolutions 1 -> 4 -> 8 -> ... -> image_size, each but the last followed by batch norm and ReLU, tanh output;
D mirrors it with strided 4x4 convolutions, LeakyReLU(0.2), batch norm on all but the first, and a final 4x4
valid convolution to one logit; no biases; weights N(0, 0.02), batch-norm scales N(1, 0.02). At
``image_size: 64`` the layer list (and the state_dict keys ``main.N.weight``) is exactly pytorch/examples';
at 32 it drops the widest layer of each network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlcli.registry import register_model


class GANPair(nn.Module):
    """A generator and a discriminator trained against each other; ``forward(z)`` = D(G(z)) logits (B,)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, nz: int, output: str,
                 image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if output not in ("sigmoid", "tanh"):
            raise ValueError(f"output must be sigmoid or tanh, got {output!r}")
        self.G, self.D = generator, discriminator
        self.nz, self.output, self.image_shape = nz, output, tuple(image_shape)

    def to_pixels(self, g_out: torch.Tensor) -> torch.Tensor:
        """G's output -> pixels in [0, 1] (tanh's [-1, 1] is rescaled)."""
        return g_out if self.output == "sigmoid" else (g_out + 1) / 2

    def from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> the range G produces (what D is shown)."""
        return x if self.output == "sigmoid" else x * 2 - 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, nz) -> (B,) logits
        return self.D(self.G(z))


# ----------------------------------------------------------------------------- Goodfellow et al. 2014


class Maxout(nn.Module):
    """Linear to ``units * pieces``, then the max over each unit's ``pieces`` consecutive outputs."""

    def __init__(self, in_features: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, units)
        return self.linear(x).view(x.shape[0], self.units, self.pieces).amax(-1)


class MLPGenerator(nn.Module):
    def __init__(self, nz: int, hidden: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.net = nn.Sequential(
            nn.Linear(nz, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, math.prod(image_shape)),  # the output bias is set from the data's marginals
        )

    def output_layer(self) -> nn.Linear:
        return self.net[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, nz) -> (B, C, H, W) in [0, 1]
        return torch.sigmoid(self.net(z.flatten(1))).view(-1, *self.image_shape)


class MaxoutDiscriminator(nn.Module):
    def __init__(self, in_features: int, units: int, pieces: int, input_dropout: float, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(input_dropout), Maxout(in_features, units, pieces),
            nn.Dropout(dropout), Maxout(units, units, pieces),
            nn.Dropout(dropout), nn.Linear(units, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B,) logits
        return self.net(x).squeeze(1)


def _uniform_init(module: nn.Module, irange: float) -> None:
    """pylearn2's ``irange``: weights U(-irange, irange), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -irange, irange)
            nn.init.zeros_(m.bias)


@register_model("gan-mlp", input_shape=(100,), kind="gan",
                summary="Goodfellow et al. 2014: MLP generator 100-1200-1200-784, maxout discriminator 240x5")
def gan_mlp(*, nz: int = 100, hidden: int = 1200, units: int = 240, pieces: int = 5, input_dropout: float = 0.2,
            dropout: float = 0.5, in_channels: int = 1, image_size: int = 28) -> GANPair:
    shape = (in_channels, image_size, image_size)
    g = MLPGenerator(nz, hidden, shape)
    d = MaxoutDiscriminator(math.prod(shape), units, pieces, input_dropout, dropout)
    _uniform_init(g, 0.05)
    _uniform_init(d, 0.005)
    return GANPair(g, d, nz, "sigmoid", shape)


# ----------------------------------------------------------------------------- Radford et al. 2015


def _levels(image_size: int) -> int:
    """Stride-2 layers between 4x4 and ``image_size`` (a power of two >= 8)."""
    k = round(math.log2(image_size)) if image_size > 0 else 0
    if image_size < 8 or 2 ** k != image_size:
        raise ValueError(f"image_size must be a power of two >= 8 (32 for MNIST padded, 64 as pytorch/examples), "
                         f"got {image_size}")
    return k - 2


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int, ngf: int, nc: int, image_size: int) -> None:
        super().__init__()
        n = _levels(image_size)
        mult = 2 ** (n - 1)  # 8 at 64 px, 4 at 32 px
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, ngf * mult, 4, 1, 0, bias=False),  # (B, ngf*mult, 4, 4)
                                   nn.BatchNorm2d(ngf * mult), nn.ReLU(True)]
        while mult > 1:  # each doubles the side and halves the channels
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ngf * mult // 2), nn.ReLU(True)]
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]  # (B, nc, image_size, image_size)
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, nz) -> (B, nc, S, S) in [-1, 1]
        return self.main(z.reshape(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    def __init__(self, ndf: int, nc: int, image_size: int) -> None:
        super().__init__()
        n = _levels(image_size)
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for _ in range(n - 1):  # each halves the side and doubles the channels, down to 4x4
            layers += [nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * mult * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            mult *= 2
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False)]  # (B, 1, 1, 1) logits
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, nc, S, S) -> (B,) logits
        return self.main(x).flatten()


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: every weight N(0, 0.02); batch-norm scales N(1, 0.02), shifts 0 (pytorch/examples)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@register_model("dcgan", input_shape=(100,), kind="gan",
                summary="Radford et al. 2015: strided-convolution generator and discriminator with batch norm")
def dcgan(*, nz: int = 100, ngf: int = 64, ndf: int = 64, in_channels: int = 1, image_size: int = 32) -> GANPair:
    g = DCGANGenerator(nz, ngf, in_channels, image_size)
    d = DCGANDiscriminator(ndf, in_channels, image_size)
    dcgan_init(g)
    dcgan_init(d)
    return GANPair(g, d, nz, "tanh", (in_channels, image_size, image_size))
