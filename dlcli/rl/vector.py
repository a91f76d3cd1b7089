"""N environments stepping together, each episode seeded on its own, so a run can be rebuilt after a restart.

``VectorRunner`` wraps Gymnasium's ``SyncVectorEnv`` with autoreset turned off: an environment whose episode
ended is reset right after the step that ended it, with the seed of its next episode,
``episode_seed(run seed, environment, episode)``. The agent therefore always acts on a live observation
(no dummy reset step), and every episode is a function of its seed and its actions.

Environments cannot be pickled. What ``state_dict`` keeps instead is, per environment, the index of its
current episode and the actions taken in it so far; ``load_state_dict`` resets each environment with that
episode's seed and replays those actions, which puts a deterministic environment (all registered ones, except
Atari with sticky actions) in exactly the state it was in. The return is the replayed observation, which the
caller compares with the one it saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dlcli.envs import EnvMaker, episode_seed

TRAIN_STREAM = 0  # training episodes: episode_seed(run seed, TRAIN_STREAM, environment, episode)


@dataclass
class StepResult:
    obs: np.ndarray  # (N, *obs_shape): the next observation to act on (a new episode's first where one ended)
    rewards: np.ndarray  # (N,) float
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    episode_step: np.ndarray  # (N,) int: index within its episode of the observation acted on this step
    finished: list[tuple[int, float, int]] = field(default_factory=list)  # (environment, return, length)


class VectorRunner:
    def __init__(self, maker: EnvMaker, num_envs: int, seed: int) -> None:
        import gymnasium as gym

        self.maker, self.num_envs, self.seed = maker, num_envs, seed
        self.envs = gym.vector.SyncVectorEnv([maker.make] * num_envs, copy=False,
                                             autoreset_mode=gym.vector.AutoresetMode.DISABLED)
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self.episode = np.zeros(num_envs, dtype=np.int64)  # index of each environment's current episode
        self.length = np.zeros(num_envs, dtype=np.int64)  # steps taken in it
        self.ret = np.zeros(num_envs, dtype=np.float64)  # undiscounted, unclipped return so far
        self.actions: list[list[int]] = [[] for _ in range(num_envs)]  # taken in it, for a resume

    def _seeds(self, mask: np.ndarray | None = None) -> list[int | None]:
        return [episode_seed(self.seed, TRAIN_STREAM, i, int(self.episode[i])) if mask is None or mask[i] else None
                for i in range(self.num_envs)]

    def reset(self) -> np.ndarray:
        """First episodes of all environments."""
        obs, _ = self.envs.reset(seed=self._seeds())
        return np.array(obs)

    def step(self, actions: np.ndarray) -> StepResult:
        step_index = self.length.copy()
        obs, rewards, terminated, truncated, _ = self.envs.step(actions)
        self.length += 1
        self.ret += rewards
        for i, a in enumerate(actions.tolist()):
            self.actions[i].append(a)
        done = terminated | truncated
        finished = []
        if done.any():
            for i in np.flatnonzero(done):
                finished.append((int(i), float(self.ret[i]), int(self.length[i])))
                self.episode[i] += 1
                self.length[i], self.ret[i] = 0, 0.0
                self.actions[i] = []
            obs, _ = self.envs.reset(seed=self._seeds(done), options={"reset_mask": done})
        return StepResult(np.array(obs), rewards, terminated, truncated, step_index, finished)

    def close(self) -> None:
        self.envs.close()

    # --- resume ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "episode": torch.from_numpy(self.episode.copy()),
            "length": torch.from_numpy(self.length.copy()),
            "return": torch.from_numpy(self.ret.copy()),
            "actions": [torch.tensor(a, dtype=torch.int64) for a in self.actions],
        }

    def load_state_dict(self, state: dict[str, Any]) -> np.ndarray:
        """Rebuild every environment's current episode (reset with its seed, replay its actions); returns the
        observations the agent acts on next."""
        self.episode = state["episode"].numpy().astype(np.int64).copy()
        self.length = state["length"].numpy().astype(np.int64).copy()
        self.ret = state["return"].numpy().astype(np.float64).copy()
        self.actions = [a.tolist() for a in state["actions"]]
        obs, _ = self.envs.reset(seed=self._seeds())
        out = np.array(obs)
        for i, env in enumerate(self.envs.envs):  # the sub-environments, each on its own
            for a in self.actions[i]:
                o, *_ = env.step(a)
                out[i] = o
        return out
