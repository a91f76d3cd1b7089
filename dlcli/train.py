"""The trainer: run folder, epoch loop, checkpoints, Ctrl-C, resume, processes. Knows nothing about any one model.

Ctrl-C is caught between two steps: the first one finishes the step in flight, writes a resumable
``last.pt`` and raises ``Interrupted`` (exit 130) with the exact resume command; a second Ctrl-C aborts at
once. Under torchrun the stop request is reduced across ranks after every step, so all ranks stop after the
same step and one ``last.pt`` is written. Batch order is a function of (seed, epoch) and every RNG state is
saved, so a resumed CPU run gives the same weights as an uninterrupted one.

Checkpoints: ``last.pt`` holds everything to continue (weights, task state with optimisers and schedules,
RNG, position, rows so far) and is written at the end of every epoch and on Ctrl-C; ``best.pt`` holds what
evaluation needs (weights, recipe, data description), written when the monitored metric improves within the
task's final stage (every epoch when the task monitors nothing). Final metrics go to ``summary.json``.
Wall times: ``train_time_s`` adds up every segment of a resumed run; ``first_epoch_s`` and ``epoch_time_s``
describe this process's epochs only, and stay out of the per-epoch rows (a resumed or multi-process run must
reproduce those exactly).

``--resume RUN --epochs N`` on a finished run trains epochs it has not seen with a new learning-rate schedule
spanning only the added epochs (warm-up included), continuing from the finished weights and optimiser state.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dlcli.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from dlcli.config import Recipe, check_expectation, recipe_from_dict, to_yaml
from dlcli.errors import ConfigError, DlcliError
from dlcli.paths import first_missing, prune_empty
from dlcli.plots import pyplot
from dlcli.registry import TASKS
from dlcli.runtime import Runtime, seed_everything
from dlcli.tasks.base import (
    Task,
    TaskContext,
    count_parameters,
    rng_state,
    set_rng_state,
)
from dlcli.timing import steady_epoch_s


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
    rows: list[dict[str, Any]] = field(default_factory=list)  # the task's extra rows (episodes, steps)

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
            "rows": self.rows,
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
    """SIGINT and SIGTERM handler (Ctrl-C; a batch scheduler's preemption, ``timeout`` or ``kill``; torchrun
    turns a Ctrl-C into SIGTERM for its workers): the first signal asks for a clean stop after the current
    step, which writes a resumable last.pt, the second aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _fault_injection(rank: int) -> tuple[int, int] | None:
    """``DLCLI_FAULT_SIGINT=RANK:EPOCH:STEP`` (tests only): that rank sends itself a real SIGINT after that step
    (epoch counted from 1), as a user's Ctrl-C in one terminal of a multi-process run would."""
    spec = os.environ.get("DLCLI_FAULT_SIGINT")
    if not spec:
        return None
    r, e, st = (int(v) for v in spec.split(":"))
    return (e - 1, st) if r == rank else None


