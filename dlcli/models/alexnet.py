"""AlexNet (Krizhevsky, Sutskever, Hinton 2012): torchvision's architecture, registered as ``alexnet``.

torchvision's version is the "one weird trick" single-tower variant (64-192-384-256-256 filters, no local
response normalisation) that its ImageNet weights were trained with; 61,100,840 parameters and 0.714 G
multiply-adds for a 3x224x224 image at 1000 classes. Weights start random; ``pretrained=True`` reads
torchvision's ImageNet weights from the torch hub cache and never downloads them; with another number of
classes the last linear layer is then replaced by a fresh one (fine-tuning). torchvision is imported
inside the builders, so that listing or building other models does not pay for its import.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from dlcli.errors import DlcliError, UsageError
from dlcli.registry import register_model


def check_head_args(name: str, num_classes: int, in_channels: int, pretrained: bool) -> None:
    """Shared argument checks for the torchvision-backed builders (one clear line each)."""
    if num_classes < 1:
        raise UsageError(f"{name}: num_classes must be at least 1 (got {num_classes})")
    if in_channels < 1:
        raise UsageError(f"{name}: in_channels must be at least 1 (got {in_channels})")
    if pretrained and in_channels != 3:
        raise UsageError(f"{name}: pretrained ImageNet weights need in_channels=3 (got {in_channels})")


def replace_head(model: nn.Module, attr: str, num_classes: int) -> None:
    """Swap the last linear layer ``model.<attr>`` (dotted, e.g. ``classifier.6``) for a fresh one with
    ``num_classes`` outputs: fine-tuning ImageNet weights on another label set keeps every other layer."""
    *parents, last = attr.split(".")
    owner = model
    for p in parents:
        owner = getattr(owner, p) if not p.isdigit() else owner[int(p)]  # type: ignore[index]
    old = owner[int(last)] if last.isdigit() else getattr(owner, last)  # type: ignore[index]
    assert isinstance(old, nn.Linear)
    new = nn.Linear(old.in_features, num_classes)
    if last.isdigit():
        owner[int(last)] = new  # type: ignore[index]
    else:
        setattr(owner, last, new)


def load_cached_weights(model: nn.Module, weights: object, name: str) -> nn.Module:
    """Load torchvision ``weights`` (a Weights enum member) from the torch hub cache, never the network.

    torchvision caches downloads as ``<torch.hub.get_dir()>/checkpoints/<file name of the URL>``; this reads
    exactly that file, with ``weights_only=True``, and fails with one line naming the path when it is absent.
    """
    from dlcli.download import hub_checkpoint

    url: str = weights.url  # type: ignore[attr-defined]
    path = str(hub_checkpoint(url))
    if not os.path.isfile(path):
        raise DlcliError(
            f"{name}: pretrained weights are not in the torch hub cache ({path}); training never downloads them: "
            f"place {os.path.basename(url)} (from {url}) in the folder {os.path.dirname(path)}/ "
            f"(TORCH_HOME moves it), or fetch it with `dlcli data {name}-imagenet --download` where there is "
            "internet, or drop pretrained"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # a truncated download or a file for another architecture
        raise DlcliError(f"{name}: cannot load cached weights {path}: {e}") from e
    return model


@register_model(
    "alexnet",
    input_shape=(3, 224, 224),
    num_classes=1000,
    kind="classifier",
    summary="Krizhevsky et al. 2012, ImageNet CNN (torchvision's single-tower variant, 61.1 M parameters)",
)
def alexnet(*, num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False) -> nn.Module:
    """torchvision AlexNet with a ``num_classes`` head and ``in_channels`` input planes (random init).

    Needs inputs of at least about 63x63 pixels (three stride-2 max pools after a stride-4 convolution);
    CIFAR-sized images must be resized up.
    """
    from torchvision.models import (
        AlexNet_Weights,  # imported here: torchvision takes seconds to import
    )
    from torchvision.models import alexnet as tv_alexnet

    check_head_args("alexnet", num_classes, in_channels, pretrained)
    model = tv_alexnet(weights=None, num_classes=1000 if pretrained else num_classes)
    if in_channels != 3:
        first = model.features[0]
        assert isinstance(first, nn.Conv2d)
        model.features[0] = nn.Conv2d(
            in_channels, first.out_channels, first.kernel_size, first.stride, first.padding  # type: ignore[arg-type]
        )
    if pretrained:
        load_cached_weights(model, AlexNet_Weights.IMAGENET1K_V1, "alexnet")
        if num_classes != 1000:
            replace_head(model, "classifier.6", num_classes)
    return model
