"""Experience replay (Lin 1992; Mnih et al. 2013) as tensors on the training device.

N environments step together, so the buffer is N rings of ``rows = capacity // N`` rows each, stored as
(rows, N, *frame) tensors. Row r of environment e holds what was known when the agent acted at that vector
step: the observation (for stacked frames: only its newest frame, as the 2013 paper stores single frames),
the action, the reward, whether the step terminated or truncated the episode, and the index of the step
within its episode. The next observation of a row is the next row's observation, because a finished episode
is reset before the next step; so:

- after a termination the next row is the next episode's first observation, which the target ignores (it
  has no bootstrap term: y = r);
- after a truncation (a time limit) the true next observation was never stored; those transitions are
  sampled with weight 0 (``Batch.weight``), which is as if they were not stored at all;
- the newest row of each ring has no next row yet and is never sampled; nor, once the ring has wrapped
  around, are its oldest ``frame_stack - 1`` rows, whose frame history has been overwritten.

A stack of k frames is rebuilt from rows r-k+1..r, repeating the episode's first frame where the episode is
younger than k steps: exactly what Gymnasium's ``FrameStackObservation`` (padding with the reset frame)
gave the agent. Everything lives in tensors, so ``state_dict`` is loadable with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Batch:
    obs: torch.Tensor  # (B, *obs_shape)
    actions: torch.Tensor  # (B,) int64
    rewards: torch.Tensor  # (B,) float32
    next_obs: torch.Tensor  # (B, *obs_shape)
    terminated: torch.Tensor  # (B,) float32, 1.0 where the episode ended by termination (no bootstrap)
    weight: torch.Tensor  # (B,) float32, 0.0 for transitions cut by a time limit (their next obs is unknown)


class ReplayBuffer:
    """``capacity`` transitions of ``num_envs`` environments (``capacity // num_envs`` rows each)."""

    def __init__(self, capacity: int, num_envs: int, frame_shape: tuple[int, ...], frame_dtype: torch.dtype,
                 device: torch.device | str = "cpu", frame_stack: int = 1) -> None:
        if num_envs < 1 or frame_stack < 1:
            raise ValueError("num_envs and frame_stack must be >= 1")
        rows = capacity // num_envs
        if rows < frame_stack + 1:
            raise ValueError(f"a replay buffer of {capacity} transitions over {num_envs} environments has "
                             f"{rows} rows per environment; at least {frame_stack + 1} are needed")
        self.rows, self.num_envs, self.frame_stack = rows, num_envs, frame_stack
        self.frame_shape = tuple(frame_shape)
        self.device = torch.device(device)
        n = (rows, num_envs)
        self.frames = torch.zeros(*n, *self.frame_shape, dtype=frame_dtype, device=self.device)
        self.actions = torch.zeros(n, dtype=torch.int64, device=self.device)
        # reward, terminated (1.0 / 0.0), weight (0.0 where the time limit cut the episode): one gather per sample
        self.info = torch.zeros(*n, 3, dtype=torch.float32, device=self.device)
        self.episode_step = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.pos = 0  # next row to write
        self.count = 0  # rows written so far, at most ``rows``

    @property
    def capacity(self) -> int:
        return self.rows * self.num_envs

    def _bounds(self) -> tuple[int, int]:
        """Sampleable rows in chronological order (0 = oldest held): [lo, hi)."""
        lo = self.frame_stack - 1 if self.count == self.rows else 0
        return lo, self.count - 1

    def __len__(self) -> int:
        """Transitions that can be sampled now."""
        lo, hi = self._bounds()
        return max(0, hi - lo) * self.num_envs

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
            truncated: torch.Tensor, episode_step: torch.Tensor) -> None:
        """One vector step: each tensor has N rows; ``obs`` is what the agent acted on ((N, k, ...) with a frame
        stack k > 1: its newest frame is stored), ``episode_step`` its index within the episode (0 = reset)."""
        p = self.pos
        self.frames[p] = obs[:, -1] if self.frame_stack > 1 else obs
        self.actions[p] = actions
        self.info[p] = torch.stack([rewards.float(), terminated.float(), (~truncated).float()], 1)
        self.episode_step[p] = episode_step
        self.pos = (p + 1) % self.rows
        self.count = min(self.count + 1, self.rows)

    def _stack(self, flat: torch.Tensor) -> torch.Tensor:
        """Observations at flat indices row·N + env, frame stacks rebuilt: (B, *frame) or (B, k, *frame)."""
        frames = self.frames.view(self.rows * self.num_envs, *self.frame_shape)
        if self.frame_stack == 1:
            return frames[flat]
        n = self.num_envs
        age = self.episode_step.view(-1)[flat].unsqueeze(1)  # (B, 1): steps since the episode's first frame
        back = torch.arange(self.frame_stack - 1, -1, -1, device=self.device).unsqueeze(0)  # k-1 .. 0
        rows = (flat // n).unsqueeze(1) - torch.minimum(back, age)  # (B, k), oldest frame first
        return frames[(rows % self.rows) * n + (flat % n).unsqueeze(1)]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """``batch_size`` transitions drawn uniformly (with replacement) from those that can be sampled."""
        lo, hi = self._bounds()
        if hi <= lo:
            raise ValueError("the replay buffer holds no complete transition yet")
        n, size = self.num_envs, self.rows * self.num_envs
        # flat index row·N + env of the oldest sampleable transition; the others follow it, wrapping around
        start = ((self.pos - self.count + lo) % self.rows) * n
        flat = (torch.randint((hi - lo) * n, (batch_size,), generator=generator, device=self.device) + start) % size
        info = self.info.view(size, 3)[flat]
        return Batch(obs=self._stack(flat), actions=self.actions.view(size)[flat], rewards=info[:, 0],
                     next_obs=self._stack((flat + n) % size), terminated=info[:, 1], weight=info[:, 2])

    # --- checkpoints ----------------------------------------------------------------------------------
    _TENSORS = ("frames", "actions", "info", "episode_step")

    def state_dict(self) -> dict[str, Any]:
        """The rows written so far and the write position; tensors and ints only. (A partial ring is copied
        out: ``torch.save`` of a slice would write the whole storage.)"""
        n = self.count
        return {"rows": self.rows, "num_envs": self.num_envs, "pos": self.pos, "count": n,
                **{k: getattr(self, k) if n == self.rows else getattr(self, k)[:n].clone() for k in self._TENSORS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (int(state["rows"]), int(state["num_envs"])) != (self.rows, self.num_envs):
            raise ValueError(f"saved replay buffer has {state['rows']} rows x {state['num_envs']} environments, "
                             f"this one {self.rows} x {self.num_envs}")
        n = int(state["count"])
        for k in self._TENSORS:
            getattr(self, k)[:n].copy_(state[k][:n])
        self.pos, self.count = int(state["pos"]), n
