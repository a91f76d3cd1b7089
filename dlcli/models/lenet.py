"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), as in the lecture.

C1: 5x5 conv, 6 maps (MNIST's 28x28 is padded by 2 to the paper's 32x32) -> g -> S2: 2x2 subsampling ->
C3: 5x5 conv, 16 maps (full connections) -> g -> S4: 2x2 -> C5: 16*5*5 -> 120 -> g -> F6: 120 -> 84 -> g
-> 10 logits (softmax + cross-entropy in the loss, not least squares). 61,706 parameters.
``variant="modern"`` swaps tanh/average pooling for ReLU/max pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from dlcli.errors import UsageError
from dlcli.registry import register_model

VARIANTS = {"classic": (nn.Tanh, nn.AvgPool2d), "modern": (nn.ReLU, nn.MaxPool2d)}


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, variant: str = "classic",
                 input_size: int = 28) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        act, pool = VARIANTS[variant]
        pad = (32 - input_size) // 2 if input_size < 32 else 0  # 28x28 -> the paper's 32x32 field
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad),  # C1: (B, 6, 28, 28)
            act(),
            pool(2),  # S2: (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5),  # C3: (B, 16, 10, 10)
            act(),
            pool(2),  # S4: (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),  # C5
            act(),
            nn.Linear(120, 84),  # F6
            act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes) logits
        return self.classifier(self.features(x))


@register_model("lenet5", input_shape=(1, 28, 28), kind="classifier",
                summary="LeCun et al. 1998: conv-pool-conv-pool-120-84-10, tanh (61.7k parameters)")
def lenet5(*, num_classes: int = 10, in_channels: int = 1, variant: str = "classic", input_size: int = 28) -> LeNet5:
    if num_classes < 1 or in_channels < 1:
        raise UsageError(f"lenet5: num_classes and in_channels must be at least 1 "
                         f"(got {num_classes} and {in_channels})")
    return LeNet5(num_classes=num_classes, in_channels=in_channels, variant=variant, input_size=input_size)
