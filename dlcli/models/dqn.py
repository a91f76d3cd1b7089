"""Q-networks: an observation in, one action value per action out (Mnih et al. 2013, 2015).

``qmlp`` is the fully connected network for low-dimensional observations (CartPole's 4 numbers).
``dqn2013`` is the network of "Playing Atari with Deep Reinforcement Learning" (2013): a stack of 4 grey
84x84 frames, 16 8x8 filters with stride 4, 32 4x4 filters with stride 2, 256 hidden units, one output per
action, ReLU between. ``dqn2015`` is the larger network of the Nature paper (2015): 32 8x8/4, 64 4x4/2,
64 3x3/1, 512 hidden units. The image networks take frames as stored (uint8, 0-255) and scale them to [0, 1]
themselves, so the replay buffer and the environments never hold floats.

The observation shape and the number of actions come from the environment (the task passes them as
``obs_shape`` and ``num_actions``), not from the recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.registry import register_model


class QMLP(nn.Module):
    """(B, D) observations -> (B, A) action values, through ReLU hidden layers.

    The layers are called functionally in ``forward``: for networks this small the per-module call overhead
    is a large part of a training step on the CPU."""

    def __init__(self, in_features: int, num_actions: int, hidden: list[int]) -> None:
        super().__init__()
        sizes = [in_features, *hidden, num_actions]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).float()
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = F.linear(x, layer.weight, layer.bias)
            if i < last:
                x = F.relu(x)
        return x


class AtariQNet(nn.Module):
    """(B, C, H, W) frames in 0-255 (any dtype) -> (B, A) action values: convolutions, one hidden layer."""

    def __init__(self, in_channels: int, size: int, num_actions: int, convs: list[tuple[int, int, int]],
                 hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out, kernel, stride in convs:
            layers += [nn.Conv2d(channels, out, kernel, stride), nn.ReLU()]
            channels = out
            size = (size - kernel) // stride + 1
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(channels * size * size, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.float() / 255.0))


def _image_shape(obs_shape: list[int] | None, name: str) -> tuple[int, int]:
    c, h, w = obs_shape or [4, 84, 84]
    if h != w:
        raise ValueError(f"{name} needs square frames, got {h}x{w}")
    return c, h


@register_model("qmlp", input_shape=(4,), kind="q-network",
                summary="DQN's fully connected Q-network for vector observations (CartPole)")
def qmlp(*, obs_shape: list[int] | None = None, num_actions: int = 2, hidden: list[int] | None = None) -> QMLP:
    """``hidden``: widths of the ReLU layers (default [256, 256], rl-zoo's CartPole network)."""
    in_features = 1
    for d in obs_shape or [4]:
        in_features *= d
    hidden = [256, 256] if hidden is None else hidden
    if any(h < 1 for h in hidden) or num_actions < 1:
        raise ValueError("qmlp: hidden widths and num_actions must be >= 1")
    return QMLP(in_features, num_actions, hidden)


@register_model("dqn2013", input_shape=(4, 84, 84), kind="q-network",
                summary="Mnih et al. 2013: conv 16x8x8/4, conv 32x4x4/2, 256 hidden, one value per action")
def dqn2013(*, obs_shape: list[int] | None = None, num_actions: int = 6) -> AtariQNet:
    c, size = _image_shape(obs_shape, "dqn2013")
    return AtariQNet(c, size, num_actions, [(16, 8, 4), (32, 4, 2)], 256)


@register_model("dqn2015", input_shape=(4, 84, 84), kind="q-network",
                summary="Mnih et al. 2015 (Nature): conv 32x8x8/4, 64x4x4/2, 64x3x3/1, 512 hidden")
def dqn2015(*, obs_shape: list[int] | None = None, num_actions: int = 6) -> AtariQNet:
    c, size = _image_shape(obs_shape, "dqn2015")
    return AtariQNet(c, size, num_actions, [(32, 8, 4), (64, 4, 2), (64, 3, 1)], 512)
