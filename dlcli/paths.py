"""Where commands write: a path option checked before anything is written, and the folders a failed command
made removed again. The lowest layer (it imports only ``dlcli.errors``), so every command and task can use it."""

from __future__ import annotations

import os
from pathlib import Path

from dlcli.errors import UsageError


def refuse_file_in_the_way(option: str, value: str | os.PathLike[str], takes: str, *, folder: bool) -> None:
    """``option value`` names a folder to write into (``folder``) or a file to write: a file standing where
    that folder, or a folder above it, would be made (``mkdir(parents=True)`` would fail) is a UsageError."""
    path = Path(value)
    start = path if folder else path.parent
    base = next((a for a in (start, *start.parents) if a.exists()), None)
    if base is not None and not base.is_dir():
        where = "is a file" if base == path else f"is inside {base}, which is a file"
        raise UsageError(f"{option} {value} {where}; {option} takes {takes}")


def first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet; None when it exists."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            return missing
        missing = p
    return missing


def prune_empty(start: Path, made: Path) -> None:
    """Remove ``start`` and the folders above it, up to ``made`` (the outermost one a command created, see
    ``first_missing``), while they are empty: what a failed command leaves of the folders it made."""
    for p in (start, *start.parents):
        if not p.is_relative_to(made) or not p.is_dir() or any(p.iterdir()):
            break
        p.rmdir()
