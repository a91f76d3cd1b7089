"""AlexNet at CIFAR scale (Krizhevsky et al. 2012's layer recipe on 32x32 images), registered as ``alexnet-cifar``.

The layer types are the paper's: 5x5 convolutions early, ReLU after every convolution and hidden layer,
overlapping max pooling (3x3 windows, stride 2), local response normalisation after the first two
convolutions (k = 2, n = 5, alpha = 1e-4, beta = 0.75), and dropout 0.5 in the first two fully connected
layers. The widths are the single-tower AlexNet's (64-192-384-256-256, as torchvision's), the stem is a
stride-1 5x5 convolution instead of ImageNet's stride-4 11x11, and the hidden layers have 1024 units
instead of 4096, so a 32x32 image reaches the classifier as 256 maps of 4x4. 7,706,442 parameters.

``variant="18pct"`` is instead the net Krizhevsky trained on CIFAR-10 with cuda-convnet before ImageNet
(``layers-18pct.cfg``): three 5x5 convolutions with 32, 32 and 64 maps, max then average pooling (3x3,
stride 2), response normalisation over 3 maps, one linear layer; 89,578 parameters, about 18% test error.
"""

from __future__ import annotations

import torch
from torch import nn

from dlcli.errors import UsageError
from dlcli.registry import register_model

VARIANTS = ("alexnet", "18pct")


def _lrn(size: int, alpha: float) -> nn.LocalResponseNorm:
    # The paper divides by (k + alpha * sum of squares)^beta; torch's module uses alpha / size * sum.
    return nn.LocalResponseNorm(size, alpha=alpha * size, beta=0.75, k=2.0)


class AlexNetCifar(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, variant: str = "alexnet",
                 dropout: float = 0.5, input_size: int = 32) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise UsageError(f"alexnet-cifar: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if input_size % 8:
            raise UsageError(f"alexnet-cifar: input_size must be a multiple of 8 (got {input_size})")
        s = input_size // 8  # three stride-2 poolings
        if variant == "alexnet":
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 64, 5, padding=2), nn.ReLU(inplace=True),  # (B, 64, 32, 32)
                nn.MaxPool2d(3, 2, padding=1), _lrn(5, 1e-4),  # (B, 64, 16, 16)
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, padding=1), _lrn(5, 1e-4),  # (B, 192, 8, 8)
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, padding=1),  # (B, 256, 4, 4)
            )
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(dropout), nn.Linear(256 * s * s, 1024), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
                nn.Linear(1024, num_classes),
            )
        else:  # cuda-convnet layers-18pct.cfg: pool before the ReLU in layer 1 is the cfg's order
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 32, 5, padding=2),
                nn.MaxPool2d(3, 2, padding=1), nn.ReLU(inplace=True), _lrn(3, 5e-5),  # (B, 32, 16, 16)
                nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
                nn.AvgPool2d(3, 2, padding=1), _lrn(3, 5e-5),  # (B, 32, 8, 8)
                nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
                nn.AvgPool2d(3, 2, padding=1),  # (B, 64, 4, 4)
            )
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * s * s, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # no batch norm: keep the signal's scale
                nn.init.zeros_(m.bias)
        last = self.classifier[-1]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes) logits
        return self.classifier(self.features(x))


@register_model("alexnet-cifar", input_shape=(3, 32, 32), num_classes=10, kind="classifier",
                summary="Krizhevsky et al. 2012's layers at CIFAR scale: 5x5 convs, LRN, overlapping max pool, "
                        "dropout (7.7 M)")
def alexnet_cifar(*, num_classes: int = 10, in_channels: int = 3, variant: str = "alexnet", dropout: float = 0.5,
                  input_size: int = 32) -> AlexNetCifar:
    if num_classes < 1 or in_channels < 1:
        raise UsageError(f"alexnet-cifar: num_classes and in_channels must be at least 1 "
                         f"(got {num_classes} and {in_channels})")
    return AlexNetCifar(num_classes, in_channels, variant, dropout, input_size)
