"""The trainer: run folder, epoch loop, checkpoints, Ctrl-C, resume. Knows nothing about any one model.

Ctrl-C is caught between two steps: the first one finishes the step in flight, writes a resumable
``last.pt`` and raises ``Interrupted`` (exit 130) with the exact resume command; a second Ctrl-C aborts at
once. Batch order is a function of (seed, epoch) and the RNG state is saved, so a resumed CPU run gives the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dlcli.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from dlcli.config import Recipe, check_expectation, recipe_from_dict, to_yaml
from dlcli.errors import ConfigError, DlcliError
from dlcli.registry import TASKS
from dlcli.runtime import Runtime, seed_everything
from dlcli.tasks.base import Task, TaskContext, count_parameters, rng_state, set_rng_state


class Interrupted(DlcliError):
    """Training stopped by Ctrl-C after saving a resumable checkpoint."""

    exit_code = 130


class TrainCallbacks(Protocol):
    def on_start(self, header: dict[str, Any], total_steps: int, done_steps: int) -> None: ...
    def on_step(self, epoch: int, step: int, metrics: dict[str, float], samples: int) -> None: ...
    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_end(self) -> None: ...


class NoCallbacks:
    """Callbacks that do nothing: subclass it and override only the hooks you need."""

    def on_start(self, header: dict[str, Any], total_steps: int, done_steps: int) -> None:
        pass

    def on_step(self, epoch: int, step: int, metrics: dict[str, float], samples: int) -> None:
        pass

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def on_end(self) -> None:
        pass


@dataclass
class TrainResult:
    run_dir: Path
    recipe: Recipe
    header: dict[str, Any]
    final: dict[str, Any]
    history: list[dict[str, Any]]
    epochs_run: int
    stopped_early: bool
    elapsed_s: float
    expectations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name,
            "run_dir": str(self.run_dir),
            "header": self.header,
            "final": self.final,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "elapsed_s": round(self.elapsed_s, 3),
            "expect": self.expectations,
            "history": self.history,
        }


def check_expectations(recipe: Recipe, final: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for metric, text in recipe.expect.items():
        got = final.get(metric)
        ok = isinstance(got, (int, float)) and not (isinstance(got, float) and math.isnan(got))
        met = bool(ok and check_expectation(float(got), text))
        rows.append({"metric": metric, "expected": text, "got": got, "met": met})
    return rows


class _StopFlag:
    """SIGINT handler: first Ctrl-C asks for a clean stop after the current step, the second aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _payload(task: Task, recipe: Recipe, epoch: int, step: int, history: list[dict[str, Any]],
             best: dict[str, Any] | None, elapsed: float, final: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "recipe": recipe.to_dict(),
        "task": recipe.task,
        "model": task.raw_model().state_dict(),
        "task_state": task.state_dict(),
        "epoch": epoch,  # the epoch in progress (== epochs when training is complete)
        "step": step,  # steps of that epoch already done
        "history": history,
        "best": best,
        "rng": rng_state(),
        "elapsed_s": elapsed,
        "final": final,
        **task.checkpoint_meta(),
    }


def _improved(task: Task, metrics: dict[str, float], best: dict[str, Any] | None) -> bool:
    value = metrics.get(task.monitor)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return best is None
    if best is None or best.get("value") is None:
        return True
    return value > best["value"] if task.monitor_mode == "max" else value < best["value"]


