"""The installed ``dlcli ... --json``, run as a user runs it: stdout is exactly one JSON document, nothing else.

One subprocess per command, each on a tiny budget; progress, logs and warnings must go to stderr. In-process
tests cannot see what a process prints on stdout during imports, from worker processes or from C code, so
these run the console script itself. Starting Python and torch dominates each command's time, so the
commands are all started by one fixture, two at a time (CI has two cores), and each test checks its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import shared_data_dir

DLCLI = Path(sys.executable).with_name("dlcli")  # the console script installed beside this Python
pytestmark = pytest.mark.skipif(not DLCLI.is_file(), reason="the dlcli console script is not installed")

XOR_MUST_CONVERGE = """\
task: perceptron
model: {name: perceptron}
data: {source: xor}
epochs: 3
seed: 0
device: cpu
expect:
  converged: "== 1"   # the perceptron rule never converges on XOR: this expectation cannot be met
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "default"}  # warnings on, as a user sees them
    env.pop("DLCLI_DEBUG", None)
    return subprocess.run([str(DLCLI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def one_document(proc: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    """stdout parsed as one JSON document, failing if it is anything else or the exit code is not ``code``."""
    assert proc.returncode == code, f"{proc.args}: exit {proc.returncode}\nstderr:\n{proc.stderr[-3000:]}"
    try:
        doc = json.loads(proc.stdout)  # raises on anything before or after the document ("Extra data")
    except ValueError as e:
        raise AssertionError(f"stdout is not exactly one JSON document ({e}):\n{proc.stdout[:2000]}") from None
    assert proc.stdout.rstrip("\n")[-1:] in ("}", "]"), proc.stdout[-200:]
    return doc


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> Iterator[dict[str, Future[Any]]]:
    """Every command of this file, started at once (two at a time); name -> future of its result(s)."""
    work = tmp_path_factory.mktemp("json-cli")
    (work / "xor-must-converge.yaml").write_text(XOR_MUST_CONVERGE, encoding="utf-8")
    approx = work / "approx"

    def train_then_eval() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        train = run("train", "approx", "--epochs", "1", "--set", "task_args.steps_per_epoch=5", "--out",
                    str(approx), "--json", cwd=work)
        return train, run("eval", str(approx), "--json", cwd=work)

    bench = ("--device", "cpu", "--steps", "1", "--warmup", "1", "--batch-size", "2", "--json")
    with ThreadPoolExecutor(2) as pool:
        jobs: dict[str, Future[Any]] = {
            "train+eval": pool.submit(train_then_eval),
            "list": pool.submit(run, "list", "--json", cwd=work),
            "show": pool.submit(run, "show", "perceptron", "--set", "epochs=3", "--json", cwd=work),
            "verify": pool.submit(run, "verify", str(work / "xor-must-converge.yaml"), "--out",
                                  str(work / "verify"), "--json", cwd=work),
            # the code path of `bench all`: one `python -m dlcli bench MODEL --json` child per model (the
            # single-model command, whose stdout the parent parses as one JSON document), their progress
            # forwarded to stderr; on two small models (all of them would take a minute)
            "bench-list": pool.submit(run, "bench", "lenet5,mlp", *bench, cwd=work),
        }
        data = shared_data_dir()
        if data is not None:  # a tiny LeNet-5 to attack, trained in this process while the others run
            from dlcli.cli import main

            lenet = work / "lenet"
            try:
                main(["train", "lenet", "--epochs", "1", "--set", "data.args.train_size=256", "--set",
                      "data.args.val_size=500", "--device", "cpu", "--out", str(lenet), "--data-dir", str(data),
                      "--json"])
            except SystemExit as e:
                assert e.code in (0, None)
            jobs["attack"] = pool.submit(run, "attack", "deepfool", str(lenet), "--n", "16", "--compare-fgsm",
                                         "--device", "cpu", "--data-dir", str(data), "--out", str(work / "df"),
                                         "--json", cwd=work)
        yield jobs


def test_list(started) -> None:
    doc = one_document(started["list"].result())
    assert {"perceptron", "approx", "lenet"} <= {r["name"] for r in doc["recipes"]}


def test_show(started) -> None:
    doc = one_document(started["show"].result())
    assert doc["recipe"]["epochs"] == 3 and doc["parameters"] == 3  # a in R^2 and b


def test_train_and_eval(started) -> None:
    train_proc, eval_proc = started["train+eval"].result()
    train = one_document(train_proc)
    assert Path(train["run_dir"]).name == "approx" and [h["epoch"] for h in train["history"]] == [1]
    evaluated = one_document(eval_proc)
    assert evaluated["metrics"]["max_abs_error"] == pytest.approx(train["final"]["max_abs_error"], rel=1e-6)


def test_verify_not_met_exits_1_with_one_document(started) -> None:
    doc = one_document(started["verify"].result(), code=1)
    assert doc["met"] is False and [e["met"] for e in doc["expect"]] == [False]
    assert doc["final"]["converged"] == 0


def test_bench_of_several_models_runs_them_in_child_processes(started) -> None:
    proc = started["bench-list"].result()
    doc = one_document(proc)
    assert [(d["model"], d["mode"], d["steps"], d["batch_size"]) for d in doc] == [
        ("lenet5", "infer", 1, 2), ("lenet5", "train", 1, 2), ("mlp", "infer", 1, 2), ("mlp", "train", 1, 2)]
    assert "[1/2] lenet5" in proc.stderr and "[2/2] mlp" in proc.stderr  # progress went to stderr


def test_attack_deepfool_compare_fgsm(started) -> None:
    if "attack" not in started:
        pytest.skip("real MNIST not found (set DLCLI_DATA or lay out ../shared/data)")
    doc = one_document(started["attack"].result())
    assert doc["fgsm"] and 0 <= doc["fooling_rate"] <= 1, sorted(doc)
