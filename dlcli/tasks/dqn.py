"""Deep Q-learning (Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning"; 2015, Nature).

The agent acts ε-greedily in ``num_envs`` environments that step together (``dlcli.rl.vector``), stores every
transition in a replay buffer of tensors on the training device (``dlcli.rl.replay``), and every
``train_every`` environment steps takes ``gradient_steps`` gradient steps on minibatches drawn uniformly from
it, towards the TD target

    y = r + γ · (1 − terminated) · max_a' Q_target(s', a')

(Huber loss by default: the Nature paper's clipping of the error term to [−1, 1]). Q_target is a copy of the
network synchronised every ``target_update`` gradient steps (Nature 2015; ``target_update: 0`` is the 2013
agent, which bootstraps from the online network itself). ε falls linearly from ``epsilon_start`` to
``epsilon_end`` over the first ``epsilon_steps`` environment steps. ``clip_rewards`` trains on sign(r)
(Atari); returns are always reported unclipped.

Units: every count in ``task_args`` is in environment steps (transitions, all environments together) except
``target_update``, which counts gradient steps as the paper does. One trainer step is one vector step
(``num_envs`` transitions) plus the gradient steps that fall due.

Epochs: ``env_steps_per_epoch`` transitions each; after each, ``val_episodes`` evaluation episodes on the
``val`` seeds choose ``best.pt`` (monitor ``val_mean_return``) and ``stop_at_return`` may end the run early.
The final result (``eval_mean_return``) is measured on other seeds (``test``) with the best network.

Resume: the replay buffer, both networks, the optimiser, the counters that drive ε and the update schedule,
and the random generators (exploration, minibatch sampling) are in ``state_dict``; the environments are
rebuilt by replaying each unfinished episode from its seed (``dlcli.rl.vector``). On the CPU a resumed run
is then identical to an uninterrupted one, step for step.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcli.envs import EnvMaker, build_env, episode_seed
from dlcli.errors import ConfigError
from dlcli.registry import build_model_with_defaults, register_task
from dlcli.rl.replay import ReplayBuffer
from dlcli.rl.vector import VectorRunner
from dlcli.runtime import optimizer_step
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.tasks.optim import build_optimizer, build_scheduler, load_scheduler

LOSSES = ("huber", "mse")


def epsilon_at(env_steps: int, start: float, end: float, steps: int) -> float:
    """Linear decay from ``start`` to ``end`` over the first ``steps`` environment steps, then ``end``."""
    if steps <= 0 or env_steps >= steps:
        return end
    return start + (end - start) * env_steps / steps


def td_targets(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + γ (1 − terminated) max_a' Q(s', a'); ``next_q`` (B, A) from the target network."""
    return rewards + gamma * (1.0 - terminated) * next_q.max(1).values


def env_spaces(maker: EnvMaker) -> tuple[tuple[int, ...], int, Any]:
    """(observation shape, number of actions, observation dtype) of an environment DQN can learn in."""
    import gymnasium as gym

    env = maker.make()
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(act_space, gym.spaces.Discrete):
        raise ConfigError(f"env.id {maker.id}: DQN needs a discrete action space (one Q-value per action); "
                          f"{maker.id} has {act_space}")
    if not isinstance(obs_space, gym.spaces.Box):
        raise ConfigError(f"env.id {maker.id}: DQN needs array observations (a Box space), got {obs_space}")
    return tuple(int(d) for d in obs_space.shape), int(act_space.n), obs_space.dtype


def _torch_dtype(np_dtype: Any) -> torch.dtype:
    return torch.uint8 if np.dtype(np_dtype) == np.uint8 else torch.float32


class QPolicy:
    """Observations (numpy, batched) -> ε-greedy actions (numpy) of a Q-network; ε draws from its own generator."""

    def __init__(self, model: nn.Module, device: torch.device, num_actions: int, epsilon: float, seed: int) -> None:
        self.model, self.device, self.num_actions, self.epsilon = model, device, num_actions, epsilon
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        was = self.model.training
        self.model.eval()
        actions = self.model(torch.as_tensor(obs, device=self.device)).argmax(1).cpu()
        self.model.train(was)
        if self.epsilon > 0:
            explore = torch.rand(len(actions), generator=self.gen) < self.epsilon
            random_actions = torch.randint(self.num_actions, (len(actions),), generator=self.gen)
            actions = torch.where(explore, random_actions, actions)
        return actions.numpy()


