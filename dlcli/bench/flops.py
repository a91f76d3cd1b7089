"""FLOPs per sample of a registered model, counted by ``torch.utils.flop_counter.FlopCounterMode``.

Real FLOPs: 2 per multiply-add, convolutions and matrix products only (normalisation, activations, pooling
and the optimizer are not counted). Counted once, on a copy of the model on the meta device (no memory,
no arithmetic); the backward pass is counted too, not assumed to be twice the forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from dlcli.errors import DlcliError
from dlcli.registry import build_model


@dataclass(frozen=True)
class FlopCount:
    forward: int  # FLOPs per sample of one forward pass
    backward: int  # FLOPs per sample of the backward pass (input and weight gradients)
    params: int
    trainable: bool  # any parameter requires grad (the perceptron learns by its own rule, not by gradients)
    output_shape: tuple[int, ...]  # per sample, e.g. (1000,)

    @property
    def train(self) -> int:
        return self.forward + self.backward


def count_flops(
    model_name: str,
    input_shape: Sequence[int],
    *,
    builder_kwargs: dict[str, Any] | None = None,
    batch: int = 2,
) -> FlopCount:
    """Count FLOPs per sample of a registered model with FlopCounterMode, on the meta device when possible.

    ``batch`` is 2, not 1, so that layers that need more than one value per channel in training mode
    (BatchNorm1d) run; the counts are divided by it. Models that cannot be built on the meta device are
    counted on the CPU instead (slower, same numbers).
    """
    kwargs = dict(builder_kwargs or {})
    try:
        return _count_flops(model_name, tuple(input_shape), kwargs, batch, torch.device("meta"))
    except DlcliError:
        raise
    except Exception:
        pass
    try:
        return _count_flops(model_name, tuple(input_shape), kwargs, batch, torch.device("cpu"))
    except DlcliError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        shape = ",".join(str(d) for d in input_shape)
        raise DlcliError(f"{model_name} cannot run on an input of shape {shape}: {first}") from e


def _count_flops(
    name: str, input_shape: tuple[int, ...], kwargs: dict[str, Any], batch: int, device: torch.device
) -> FlopCount:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device(device):
        model = build_model(name, **kwargs)
        x = torch.randn(batch, *input_shape)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as fwd:
        out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    backward = 0
    if out.requires_grad:
        with FlopCounterMode(display=False) as bwd:
            out.float().sum().backward()  # the same gradients flow as with any loss of the output
        backward = bwd.get_total_flops()
    return FlopCount(
        forward=fwd.get_total_flops() // batch,
        backward=backward // batch,
        params=params,
        trainable=any(p.requires_grad for p in model.parameters()),
        output_shape=tuple(out.shape[1:]),
    )
