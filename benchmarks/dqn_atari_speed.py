"""DQN on an Atari game (``dqn-pong`` by default): environment steps per second and the score after a fixed
budget of environment steps, on the device named (the measurement issue 13 asks for whenever a GPU is lent).

``dlcli train dqn-pong`` runs in this process, unchanged except for the budget: one epoch of ``--steps``
transitions (the recipe's 10M steps take about three hours on a GPU), a replay buffer of at most ``--steps``
transitions (so nothing is allocated that the budget cannot fill), and ``--val-episodes`` / ``--test-episodes``
evaluation episodes at the end. The trainer's ``on_step`` hook stamps the time of every round (one round =
``num_envs`` transitions), with the device synchronised at the stamps that bound the two phases:

- acting: from the first round to ``learning_starts`` (ε-greedy actions through the network, the emulator,
  frame preprocessing, the replay buffer on the device; no updates);
- learning: from ``learning_starts`` to the end (the same, plus one update of batch 32 every ``train_every``
  transitions and the target-network copies).

The score: the mean and last returns of the training episodes that finished (ε still high this early: the
paper's curve for Pong stays at -21 for the first ~1M steps) and the greedy evaluation (ε = the recipe's
``eval_epsilon``) at the end.

    python benchmarks/dqn_atari_speed.py --device cuda --steps 200000 --json-out /tmp/pong.json
    python benchmarks/dqn_atari_speed.py --device cpu --steps 3000 --learning-starts 1000   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's dlcli, also when it is not installed


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from dlcli.config import apply_overrides, load_recipe
    from dlcli.runtime import Runtime
    from dlcli.train import NoCallbacks, train

    base = load_recipe(args.recipe)
    learning_starts = args.learning_starts if args.learning_starts is not None else base.task_args["learning_starts"]
    overrides: dict[str, Any] = {
        "device": args.device, "epochs": 1, "seed": args.seed,
        "task_args.env_steps_per_epoch": args.steps,
        "task_args.buffer_size": min(args.steps, base.task_args["buffer_size"]),
        "task_args.learning_starts": learning_starts,
        "task_args.val_episodes": args.val_episodes, "task_args.test_episodes": args.test_episodes,
    }
    if args.env:
        overrides["env.id"] = args.env
    recipe = apply_overrides(base, overrides)
    num_envs = recipe.task_args["num_envs"]
    split_round = -(-learning_starts // num_envs)  # the first round with updates
    stamps: dict[str, float] = {}
    rounds: list[float] = []
    dev = torch.device("cpu")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    class Clock(NoCallbacks):
        def on_step(self, epoch: int, step: int, metrics: dict[str, Any], samples: int) -> None:
            if step == 1:
                sync()
                stamps["start"] = time.perf_counter()
            elif step == split_round:
                sync()
                stamps["learning"] = time.perf_counter()
            rounds.append(time.perf_counter())

        def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
            pass

    runtime = Runtime.from_config(recipe)
    dev = runtime.device
    with tempfile.TemporaryDirectory(prefix="dqn-atari-") as tmp:
        t0 = time.perf_counter()
        result = train(recipe, runtime, Path(tmp) / "run", data_dir=None, callbacks=Clock())
        wall = time.perf_counter() - t0
        log = [json.loads(line) for line in open(Path(tmp) / "run" / "metrics.jsonl", encoding="utf-8")]
    sync()
    end = rounds[-1]
    episodes = [r for r in log if r.get("row") == "episode"]
    returns = [r["return"] for r in episodes]
    acting_rounds = min(split_round, len(rounds)) - 1
    learning_rounds = len(rounds) - split_round
    out: dict[str, Any] = {
        "recipe": recipe.name, "env": recipe.env.id if recipe.env else None, "device": result.header["device_name"],
        "precision": recipe.precision, "num_envs": num_envs, "env_steps": len(rounds) * num_envs,
        "learning_starts": learning_starts, "train_every": recipe.task_args["train_every"],
        "acting_steps_per_s": (acting_rounds * num_envs / (stamps["learning"] - stamps["start"])
                               if "learning" in stamps and acting_rounds > 0 else None),
        "learning_steps_per_s": (learning_rounds * num_envs / (end - stamps["learning"])
                                 if "learning" in stamps and learning_rounds > 0 else None),
        "overall_steps_per_s": (len(rounds) - 1) * num_envs / (end - stamps["start"]),
        "train_time_s": result.final.get("train_time_s"), "wall_s": round(wall, 1),
        "episodes": len(returns),
        "mean_return": statistics.fmean(returns) if returns else None,
        "last10_mean_return": statistics.fmean(returns[-10:]) if returns else None,
        "eval_mean_return": result.final.get("eval_mean_return"),
        "eval_std_return": result.final.get("eval_std_return"),
        "eval_episodes": args.test_episodes,
        "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="dqn-pong")
    p.add_argument("--env", default=None, help="another ALE game, e.g. ALE/Breakout-v5")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=200_000, help="environment steps (transitions) in all")
    p.add_argument("--learning-starts", type=int, default=None, help="default: the recipe's (80,000)")
    p.add_argument("--val-episodes", type=int, default=1)
    p.add_argument("--test-episodes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON (else a table)")
    p.add_argument("--json-out", default=None, help="also write the JSON here")
    args = p.parse_args()
    res = measure(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))
    if args.json:
        print(json.dumps(res))
        return
    print(f"{res['recipe']} ({res['env']}) on {res['device']}, {res['num_envs']} environments, torch {res['torch']}")
    print(f"| phase | env steps/s |\n|---|---:|")
    for k in ("acting", "learning", "overall"):
        v = res[f"{k}_steps_per_s"]
        print(f"| {k} | {v:,.0f} |" if v else f"| {k} | - |")
    print(f"{res['env_steps']:,} steps, {res['episodes']} training episodes: mean return {res['mean_return']}, "
          f"last 10 {res['last10_mean_return']}; greedy evaluation ({res['eval_episodes']} episodes) "
          f"{res['eval_mean_return']} ± {res['eval_std_return']}")


if __name__ == "__main__":
    main()