class DQNTask(Task):
    one_process = "one learner steps its vectorised environments"
    monitor = "val_mean_return"
    monitor_mode = "max"
    progress_metric = "val_mean_return"

    def __init__(self, ctx: TaskContext, *, num_envs: int = 8, env_steps_per_epoch: int = 10_000,
                 buffer_size: int = 100_000, learning_starts: int = 1000, train_every: int = 1,
                 gradient_steps: int = 1, target_update: int = 500, tau: float = 1.0, gamma: float = 0.99,
                 epsilon_start: float = 1.0, epsilon_end: float = 0.05, epsilon_steps: int = 10_000,
                 loss: str = "huber", double_q: bool = False, clip_rewards: bool = False,
                 clip_grad_norm: float | None = None, val_episodes: int = 100, test_episodes: int = 100,
                 eval_epsilon: float = 0.0, stop_at_return: float | None = None, log_every: int = 1000,
                 threads: int = 0) -> None:
        super().__init__(ctx)
        checks = [
            (num_envs >= 1, "num_envs >= 1"), (env_steps_per_epoch >= 1, "env_steps_per_epoch >= 1"),
            (buffer_size >= 1, "buffer_size >= 1"), (learning_starts >= 0, "learning_starts >= 0"),
            (train_every >= 1, "train_every >= 1"), (gradient_steps >= 0, "gradient_steps >= 0"),
            (target_update >= 0, "target_update >= 0 (0: no target network)"), (0 < tau <= 1, "0 < tau <= 1"),
            (0 <= gamma <= 1, "0 <= gamma <= 1"), (0 <= epsilon_end <= 1 and 0 <= epsilon_start <= 1,
                                                   "epsilon_start and epsilon_end in [0, 1]"),
            (epsilon_steps >= 0, "epsilon_steps >= 0"), (loss in LOSSES, "loss one of " + ", ".join(LOSSES)),
            (val_episodes >= 0 and test_episodes >= 1, "val_episodes >= 0 and test_episodes >= 1"),
            (0 <= eval_epsilon <= 1, "eval_epsilon in [0, 1]"), (log_every >= 1, "log_every >= 1"),
            (threads >= 0, "threads >= 0 (0: leave torch's setting)"),
        ]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"task_args: {what} is required")
        if self.recipe.env is None:
            raise ValueError("the dqn task needs an env: section (e.g. env: {id: CartPole-v1})")
        self.num_envs, self.env_steps_per_epoch, self.learning_starts = num_envs, env_steps_per_epoch, learning_starts
        self.train_every, self.gradient_steps = train_every, gradient_steps
        self.target_update, self.tau = target_update, tau
        self.gamma, self.loss_name, self.double_q, self.clip_rewards = gamma, loss, double_q, clip_rewards
        self.eps = (epsilon_start, epsilon_end, epsilon_steps)
        self.clip_grad_norm, self.log_every = clip_grad_norm, log_every
        self.val_episodes, self.test_episodes, self.eval_epsilon = val_episodes, test_episodes, eval_epsilon
        self.stop_at_return = stop_at_return
        if val_episodes == 0:
            self.monitor = None  # nothing to choose by: the last epoch is the result
        self.batch_size = self.recipe.batch_size
        rt = self.runtime
        dev = rt.device

        self.maker = build_env(self.recipe.env.id, self.recipe.env.args)
        self.obs_shape, self.num_actions, obs_dtype = env_spaces(self.maker)
        self.obs_dtype = _torch_dtype(obs_dtype)
        model = self.build_model(obs_shape=list(self.obs_shape), num_actions=self.num_actions)
        self.model, self.raw = rt.prepare(model)
        self.target: nn.Module | None = None
        if target_update > 0:
            self.target = build_model_with_defaults(self.recipe.model.name, self.recipe.model.args,
                                                    obs_shape=list(self.obs_shape), num_actions=self.num_actions)
            self.target.to(dev).load_state_dict(self.raw.state_dict())
            self.target.requires_grad_(False)
        self.optimizer = build_optimizer(self.recipe, self.raw.parameters(), fused=True)
        self._steps = -(-env_steps_per_epoch // num_envs)
        self.scheduler = build_scheduler(self.recipe, self.optimizer, total_steps=self.schedule_steps(),
                                         steps_per_epoch=self._steps)
        self.scaler = rt.grad_scaler()

        stack = self.maker.frame_stack
        frame_shape = self.obs_shape[1:] if stack > 1 else self.obs_shape
        self.buffer = ReplayBuffer(buffer_size, num_envs, frame_shape, self.obs_dtype, dev, frame_stack=stack)
        self.runner = VectorRunner(self.maker, num_envs, self.recipe.seed)
        self.obs = self._to_device(self.runner.reset())
        # exploration draws on the CPU (the actions go to the environments); minibatches on the device
        self.explore_gen = torch.Generator().manual_seed(episode_seed(self.recipe.seed, 101))
        self.sample_gen = torch.Generator(device=dev).manual_seed(episode_seed(self.recipe.seed, 102))
        self.env_steps = self.episodes = self.updates = self.rounds = 0
        self.recent: deque[float] = deque(maxlen=100)  # returns of the last 100 training episodes
        # summed on the device (no sync per step): the epoch's loss; the loss and mean Q since the last train row
        self._sums = torch.zeros(3, device=dev)
        self._counts = [0, 0]  # updates in the epoch, since the last train row
        self.last_loss = torch.zeros((), device=dev)
        if threads:  # for the whole process: set last, once the recipe has proved valid
            torch.set_num_threads(threads)

    # --- helpers ----------------------------------------------------------------------------------------
    def _to_device(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=self.obs_dtype).to(self.runtime.device)

    def epsilon(self) -> float:
        return epsilon_at(self.env_steps, *self.eps)

    def header(self) -> dict[str, Any]:
        return {"env": self.recipe.env.id, "obs_shape": list(self.obs_shape), "actions": self.num_actions,
                "num_envs": self.num_envs,
                "total_env_steps": self._steps * self.num_envs * self.recipe.epochs}

    def steps_per_epoch(self, epoch: int) -> int:
        return self._steps

    def samples_per_step(self) -> int:
        return self.num_envs

    def raw_model(self) -> nn.Module:
        return self.raw

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"env": {"id": self.recipe.env.id, "obs_shape": list(self.obs_shape), "num_actions": self.num_actions,
                        "frame_stack": self.maker.frame_stack}}

    # --- acting and learning ----------------------------------------------------------------------------
    def _act(self) -> torch.Tensor:
        """ε-greedy actions (N,) on the CPU. Both random draws are made every step, whatever ε, so the
        generator's position depends on the step count only."""
        n = self.num_envs
        explore = torch.rand(n, generator=self.explore_gen) < self.epsilon()
        random_actions = torch.randint(self.num_actions, (n,), generator=self.explore_gen)
        if bool(explore.all()):
            return random_actions
        with torch.no_grad(), self.runtime.autocast():
            greedy = self.model(self.obs).argmax(1).cpu()
        return torch.where(explore, random_actions, greedy)

    def _update(self) -> None:
        b = self.buffer.sample(self.batch_size, self.sample_gen)
        with torch.no_grad(), self.runtime.autocast():
            bootstrap = self.target if self.target is not None else self.model
            next_q = bootstrap(b.next_obs).float()
            if self.double_q:  # van Hasselt et al. 2016: the online network picks, the target network values
                pick = self.model(b.next_obs).argmax(1, keepdim=True)
                next_q = next_q.gather(1, pick)
            y = td_targets(b.rewards, b.terminated, next_q, self.gamma)
        with self.runtime.autocast():
            q = self.model(b.obs).float().gather(1, b.actions.unsqueeze(1)).squeeze(1)
        loss_fn = F.smooth_l1_loss if self.loss_name == "huber" else F.mse_loss
        per = loss_fn(q, y, reduction="none")
        loss = (per * b.weight).sum() / b.weight.sum().clamp_min(1.0)
        optimizer_step(loss, self.optimizer, self.scaler, clip_grad_norm=self.clip_grad_norm)
        if self.scheduler is not None and self.scheduler.per_step:
            self.scheduler.step()
        self.updates += 1
        if self.target is not None and self.updates % self.target_update == 0:
            self.sync_target()
        self.last_loss = loss = loss.detach()
        self._sums += torch.stack((loss, loss, q.detach().mean()))
        self._counts[0] += 1
        self._counts[1] += 1

    @torch.no_grad()
    def sync_target(self) -> None:
        """θ⁻ ← τ θ + (1 − τ) θ⁻ (τ = 1: a copy, as in the paper)."""
        if self.tau >= 1.0:
            self.target.load_state_dict(self.raw.state_dict())
            return
        for t, s in zip(self.target.parameters(), self.raw.parameters()):
            t.lerp_(s, self.tau)

    def _rounds_due(self) -> int:
        """Training rounds (of ``gradient_steps`` each) due by now: one when ``learning_starts`` transitions are
        stored, then one per ``train_every`` transitions."""
        if self.env_steps < max(self.learning_starts, 1):
            return 0
        return (self.env_steps - self.learning_starts) // self.train_every + 1

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, Any]]:
        if start_step == 0:
            self._sums[0], self._counts[0] = 0.0, 0
        self.model.train()
        for _ in range(start_step, self._steps):
            actions = self._act()
            res = self.runner.step(actions.numpy())
            dev = self.runtime.device
            rewards = torch.as_tensor(res.rewards, dtype=torch.float32)
            self.buffer.add(self.obs, actions.to(dev), (rewards.sign() if self.clip_rewards else rewards).to(dev),
                            torch.as_tensor(res.terminated).to(dev), torch.as_tensor(res.truncated).to(dev),
                            torch.as_tensor(res.episode_step).to(dev))
            self.obs = self._to_device(res.obs)
            before = self.env_steps
            self.env_steps += self.num_envs
            for env, ret, length in res.finished:
                self.episodes += 1
                self.recent.append(ret)
                self.ctx.log_row("episode", {"episode": self.episodes, "return": ret, "length": length,
                                             "step": self.env_steps})
            due = self._rounds_due()
            if len(self.buffer) > 0:
                for _ in range((due - self.rounds) * self.gradient_steps):
                    self._update()
            self.rounds = due
            if self.env_steps // self.log_every != before // self.log_every:
                self._log_train_row()
            yield {"loss": self.last_loss, "epsilon": self.epsilon(),
                   "return": float(np.mean(self.recent)) if self.recent else float("nan")}
        if self.scheduler is not None and not self.scheduler.per_step:
            self.scheduler.step()

    def _log_train_row(self) -> None:
        _, loss, q = (float(v) for v in self._sums)
        n = self._counts[1]
        self._sums[1:], self._counts[1] = 0.0, 0
        row: dict[str, Any] = {"step": self.env_steps, "epsilon": round(self.epsilon(), 6)}
        if n:
            row.update(loss=loss / n, q_mean=q / n)
        self.ctx.log_row("train", row)

    # --- evaluation -------------------------------------------------------------------------------------
    def run_eval(self, split: str, episodes: int) -> dict[str, float]:
        from dlcli.rl.evaluate import eval_seeds, run_episodes, summarize

        policy = QPolicy(self.raw, self.runtime.device, self.num_actions, self.eval_epsilon,
                         episode_seed(self.recipe.seed, 103, episodes))
        return summarize(run_episodes(self.maker, policy, eval_seeds(split, episodes)))

    def end_epoch(self, epoch: int) -> dict[str, float]:
        loss_sum, n = float(self._sums[0]), self._counts[0]
        m: dict[str, Any] = {"env_steps": self.env_steps, "episodes": self.episodes, "updates": self.updates,
                             "epsilon": self.epsilon(), "train_loss": loss_sum / n if n else float("nan"),
                             "train_return": float(np.mean(self.recent)) if self.recent else float("nan")}
        if self.scheduler is not None:
            m["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.val_episodes:
            s = self.run_eval("val", self.val_episodes)
            m["val_mean_return"], m["val_std_return"] = s["mean_return"], s["std_return"]
        return m

    def converged(self, metrics: dict[str, float]) -> bool:
        value = metrics.get("val_mean_return")
        return self.stop_at_return is not None and value is not None and value >= self.stop_at_return

    def finish(self, run_dir: Path) -> dict[str, Any]:
        s = self.run_eval("test", self.test_episodes)
        final = {"eval_mean_return": s["mean_return"], "eval_std_return": s["std_return"],
                 "eval_min_return": s["min_return"], "eval_episodes": s["episodes"], "eval_epsilon": self.eval_epsilon,
                 "env_steps": self.env_steps, "episodes": self.episodes, "updates": self.updates}
        if self.runtime.is_primary:
            plot_training(run_dir, f"{self.recipe.name}: {self.recipe.model.name} on {self.recipe.env.id}")
        self.runner.close()
        return final

    # --- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "target": self.target.state_dict() if self.target is not None else None,
            "buffer": self.buffer.state_dict(),
            "envs": self.runner.state_dict(),
            "obs": self.obs.cpu(),
            "counters": {"env_steps": self.env_steps, "episodes": self.episodes, "updates": self.updates,
                         "rounds": self.rounds},
            "explore_rng": self.explore_gen.get_state(),
            "sample_rng": self.sample_gen.get_state(),
            "recent": torch.tensor(list(self.recent), dtype=torch.float64),
            "sums": self._sums.cpu(),
            "counts": list(self._counts),
            "last_loss": self.last_loss.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        dev = self.runtime.device
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler(self.scheduler, state.get("scheduler"), restore_schedule)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.target is not None and state.get("target") is not None:
            self.target.load_state_dict(state["target"])
        self.buffer.load_state_dict(state["buffer"])
        c = state["counters"]
        self.env_steps, self.episodes, self.updates, self.rounds = (int(c[k]) for k in
                                                                    ("env_steps", "episodes", "updates", "rounds"))
        self.explore_gen.set_state(state["explore_rng"])
        self.sample_gen.set_state(state["sample_rng"])
        self.recent = deque(state["recent"].tolist(), maxlen=100)
        self._sums = state["sums"].to(dev)
        self._counts = [int(c) for c in state["counts"]]
        self.last_loss = state["last_loss"].to(dev)
        replayed = self._to_device(self.runner.load_state_dict(state["envs"]))
        saved = state["obs"].to(dev)
        if not torch.equal(replayed, saved):
            self.runtime.notes.append(
                f"resume: replaying the unfinished episodes of {self.recipe.env.id} did not reproduce the saved "
                "observations (the environment is not deterministic given its seed and actions, e.g. sticky "
                "actions); training goes on from the replayed states, so it will differ from an uninterrupted run")
        self.obs = replayed

    # --- dlcli eval -------------------------------------------------------------------------------------
    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        from dlcli.rl.evaluate import eval_seeds, filmstrip, run_episodes, summarize

        recipe = ctx.recipe
        if recipe.env is None or "env" not in checkpoint:
            raise ConfigError(f"checkpoint of {recipe.name}: no environment recorded in it")
        meta = checkpoint["env"]
        maker = build_env(recipe.env.id, recipe.env.args)
        dev = ctx.runtime.device
        model = build_model_with_defaults(recipe.model.name, recipe.model.args, obs_shape=list(meta["obs_shape"]),
                                          num_actions=int(meta["num_actions"]))
        model.load_state_dict(checkpoint["model"])
        model.to(dev).eval()
        args = recipe.task_args
        opts = ctx.eval_options or {}
        episodes = int(opts.get("episodes") or args.get("test_episodes", 100))
        epsilon = float(opts["epsilon"]) if opts.get("epsilon") is not None else float(args.get("eval_epsilon", 0.0))
        policy = QPolicy(model, dev, int(meta["num_actions"]), epsilon, episode_seed(recipe.seed, 103, episodes))
        results = run_episodes(maker, policy, eval_seeds(split, episodes))
        s = summarize(results)
        metrics: dict[str, Any] = {"mean_return": s["mean_return"], "std_return": s["std_return"],
                                   "min_return": s["min_return"], "max_return": s["max_return"],
                                   "mean_length": s["mean_length"], "episodes": s["episodes"], "epsilon": epsilon,
                                   "env": recipe.env.id, "checkpoint_epoch": checkpoint.get("epoch")}
        returns = np.array([r for r, _ in results])
        quantiles = [[q, float(np.quantile(returns, q / 100))] for q in (0, 10, 25, 50, 75, 90, 100)]
        tables = [("returns over the episodes (percentiles)", ["percentile", "return"], quantiles)]
        figures = [str(plot_returns(results, out_dir / "returns.png", f"{recipe.name} on {recipe.env.id}, {split}"))]
        if opts.get("render"):
            shot = filmstrip(maker, QPolicy(model, dev, int(meta["num_actions"]), epsilon, 0),
                             eval_seeds(split, 1)[0], out_dir / "episode.png", f"{recipe.name} ({split} episode 1)")
            metrics["filmstrip_return"] = shot["return"]
            figures.append(str(out_dir / "episode.png"))
        details = {"returns": returns.tolist(), "lengths": [n for _, n in results]}
        return EvalResult(metrics, tables, figures, details)


# ---------------------------------------------------------------------------------------------- figures


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    c = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    n = np.minimum(np.arange(1, len(values) + 1), window)
    return (c[1:] - c[np.maximum(0, np.arange(1, len(values) + 1) - window)]) / n


def plot_training(run_dir: Path, title: str) -> Path | None:
    """``dqn.png``: episodic return over environment steps (moving average of 20 episodes) with the
    validation means per epoch, ε, and the TD loss (log scale), from the run's ``metrics.jsonl``."""
    from dlcli.plots import pyplot

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    episodes = [r for r in rows if r.get("row") == "episode"]
    train = [r for r in rows if r.get("row") == "train"]
    epochs = [r for r in rows if "row" not in r and "val_mean_return" in r]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    ax = axes[0]
    if episodes:
        x = np.array([r["step"] for r in episodes])
        y = np.array([r["return"] for r in episodes], dtype=np.float64)
        ax.plot(x, y, lw=0.6, alpha=0.35, color="tab:blue", label="episode return")
        ax.plot(x, _moving_average(y, 20), lw=1.6, color="tab:blue", label="moving average (20 episodes)")
    if epochs:
        ax.plot([r["env_steps"] for r in epochs], [r["val_mean_return"] for r in epochs], "o-", color="tab:red",
                ms=4, lw=1, label="greedy evaluation (val)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title("episodic return", fontsize=9)
    axes[1].plot([r["step"] for r in train], [r["epsilon"] for r in train], color="tab:green")
    axes[1].set_xlabel("environment steps")
    axes[1].set_title("exploration ε", fontsize=9)
    with_loss = [r for r in train if "loss" in r]
    if with_loss:
        axes[2].plot([r["step"] for r in with_loss], [r["loss"] for r in with_loss], color="tab:purple", lw=1)
        if all(r["loss"] > 0 for r in with_loss):
            axes[2].set_yscale("log")
    axes[2].set_xlabel("environment steps")
    axes[2].set_title("TD loss (mean per logged interval)", fontsize=9)
    for a in axes:
        a.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out = run_dir / "dqn.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_returns(results: list[tuple[float, int]], path: Path, title: str) -> Path:
    from dlcli.plots import pyplot

    plt = pyplot()
    returns = np.array([r for r, _ in results])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(returns, bins=min(30, max(5, len(returns) // 3)), color="tab:blue", alpha=0.8)
    ax.axvline(returns.mean(), color="tab:red", lw=1.5, label=f"mean {returns.mean():.1f} ± {returns.std():.1f}")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


register_task("dqn", summary="deep Q-learning: ε-greedy, experience replay, a target network (Mnih 2013/2015)")(
    DQNTask)
