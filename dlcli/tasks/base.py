"""The contract between the trainer (``dlcli.train``) and a kind of learning (a registered task).

The trainer owns the run folder, the epoch loop, checkpoints, Ctrl-C, the processes and the progress bar. A
task owns its model(s), data or environment, optimiser(s) and the meaning of its metrics. Training advances
one step at a time through the generator ``train_steps`` so the trainer can stop cleanly between two steps,
and everything a task needs to continue exactly where it stopped is in ``state_dict`` — tensors and plain
types only, because checkpoints load with ``weights_only=True`` (a replay buffer is tensors).

What a task can rely on (``ctx``): the recipe, the runtime (device, precision, rank / world size), the data
folder, the run folder (figures during training), ``ctx.log_row`` for rows other than per-epoch ones
(episode returns, per-step losses), and ``ctx.schedule_span``: the epochs its learning-rate schedule covers.
What it may declare: ``monitor`` (None: the last epoch is the result), ``is_final_stage(epoch)`` (best is
chosen within the final stage only), ``steps_per_epoch(epoch)`` (read every epoch; stages may differ).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from dlcli.config import Recipe
from dlcli.data import DataBundle, load_data
from dlcli.errors import ConfigError, DlcliError, PeerStopped
from dlcli.registry import build_model_with_defaults
from dlcli.runtime import Runtime


def _no_row(kind: str, row: dict[str, Any]) -> None:
    pass


@dataclass
class TaskContext:
    recipe: Recipe
    runtime: Runtime
    data_dir: str | None = None
    run_dir: Path | None = None  # where the run writes; None when a task is built for evaluation only
    #: ``log_row("episode", {"episode": 12, "return": 187.0, "step": 5400})`` adds a row to metrics.jsonl
    log_row: Callable[[str, dict[str, Any]], None] = _no_row
    #: (first epoch, end epoch) that the learning-rate schedule spans: (0, epochs), or the added epochs
    #: when a finished run is extended with ``--resume RUN --epochs N``
    schedule_span: tuple[int, int] | None = None
    #: options of ``dlcli eval`` beyond the split, for a task's ``evaluate`` (e.g. episodes, features)
    eval_options: dict[str, Any] = field(default_factory=dict)

    def schedule_epochs(self) -> tuple[int, int]:
        return self.schedule_span or (0, self.recipe.epochs)


@dataclass
class EvalResult:
    """What ``dlcli eval`` shows: headline metrics, extra tables (title, columns, rows) and figure paths."""

    metrics: dict[str, Any]
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # extra JSON-only data (e.g. the confusion matrix)


def one_process_message(task: str, reason: str) -> str:
    return f"the {task} task runs in one process ({reason}); start it without torchrun / --nproc-per-node"


class Task:
    """Base class; subclasses are registered with ``@register_task(name)``."""

    #: metric (from ``end_epoch``) that picks ``best.pt``, and whether larger is better; None: the last epoch
    monitor: str | None = "val_loss"
    monitor_mode: str = "min"
    #: the metric shown in the progress bar beside the loss
    progress_metric: str | None = None
    #: why the task runs in one process only (None: it runs under torchrun, one shard of each batch per rank);
    #: ``dlcli train --nproc-per-node`` refuses such a task before starting torchrun
    one_process: str | None = None

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.recipe = ctx.recipe
        self.runtime = ctx.runtime
        if self.one_process and ctx.runtime.distributed:  # started under torchrun directly
            raise ValueError(one_process_message(self.recipe.task, self.one_process))

    # --- set-up helpers shared by tasks ---------------------------------------------------------------
    def load_data(self) -> DataBundle:
        """The recipe's data. Under torchrun rank 0 loads first and tells the others whether it could: a missing
        data set is downloaded (and CIFAR-10's image folders decoded into the cache) once, not by every process
        into the same files at once. Then the others load, and every rank learns whether all could: when one
        could not, rank 0 reports it (its error, or "rank N could not load the data: ...") and the others stop
        quietly (``PeerStopped``). Each rank joins the same two collectives on every path."""
        if self.recipe.data is None:
            raise ConfigError(f"recipe {self.recipe.name}: the {self.recipe.task} task needs a data: section")
        rt = self.runtime
        if not rt.distributed:
            return self._load_data()
        bundle, error = None, None
        if rt.is_primary:
            try:
                bundle = self._load_data()
            except BaseException as e:  # Ctrl-C included: the others must still hear from rank 0
                error = e
        if rt.any_rank(error is not None):  # the other ranks wait here while rank 0 loads
            if error is not None:
                raise error
            raise PeerStopped("rank 0 could not load the data")
        if not rt.is_primary:
            try:
                bundle = self._load_data()
            except BaseException as e:
                error = e
        failed = [(r, m) for r, m in enumerate(rt.all_gather_object(None if error is None else str(error))) if m]
        if failed:
            if rt.is_primary:
                raise DlcliError(f"rank {failed[0][0]} could not load the data: {failed[0][1]}")
            raise PeerStopped(f"rank {failed[0][0]} could not load the data")
        assert bundle is not None
        return bundle

    def _load_data(self) -> DataBundle:
        assert self.recipe.data is not None
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

    def steps_per_epoch(self, epoch: int) -> int:
        """Steps of ``epoch`` (asked every epoch: stages may differ in length)."""
        raise NotImplementedError

    def is_final_stage(self, epoch: int) -> bool:
        """False for the epochs of earlier stages (pretraining): ``best.pt`` is chosen in the final stage only."""
        return True

    def schedule_steps(self) -> int:
        """Steps that the learning-rate schedule spans (``ctx.schedule_span``)."""
        first, end = self.ctx.schedule_epochs()
        return sum(self.steps_per_epoch(e) for e in range(first, end))

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

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        """Restore ``state_dict``; ``restore_schedule=False`` (a finished run extended by more epochs) keeps
        the fresh schedule built for the added epochs instead of the finished one."""
        raise NotImplementedError

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        """Rebuild the model from a checkpoint alone and report its metrics on ``split``."""
        raise NotImplementedError


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def rng_state() -> dict[str, Any]:
    """Every global random generator a task may draw from — torch (CPU and each CUDA device), Python's
    ``random``, NumPy's legacy global — as tensors and plain types (loadable with ``weights_only=True``).
    A task's own ``torch.Generator`` objects belong in its ``state_dict`` (``generator.get_state()``)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "python": {"version": version, "state": list(internal), "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    except ImportError:  # numpy is optional
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
