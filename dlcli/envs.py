"""Environments by name, for the tasks that learn by interacting (reinforcement learning).

A recipe's ``env: {id: CartPole-v1, args: {...}}`` names a registered environment. The registry is as
strict as the model and data registries: an unknown id is one line listing the valid ones, and ``env.args``
are checked against the builder's keyword-only arguments before anything runs. Builders import their
third-party package (gymnasium, ale-py) only when called, so dlcli works without them until an environment
is actually used; a missing package is one line naming the extra to install.

Registered here: the classic-control tasks of Gymnasium (``CartPole-v1``, ``Acrobot-v1``,
``MountainCar-v0``, and the continuous ``Pendulum-v1`` and ``MountainCarContinuous-v0``, which DQN refuses
with one line), and every Atari game that ale-py ships, by Gymnasium's own id: ``ALE/Pong-v5``,
``ALE/Breakout-v5``, ... (``dlcli train dqn-pong --set env.id=ALE/Breakout-v5``). An Atari id is built with
the DQN papers' preprocessing (``dlcli.rl.atari``): frame skip, 84x84 grey frames, a stack of 4.

A builder returns an ``EnvMaker``: how to make one environment (the vectorised runner makes N of them) and
what its observations are. Every episode is reset with its own seed (``episode_seed``), so an episode is a
function of its seed and its actions alone: that is what lets a resumed run rebuild environments that
cannot be pickled (``dlcli.rl.vector``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from dlcli.errors import DlcliError
from dlcli.registry import Registry

ENVS: Registry[Callable[..., Any]] = Registry("environment")
register_env = ENVS.register

#: ``pip install`` hint shown when gymnasium or ale-py is missing
RL_EXTRA = "pip install -e '.[rl]'"


@dataclass(frozen=True)
class EnvMaker:
    """What a registered builder returns: ``make(render_mode=None)`` gives one environment with its wrappers.

    ``frame_stack`` > 1: observations are that many frames stacked on the first axis, the newest last (the
    replay buffer stores each frame once and rebuilds the stacks). ``deterministic``: an episode depends on
    its reset seed and its actions only (required for an exact resume in the middle of an episode)."""

    id: str
    make: Callable[..., Any]
    frame_stack: int = 1
    deterministic: bool = True
    family: str = "classic"  # classic | atari


def require_gymnasium(env_id: str, atari: bool = False) -> Any:
    """The ``gymnasium`` module (and ale-py's environments registered in it for Atari ids), or one line
    naming the extra to install."""
    try:
        import gymnasium
    except ImportError:
        raise DlcliError(f"environment {env_id} needs the gymnasium package: {RL_EXTRA}") from None
    if atari:
        try:
            import ale_py
        except ImportError:
            raise DlcliError(f"environment {env_id} needs the ale-py package (Atari games and their ROMs): "
                             f"{RL_EXTRA}") from None
        gymnasium.register_envs(ale_py)
    return gymnasium


def episode_seed(*keys: int) -> int:
    """A 31-bit seed that is a pure function of ``keys`` (e.g. run seed, stream, environment, episode), with
    no correlation between neighbouring keys (NumPy's ``SeedSequence`` hashing)."""
    import numpy as np

    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint32)[0] >> 1)


# ------------------------------------------------------------------------------------------ classic control

_CLASSIC = {
    "CartPole-v1": "balance a pole on a cart; 2 actions, 4 observations, +1 per step, at most 500 steps",
    "Acrobot-v1": "swing a two-link arm above a line; 3 actions, 6 observations, -1 per step, at most 500",
    "MountainCar-v0": "drive an underpowered car up a hill; 3 actions, 2 observations, -1 per step, at most 200",
    "Pendulum-v1": "swing up a pendulum; continuous torque (not for DQN), 3 observations",
    "MountainCarContinuous-v0": "mountain car with a continuous force (not for DQN), 2 observations",
}


def _classic_builder(env_id: str) -> Callable[..., EnvMaker]:
    def build(*, max_episode_steps: int | None = None) -> EnvMaker:
        """``max_episode_steps``: the time limit (None: Gymnasium's, e.g. 500 for CartPole-v1)."""
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"env.args.max_episode_steps must be >= 1, got {max_episode_steps}")
        gym = require_gymnasium(env_id)

        def make(render_mode: str | None = None) -> Any:
            return gym.make(env_id, max_episode_steps=max_episode_steps, render_mode=render_mode,
                            disable_env_checker=True)

        return EnvMaker(env_id, make)

    return build


