"""Self-describing checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint holds everything needed to rebuild its model and continue or evaluate a run from the file
alone: the resolved recipe, the weights, the optimiser/scheduler/scaler state, the position in training
(epoch and step), the RNG state, the metrics so far, and the dlcli and torch versions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from dlcli import __version__
from dlcli.errors import DlcliError

FORMAT = "dlcli-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format and version fields) to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dlcli_version": __version__,
        "torch_version": str(torch.__version__),
        **payload,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: a reader sees the old or the new file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def find_checkpoint(path: str | os.PathLike[str], prefer: str = "best") -> Path:
    """A run folder -> its ``best.pt`` (or ``last.pt``); a file -> itself. Clear errors otherwise."""
    p = Path(path)
    if p.is_dir():
        order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
        for name in order:
            if (p / name).is_file():
                return p / name
        raise DlcliError(f"{p}: no checkpoint (best.pt or last.pt) in this folder; is it a dlcli run folder?")
    if p.is_file():
        return p
    raise DlcliError(f"{p}: no such file or run folder")


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a dlcli checkpoint; a foreign, truncated or corrupt file is one clear error."""
    p = find_checkpoint(path)
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt/foreign files
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = [ln for ln in lines if "Unpickler error" in ln]  # torch's actual reason, not its advice
        reason = (detail or lines or [type(e).__name__])[0]
        raise DlcliError(f"{p}: not a readable dlcli checkpoint (truncated or corrupt?): {reason[:160]}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DlcliError(f"{p}: not a dlcli checkpoint (no '{FORMAT}' marker); was it written by another tool?")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise DlcliError(
            f"{p}: checkpoint format {data.get('format_version')} is newer than this dlcli reads ({FORMAT_VERSION}); "
            "upgrade dlcli"
        )
    for key in ("recipe", "model"):
        if key not in data:
            raise DlcliError(f"{p}: dlcli checkpoint is missing its {key!r} entry")
    data["path"] = str(p)
    return data
