"""ResNets for 32x32 images: He et al.'s CIFAR ResNets (2015, section 4.2) and the CIFAR ResNet-18.

``resnet20`` ... ``resnet110`` are the networks of the paper's CIFAR-10 experiments, not the ImageNet ones:
a 3x3 convolution with 16 maps, then three stages of n basic blocks (two 3x3 convolutions each) with 16, 32
and 64 maps on 32x32, 16x16 and 8x8 feature maps, global average pooling and a linear layer; depth 6n + 2.
Every shortcut is an identity ("option A"): where a stage halves the map and doubles the channels, the
shortcut takes every second pixel and appends zero channels, so it has no parameters. ResNet-20 has 0.27 M
parameters and ResNet-56 0.85 M (the paper's Table 6).

``resnet18-cifar`` is the ResNet-18 most CIFAR code trains (kuangliu/pytorch-cifar): torchvision's four
stages of basic blocks (64-128-256-512 maps) with a 3x3 stride-1 stem and no max pool, so a 32x32 image
reaches the last stage at 4x4; projection (1x1 convolution) shortcuts where the shape changes; 11.17 M
parameters for 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.errors import UsageError
from dlcli.registry import register_model


class ShortcutA(nn.Module):
    """He et al.'s option A: identity on every second pixel, zero channels appended. (B, C, H, W) ->
    (B, out_channels, H/stride, W/stride); channels [0, C) carry the input, [C, out_channels) are zero."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (the paper's Figure 2, left)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = ShortcutA(in_channels, out_channels, stride)
            else:  # "B": a 1x1 projection, as torchvision and kuangliu/pytorch-cifar
                self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                              nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv3x3 (``widths[0]`` maps) -> stages of ``blocks`` basic blocks -> global average pool -> linear."""

    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_channels: int,
                 shortcut: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, c = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1, shortcut))
                c = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():  # He et al. 2015's initialisation (their reference [13])
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes) logits
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _check(name: str, num_classes: int, in_channels: int) -> None:
    if num_classes < 1 or in_channels < 1:
        raise UsageError(f"{name}: num_classes and in_channels must be at least 1 "
                         f"(got {num_classes} and {in_channels})")


def he_cifar_resnet(depth: int, *, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n + 2 layers (20, 32, 44, 56, 110, 1202)."""
    if depth < 8 or (depth - 2) % 6:
        raise UsageError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
    _check(f"resnet{depth}", num_classes, in_channels)
    n = (depth - 2) // 6
    return CifarResNet([n] * 3, [16, 32, 64], num_classes, in_channels, shortcut="A")


def _register_he(depth: int, params: str) -> None:
    @register_model(f"resnet{depth}", input_shape=(3, 32, 32), num_classes=10, kind="classifier",
                    summary=f"He et al. 2015, CIFAR ResNet-{depth}: 16/32/64 maps, option-A shortcuts "
                            f"({params} parameters)")
    def build(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
        return he_cifar_resnet(depth, num_classes=num_classes, in_channels=in_channels)

    build.__name__ = f"resnet{depth}"


for _depth, _params in ((20, "0.27 M"), (32, "0.46 M"), (44, "0.66 M"), (56, "0.85 M"), (110, "1.7 M")):
    _register_he(_depth, _params)


@register_model("resnet18-cifar", input_shape=(3, 32, 32), num_classes=10, kind="classifier",
                summary="ResNet-18 for 32x32 images: 3x3 stem, no max pool (kuangliu/pytorch-cifar; 11.17 M)")
def resnet18_cifar(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    _check("resnet18-cifar", num_classes, in_channels)
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, shortcut="B")
