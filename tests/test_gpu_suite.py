"""benchmarks/gpu_suite.sh in its dry mode on the CPU: one lane end to end (a generated CIFAR-shaped folder,
resnet20-cifar10 for one epoch on 32 images through the time-to-accuracy script), then the summary files.
The GPU figures themselves need a GPU; this checks the script's plumbing, which a GPU session cannot afford
to debug."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_suite_dry_lane_writes_results(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "SOLO": "0", "LANES": "cifar_d", "TAIL": "none",
           "TMPDIR": str(tmp_path)}
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--dry", "--part", "lanes",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = json.loads((out / "results.json").read_text())["steps"]
    assert [s["name"] for s in steps] == ["lane_cifar_d_resnet20_fp32"]
    data = steps[0]["data"]
    assert steps[0]["status"] == "ok" and data["recipe"] == "resnet20-cifar10" and data["precision"] == "fp32"
    assert len(data["history"]) == 1  # one epoch, its test accuracy measured
    assert data["target"] == 0.9125  # no --target given: the recipe's own expectation (the paper's 8.75% error)
    table = (out / "results.md").read_text()
    assert "DRY RUN" in table and "| lane_cifar_d_resnet20_fp32 | ok |" in table
    assert "s/epoch; final " in table  # the step's figure reached the table