for _id, _summary in _CLASSIC.items():
    register_env(_id, summary=_summary, family="classic")(_classic_builder(_id))


# -------------------------------------------------------------------------------------------------- Atari

#: Gymnasium's ``ALE/<Game>-v5`` ids of the games ale-py (0.10 to 0.12) ships ROMs for.
ATARI_GAMES = (
    "Adventure AirRaid Alien Amidar Assault Asterix Asteroids Atlantis Atlantis2 Backgammon BankHeist BasicMath "
    "BattleZone BeamRider Berzerk Blackjack Bowling Boxing Breakout Carnival Casino Centipede ChopperCommand "
    "CrazyClimber Crossbow Darkchambers Defender DemonAttack DonkeyKong DoubleDunk Earthworld ElevatorAction "
    "Enduro Entombed Et FishingDerby FlagCapture Freeway Frogger Frostbite Galaxian Gopher Gravitar Hangman "
    "HauntedHouse Hero HumanCannonball IceHockey Jamesbond JourneyEscape Kaboom Kangaroo KeystoneKapers KingKong "
    "Klax Koolaid Krull KungFuMaster LaserGates LostLuggage MarioBros MiniatureGolf MontezumaRevenge MrDo MsPacman "
    "NameThisGame Othello Pacman Phoenix Pitfall Pitfall2 Pong Pooyan PrivateEye Qbert Riverraid RoadRunner "
    "Robotank Seaquest SirLancelot Skiing Solaris SpaceInvaders SpaceWar StarGunner Superman Surround Tennis "
    "Tetris TicTacToe3D TimePilot Trondead Turmoil Tutankham UpNDown Venture VideoCheckers VideoChess VideoCube "
    "VideoPinball WizardOfWor WordZapper YarsRevenge Zaxxon"
).split()


def _atari_builder(env_id: str) -> Callable[..., EnvMaker]:
    def build(*, frame_skip: int = 4, screen_size: int = 84, frame_stack: int = 4, noop_max: int = 30,
              repeat_action_probability: float = 0.0, full_action_space: bool = False,
              max_episode_frames: int = 108_000) -> EnvMaker:
        """The DQN papers' preprocessing: each action repeated ``frame_skip`` frames (the last two max-pooled
        against flicker), grey, resized to ``screen_size``², ``frame_stack`` frames stacked, 1 to
        ``noop_max`` no-ops at the start of an episode. ``repeat_action_probability`` 0 is the papers'
        deterministic emulator (0.25 = ALE v5's sticky actions; then a resume is exact only at episode
        boundaries). ``max_episode_frames``: time limit in emulator frames (108,000 = 30 minutes)."""
        if frame_skip < 1 or screen_size < 8 or frame_stack < 1 or noop_max < 0 or max_episode_frames < 1:
            raise ValueError("env.args: frame_skip >= 1, screen_size >= 8, frame_stack >= 1, noop_max >= 0 and "
                             "max_episode_frames >= 1 are required")
        if not 0 <= repeat_action_probability < 1:
            raise ValueError(f"env.args.repeat_action_probability must be in [0, 1), got {repeat_action_probability}")
        gym = require_gymnasium(env_id, atari=True)
        from dlcli.rl.atari import AtariFrames

        def make(render_mode: str | None = None) -> Any:
            env = gym.make(env_id, frameskip=1, repeat_action_probability=repeat_action_probability,
                           full_action_space=full_action_space, max_num_frames_per_episode=max_episode_frames,
                           render_mode=render_mode, disable_env_checker=True)
            env = AtariFrames(env, frame_skip=frame_skip, screen_size=screen_size, noop_max=noop_max)
            if frame_stack > 1:
                env = gym.wrappers.FrameStackObservation(env, frame_stack)  # (stack, H, W), padded with the reset frame
            return env

        return EnvMaker(env_id, make, frame_stack=frame_stack, deterministic=repeat_action_probability == 0,
                        family="atari")

    return build


for _game in ATARI_GAMES:
    register_env(f"ALE/{_game}-v5", summary=f"Atari 2600 {_game} (ale-py), DQN preprocessing",
                 family="atari")(_atari_builder(f"ALE/{_game}-v5"))


def build_env(env_id: str, args: dict[str, Any]) -> EnvMaker:
    """The ``EnvMaker`` of a registered environment with the recipe's ``env.args``."""
    from dlcli.errors import ConfigError

    builder = ENVS.get(env_id)
    try:
        return builder(**args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"env.args: {e}") from None
