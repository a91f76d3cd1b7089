"""The deep networks of 2006-2010 unsupervised pretraining: a fully connected sigmoid stack with a softmax.

x (flattened pixels in [0, 1]) -> h1 = σ(W1 x + b1) -> ... -> hL = σ(WL hL-1 + bL) -> logits = V hL + c.
Each hidden layer is also one layer of the greedy pretraining (a denoising autoencoder with tied weights, or
a restricted Boltzmann machine): ``visible_bias[i]`` is its reconstruction bias b' (an RBM's visible bias),
used by pretraining only and kept here so that one checkpoint holds the whole stack. The classifier's
``forward`` never reads it.

Weights start as the Theano deep-learning tutorials start theirs (uniform in ±4·sqrt(6 / (fan_in + fan_out)),
Glorot and Bengio's range for sigmoid units), the same start with and without pretraining.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlcli.registry import register_model


class DeepMLP(nn.Module):
    def __init__(self, in_features: int, layers: list[int], num_classes: int) -> None:
        super().__init__()
        if not layers or any(n < 1 for n in layers):
            raise ValueError(f"layers must be a non-empty list of widths >= 1, got {layers}")
        sizes = [in_features, *layers]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))  # W (out, in)
        self.visible_bias = nn.ParameterList(nn.Parameter(torch.zeros(a)) for a in sizes[:-1])
        self.out = nn.Linear(sizes[-1], num_classes)
        with torch.no_grad():
            for layer in self.hidden:
                r = 4 * math.sqrt(6 / (layer.in_features + layer.out_features))
                layer.weight.uniform_(-r, r)
                layer.bias.zero_()

    def codes(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """The activities of hidden layer ``upto`` (0: the flattened input itself), (B, width)."""
        h = x.flatten(1)
        for layer in self.hidden[:upto]:
            h = torch.sigmoid(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes) logits
        return self.out(self.codes(x, len(self.hidden)))

    def supervised_parameters(self) -> list[nn.Parameter]:
        """What fine-tuning trains: every weight and bias except the reconstruction biases."""
        return [p for layer in (*self.hidden, self.out) for p in layer.parameters()]


@register_model("deep-mlp", input_shape=(1, 28, 28), kind="classifier",
                summary="sigmoid MLP for layer-wise pretraining (SdA, DBN), e.g. 784-1000-1000-1000-10")
def deep_mlp(*, layers: list[int] | None = None, num_classes: int = 10, in_channels: int = 1,
             input_size: int = 28) -> DeepMLP:
    return DeepMLP(in_channels * input_size * input_size, list(layers or [1000, 1000, 1000]), num_classes)
