"""ResNet-18 and ResNet-50 (He, Zhang, Ren, Sun 2015): torchvision's architectures, registered by name.

ResNet-18 stacks basic blocks (two 3x3 convolutions), ResNet-50 bottleneck blocks (1x1, 3x3, 1x1); both
start with a 7x7 stride-2 convolution and a max pool, so a 224x224 image reaches the last stage at 7x7.
Torchvision's ResNet-50 is "v1.5" (stride 2 in the 3x3 of the bottleneck, not the first 1x1), the variant
MLPerf trains. Weights start random; ``pretrained=True`` reads the ImageNet weights from the torch hub cache
(with another number of classes, ``fc`` is then replaced by a fresh layer: fine-tuning).
"""

from __future__ import annotations

from torch import nn

from dlcli.models.alexnet import check_head_args, load_cached_weights, replace_head
from dlcli.registry import register_model


def _build(name: str, num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    import torchvision.models as tvm  # imported here: torchvision takes seconds to import

    check_head_args(name, num_classes, in_channels, pretrained)
    factory = {"resnet18": tvm.resnet18, "resnet50": tvm.resnet50}[name]
    weights = {"resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1, "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1}[name]
    model = factory(weights=None, num_classes=1000 if pretrained else num_classes)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, 7, stride=2, padding=3, bias=False)
        # the same initialisation torchvision gives every other convolution of the network
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if pretrained:
        load_cached_weights(model, weights, name)
        if num_classes != 1000:
            replace_head(model, "fc", num_classes)
    return model


@register_model(
    "resnet18",
    input_shape=(3, 224, 224),
    num_classes=1000,
    kind="classifier",
    summary="He et al. 2015, 18-layer residual network with basic blocks (11.7 M parameters)",
)
def resnet18(*, num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False) -> nn.Module:
    return _build("resnet18", num_classes, in_channels, pretrained)


@register_model(
    "resnet50",
    input_shape=(3, 224, 224),
    num_classes=1000,
    kind="classifier",
    summary="He et al. 2015, 50-layer residual network with bottleneck blocks, v1.5 (25.6 M parameters)",
)
def resnet50(*, num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False) -> nn.Module:
    return _build("resnet50", num_classes, in_channels, pretrained)
