"""Optimisers and learning-rate schedules from a recipe (shared by every gradient-trained task)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from dlcli.config import Recipe


def build_optimizer(recipe: Recipe, params: Iterable[torch.nn.Parameter], *, fused: bool | None = None,
                    capturable: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimiser over the parameters that require gradients.

    ``fused`` (else the recipe's ``optim.fused``): sgd/adam/adamw update every parameter in one fused kernel
    per step instead of several multi-tensor kernels (CUDA) or a loop over the parameters (the CPU); tiny
    networks (DQN's, a 64-px DCGAN) spend much of a step in that per-parameter overhead otherwise.
    ``capturable``: adam/adamw keep their step count on the device, so that a CUDA graph can capture the step."""
    o = recipe.optim
    params = [p for p in params if p.requires_grad]
    kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(o.name)
    if fused is None and kind is not None:
        fused = resolve_fused(o.fused, params)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay, fused=fused)
    if o.name in ("adam", "adamw"):
        return kind(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, fused=fused,
                    capturable=capturable)
    if o.name == "adadelta":
        return torch.optim.Adadelta(params, lr=o.lr, weight_decay=o.weight_decay)
    raise ValueError(f"unknown optimizer {o.name!r}")  # config validation makes this unreachable


def resolve_fused(setting: bool | str, params: list[torch.nn.Parameter]) -> bool | None:
    """``optim.fused`` -> the optimiser's ``fused`` argument: True, or None for torch's default (multi-tensor
    ``foreach`` kernels on CUDA, a plain loop on the CPU; torch's ``fused=False`` would mean the plain loop on
    CUDA too). ``auto`` is True when every parameter is on a CUDA device and None elsewhere, so CPU results do
    not change with the default setting."""
    if setting == "auto":
        return True if params and all(p.is_cuda for p in params) else None
    return True if setting is True else None


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, *, total_steps: int,
                    steps_per_epoch: int) -> Any:
    """A torch LR scheduler spanning ``total_steps`` optimiser steps (a whole run, or one stage of it), with
    ``.per_step`` telling when to call ``step()``; None for a constant rate. ``steps_per_epoch`` converts the
    recipe's epoch-valued settings (warm-up) into steps."""
    s = recipe.schedule
    total = max(1, total_steps)
    if s.name == "none":
        return None
    if s.name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
        sched.per_step = False  # type: ignore[attr-defined]
        return sched
    if s.name == "onecycle":
        # torch's OneCycleLR divides by zero when its warm-up phase is under two steps (pct_start x total < 2):
        # a schedule spanning a few more steps than a tiny run takes is the same curve, cut short
        span = max(total, int(2 / s.pct_start) + 2)
        sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.optim.lr, total_steps=span,
                                                    pct_start=s.pct_start)
        sched.per_step = True  # type: ignore[attr-defined]
        return sched
    if s.name == "cosine":
        warmup = int(s.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        sched.per_step = True  # type: ignore[attr-defined]
        return sched
    raise ValueError(f"unknown schedule {s.name!r}")


def load_scheduler(scheduler: Any, state: Any, restore: bool = True) -> None:
    """Restore a scheduler saved by ``state_dict()`` unless ``restore`` is False (a new schedule was built for
    epochs added to a finished run: the saved one has run its course)."""
    if scheduler is None:
        return
    if restore and state is not None:
        scheduler.load_state_dict(state)
        return
    # The optimiser's restored param groups carry the old schedule's final rate: start from the new one's.
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr
