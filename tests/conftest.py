"""Shared fixtures: run the CLI in-process and capture what it prints; find the real data sets."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N` (the default, pyproject.toml): N processes share the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread each, and in the commands the tests start
    for _var in ("COLUMNS", "LINES"):  # execnet gives its workers an 80x24 terminal: dlcli's tables would fold
        os.environ.pop(_var, None)
if os.environ.get("DLCLI_DATA"):  # a relative DLCLI_DATA=../shared/data must survive the cli fixture's chdir
    os.environ["DLCLI_DATA"] = str(Path(os.environ["DLCLI_DATA"]).resolve())


def shared_data_dir() -> Path | None:
    """``$DLCLI_DATA`` when set, else ``../shared/data`` beside the repository (as laid out for CI), else the
    user's cache folder where dlcli downloads data (``~/.cache/dlcli``), so a fresh clone whose data was
    downloaded once runs every test."""
    env = os.environ.get("DLCLI_DATA")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dlcli"
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data", cache]:
        if (candidate / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return candidate.resolve()  # absolute: the cli fixture runs commands from a temporary folder
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("real MNIST not found (set DLCLI_DATA or lay out ../shared/data)")
    return d


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``cli("train", "perceptron", "--json")`` runs ``dlcli`` in-process in a temporary working folder."""
    from dlcli.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLCLI_DEBUG", raising=False)

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0) if not isinstance(e.code, str) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