def _improved(task: Task, metrics: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if task.monitor is None:  # nothing to choose by: the latest epoch is the result
        return True
    value = metrics.get(task.monitor)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return best is None
    if best is None or best.get("value") is None:
        return True
    return value > best["value"] if task.monitor_mode == "max" else value < best["value"]


def _moving_average(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def write_curves(history: list[dict[str, Any]], path: Path, title: str,
                 rows: list[dict[str, Any]] | None = None) -> Path | None:
    """Per-epoch losses (left) and other metrics (right), then one panel per kind of extra row (episode
    returns, per-step losses, ...) against its ``step`` (or row number), with a moving average when long."""
    rows = rows or []
    kinds = list(dict.fromkeys(r["row"] for r in rows))
    if not history and not kinds:
        return None
    plt = pyplot()
    keys = [k for k in (history[-1] if history else {}) if k != "epoch" and isinstance(history[-1][k], (int, float))
            and not isinstance(history[-1][k], bool)]
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses]
    panels: list[tuple[str, Any]] = []
    if history:
        panels.append(("epoch-loss", losses))
        if others:
            panels.append(("epoch-metric", others))
    panels += [("row", kind) for kind in kinds]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, (what, arg) in zip(axes[0], panels):
        if what.startswith("epoch"):
            for k in arg:
                ax.plot(epochs, [h.get(k, float("nan")) for h in history], marker="o", ms=3, label=k)
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss" if what == "epoch-loss" else "metric")
            if what == "epoch-loss" and arg and all(h.get(k, 1) > 0 for h in history for k in arg):
                ax.set_yscale("log")
        else:
            sel = [r for r in rows if r["row"] == arg]
            xkey = "step" if all("step" in r for r in sel) else None
            xs = [r[xkey] for r in sel] if xkey else list(range(1, len(sel) + 1))
            for k in [k for k in sel[-1] if k not in ("row", "step", arg) and isinstance(sel[-1][k], (int, float))
                      and not isinstance(sel[-1][k], bool)]:
                ys = [float(r.get(k, float("nan"))) for r in sel]
                line, = ax.plot(xs, ys, lw=0.8, alpha=0.45 if len(ys) > 50 else 1.0, label=k)
                if len(ys) > 50:
                    ax.plot(xs, _moving_average(ys, max(5, len(ys) // 50)), color=line.get_color(), lw=1.6)
            ax.set_xlabel(xkey or arg)
            ax.set_title(f"per {arg}", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _model_payload(task: Task, recipe: Recipe, epoch: int, history: list[dict[str, Any]],
                   best: dict[str, Any] | None) -> dict[str, Any]:
    """What evaluation needs (``best.pt``): the model, its recipe and how to rebuild it."""
    return {
        "recipe": recipe.to_dict(),
        "task": recipe.task,
        "model": task.raw_model().state_dict(),
        "epoch": epoch,
        "step": 0,
        "history": history,
        "best": best,
        **task.checkpoint_meta(),
    }


def _resume_payload(task: Task, recipe: Recipe, epoch: int, step: int, log: list[dict[str, Any]],
                    best: dict[str, Any] | None, elapsed: float, span: tuple[int, int]) -> dict[str, Any]:
    """Everything to continue (``last.pt``): the model payload plus task state, RNG, log and position.
    ``task.state_dict()`` may be a collective, so every rank builds this; rank 0 alone writes it."""
    history = [r for r in log if "row" not in r]
    return {
        **_model_payload(task, recipe, epoch, history, best),
        "task_state": task.state_dict(),
        "step": step,  # steps of ``epoch`` already done (0 at an epoch boundary)
        "log": log,  # epoch rows and extra rows, in the order they were written
        "rng": rng_state(),
        "elapsed_s": elapsed,
        "schedule_span": list(span),
    }


def _epoch_times(ends: list[tuple[int, float]]) -> dict[str, float | None]:
    """``first_epoch_s``: this process's first epoch, compilation and warm-up included (a resumed run compiles
    again; resumed within an epoch, it is that epoch's rest); ``epoch_time_s``: the steady epoch after it."""
    steady = steady_epoch_s(ends)
    return {"first_epoch_s": round(ends[0][1], 3) if ends else None,
            "epoch_time_s": round(steady, 3) if steady is not None else None}


def _graph_steps(steps: Iterator[dict[str, Any]], rt: Runtime) -> Iterator[dict[str, Any]]:
    """The task's steps, each begun as a new CUDA-graph iteration (``Runtime.mark_step``, a no-op unless the
    model runs compiled with CUDA graphs): a step may then reuse the memory of the last one's graph outputs,
    which every task has consumed by the time it yields. Marked here, every kind of task is safe under
    ``compile: reduce-overhead``, not only those that mark their steps themselves (a GAN marks again inside its
    step, between its two networks)."""
    it = iter(steps)
    while True:
        rt.mark_step()
        try:
            metrics = next(it)
        except StopIteration:
            return
        yield metrics


class Trainer:
    """One training run: the epoch loop around a task, the run folder, checkpoints, Ctrl-C and the processes.

    Every rank runs the loop; rank 0 alone writes files and reports. ``log`` holds the per-epoch rows (those
    without a ``row`` key) and the task's extra rows (``{"row": kind, ...}``) in the order they came."""

    def __init__(self, recipe: Recipe, runtime: Runtime, run_dir: Path, data_dir: str | None,
                 callbacks: TrainCallbacks | None) -> None:
        self.recipe, self.runtime, self.run_dir = recipe, runtime, run_dir
        self.primary = runtime.is_primary
        self.cb: TrainCallbacks = (callbacks or NoCallbacks()) if self.primary else NoCallbacks()
        self.data_dir = data_dir
        self.log: list[dict[str, Any]] = []

    def log_row(self, kind: str, row: dict[str, Any]) -> None:
        self.log.append({"row": kind, **row})

    @property
    def history(self) -> list[dict[str, Any]]:
        return [r for r in self.log if "row" not in r]

    def save(self, name: str, payload: dict[str, Any]) -> None:
        if self.primary:
            save_checkpoint(self.run_dir / name, payload)

    def write_metrics(self) -> None:
        if not self.primary:
            return
        tmp = self.run_dir / ".metrics.jsonl.tmp"
        tmp.write_text("".join(json.dumps(h) + "\n" for h in self.log), encoding="utf-8")
        tmp.replace(self.run_dir / "metrics.jsonl")

    def build_task(self, span: tuple[int, int]) -> Task:
        task_cls = TASKS.get(self.recipe.task)
        ctx = TaskContext(self.recipe, self.runtime, self.data_dir, self.run_dir, self.log_row, span)
        try:
            return task_cls(ctx, **self.recipe.task_args)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"recipe {self.recipe.name}: {e}") from None

    def run(self, resume: bool) -> TrainResult:  # noqa: C901 (the loop reads best in one piece)
        recipe, rt = self.recipe, self.runtime
        seed_everything(recipe.seed)
        epoch, step, best, elapsed = 0, 0, None, 0.0
        span = (0, recipe.epochs)
        ckpt, extending = None, False
        if resume:
            ckpt = load_checkpoint(self.run_dir / "last.pt")
            epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
            saved_epochs = int(ckpt["recipe"].get("epochs", recipe.epochs))
            extending = step == 0 and epoch >= saved_epochs and recipe.epochs > epoch
            span = (epoch, recipe.epochs) if extending else tuple(ckpt.get("schedule_span") or (0, saved_epochs))
        task = self.build_task(span)
        if ckpt is not None:
            task.raw_model().load_state_dict(ckpt["model"])
            task.load_state_dict(ckpt["task_state"], restore_schedule=not extending)
            self.log = list(ckpt.get("log") or ckpt.get("history") or [])
            best, elapsed = ckpt.get("best"), float(ckpt.get("elapsed_s", 0.0))
            set_rng_state(ckpt["rng"])
        if self.primary:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(recipe), encoding="utf-8")

        first_steps = task.steps_per_epoch(min(epoch, recipe.epochs - 1))
        total = sum(task.steps_per_epoch(e) for e in range(recipe.epochs))
        done = sum(task.steps_per_epoch(e) for e in range(epoch)) + step
        header = {
            "recipe": recipe.name, "task": recipe.task, "model": recipe.model.name,
            "parameters": count_parameters(task.raw_model()), **task.header(), **rt.describe(),
            "run_dir": str(self.run_dir), "epochs": recipe.epochs, "steps_per_epoch": first_steps,
            "progress_metric": task.progress_metric,
            "resumed_at": f"epoch {epoch + 1}, step {step}" if resume else None,
        }
        if extending:
            header["resumed_at"] = f"epoch {epoch + 1}: extending a finished run, new schedule over epochs " \
                                   f"{span[0] + 1}-{span[1]}"
        self.cb.on_start(header, total, done)
        stopped_early = False
        fault = _fault_injection(rt.rank)
        t0 = time.perf_counter()
        ends: list[tuple[int, float]] = []  # (epoch from 1, seconds since t0) of the epochs this process ran
        with _StopFlag() as stop:
            try:
                while epoch < recipe.epochs:
                    for metrics in _graph_steps(task.train_steps(epoch, step), rt):
                        step += 1
                        self.cb.on_step(epoch, step, metrics, task.samples_per_step())
                        if fault == (epoch, step):
                            os.kill(os.getpid(), signal.SIGINT)
                        if rt.any_rank(stop.requested):  # every rank stops after the same step
                            now = elapsed + time.perf_counter() - t0
                            payload = _resume_payload(task, recipe, epoch, step, self.log, best, now, span)
                            self.save("last.pt", payload)
                            rt.barrier()
                            raise Interrupted(
                                f"interrupted at epoch {epoch + 1}, step {step}; saved {self.run_dir / 'last.pt'}; "
                                f"resume with: dlcli train {recipe.name} --resume {self.run_dir}"
                            )
                    metrics = {"epoch": epoch + 1, **task.end_epoch(epoch)}
                    self.log.append(metrics)
                    self.cb.on_epoch(epoch, metrics)
                    final_stage = task.is_final_stage(epoch)
                    epoch, step = epoch + 1, 0
                    is_best = final_stage and _improved(task, metrics, best if final_stage else None)
                    if is_best:
                        best = {"metric": task.monitor, "value": metrics.get(task.monitor) if task.monitor else None,
                                "epoch": epoch}
                    now = elapsed + time.perf_counter() - t0
                    self.save("last.pt", _resume_payload(task, recipe, epoch, step, self.log, best, now, span))
                    if is_best:
                        self.save("best.pt", _model_payload(task, recipe, epoch, self.history, best))
                    self.write_metrics()
                    ends.append((epoch, time.perf_counter() - t0))
                    if task.converged(metrics):
                        stopped_early = epoch < recipe.epochs
                        break
            except KeyboardInterrupt:  # the second Ctrl-C: stop at once, nothing more is written
                saved = (f"the last checkpoint is the end of epoch {epoch}; resume with: dlcli train {recipe.name} "
                         f"--resume {self.run_dir}") if epoch else "no checkpoint was written"
                raise Interrupted(f"aborted by a second Ctrl-C in epoch {epoch + 1}, step {step}; {saved}") from None
            finally:
                self.cb.on_end()
        elapsed += time.perf_counter() - t0
        rt.barrier()  # best.pt is on disk before any rank reads it

        # Final metrics come from the best checkpoint (chosen on validation), as users would report them.
        if best is not None and best.get("epoch") != epoch and (self.run_dir / "best.pt").is_file():
            task.raw_model().load_state_dict(load_checkpoint(self.run_dir / "best.pt")["model"])
        final = task.finish(self.run_dir)  # every rank (it may reduce metrics); tasks write figures on rank 0
        final["best_epoch"] = best.get("epoch") if best else None
        final["train_time_s"] = round(elapsed, 3)
        final.update(_epoch_times(ends))
        rows = [r for r in self.log if "row" in r]
        result = TrainResult(self.run_dir, recipe, header, final, self.history, len(self.history), stopped_early,
                             elapsed, rows=rows)
        result.expectations = check_expectations(recipe, final)
        if self.primary:
            write_curves(self.history, self.run_dir / "curves.png", f"{recipe.name}: {recipe.model.name}", rows)
            (self.run_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2, default=str),
                                                       encoding="utf-8")
        return result


def train(
    recipe: Recipe,
    runtime: Runtime,
    run_dir: Path,
    *,
    data_dir: str | None = None,
    resume: bool = False,
    callbacks: TrainCallbacks | None = None,
) -> TrainResult:
    """Train ``recipe`` into ``run_dir`` (or continue it from its ``last.pt``); see ``Trainer``.

    A new run that fails before its first checkpoint (a model that breaks in its first step, a second Ctrl-C)
    leaves no folder behind: one holding only config.yaml would look like a run to ``eval`` and ``--resume``."""
    trainer = Trainer(recipe, runtime, run_dir, data_dir, callbacks)
    fresh = trainer.primary and not resume and (
        not run_dir.exists() or run_dir.is_dir() and not any(run_dir.iterdir()))
    made = first_missing(run_dir) if fresh else None
    try:
        return trainer.run(resume)
    except BaseException:
        if fresh and not (run_dir / "last.pt").exists():
            _remove_unfinished(run_dir, made)
        raise


def _remove_unfinished(run_dir: Path, made: Path | None) -> None:
    """Empty a run folder that was empty before this run; remove one this run created, with the parents it
    created (``made``: the outermost of them) that are empty now."""
    if made is None:
        for child in run_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    prune_empty(run_dir.parent, made)


def resume_recipe(run_dir: Path) -> tuple[Recipe, int, int]:
    """The resolved recipe saved in a run folder's ``last.pt``, the epoch it stopped in and the steps of that
    epoch already done (0 at an epoch boundary), for ``--resume``."""
    if not run_dir.is_dir():
        raise DlcliError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / "last.pt").is_file():
        raise DlcliError(f"--resume {run_dir}: no last.pt in this folder, so there is nothing to resume")
    ckpt = load_checkpoint(find_checkpoint(run_dir, prefer="last"))
    recipe = recipe_from_dict(ckpt["recipe"], f"{run_dir / 'last.pt'} (saved recipe)", ckpt["recipe"].get("name", "run"),
                              legacy=True)
    return recipe, int(ckpt["epoch"]), int(ckpt.get("step", 0))
