"""Evaluation episodes with a fixed list of seeds, and a filmstrip of one episode.

``run_episodes`` plays one episode per seed, up to ``parallel`` at a time (one batched forward pass per
step for all running episodes), and returns (return, length) in seed order. The seeds come from
``eval_seeds(split, n)``: the same episodes for every run and every tool that is evaluated this way (the
benchmarks evaluate cleanrl's and Stable-Baselines3's networks with it too), and distinct for ``val``
(chooses ``best.pt`` during training) and ``test`` (what is reported).

``filmstrip`` plays one episode and draws evenly spaced frames into one PNG: the emulator's screen for Atari
games, a drawing of the cart and pole for CartPole (no pygame or video library needed), the observation
values over time otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlcli.envs import EnvMaker, episode_seed

STREAMS = {"val": 1, "test": 2}

Policy = Callable[[np.ndarray], np.ndarray]  # (B, *obs_shape) observations -> (B,) actions


def eval_seeds(split: str, n: int) -> list[int]:
    """Seeds of the first ``n`` evaluation episodes of ``split`` (val | test); independent of the run's seed."""
    return [episode_seed(STREAMS[split], j) for j in range(n)]


def run_episodes(maker: EnvMaker, policy: Policy, seeds: list[int], parallel: int = 32) -> list[tuple[float, int]]:
    """One episode per seed, ``parallel`` at a time; (undiscounted return, length) per seed, in order."""
    envs = [maker.make() for _ in range(min(parallel, len(seeds)))]
    results: list[tuple[float, int]] = [(0.0, 0)] * len(seeds)
    todo = iter(enumerate(seeds))
    running: list[list[Any]] = []  # [env, episode index, obs, return, length]
    for env in envs:
        nxt = next(todo, None)
        if nxt is None:
            break
        obs, _ = env.reset(seed=nxt[1])
        running.append([env, nxt[0], obs, 0.0, 0])
    try:
        while running:
            actions = policy(np.stack([r[2] for r in running]))
            still = []
            for r, a in zip(running, actions.tolist()):
                obs, reward, terminated, truncated, _ = r[0].step(a)
                r[2], r[3], r[4] = obs, r[3] + float(reward), r[4] + 1
                if terminated or truncated:
                    results[r[1]] = (r[3], r[4])
                    nxt = next(todo, None)
                    if nxt is None:
                        continue
                    obs, _ = r[0].reset(seed=nxt[1])
                    r[1], r[2], r[3], r[4] = nxt[0], obs, 0.0, 0
                still.append(r)
            running = still
    finally:
        for env in envs:
            env.close()
    return results


def summarize(results: list[tuple[float, int]]) -> dict[str, float]:
    returns = np.array([r for r, _ in results], dtype=np.float64)
    lengths = np.array([n for _, n in results], dtype=np.float64)
    return {"mean_return": float(returns.mean()), "std_return": float(returns.std()),
            "min_return": float(returns.min()), "max_return": float(returns.max()),
            "mean_length": float(lengths.mean()), "episodes": len(results)}


# -------------------------------------------------------------------------------------------- filmstrip


def _draw_cartpole(ax: Any, state: np.ndarray) -> None:
    """CartPole-v1's geometry: track at y = 0, a 0.5 x 0.3 cart at x, a pole of length 1 (2 x half-length)."""
    from matplotlib.patches import Rectangle

    x, _, theta, _ = (float(v) for v in state)
    ax.plot([-2.4, 2.4], [0, 0], color="0.4", lw=1)
    ax.add_patch(Rectangle((x - 0.25, -0.15), 0.5, 0.3, color="0.25"))
    ax.plot([x, x + np.sin(theta)], [0.15, 0.15 + np.cos(theta)], color="tab:orange", lw=4, solid_capstyle="round")
    ax.set_xlim(-2.6, 2.6)
    ax.set_ylim(-0.4, 1.3)
    ax.set_aspect("equal")


def filmstrip(maker: EnvMaker, policy: Policy, seed: int, path: Path, title: str, frames: int = 10) -> dict[str, Any]:
    """Play one episode and save ``frames`` evenly spaced frames of it as one PNG; returns its return/length."""
    from dlcli.plots import pyplot

    kind = "atari" if maker.family == "atari" else ("cartpole" if maker.id.startswith("CartPole") else "values")
    env = maker.make(render_mode="rgb_array" if kind == "atari" else None)
    obs, _ = env.reset(seed=seed)
    shots: list[tuple[int, float, Any]] = []  # (step, return so far, picture or state), every ``stride``-th step
    stride, limit = 1, 40 * frames  # long episodes: halve the kept steps whenever there are too many

    def shot(step: int, ret: float, last: bool = False) -> None:
        nonlocal shots, stride
        if step % stride and not last:
            return
        if len(shots) >= limit:
            shots, stride = shots[::2], stride * 2
            if step % stride and not last:
                return
        if kind == "atari":
            shots.append((step, ret, env.render()))
        elif kind == "cartpole":
            shots.append((step, ret, np.array(env.unwrapped.state, dtype=np.float64)))
        else:
            shots.append((step, ret, np.asarray(obs, dtype=np.float64).reshape(-1)))

    ret, step, done = 0.0, 0, False
    shot(0, 0.0)
    while not done:
        action = int(policy(np.asarray(obs)[None])[0])
        obs, reward, terminated, truncated, _ = env.step(action)
        ret, step, done = ret + float(reward), step + 1, bool(terminated or truncated)
        shot(step, ret, last=done)
    env.close()

    plt = pyplot()
    if kind == "values":
        fig, ax = plt.subplots(figsize=(8, 3.5))
        values = np.stack([s[2] for s in shots])
        for j in range(values.shape[1]):
            ax.plot([s[0] for s in shots], values[:, j], lw=1, label=f"obs[{j}]")
        ax.set_xlabel("step")
        ax.legend(fontsize=7, ncol=min(values.shape[1], 6))
        ax.set_title(f"{title}: return {ret:g} in {step} steps", fontsize=9)
    else:
        picks = sorted(set(np.linspace(0, len(shots) - 1, min(frames, len(shots))).round().astype(int).tolist()))
        fig, axes = plt.subplots(1, len(picks), figsize=(1.9 * len(picks), 2.6 if kind == "atari" else 1.6),
                                 squeeze=False)
        for ax, k in zip(axes[0], picks):
            s, r, picture = shots[k]
            if kind == "atari":
                ax.imshow(picture)
            else:
                _draw_cartpole(ax, picture)
            ax.set_title(f"step {s}\nreturn {r:g}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{title}: return {ret:g} in {step} steps (seed {seed})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"return": ret, "length": step, "frames": len(shots)}
