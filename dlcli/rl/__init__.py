"""Pieces of reinforcement learning that tasks share: the vectorised environment runner with seeded,
replayable episodes, the tensor replay buffer, evaluation episodes and filmstrips, Atari preprocessing.

Nothing here imports gymnasium at import time except ``dlcli.rl.atari`` (imported by the Atari builders
only); the environment builders themselves are registered in ``dlcli.envs``.
"""
