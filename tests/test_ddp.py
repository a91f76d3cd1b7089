"""DistributedDataParallel through torchrun on the CPU (gloo): the same recipe on 2 processes gives the weights of
1 process, one run folder is written, and a Ctrl-C on one rank stops both at the same step, resumably.

These start real process groups (``dlcli train ... --nproc-per-node 2`` hands off to torch.distributed.run),
on a small slice of real MNIST.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlcli.checkpoint import load_checkpoint

SMALL = ["--set", "data.args.train_size=600", "--set", "data.args.val_size=300", "--epochs", "2",
         "--set", "batch_size=100", "--device", "cpu"]


def _env(data_dir: Path, **env: str) -> dict[str, str]:
    e = {**os.environ, "DLCLI_DATA": str(data_dir), "OMP_NUM_THREADS": "1", **env}
    e.pop("DLCLI_FAULT_SIGINT", None) if "DLCLI_FAULT_SIGINT" not in env else None
    return e


def _dlcli(args: list[str], cwd: Path, data_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlcli", *args], cwd=cwd, env=_env(data_dir, **env),
                          capture_output=True, text=True, timeout=300, check=False)


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def test_two_processes_equal_one_and_ctrl_c_on_one_rank_stops_both(tmp_path, data_dir):
    # the one-process reference runs beside the two-process run (both mostly import torch: CI has 2 cores)
    (tmp_path / "ref").mkdir()
    ref = subprocess.Popen([sys.executable, "-m", "dlcli", "train", "lenet-modern", *SMALL, "--out", "one", "--json"],
                           cwd=tmp_path / "ref", env=_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    # two processes; rank 1 receives a real SIGINT after step 2 of epoch 2, rank 0 never does
    stopped = _dlcli(["train", "lenet-modern", *SMALL, "--nproc-per-node", "2"], tmp_path, data_dir,
                     DLCLI_FAULT_SIGINT="1:2:2")
    one_out, one_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, one_err[-2000:]
    assert stopped.returncode != 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # rank 0 chose the folder, rank 1 used it
    ck = load_checkpoint(runs[0] / "last.pt")
    assert (ck["epoch"], ck["step"]) == (1, 2)  # both ranks stopped after the same step
    # A marker only the checkpoint carries: the wall time of the interrupted segment, set to 1,000 s. A resume
    # adds it to its own time; a run that silently retrained from scratch (the same weights: CPU training is
    # deterministic) would not
    raw = torch.load(runs[0] / "last.pt", weights_only=True)
    raw["elapsed_s"] = 1000.0
    torch.save(raw, runs[0] / "last.pt")
    resumed = _dlcli(["train", "--resume", str(runs[0]), "--nproc-per-node", "2", "--json"], tmp_path, data_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = json.loads(resumed.stdout)  # rank 0 alone printed one JSON document
    assert out["header"]["world_size"] == 2 and Path(out["run_dir"]).name == runs[0].name
    assert out["header"]["resumed_at"] == "epoch 2, step 2"
    assert 1000 < out["final"]["train_time_s"] < 1000 + 300  # the checkpoint's segment plus this one
    # interrupted and resumed on two processes = one process throughout: same global batch, loss normalised by
    # it, DDP averaging; float32 reduction order is the only difference (a resume that lost the data order, an
    # optimiser state or a step would differ by orders of magnitude more)
    assert _max_diff(tmp_path / "ref" / "one" / "last.pt", runs[0] / "last.pt") < 1e-5
    assert out["final"]["val_accuracy"] == json.loads(one_out)["final"]["val_accuracy"]


def test_batch_not_divisible_by_processes_is_one_line(cli, tmp_path, data_dir, monkeypatch):
    # in this process: the check comes before torchrun is handed the command (which would replace this process)
    import dlcli.cli

    def started(*a):
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(dlcli.cli, "_torchrun", started)
    res = cli("train", "lenet-modern", *SMALL, "--set", "batch_size=101", "--nproc-per-node", "2", "--data-dir",
              str(data_dir))
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "batch_size 101 is not divisible by the 2 processes" in lines[0], res.err
    assert not (tmp_path / "runs").exists()


class _Rank:
    """A stand-in Runtime of one rank that records the collectives it joins; ``rank0_fails`` is what rank 0 says,
    ``gathered`` what every rank says after loading."""

    def __init__(self, rank: int, world_size: int, events: list[str], rank0_fails: bool = False,
                 gathered: list | None = None) -> None:
        self.rank, self.world_size, self.events = rank, world_size, events
        self.rank0_fails, self.gathered = rank0_fails, gathered

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    def any_rank(self, flag: bool) -> bool:
        self.events.append(f"any_rank({flag})")
        return flag or self.rank0_fails

    def all_gather_object(self, obj):
        self.events.append(f"gather({obj})")
        return self.gathered or [obj] * self.world_size


OFFLINE = "MNIST not found under ... and no network"


@pytest.mark.parametrize("rank,world,failing,expected,raised", [
    (0, 1, None, ["load"], None),                                             # one process: nothing to tell
    (0, 2, None, ["load", "any_rank(False)", "gather(None)"], None),          # rank 0 first...
    (1, 2, None, ["any_rank(False)", "load", "gather(None)"], None),          # ...the others after it
    (0, 2, 0, ["load", "any_rank(True)"], OFFLINE),                           # rank 0 fails: it says why
    (1, 2, 0, ["any_rank(False)"], "rank 0 could not load the data"),         # the others stop, without loading
    (0, 2, 1, ["load", "any_rank(False)", "gather(None)"], f"rank 1 could not load the data: {OFFLINE}"),
    (1, 2, 1, ["any_rank(False)", "load", f"gather({OFFLINE})"], "rank 1 could not load the data"),
])
def test_rank_zero_loads_the_data_first(monkeypatch, rank, world, failing, expected, raised):
    import dlcli.tasks.base as base
    from dlcli.config import load_recipe
    from dlcli.errors import DlcliError, PeerStopped

    events: list[str] = []

    def load(*args, **kwargs):
        events.append("load")
        if rank == failing:
            raise DlcliError(OFFLINE)
        return "bundle"

    monkeypatch.setattr(base, "load_data", load)
    gathered = [None, OFFLINE] if failing == 1 else None
    rt = _Rank(rank, world, events, rank0_fails=failing == 0, gathered=gathered)
    task = base.Task(base.TaskContext(load_recipe("lenet", check_builders=False), rt))
    if raised is None:
        assert task.load_data() == "bundle"
    else:
        with pytest.raises(DlcliError, match=raised) as e:
            task.load_data()
        # the rank that reports exits 1; the others exit 0, so that torchrun names the reporting one
        assert e.value.exit_code == (1 if rank == 0 else 0) and isinstance(e.value, PeerStopped) == (rank != 0)
    assert events == expected