def write_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Loss and metrics per epoch: losses on the left, every other numeric metric on the right."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in history[-1] if k != "epoch" and isinstance(history[-1][k], (int, float))]
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses]
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(10 if others else 5.5, 3.8), squeeze=False)
    for ax, group, label in ((axes[0][0], losses, "loss"), (axes[0][-1] if others else None, others, "metric")):
        if ax is None:
            continue
        for k in group:
            ys = [h.get(k, float("nan")) for h in history]
            ax.plot(epochs, ys, marker="o", ms=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if label == "loss" and all(h.get(k, 1) > 0 for h in history for k in group):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train(
    recipe: Recipe,
    runtime: Runtime,
    run_dir: Path,
    *,
    data_dir: str | None = None,
    resume: bool = False,
    callbacks: TrainCallbacks | None = None,
) -> TrainResult:
    cb = callbacks or NoCallbacks()
    seed_everything(recipe.seed)
    task_cls = TASKS.get(recipe.task)
    try:
        task: Task = task_cls(TaskContext(recipe, runtime, data_dir), **recipe.task_args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"recipe {recipe.name}: {e}") from None

    epoch, step, history, best, elapsed = 0, 0, [], None, 0.0
    if resume:
        ckpt = load_checkpoint(run_dir / "last.pt")
        task.raw_model().load_state_dict(ckpt["model"])
        task.load_state_dict(ckpt["task_state"])
        epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        history, best, elapsed = list(ckpt["history"]), ckpt.get("best"), float(ckpt.get("elapsed_s", 0.0))
        set_rng_state(ckpt["rng"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(recipe), encoding="utf-8")

    steps = task.steps_per_epoch()
    header = {
        "recipe": recipe.name,
        "task": recipe.task,
        "model": recipe.model.name,
        "parameters": count_parameters(task.raw_model()),
        **task.header(),
        **runtime.describe(),
        "run_dir": str(run_dir),
        "epochs": recipe.epochs,
        "steps_per_epoch": steps,
        "resumed_at": f"epoch {epoch + 1}, step {step}" if resume else None,
    }
    cb.on_start(header, recipe.epochs * steps, epoch * steps + step)
    stopped_early = False
    t0 = time.perf_counter()
    with _StopFlag() as stop:
        try:
            while epoch < recipe.epochs:
                for i, metrics in enumerate(task.train_steps(epoch, step)):
                    step += 1
                    cb.on_step(epoch, step, metrics, task.samples_per_step())
                    if stop.requested:
                        elapsed += time.perf_counter() - t0
                        save_checkpoint(run_dir / "last.pt", _payload(task, recipe, epoch, step, history, best, elapsed))
                        raise Interrupted(
                            f"interrupted at epoch {epoch + 1}, step {step}; saved {run_dir / 'last.pt'}; "
                            f"resume with: dlcli train {recipe.name} --resume {run_dir}"
                        )
                metrics = {"epoch": epoch + 1, **task.end_epoch(epoch)}
                history.append(metrics)
                cb.on_epoch(epoch, metrics)
                epoch, step = epoch + 1, 0
                now = elapsed + time.perf_counter() - t0
                is_best = _improved(task, metrics, best)
                if is_best:
                    best = {"metric": task.monitor, "value": metrics.get(task.monitor), "epoch": epoch}
                payload = _payload(task, recipe, epoch, step, history, best, now)
                save_checkpoint(run_dir / "last.pt", payload)
                if is_best:
                    save_checkpoint(run_dir / "best.pt", payload)
                _write_metrics(run_dir, history)
                if task.converged(metrics):
                    stopped_early = epoch < recipe.epochs
                    break
        finally:
            cb.on_end()
    elapsed += time.perf_counter() - t0

    # Final metrics come from the best checkpoint (chosen on validation), as users would report them.
    if best is not None and best.get("epoch") != epoch and (run_dir / "best.pt").is_file():
        task.raw_model().load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    final = task.finish(run_dir)
    final["best_epoch"] = best.get("epoch") if best else None
    final["train_time_s"] = round(elapsed, 3)
    for name in ("last.pt", "best.pt"):
        path = run_dir / name
        if path.is_file():
            ckpt = load_checkpoint(path)
            ckpt.pop("path", None)
            ckpt["final"] = final
            save_checkpoint(path, ckpt)
    write_curves(history, run_dir / "curves.png", f"{recipe.name}: {recipe.model.name}")
    result = TrainResult(run_dir, recipe, header, final, history, len(history), stopped_early, elapsed)
    result.expectations = check_expectations(recipe, final)
    (run_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
    return result


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    tmp = run_dir / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history), encoding="utf-8")
    tmp.replace(run_dir / "metrics.jsonl")


def resume_recipe(run_dir: Path) -> tuple[Recipe, int]:
    """The resolved recipe saved in a run folder's ``last.pt`` and the epochs already done (for ``--resume``)."""
    if not run_dir.is_dir():
        raise DlcliError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / "last.pt").is_file():
        raise DlcliError(f"--resume {run_dir}: no last.pt in this folder, so there is nothing to resume")
    ckpt = load_checkpoint(find_checkpoint(run_dir, prefer="last"))
    recipe = recipe_from_dict(ckpt["recipe"], f"{run_dir / 'last.pt'} (saved recipe)", ckpt["recipe"].get("name", "run"))
    return recipe, int(ckpt["epoch"])
