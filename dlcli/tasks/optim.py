"""Optimisers and learning-rate schedules from a recipe (shared by every gradient-trained task)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from dlcli.config import Recipe


def build_optimizer(recipe: Recipe, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = recipe.optim
    params = [p for p in params if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adadelta":
        return torch.optim.Adadelta(params, lr=o.lr, weight_decay=o.weight_decay)
    raise ValueError(f"unknown optimizer {o.name!r}")  # config validation makes this unreachable


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """A torch LR scheduler with ``.per_step`` telling when to call ``step()``; None for a constant rate."""
    s = recipe.schedule
    total = recipe.epochs * steps_per_epoch
    if s.name == "none":
        return None
    if s.name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
        sched.per_step = False  # type: ignore[attr-defined]
        return sched
    if s.name == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.optim.lr, total_steps=max(total, 2),
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
