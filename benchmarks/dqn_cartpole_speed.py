"""DQN on CartPole-v1: time to a mean greedy return of 475, dlcli against cleanrl and Stable-Baselines3; and
the cost per environment step of dlcli's training loop against a bare loop of the same algorithm.

Contestants (each a fresh process, one CPU thread each: ``OMP_NUM_THREADS=1``):

- ``dlcli``: ``dlcli train dqn-cartpole --seed S`` unchanged. The run itself evaluates 20 greedy episodes on
  its validation seeds after every epoch and stops at a perfect 500; its time is the trainer's
  ``train_time_s`` (the training loop with those evaluations, without imports and environment creation) and
  the wall time of the whole command. It counts only if its final 100-episode evaluation is >= 475.
- ``cleanrl``: cleanrl's ``dqn.py``, run unchanged by path (``--cleanrl PATH``, not part of this
  repository) with its defaults (500k steps, lr 2.5e-4, 120-84 network, ...), in a Python environment with
  the Gymnasium version it pins (0.29.1: ``--baselines-python``). A hook on ``torch.optim.Adam.step`` copies
  the network's parameters every ``--snapshot-every`` updates with the time since the script started.
- ``sb3``: Stable-Baselines3's DQN with rl-zoo's CartPole-v1 hyperparameters (50k steps, lr 2.3e-3, batch 64,
  256-256 network, 128 gradient steps every 256 steps, ...), same environment as cleanrl; a callback copies
  the Q-network every ``--snapshot-every-sb3`` environment steps.

Every snapshot is evaluated here, while the contestant keeps training, on the same 100 greedy episodes that
``dlcli eval`` plays (``dlcli.rl.evaluate.eval_seeds("test", 100)``, each episode seeded). A contestant's
time to 475 is the time at which the first snapshot that reaches a mean of 475 was taken; evaluation time is
not counted for cleanrl and SB3 (it is, for dlcli: its evaluations run inside the timed loop). The process
is stopped once a snapshot passes (``--run-to-end`` lets it finish).

``--bare`` also times ``dlcli train dqn-cartpole`` for a fixed budget without evaluations against a bare loop
of the same algorithm written out below (the same vector environment, network, optimiser, update schedule
and batch; no trainer, progress bar, metric rows or checkpoints), as microseconds per environment step.

Usage (the third-party tools are not dependencies of dlcli; nothing of theirs is committed):
    python -m venv /tmp/baselines && echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > /tmp/baselines/lib/python3.11/site-packages/zz-dlcli.pth     # reuse this torch
    /tmp/baselines/bin/pip install "gymnasium==0.29.1" tyro tensorboard stable-baselines3
    git clone https://github.com/vwxyzjn/cleanrl /tmp/cleanrl
    python benchmarks/dqn_cartpole_speed.py --cleanrl /tmp/cleanrl/cleanrl/dqn.py \\
        --baselines-python /tmp/baselines/bin/python --seeds 0 1 2 --bare --write /tmp/dqn.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 475.0
HERE = Path(__file__).resolve()


# ------------------------------------------------------------------------- workers (the baselines' venv)


def _snapshot(directory: Path, index: int, t0: float, step: int, params: Any) -> None:
    import torch

    data = {"t": time.perf_counter() - t0, "cpu": time.process_time(), "step": step,
            "params": [p.detach().clone() for p in params]}
    tmp = directory / f".snap-{index:05d}.pt"
    torch.save(data, tmp)
    tmp.replace(directory / f"snap-{index:05d}.pt")  # the parent never sees a half-written file


def worker_cleanrl(args: argparse.Namespace) -> None:
    """cleanrl's dqn.py run unchanged, with a hook on Adam.step that copies the network every N updates."""
    import runpy

    import torch

    out, t0 = Path(args.snapshots), time.perf_counter()
    script = Path(args.cleanrl).resolve()
    sys.path.insert(0, str(script.parent.parent))  # cleanrl_utils lives at the repository's top
    original, count = torch.optim.Adam.step, [0]

    def step(self: Any, *a: Any, **k: Any) -> Any:
        result = original(self, *a, **k)
        count[0] += 1
        if count[0] % args.snapshot_every == 0:  # cleanrl: one update every 10 steps after 10k
            _snapshot(out, count[0] // args.snapshot_every, t0, 10_000 + 10 * count[0], self.param_groups[0]["params"])
        return result

    torch.optim.Adam.step = step
    sys.argv = [str(script), "--seed", str(args.seed), "--no-cuda"]
    os.chdir(out)  # cleanrl writes runs/ (tensorboard) into the working folder
    runpy.run_path(str(script), run_name="__main__")


def worker_sb3(args: argparse.Namespace) -> None:
    """Stable-Baselines3 DQN with rl-baselines3-zoo's hyperparameters for CartPole-v1 (hyperparams/dqn.yml)."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    out, t0 = Path(args.snapshots), time.perf_counter()

    class Snapshots(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % args.snapshot_every_sb3 == 0:
                _snapshot(out, self.num_timesteps // args.snapshot_every_sb3, t0, self.num_timesteps,
                          self.model.q_net.q_net.parameters())
            return True

    model = DQN("MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs={"net_arch": [256, 256]},
                seed=args.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=50_000, callback=Snapshots())


def worker_bare(args: argparse.Namespace) -> None:
    """The algorithm of ``dqn-cartpole`` as a bare loop: prints µs per environment step for ``--steps``."""
    import gymnasium as gym
    import numpy as np
    import torch
    import torch.nn.functional as F

    from dlcli.config import load_recipe
    from dlcli.models.dqn import qmlp

    r = load_recipe("dqn-cartpole")
    a = r.task_args
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    n, gamma = a["num_envs"], a.get("gamma", 0.99)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * n)  # gymnasium's default autoreset
    q = qmlp(obs_shape=[4], num_actions=2, hidden=r.model.args["hidden"])
    target = qmlp(obs_shape=[4], num_actions=2, hidden=r.model.args["hidden"])
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=r.optim.lr, fused=True)
    cap = a["buffer_size"]
    obs_b, next_b = torch.zeros(cap, 4), torch.zeros(cap, 4)
    act_b, rew_b, term_b = torch.zeros(cap, dtype=torch.long), torch.zeros(cap), torch.zeros(cap)
    size = pos = updates = rounds = steps = 0
    rng = np.random.default_rng(args.seed)
    obs, _ = envs.reset(seed=args.seed)
    prev_done = np.zeros(n, dtype=bool)
    t0, c0 = time.perf_counter(), time.process_time()
    while steps < args.steps:
        eps = max(a["epsilon_end"], 1 + (a["epsilon_end"] - 1) * steps / a["epsilon_steps"])
        with torch.no_grad():
            greedy = q(torch.as_tensor(obs)).argmax(1).numpy()
        actions = np.where(rng.random(n) < eps, rng.integers(0, 2, n), greedy)
        nxt, rew, term, trunc, _ = envs.step(actions)
        for i in np.flatnonzero(~prev_done):  # the step after an episode's end only resets it
            obs_b[pos], next_b[pos] = torch.as_tensor(obs[i]), torch.as_tensor(nxt[i])
            act_b[pos], rew_b[pos], term_b[pos] = int(actions[i]), float(rew[i]), float(term[i])
            pos, size = (pos + 1) % cap, min(size + 1, cap)
        prev_done, obs = term | trunc, nxt
        steps += n
        due = (steps - a["learning_starts"]) // a["train_every"] + 1 if steps >= a["learning_starts"] else 0
        for _ in range((due - rounds) * a["gradient_steps"]):
            i = torch.randint(size, (r.batch_size,))
            with torch.no_grad():
                y = rew_b[i] + gamma * (1 - term_b[i]) * target(next_b[i]).max(1).values
            qa = q(obs_b[i]).gather(1, act_b[i].unsqueeze(1)).squeeze(1)
            loss = F.smooth_l1_loss(qa, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            updates += 1
            if updates % a["target_update"] == 0:
                target.load_state_dict(q.state_dict())
        rounds = due
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": elapsed, "env_steps": steps, "updates": updates,
                      "us_per_env_step": elapsed / steps * 1e6, "cpu_us_per_env_step": cpu / steps * 1e6}))


def worker_dlcli_loop(args: argparse.Namespace) -> None:
    """dlcli's training loop (the trainer and the dqn task, no progress bar) for ``--steps`` transitions, timed
    from the trainer's start to the end of the epoch (before its checkpoint): µs per environment step."""
    from dlcli.config import apply_overrides, load_recipe, parse_set
    from dlcli.runtime import Runtime
    from dlcli.train import NoCallbacks, train

    sets = ["epochs=1", f"task_args.env_steps_per_epoch={args.steps}", "task_args.val_episodes=0",
            "task_args.stop_at_return=null", "task_args.test_episodes=1", f"seed={args.seed}"]
    r = apply_overrides(load_recipe("dqn-cartpole"), dict(parse_set(s) for s in sets))

    class Clock(NoCallbacks):
        def on_start(self, header: dict[str, Any], total_steps: int, done_steps: int) -> None:
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
            self.t1, self.c1, self.m = time.perf_counter(), time.process_time(), metrics

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        train(r, Runtime.from_config(r), Path(tmp) / "run", callbacks=clock)
    steps = clock.m["env_steps"]
    print(json.dumps({"seconds": clock.t1 - clock.t0, "env_steps": steps, "updates": clock.m["updates"],
                      "us_per_env_step": (clock.t1 - clock.t0) / steps * 1e6,
                      "cpu_us_per_env_step": (clock.c1 - clock.c0) / steps * 1e6}))


# ------------------------------------------------------------------------------------------ the parent


def _env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "DLCLI_DEBUG": ""}


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: robust to a shared machine's load."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    import torch

    from dlcli.runtime import device_name

    return {"cpu": device_name(torch.device("cpu")), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def run_dlcli(seed: int, sets: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dlcli", "train", "dqn-cartpole", "--seed", str(seed), "--out", f"{tmp}/run",
               "--json", *[f"--set={s}" for s in sets]]
        load0, t0, cpu0 = load_average(), time.perf_counter(), _children_cpu()
        p = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
        if p.returncode != 0:
            raise SystemExit(f"dlcli failed: {p.stderr.strip().splitlines()[-1:]}")
        res = json.loads(p.stdout)
    f = res["final"]
    passed = f["eval_mean_return"] >= TARGET
    return {"tool": "dlcli", "seed": seed, "time_s": f["train_time_s"] if passed else None, "wall_s": wall,
            "train_time_s": f["train_time_s"], "cpu_s": cpu if passed else None, "command_cpu_s": cpu,
            "eval_mean_return": f["eval_mean_return"], "env_steps": f["env_steps"], "updates": f["updates"],
            "epochs": res["epochs_run"], "load": [load0, load_average()]}


def evaluate_params(params: list[Any], hidden: list[int]) -> float:
    """Mean return of the greedy policy of a 4-...-2 ReLU network with these parameters (in layer order) on
    the 100 test episodes of ``dlcli eval``."""
    import torch

    from dlcli.envs import build_env
    from dlcli.models.dqn import qmlp
    from dlcli.rl.evaluate import eval_seeds, run_episodes, summarize
    from dlcli.tasks.dqn import QPolicy

    net = qmlp(obs_shape=[4], num_actions=2, hidden=hidden)
    with torch.no_grad():
        for p, v in zip(net.parameters(), params, strict=True):
            p.copy_(v)
    policy = QPolicy(net, torch.device("cpu"), 2, 0.0, 0)
    return summarize(run_episodes(build_env("CartPole-v1", {}), policy, eval_seeds("test", 100)))["mean_return"]


def run_snapshot_tool(tool: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    hidden = [120, 84] if tool == "cleanrl" else [256, 256]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [args.baselines_python, str(HERE), "--worker", tool, "--seed", str(seed), "--snapshots", tmp,
               "--snapshot-every", str(args.snapshot_every), "--snapshot-every-sb3", str(args.snapshot_every_sb3)]
        if args.cleanrl:
            cmd += ["--cleanrl", args.cleanrl]
        load0, t0 = load_average(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
        seen, first, curve = set(), None, []
        while True:
            done = proc.poll() is not None
            for f in sorted(Path(tmp).glob("snap-*.pt")):
                if f.name in seen:
                    continue
                seen.add(f.name)
                snap = torch.load(f, weights_only=True)
                mean = evaluate_params(snap["params"], hidden)
                curve.append((snap["step"], round(snap["t"], 2), mean))
                print(f"  {tool} seed {seed}: step {snap['step']}, {snap['t']:.1f} s: {mean:.1f}", file=sys.stderr,
                      flush=True)
                if mean >= TARGET and first is None:
                    first = snap
                    if not args.run_to_end:
                        proc.terminate()
            if first is not None and not args.run_to_end or done:
                break
            time.sleep(0.5)
        proc.wait()
        wall = time.perf_counter() - t0
        if first is None and proc.returncode not in (0, -15):
            raise SystemExit(f"{tool} failed: {proc.stderr.read().strip().splitlines()[-3:]}")
    return {"tool": tool, "seed": seed, "time_s": first["t"] if first else None,
            "cpu_s": first["cpu"] if first else None,
            "env_steps": first["step"] if first else None, "wall_s": wall, "curve": curve,
            "load": [load0, load_average()]}


def run_bare_pair(seed: int, steps: int) -> dict[str, Any]:
    """The bare loop and dlcli's loop, one after the other in fresh processes, for the same budget."""
    load0, out = load_average(), {}
    for which in ("bare", "dlcli-loop"):
        p = subprocess.run([sys.executable, str(HERE), "--worker", which, "--seed", str(seed), "--steps", str(steps)],
                           capture_output=True, text=True, env=_env())
        if p.returncode:
            raise SystemExit(f"{which} failed: {p.stderr.strip().splitlines()[-3:]}")
        out[which] = json.loads(p.stdout.strip().splitlines()[-1])
    b, d = out["bare"], out["dlcli-loop"]
    return {"seed": seed, "env_steps": steps, "bare_us": b["us_per_env_step"], "bare_cpu_us": b["cpu_us_per_env_step"],
            "bare_updates": b["updates"], "dlcli_us": d["us_per_env_step"], "dlcli_cpu_us": d["cpu_us_per_env_step"],
            "dlcli_updates": d["updates"], "load": [load0, load_average()]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tools", nargs="*", default=["dlcli", "cleanrl", "sb3"], choices=("dlcli", "cleanrl", "sb3"),
                   help="contestants to race (none: only --bare)")
    p.add_argument("--cleanrl", help="path of cleanrl's cleanrl/dqn.py (a checkout of vwxyzjn/cleanrl)")
    p.add_argument("--baselines-python", default=sys.executable,
                   help="python of an environment with gymnasium 0.29.1, tyro, tensorboard, stable-baselines3")
    p.add_argument("--snapshot-every", type=int, default=500, help="cleanrl: updates between snapshots (5k steps)")
    p.add_argument("--snapshot-every-sb3", type=int, default=2560, help="sb3: environment steps between snapshots")
    p.add_argument("--run-to-end", action="store_true", help="let cleanrl and sb3 finish after passing")
    p.add_argument("--bare", action="store_true", help="also time dlcli's loop against a bare loop")
    p.add_argument("--bare-steps", type=int, default=8_000)
    p.add_argument("--write", help="also write the markdown tables to this file")
    # workers
    p.add_argument("--worker", choices=("cleanrl", "sb3", "bare", "dlcli-loop"), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--snapshots", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=16_000, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        {"cleanrl": worker_cleanrl, "sb3": worker_sb3, "bare": worker_bare,
         "dlcli-loop": worker_dlcli_loop}[args.worker](args)
        return

    info = {**machine(), "load_start": load_average()}
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for tool in args.tools:
            if tool == "cleanrl" and not args.cleanrl:
                print("  cleanrl skipped: no --cleanrl PATH", file=sys.stderr)
                continue
            r = run_dlcli(seed, []) if tool == "dlcli" else run_snapshot_tool(tool, seed, args)
            print(json.dumps({k: v for k, v in r.items() if k != "curve"}), file=sys.stderr, flush=True)
            runs.append(r)
    bare = []
    if args.bare:
        for seed in args.seeds[:1]:
            bare.append(run_bare_pair(seed, args.bare_steps))
            print(json.dumps(bare[-1]), file=sys.stderr, flush=True)
    info["load_end"] = load_average()
    text = markdown(runs, bare, info)
    print(text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    print(json.dumps({"machine": info, "runs": runs, "bare": bare}, default=str), file=sys.stderr)


def markdown(runs: list[dict[str, Any]], bare: list[dict[str, Any]], info: dict[str, Any]) -> str:
    def num(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, (int, float)) else "not reached"

    lines = [f"{info['cpu']}, {info['cores']} cores, 1 thread per contestant, torch {info['torch']}, "
             f"{info['date']}; load average {info['load_start']:.1f} at the start, {info['load_end']:.1f} at the end",
             "", "| tool | seed | wall time to 475 (s) | CPU time to 475 (s) | env steps then | mean return | "
             "load during |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        ret = r.get("eval_mean_return") or (max(c[2] for c in r["curve"]) if r.get("curve") else None)
        load = "-".join(f"{v:.1f}" for v in r["load"] if v is not None)
        lines.append(f"| {r['tool']} | {r['seed']} | {num(r['time_s'])} | {num(r.get('cpu_s'))} | "
                     f"{r['env_steps'] or '-'} | {ret} | {load} |")
    medians: dict[str, dict[str, float]] = {}
    for key in ("time_s", "cpu_s"):
        for tool in dict.fromkeys(r["tool"] for r in runs):
            values = [r[key] for r in runs if r["tool"] == tool and r.get(key) is not None]
            if values:
                medians.setdefault(tool, {})[key] = statistics.median(values)
    lines += ["", "| tool | median wall time (s) | median CPU time (s) | seeds passed |", "|---|---|---|---|"]
    for tool, m in medians.items():
        passed = sum(1 for r in runs if r["tool"] == tool and r["time_s"] is not None)
        total = sum(1 for r in runs if r["tool"] == tool)
        lines.append(f"| {tool} | {num(m.get('time_s'))} | {num(m.get('cpu_s'))} | {passed}/{total} |")
    for other in ("cleanrl", "sb3"):
        if "dlcli" in medians and other in medians:
            parts = [f"{k.split('_')[0]} {medians['dlcli'][k] / medians[other][k]:.3f}" for k in ("time_s", "cpu_s")
                     if k in medians["dlcli"] and k in medians[other]]
            lines.append(f"\nratio dlcli / {other} (medians): " + ", ".join(parts))
    for b in bare:
        lines.append(f"\nper environment step, {b['env_steps']} steps ({b['bare_updates']} / {b['dlcli_updates']} "
                     f"updates): bare loop {b['bare_cpu_us']:.0f} µs CPU ({b['bare_us']:.0f} wall), dlcli "
                     f"{b['dlcli_cpu_us']:.0f} µs CPU ({b['dlcli_us']:.0f} wall); CPU ratio dlcli / bare "
                     f"{b['dlcli_cpu_us'] / b['bare_cpu_us']:.2f}; load {b['load'][0]:.1f}-{b['load'][1]:.1f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
