"""``bench all``: each model in its own ``python -m dlcli bench MODEL --json`` process, so that one model's
memory never distorts the next; a child's failure is its one-line error, collected, not fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import dlcli
from dlcli.bench.results import BenchResult
from dlcli.bench.spec import MODES, BenchSpec, Progress, quiet
from dlcli.errors import DlcliError


def child_argv(spec: BenchSpec) -> list[str]:
    """The ``dlcli bench`` options (without the model name) that reproduce ``spec`` in a child process."""
    mode = "both" if set(spec.modes) == set(MODES) else spec.modes[0]
    argv = ["--device", spec.device, "--mode", mode, "--precision", spec.precision, "--data", spec.data]
    argv += ["--seed", str(spec.seed)]
    for flag, value in (
        ("--batch-size", spec.batch_size),
        ("--warmup", spec.warmup),
        ("--steps", spec.steps),
        ("--workers", spec.workers),
        ("--data-dir", spec.data_dir),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if spec.input_shape is not None:
        argv += ["--input-size", ",".join(str(d) for d in spec.input_shape)]
    if isinstance(spec.compile, str):
        argv += ["--compile-mode", spec.compile]
    for flag, on in (
        ("--channels-last", spec.channels_last),
        ("--compile", spec.compile is True),
        ("--detail", spec.detail),
        ("--auto-batch", spec.auto_batch),
    ):
        if on:
            argv.append(flag)
    return argv


@dataclass(frozen=True)
class ChildFailure:
    model: str
    returncode: int
    message: str  # the child's last line on stderr (its one-line error)


class ChildError(DlcliError):
    def __init__(self, failure: ChildFailure) -> None:
        super().__init__(f"{failure.model}: {failure.message}")
        self.failure = failure


def run_in_child(model: str, argv: Sequence[str], on_line: Progress = quiet) -> list[BenchResult]:
    """Run ``python -m dlcli bench MODEL --json ARGV`` in a fresh process and parse its results.

    The child's stderr (progress) is forwarded line by line to ``on_line``. Raises ``ChildError`` (a
    DlcliError) carrying the child's last stderr line when it fails.
    """
    root = str(Path(dlcli.__file__).resolve().parent.parent)  # so `-m dlcli` works from any directory
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "dlcli", "bench", model, "--json", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()  # drain stdout concurrently, so a full pipe can never block the child
    last = ""
    assert proc.stderr is not None
    for line in proc.stderr:
        line = line.rstrip("\n")
        if line.strip():
            last = line.strip()
            on_line(line)
    rc = proc.wait()
    reader.join()
    if rc != 0:
        raise ChildError(ChildFailure(model, rc, last or f"exited with code {rc}"))
    try:
        docs = json.loads("".join(out_chunks))
        return [BenchResult.from_dict(d) for d in docs]
    except (ValueError, TypeError, KeyError) as e:
        raise ChildError(ChildFailure(model, rc, f"unreadable JSON from the child process: {e}")) from e


def run_all(
    models: Sequence[str], spec: BenchSpec, on_line: Progress = quiet
) -> tuple[list[BenchResult], list[ChildFailure]]:
    """Benchmark each model in its own process (so one model's memory never distorts the next)."""
    argv = child_argv(spec)
    results: list[BenchResult] = []
    failures: list[ChildFailure] = []
    for i, name in enumerate(models, 1):
        on_line(f"[{i}/{len(models)}] {name}")
        try:
            results.extend(run_in_child(name, argv, on_line))
        except ChildError as e:
            failures.append(e.failure)
    return results, failures
