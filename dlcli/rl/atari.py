"""Atari frames as the DQN papers feed them (Mnih et al. 2013, 2015), without OpenCV.

``AtariFrames`` wraps an ALE environment created with ``frameskip=1``: each agent action is repeated for
``frame_skip`` emulator frames and the rewards summed; the observation is the grey screen (ALE's own
luminance) max-pooled over the last two of those frames (sprites that flicker between frames stay visible),
resized to ``screen_size``x``screen_size`` by area averaging (the weights of OpenCV's ``INTER_AREA``), as
uint8. An episode starts with 1 to ``noop_max`` no-op actions drawn from the episode's seed. Frame stacking
is Gymnasium's ``FrameStackObservation`` on top (see ``dlcli.envs``).

Seeding: a seeded reset of an ALE environment reloads the ROM (about 0.3 s), so the emulator is seeded once,
at its first reset; every later seed only drives the no-ops. With ``repeat_action_probability`` 0 (the papers'
deterministic emulator) an episode is then a function of its seed and its actions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampling ``n_in`` pixels to ``n_out`` by area: output pixel i averages the input interval
    [i·n_in/n_out, (i+1)·n_in/n_out), each input pixel weighted by its overlap. Returns (index, weight), both
    (n_out, taps); unused taps have weight 0. Each row of weights sums to 1."""
    scale = n_in / n_out
    taps = int(np.ceil(scale)) + 1
    index = np.zeros((n_out, taps), dtype=np.int64)
    weight = np.zeros((n_out, taps), dtype=np.float32)
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        first = int(np.floor(lo))
        for k in range(taps):
            j = first + k
            overlap = min(hi, j + 1) - max(lo, j)
            if j < n_in and overlap > 1e-9:
                index[i, k], weight[i, k] = j, overlap / scale
    return index, weight


def resize_area(frame: np.ndarray, rows: tuple[np.ndarray, np.ndarray],
                cols: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(H, W) uint8 -> (h, w) uint8 by the separable area taps of ``area_taps`` (rounded to nearest)."""
    (ri, rw), (ci, cw) = rows, cols
    x = frame.astype(np.float32)
    x = np.einsum("hk,hkw->hw", rw, x[ri])  # rows: (h, taps, W) -> (h, W)
    x = np.einsum("wk,hwk->hw", cw, x[:, ci])  # columns: (h, w, taps) -> (h, w)
    return (x + 0.5).astype(np.uint8)


class AtariFrames(gym.Wrapper):
    """Frame skip with max-pooling, grey, area resize, seeded no-op starts (see the module docstring)."""

    def __init__(self, env: gym.Env, *, frame_skip: int = 4, screen_size: int = 84, noop_max: int = 30) -> None:
        super().__init__(env)
        self.ale = env.unwrapped.ale
        height, width = self.ale.getScreenDims()
        self.frame_skip, self.noop_max = frame_skip, noop_max
        self._frames = np.zeros((2, height, width), dtype=np.uint8)  # the last two grey frames of a step
        self._rows, self._cols = area_taps(height, screen_size), area_taps(width, screen_size)
        self.observation_space = gym.spaces.Box(0, 255, (screen_size, screen_size), dtype=np.uint8)
        self._rng = np.random.default_rng(0)
        self._emulator_seeded = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        first = seed is not None and not self._emulator_seeded
        _, info = self.env.reset(seed=seed if first else None, options=options)
        self._emulator_seeded |= first
        noops = int(self._rng.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for _ in range(noops):
            _, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                _, info = self.env.reset(options=options)
        self.ale.getScreenGrayscale(self._frames[0])
        self._frames[1].fill(0)
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        total, terminated, truncated, info = 0.0, False, False, {}
        for t in range(self.frame_skip):
            _, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
            if t == self.frame_skip - 2:
                self.ale.getScreenGrayscale(self._frames[1])
            elif t == self.frame_skip - 1:
                self.ale.getScreenGrayscale(self._frames[0])
        return self._observation(), total, terminated, truncated, info

    def _observation(self) -> np.ndarray:
        if self.frame_skip > 1:
            np.maximum(self._frames[0], self._frames[1], out=self._frames[0])
        return resize_area(self._frames[0], self._rows, self._cols)
