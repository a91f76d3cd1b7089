"""Everything the user sees: consoles, progress bars, tables, panels and JSON. The only package that imports rich.

Results go to stdout (tables, or one JSON object with ``--json``); progress and logs go to stderr, so
``dlcli ... --json | jq`` always receives exactly one JSON document. Consoles are module attributes so that
tests can replace them with recording consoles.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


def _console(stderr: bool) -> Console:
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c.width = 160  # piped or logged: rich's 80 columns would fold every table
    return c


out = _console(stderr=False)  # results
err = _console(stderr=True)  # progress, headers, notes, errors


def set_consoles(stdout: Console | None = None, stderr: Console | None = None) -> None:
    global out, err
    if stdout is not None:
        out = stdout
    if stderr is not None:
        err = stderr


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # 0-d tensors and numpy scalars
        return obj.item()
    return obj


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout, and nothing else."""
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def fmt(value: Any, digits: int = 4) -> str:
    """Format a number for a table: ints as ints, floats to ``digits`` significant figures."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    caption: str | None = None,
) -> Table:
    """A plain rich table: right-aligned numbers, formatted with :func:`fmt`."""
    t = Table(title=title, caption=caption, title_justify="left")
    rows = [list(r) for r in rows]
    for i, c in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows)
        t.add_column(c, justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    return t


def key_value_table(title: str | None, items: dict[str, Any]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("key", style="bold")
    t.add_column("value", justify="right")
    for k, v in items.items():
        t.add_row(k, fmt(v))
    return t


def note(message: str) -> None:
    """A line for the user on stderr (never pollutes --json output); plain text, no markup."""
    err.print(Text(message), soft_wrap=True)


def error_line(message: str) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


@contextlib.contextmanager
def download_bar(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A download's progress on stderr (``dlcli.download.progress_display``): a rich bar with bytes, speed and time
    left on a terminal; otherwise (a log file, a job's output) one line when it starts and one when it ends.
    Yields ``advance(bytes)``."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if not err.is_terminal:
        t0, done = time.perf_counter(), [0]
        note(f"downloading {label} ({_bytes(total) if total is not None else 'size unknown'})")
        yield lambda n: done.__setitem__(0, done[0] + n)
        dt = max(time.perf_counter() - t0, 1e-6)
        note(f"downloaded {label}: {_bytes(done[0])} in {dt:.1f} s ({_bytes(done[0] / dt)}/s)")
        return
    with Progress(TextColumn("[bold]downloading {task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task(escape(label), total=total)
        yield lambda n: bar.advance(task, n)
        if total is None:  # no length announced: the finished bar shows what arrived, not "?"
            bar.update(task, total=bar.tasks[0].completed)


def _bytes(n: float) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units, as rich's download column)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"
