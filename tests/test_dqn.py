"""Deep Q-learning: the TD target and target-network sync on hand-made transitions, the replay buffer (wrap-
around, sampling, frame stacks), vectorised environments against single ones, Ctrl-C + resume equivalence,
the Pong preprocessing, the environment registry's errors, and ``dlcli eval`` with episodes and a filmstrip.

Everything runs real Gymnasium / ALE environments on tiny budgets (a few hundred environment steps).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("gymnasium", reason="the rl extra is not installed: pip install -e '.[rl]'")

from dlcli.checkpoint import load_checkpoint  # noqa: E402
from dlcli.config import load_recipe, recipe_from_dict  # noqa: E402
from dlcli.envs import ENVS, build_env, episode_seed  # noqa: E402
from dlcli.errors import DlcliError  # noqa: E402
from dlcli.rl.replay import Batch, ReplayBuffer  # noqa: E402
from dlcli.rl.vector import TRAIN_STREAM, VectorRunner  # noqa: E402
from dlcli.runtime import Runtime  # noqa: E402
from dlcli.tasks.base import TaskContext  # noqa: E402
from dlcli.tasks.dqn import DQNTask, epsilon_at, td_targets  # noqa: E402


def tiny_recipe(**task_args) -> dict:
    """CartPole with budgets of a few hundred steps; everything that carries state across a resume is on."""
    args = {"num_envs": 2, "env_steps_per_epoch": 120, "buffer_size": 1000, "learning_starts": 60, "train_every": 4,
            "gradient_steps": 2, "target_update": 7, "epsilon_steps": 300, "val_episodes": 2, "test_episodes": 3,
            "log_every": 50}
    args.update(task_args)
    return {"description": "tiny dqn", "task": "dqn", "task_args": args,
            "model": {"name": "qmlp", "args": {"hidden": [16]}}, "env": {"id": "CartPole-v1"},
            "optim": {"name": "adam", "lr": 0.01}, "epochs": 2, "batch_size": 16, "seed": 5, "device": "cpu"}


def make_task(**task_args) -> DQNTask:
    recipe = recipe_from_dict(tiny_recipe(**task_args), "test", "tiny")
    torch.manual_seed(0)
    return DQNTask(TaskContext(recipe, Runtime.create("cpu")), **recipe.task_args)


# ---------------------------------------------------------------------------------- TD target, target net


def _linear_q(weight: list[list[float]], bias: list[float]) -> torch.nn.Module:
    """Q(s) = W s + b: a ``qmlp`` without hidden layers, with weights set by hand."""
    from dlcli.models.dqn import qmlp

    net = qmlp(obs_shape=[2], num_actions=2, hidden=[])
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor(weight))
        net.layers[0].bias.copy_(torch.tensor(bias))
    return net


def test_td_target_uses_the_target_network_max_and_stops_at_terminal_states():
    target = _linear_q([[1.0, 0.0], [0.0, 2.0]], [0.0, 0.0])  # Q_target(s') = (s'_0, 2 s'_1)
    next_obs = torch.tensor([[3.0, 1.0], [1.0, 4.0], [5.0, 5.0]])
    rewards, terminated = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 1.0])
    y = td_targets(rewards, terminated, target(next_obs), gamma=0.5)
    # max(3, 2) = 3 -> 1 + 0.5·3; max(1, 8) = 8 -> 0 + 0.5·8; terminal -> r alone
    assert y.tolist() == [2.5, 4.0, 2.0]


def test_an_update_regresses_the_taken_action_on_the_target_networks_value(monkeypatch):
    task = make_task(target_update=3, loss="mse", gamma=0.5)
    task.raw = task.model = _linear_q([[1.0, 1.0], [0.0, 0.0]], [0.0, 0.0])  # online: (s0 + s1, 0)
    task.target = _linear_q([[1.0, 0.0], [0.0, 2.0]], [0.0, 0.0])  # target: (s0, 2 s1)
    task.optimizer = torch.optim.SGD(task.raw.parameters(), lr=0.0)  # look at the loss, do not move
    batch = Batch(obs=torch.tensor([[1.0, 2.0], [4.0, 0.0], [7.0, 7.0]]), actions=torch.tensor([0, 0, 1]),
                  rewards=torch.tensor([1.0, 0.0, 9.0]), next_obs=torch.tensor([[3.0, 1.0], [1.0, 4.0], [0.0, 0.0]]),
                  terminated=torch.tensor([0.0, 1.0, 0.0]), weight=torch.tensor([1.0, 1.0, 0.0]))
    monkeypatch.setattr(task.buffer, "sample", lambda *a, **k: batch)
    task._update()
    # Q(s, a): 3, 4 (the third is cut by a time limit: weight 0); y: 1 + 0.5·max(3, 2) = 2.5, terminal 0
    assert task.last_loss.item() == pytest.approx(((3 - 2.5) ** 2 + (4 - 0) ** 2) / 2)


def test_double_q_lets_the_online_network_pick_and_the_target_network_value(monkeypatch):
    # s' = (3, 1): the target network values its actions (3, 2), the online network (0, 1). Plain DQN bootstraps
    # on max = 3; double DQN (van Hasselt et al. 2016) on the target's value of the online pick, action 1: 2.
    batch = Batch(obs=torch.tensor([[1.0, 2.0]]), actions=torch.tensor([0]), rewards=torch.tensor([1.0]),
                  next_obs=torch.tensor([[3.0, 1.0]]), terminated=torch.tensor([0.0]), weight=torch.tensor([1.0]))
    for double_q, y in ((False, 1 + 0.5 * 3), (True, 1 + 0.5 * 2)):
        task = make_task(target_update=100, loss="mse", gamma=0.5, double_q=double_q)
        task.raw = task.model = _linear_q([[0.0, 0.0], [0.0, 1.0]], [0.0, 0.0])  # Q(s, 0) = 0
        task.target = _linear_q([[1.0, 0.0], [0.0, 2.0]], [0.0, 0.0])
        task.optimizer = torch.optim.SGD(task.raw.parameters(), lr=0.0)
        monkeypatch.setattr(task.buffer, "sample", lambda *a, **k: batch)
        task._update()
        assert task.last_loss.item() == pytest.approx((0 - y) ** 2), double_q


def test_a_soft_target_update_moves_the_target_by_tau():
    task = make_task(tau=0.25)
    before = [p.clone() for p in task.target.parameters()]
    with torch.no_grad():
        for p in task.raw.parameters():
            p.add_(1.0)  # online and target now differ
    online = [p.clone() for p in task.raw.parameters()]
    task.sync_target()
    for t, t0, o in zip(task.target.parameters(), before, online):
        assert torch.allclose(t, 0.75 * t0 + 0.25 * o, atol=1e-6)


def test_the_target_network_is_copied_every_target_update_gradient_steps():
    task = make_task(target_update=3, learning_starts=0)
    for _ in task.train_steps(0, 0):
        if len(task.buffer) >= 16:
            break
    task.updates = 0
    task.target.load_state_dict(task.raw.state_dict())
    frozen = [p.clone() for p in task.target.parameters()]
    for n in (1, 2):
        task._update()
        assert all(torch.equal(a, b) for a, b in zip(frozen, task.target.parameters())), f"moved after {n} updates"
    assert not all(torch.equal(a, b) for a, b in zip(task.raw.parameters(), task.target.parameters()))
    task._update()  # the third: θ⁻ ← θ
    assert all(torch.equal(a, b) for a, b in zip(task.raw.parameters(), task.target.parameters()))


def test_epsilon_falls_linearly_then_stays():
    assert epsilon_at(0, 1.0, 0.1, 100) == 1.0
    assert epsilon_at(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert epsilon_at(100, 1.0, 0.1, 100) == epsilon_at(10**9, 1.0, 0.1, 100) == 0.1


# ------------------------------------------------------------------------------------------ replay buffer


def _fill(buf: ReplayBuffer, steps: int, episode_len: int = 1000) -> None:
    """Vector step t, environment e: observation 10 t + e, action t % 2, reward t, episodes of episode_len."""
    for t in range(steps):
        e = torch.arange(buf.num_envs)
        obs = (10 * t + e).float().unsqueeze(1)
        buf.add(obs, torch.full((buf.num_envs,), t % 2), torch.full((buf.num_envs,), float(t)),
                torch.zeros(buf.num_envs, dtype=torch.bool), torch.zeros(buf.num_envs, dtype=torch.bool),
                torch.full((buf.num_envs,), t % episode_len))


def test_buffer_wraps_around_and_samples_only_complete_transitions_uniformly():
    buf = ReplayBuffer(capacity=10, num_envs=2, frame_shape=(1,), frame_dtype=torch.float32)  # 5 rows each
    _fill(buf, 3)
    assert len(buf) == 2 * 2  # rows 0, 1 have a next row; row 2 does not yet
    _fill(buf, 8)  # 8 more vector steps: the rings have wrapped; rows hold t = 3..7
    assert (buf.pos, buf.count, len(buf)) == (1, 5, 4 * 2)
    b = buf.sample(4000, torch.Generator().manual_seed(0))
    t, e = (b.obs[:, 0] // 10).long(), (b.obs[:, 0] % 10).long()
    assert set(t.tolist()) == {3, 4, 5, 6}  # t = 2 was overwritten; t = 7 has no next observation yet
    assert torch.equal(b.next_obs[:, 0], b.obs[:, 0] + 10)  # the next observation is the next step's
    assert torch.equal(b.rewards, t.float()) and torch.equal(b.actions, t % 2)
    counts = torch.bincount(t * 2 + e)[6:]
    assert len(counts) == 8 and counts.min() > 4000 / 8 * 0.8  # all 8 transitions, about equally often
    assert b.terminated.sum() == 0 and b.weight.min() == 1


def test_truncated_transitions_get_weight_zero_and_terminal_ones_no_bootstrap():
    buf = ReplayBuffer(capacity=6, num_envs=1, frame_shape=(1,), frame_dtype=torch.float32)
    for t, (term, trunc) in enumerate([(False, False), (True, False), (False, True), (False, False)]):
        buf.add(torch.tensor([[float(t)]]), torch.tensor([0]), torch.tensor([1.0]), torch.tensor([term]),
                torch.tensor([trunc]), torch.tensor([0]))
    b = buf.sample(300, torch.Generator().manual_seed(1))
    by_t = {int(o): (float(d), float(w)) for o, d, w in zip(b.obs[:, 0], b.terminated, b.weight)}
    assert by_t == {0: (0.0, 1.0), 1: (1.0, 1.0), 2: (0.0, 0.0)}


def test_buffer_rebuilds_frame_stacks_across_episode_starts_and_the_wrap():
    k, rows = 3, 6
    buf = ReplayBuffer(capacity=rows, num_envs=1, frame_shape=(1,), frame_dtype=torch.float32, frame_stack=k)
    history, stacks = [], {}
    for t in range(14):  # episodes start at t = 0, 5, 7 (so one is shorter than the stack)
        age = t if t < 5 else (t - 5 if t < 7 else t - 7)
        history.append(float(t))
        stack = [history[max(len(history) - 1 - j, len(history) - 1 - age)] for j in range(k - 1, -1, -1)]
        stacks[t] = stack  # what FrameStackObservation (reset padding) would show
        buf.add(torch.tensor([stack]).unsqueeze(-1), torch.tensor([0]), torch.tensor([0.0]), torch.tensor([False]),
                torch.tensor([False]), torch.tensor([age]))
    b = buf.sample(500, torch.Generator().manual_seed(2))
    seen = set()
    for obs, nxt in zip(b.obs[:, :, 0].tolist(), b.next_obs[:, :, 0].tolist()):
        t = int(obs[-1])
        seen.add(t)
        assert obs == stacks[t] and nxt == stacks[t + 1]
    assert seen == {10, 11, 12}  # rows 8, 9 lost their history in the wrap; 13 has no next row


def test_buffer_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    buf = ReplayBuffer(capacity=10, num_envs=2, frame_shape=(1,), frame_dtype=torch.float32)
    _fill(buf, 3)
    torch.save(buf.state_dict(), tmp_path / "b.pt")
    other = ReplayBuffer(capacity=10, num_envs=2, frame_shape=(1,), frame_dtype=torch.float32)
    other.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = buf.sample(64, g1), other.sample(64, g2)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.next_obs, b.next_obs) and torch.equal(a.actions, b.actions)


# --------------------------------------------------------------------------------- vectorised environments


def test_vectorised_environments_step_exactly_like_single_ones():
    """N environments behind gymnasium's vector API, finished episodes reset with their own seeds, give for
    each environment the same trajectory as a plain single environment reset with those seeds."""
    import gymnasium as gym

    n, steps, seed = 3, 120, 11
    runner = VectorRunner(build_env("CartPole-v1", {}), n, seed)
    actions = np.random.default_rng(0).integers(0, 2, (steps, n))
    obs = runner.reset()
    vec = [[] for _ in range(n)]  # per environment: (obs acted on, action, reward, terminated, truncated)
    for t in range(steps):
        res = runner.step(actions[t])
        for i in range(n):
            vec[i].append((obs[i].copy(), int(actions[t, i]), float(res.rewards[i]), bool(res.terminated[i]),
                           bool(res.truncated[i])))
        obs = res.obs
    assert runner.episode.sum() >= n  # every environment finished at least one episode (short random ones)
    for i in range(n):
        env, episode = gym.make("CartPole-v1"), 0
        o, _ = env.reset(seed=episode_seed(seed, TRAIN_STREAM, i, episode))
        for t, (vo, a, r, term, trunc) in enumerate(vec[i]):
            assert np.array_equal(o, vo), f"env {i} step {t}"
            o, reward, terminated, truncated, _ = env.step(a)
            assert (reward, terminated, truncated) == (r, term, trunc)
            if terminated or truncated:
                episode += 1
                o, _ = env.reset(seed=episode_seed(seed, TRAIN_STREAM, i, episode))


def test_restoring_the_runner_replays_unfinished_episodes_to_the_same_state():
    maker = build_env("CartPole-v1", {})
    a, b = VectorRunner(maker, 2, 4), VectorRunner(maker, 2, 4)
    obs = a.reset()
    actions = np.random.default_rng(1).integers(0, 2, (40, 2))
    for t in range(15):
        obs = a.step(actions[t]).obs
    assert a.length.min() > 0  # both in the middle of an episode
    assert np.array_equal(b.load_state_dict(a.state_dict()), obs)  # a fresh runner, as after a restart
    for t in range(15, 40):
        ra, rb = a.step(actions[t]), b.step(actions[t])
        assert np.array_equal(ra.obs, rb.obs) and ra.finished == rb.finished


# ------------------------------------------------------------------------------------------- the CLI run


def _write(tmp_path: Path, data: dict, name: str = "tinydqn") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_ctrl_c_then_resume_equals_the_uninterrupted_run(cli, tmp_path, monkeypatch):
    recipe = _write(tmp_path, tiny_recipe())
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    res = cli("train", str(recipe), "--out", str(straight), "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert {r["row"] for r in out["rows"]} == {"episode", "train"} and (straight / "dqn.png").is_file()

    monkeypatch.setenv("DLCLI_FAULT_SIGINT", "0:2:37")  # a real SIGINT after step 37 of epoch 2, mid-episode
    res = cli("train", str(recipe), "--out", str(stopped), "--json")
    assert res.code == 130 and "resume with: dlcli train tinydqn --resume" in res.err
    ckpt = load_checkpoint(stopped / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 37)
    assert any(len(a) for a in ckpt["task_state"]["envs"]["actions"])  # an episode was running
    monkeypatch.delenv("DLCLI_FAULT_SIGINT")
    from dlcli.report.train import TrainProgress

    seen, original = [], TrainProgress.on_step  # the resumed process must go on from step 37 of epoch 2

    def record(self, epoch, step, metrics, samples):
        seen.append((epoch, step))
        original(self, epoch, step, metrics, samples)

    monkeypatch.setattr(TrainProgress, "on_step", record)
    res = cli("train", "--resume", str(stopped), "--json")
    assert res.code == 0, res.err
    assert seen[:2] == [(1, 38), (1, 39)] and min(seen) == (1, 38)

    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(straight / name), load_checkpoint(stopped / name)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), f"{name}: {key} differs after resume"
    a, b = load_checkpoint(straight / "last.pt")["task_state"], load_checkpoint(stopped / "last.pt")["task_state"]
    assert torch.equal(a["buffer"]["frames"], b["buffer"]["frames"]) and torch.equal(a["obs"], b["obs"])
    assert _rows(straight) == _rows(stopped)  # every episode return, loss row and epoch row
    fa = json.loads((straight / "summary.json").read_text())["final"]
    fb = json.loads((stopped / "summary.json").read_text())["final"]
    assert fa["eval_mean_return"] == fb["eval_mean_return"] and fa["updates"] == fb["updates"]


def test_eval_plays_seeded_episodes_and_draws_a_filmstrip(cli, tmp_path):
    run = tmp_path / "run"
    res = cli("train", str(_write(tmp_path, tiny_recipe(val_episodes=0))), "--out", str(run), "--json")
    assert res.code == 0, res.err
    ckpt = load_checkpoint(run / "best.pt")
    recipe = recipe_from_dict(ckpt["recipe"], "ckpt", "tinydqn")
    results = []
    for _ in range(2):
        ctx = TaskContext(recipe, Runtime.create("cpu"), eval_options={"episodes": 4, "render": True})
        results.append(DQNTask.evaluate(ckpt, ctx, "test", tmp_path))
    m = results[0].metrics
    returns = results[0].details["returns"]
    assert m["episodes"] == 4 and returns == results[1].details["returns"]  # seeded: the same 4 episodes
    assert len(set(results[0].details["lengths"])) > 1  # ... with a different seed each
    assert m["mean_return"] == pytest.approx(np.mean(returns))
    assert (tmp_path / "episode.png").is_file() and (tmp_path / "returns.png").is_file()


# -------------------------------------------------------------------------------------- Atari (dqn-pong)


def test_dqn_pong_preprocessing_gives_the_papers_input_and_the_buffer_rebuilds_it():
    from dlcli.models.dqn import dqn2013

    recipe = load_recipe("dqn-pong")
    maker = build_env(recipe.env.id, recipe.env.args)
    runner = VectorRunner(maker, 2, 0)
    obs = runner.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert runner.single_action_space.n == 6
    assert np.array_equal(obs[:, 0], obs[:, 3])  # a new episode's stack repeats its first frame
    buf = ReplayBuffer(64, 2, (84, 84), torch.uint8, frame_stack=4)
    seen = []
    for t in range(12):
        res = runner.step(np.array([t % 6, (t + 3) % 6]))
        buf.add(torch.from_numpy(obs), torch.zeros(2, dtype=torch.long), torch.from_numpy(res.rewards).float(),
                torch.from_numpy(res.terminated), torch.from_numpy(res.truncated), torch.from_numpy(res.episode_step))
        seen.append(obs)
        obs = res.obs
    assert not np.array_equal(seen[0], seen[-1])  # the screen changed
    flat = torch.arange(0, 11 * 2)  # every (row, environment) with a next row
    assert torch.equal(buf._stack(flat), torch.from_numpy(np.stack(seen[:11]).reshape(22, 4, 84, 84)))
    net = dqn2013(obs_shape=[4, 84, 84], num_actions=6)
    assert net(torch.from_numpy(obs)).shape == (2, 6)
    # 16 8x8 filters on 4 frames, 32 4x4 filters, 2592 -> 256, 256 -> 6 actions (with biases)
    assert sum(p.numel() for p in net.parameters()) == 4_112 + 8_224 + 663_808 + 1_542


def test_dqn_pong_trains_on_a_tiny_budget_on_the_cpu(cli, tmp_path):
    res = cli("train", "dqn-pong", "--out", str(tmp_path / "pong"), "--device", "cpu", "--json", "--epochs", "1",
              "--set", "task_args.env_steps_per_epoch=48", "--set", "task_args.buffer_size=400",
              "--set", "task_args.learning_starts=24", "--set", "task_args.val_episodes=0",
              "--set", "task_args.test_episodes=1", "--set", "task_args.num_envs=2",
              "--set", "env.args.max_episode_frames=200")  # a 50-step test episode (truncated)
    assert res.code == 0, res.err
    out = res.json()
    assert out["final"]["env_steps"] == 48 and out["final"]["updates"] > 0
    assert out["header"]["obs_shape"] == [4, 84, 84]


# ------------------------------------------------------------------------------- registry and dependency


def test_unknown_and_continuous_environments_are_one_clear_line(cli):
    res = cli("train", "dqn-cartpole", "--set", "env.id=CartPole-v9")
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1
    assert "unknown environment 'CartPole-v9'" in res.err and "ALE/Pong-v5" in res.err and "CartPole-v1" in res.err
    res = cli("train", "dqn-cartpole", "--set", "env.id=Pendulum-v1")
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1
    assert "DQN needs a discrete action space" in res.err
    res = cli("train", "dqn-cartpole", "--set", "env.args.frameskip=4")
    assert res.code == 2 and "takes: max_episode_steps" in res.err


def test_every_ale_game_is_registered_by_its_gymnasium_id(cli):
    assert {"ALE/Pong-v5", "ALE/Breakout-v5", "ALE/SpaceInvaders-v5", "CartPole-v1"} <= set(ENVS.names())
    res = cli("show", "dqn-pong", "--set", "env.id=ALE/Breakout-v5", "--json")
    assert res.code == 0, res.err
    env = res.json()["recipe"]["env"]
    assert build_env(env["id"], env["args"]).make().action_space.n == 4  # Breakout's minimal action set


def test_a_missing_gymnasium_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium now raises ImportError
    with pytest.raises(DlcliError, match=r"pip install -e '\.\[rl\]'"):
        build_env("CartPole-v1", {})
    monkeypatch.setitem(sys.modules, "ale_py", None)
    monkeypatch.delitem(sys.modules, "gymnasium")
    with pytest.raises(DlcliError, match=r"ale-py.*pip install -e '\.\[rl\]'"):
        build_env("ALE/Pong-v5", {})


def test_recipes_load_and_show_without_gymnasium(cli, monkeypatch):
    """dlcli works without the rl extra until an environment is used: recipes validate, list and show."""
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    monkeypatch.setitem(sys.modules, "ale_py", None)
    assert load_recipe("dqn-pong").env.id == "ALE/Pong-v5"
    for command in (("list",), ("show", "dqn-cartpole")):
        res = cli(*command, "--json")
        assert res.code == 0, res.err
    res = cli("train", "dqn-cartpole")
    assert res.code == 1 and res.err.count("\n") == 1 and "pip install -e '.[rl]'" in res.err


def test_no_dlcli_module_imports_gymnasium_at_import_time():
    """Only the Atari wrappers (imported by the Atari builders when called) import gymnasium at the top."""
    import ast

    import dlcli

    offenders = []
    for path in Path(dlcli.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("gymnasium", "ale_py") or n == "dlcli.rl.atari" for n in names):
                offenders.append(path.name)
    assert offenders == ["atari.py"]


def test_the_cartpole_recipe_declares_the_issues_expectation():
    r = load_recipe("dqn-cartpole")
    assert r.env.id == "CartPole-v1" and r.expect == {"eval_mean_return": ">= 475"}
    assert r.task_args["test_episodes"] == 100 and r.task_args.get("eval_epsilon", 0.0) == 0.0
