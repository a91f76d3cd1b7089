"""The contract between the trainer (``dlcli.train``) and a kind of learning (a registered task).

The trainer owns the run folder, the epoch loop, checkpoints, Ctrl-C and the progress bar. A task owns its
model, data, optimiser and the meaning of its metrics. Training advances one step at a time through the
generator ``train_steps`` so the trainer can stop cleanly between two steps, and everything a task needs to
continue exactly where it stopped is in ``state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from dlcli.config import Recipe
from dlcli.data import DataBundle, load_data
from dlcli.errors import ConfigError
from dlcli.registry import build_model_with_defaults
from dlcli.runtime import Runtime


@dataclass
class TaskContext:
    recipe: Recipe
    runtime: Runtime
    data_dir: str | None = None


@dataclass
class EvalResult:
    """What ``dlcli eval`` shows: headline metrics, extra tables (title, columns, rows) and figure paths."""

    metrics: dict[str, Any]
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # extra JSON-only data (e.g. the confusion matrix)


class Task:
    """Base class; subclasses are registered with ``@register_task(name)``."""

    #: metric (from ``end_epoch``) that picks ``best.pt``, and whether larger is better
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    #: the metric shown in the progress bar beside the loss
    progress_metric: str | None = None

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.recipe = ctx.recipe
        self.runtime = ctx.runtime

    # --- set-up helpers shared by tasks ---------------------------------------------------------------
    def load_data(self) -> DataBundle:
        try:
            return load_data(self.recipe.data.source, self.recipe.data.args, self.ctx.data_dir, self.recipe.seed)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data.args: {e}") from None

    def build_model(self, **defaults: Any) -> nn.Module:
        """The recipe's model; ``defaults`` (e.g. num_classes from the data) yield to explicit recipe args."""
        return build_model_with_defaults(self.recipe.model.name, self.recipe.model.args, **defaults)

    # --- what the trainer calls -----------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """Facts for the run header (parameter count, data sizes)."""
        return {}

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def samples_per_step(self) -> int:
        return 1

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        """Run steps ``start_step..steps_per_epoch()-1`` of ``epoch``, yielding step metrics after each one."""
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Metrics of the finished epoch (training averages and validation)."""
        raise NotImplementedError

    def converged(self, metrics: dict[str, float]) -> bool:
        """True to stop before the last epoch (e.g. a perceptron pass without mistakes)."""
        return False

    def finish(self, run_dir: Path) -> dict[str, Any]:
        """Final metrics (the ones ``expect`` refers to), figures written into ``run_dir``."""
        raise NotImplementedError

    def raw_model(self) -> nn.Module:
        raise NotImplementedError

    def checkpoint_meta(self) -> dict[str, Any]:
        """Extra entries for every checkpoint, so that a model can be rebuilt without its data."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        """Rebuild the model from a checkpoint alone and report its metrics on ``split``."""
        raise NotImplementedError


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
