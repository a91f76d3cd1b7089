"""Progress bar, run header and summary tables for ``dlcli train``, ``eval``, ``verify``, ``list`` and ``show``."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dlcli import report


def _metric_text(metrics: dict[str, Any]) -> str:
    parts = []
    for k, v in metrics.items():
        if k == "epoch" or v is None:
            continue
        v = float(v) if hasattr(v, "item") else v
        parts.append(f"{k} {report.fmt(v)}")
    return "  ".join(parts)


class TrainProgress:
    """Implements the trainer's callbacks with a rich progress bar on stderr (off with ``enabled=False``)."""

    def __init__(self, enabled: bool = True, progress_metric: str | None = None, refresh_s: float = 0.2) -> None:
        self.enabled = enabled
        self.progress_metric = progress_metric
        self.refresh_s = refresh_s
        self.progress: Progress | None = None
        self.task_id: Any = None
        self.epochs = 1
        self.steps_per_epoch = 1
        self._last_draw = 0.0
        self._samples = 0
        self._t0 = 0.0
        self._epoch_text = ""

    def on_start(self, header: dict[str, Any], total_steps: int, done_steps: int) -> None:
        self.epochs = int(header.get("epochs", 1))
        self.progress_metric = header.get("progress_metric") or self.progress_metric  # the task's own choice
        self.steps_per_epoch = max(1, int(header.get("steps_per_epoch", 1)))
        print_header(header)
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=report.err,
            transient=False,
        )
        self.progress.start()
        self.task_id = self.progress.add_task("train", total=max(total_steps, 1), completed=done_steps,
                                              metrics="", speed="")
        self._t0 = time.perf_counter()

    def on_step(self, epoch: int, step: int, metrics: dict[str, Any], samples: int) -> None:
        self._samples += samples
        if self.progress is None:
            return
        now = time.perf_counter()
        self.progress.advance(self.task_id)
        if now - self._last_draw < self.refresh_s and step != self.steps_per_epoch:
            return
        self._last_draw = now
        rate = self._samples / max(now - self._t0, 1e-9)
        self.progress.update(
            self.task_id,
            description=f"epoch {epoch + 1}/{self.epochs} step {step}/{self.steps_per_epoch}",
            metrics=_metric_text(metrics) + (f"  {self._epoch_text}" if self._epoch_text else ""),
            speed=f"{rate:,.0f} samples/s",
        )

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.progress_metric and metrics.get(self.progress_metric) is not None:
            self._epoch_text = f"{self.progress_metric} {report.fmt(metrics[self.progress_metric])}"
        if self.progress is not None:
            # print, not log: a log line would carry a source link (train.py:83) on every epoch
            self.progress.console.print(f"epoch {epoch + 1}: {_metric_text(metrics)}", markup=False,
                                        highlight=False)

    def on_end(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


HEADER_KEYS = ("recipe", "model", "parameters", "data", "env", "train_samples", "val_samples", "test_samples",
               "device", "device_name", "world_size", "precision", "compile", "channels_last", "seed", "epochs",
               "steps_per_epoch", "resumed_at", "run_dir")


def print_header(header: dict[str, Any]) -> None:
    items = {k: header[k] for k in HEADER_KEYS if header.get(k) is not None}
    if items.get("world_size") == 1:
        del items["world_size"]
    lines = "  ".join(f"[bold]{k}[/] {report.fmt(v)}" for k, v in items.items())
    for note in header.get("notes") or []:  # every note, each on its own line (none may hide another)
        lines += f"\n[bold]note[/] {escape(str(note))}"
    report.err.print(Panel(lines, title="dlcli train", title_align="left", expand=True))


def _rows(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (", ".join(report.fmt(x) for x in v) if isinstance(v, list) else v) for k, v in metrics.items()}


def print_train_summary(result: dict[str, Any]) -> None:
    final = dict(result["final"])
    report.out.print(report.key_value_table(f"{result['recipe']}: result", _rows(final)))
    if result.get("expect"):
        print_expectations(result["expect"])
    report.out.print(f"run folder: {result['run_dir']}", markup=False, highlight=False)


def print_expectations(rows: list[dict[str, Any]]) -> None:
    t = report.table("expected vs got", ["metric", "expected", "got", "met"],
                     [[r["metric"], r["expected"], r["got"], "yes" if r["met"] else "NO"] for r in rows])
    report.out.print(t)


def print_eval(title: str, result: dict[str, Any]) -> None:
    report.out.print(report.key_value_table(title, _rows(result["metrics"])))
    for name, columns, rows in result.get("tables", []):
        report.out.print(report.table(name, columns, rows))
    for fig in result.get("figures", []):
        report.out.print(f"figure: {fig}", markup=False, highlight=False)
    for note in result.get("notes", []):  # what the data was read from, as the run header says it for training
        report.err.print(f"note: {note}", markup=False, highlight=False)


def print_recipes(rows: list[dict[str, Any]]) -> None:
    t = report.table("dlcli recipes", ["name", "model", "data", "training", "expected", "description"],
                     [[r["name"], r["model"], r["data"], r["task"], r["expected"], r["description"]] for r in rows])
    report.out.print(t)
