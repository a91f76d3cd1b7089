"""Typed recipe configuration: defaults <- YAML file <- command line, validated with clear errors.

A recipe is a YAML mapping loaded with ``yaml.safe_load`` into the frozen ``Recipe`` dataclass below. Every
key is checked: an unknown key, a wrong type or an out-of-range value fails with the file (or ``--set``), the
dotted key and what was expected. Free-form ``args`` mappings (model, data, task) are checked against the
signature of the builder they are passed to, so a misspelt model argument is caught before training.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlcli.errors import ConfigError, UsageError

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULES = ("none", "step", "cosine", "onecycle")
#: the one place that names precisions; "auto" = bf16 where the hardware runs it natively, else fp32
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
#: ``compile``'s torch.compile modes (``true`` = torch's default mode); reduce-overhead and max-autotune add graphs.
#: ``compile: auto`` (recipes of small nets whose GPU steps wait on kernel launches) is reduce-overhead on one CUDA
#: GPU and off elsewhere (``dlcli.runtime.resolve_compile``)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: keys that older dlcli versions wrote into checkpoints and that are ignored when such a recipe is read back
LEGACY_KEYS = ("loss",)
#: seeds are integers in [0, SEED_LIMIT): numpy's limit, and it keeps the per-step augmentation seed
#: ((seed * 1000 + epoch) << 20) + step of ``dlcli.batches`` inside torch's signed 64-bit seeds
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class ModelConfig:
    name: str
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the registered builder


@dataclass(frozen=True)
class DataConfig:
    source: str
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the data source


@dataclass(frozen=True)
class EnvConfig:
    id: str  # a registered environment (see ``dlcli list --envs``), e.g. CartPole-v1
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the environment's builder


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam / adamw
    # sgd / adam / adamw: true = one fused kernel per step, false = torch's default (multi-tensor on CUDA, a
    # loop over the parameters on the CPU), auto = fused on CUDA, torch's default elsewhere
    fused: bool | str = "auto"


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "none"  # none | step (per epoch) | cosine (per step) | onecycle (per step)
    step_size: int = 1  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    warmup_epochs: float = 0.0  # cosine: linear warm-up length
    pct_start: float = 0.25  # onecycle: fraction of steps spent increasing the learning rate


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelConfig
    data: DataConfig | None = None  # a data source; recipes that learn from an environment have ``env`` instead
    env: EnvConfig | None = None  # reinforcement learning: the environment to interact with
    description: str = ""
    task: str = "classify"  # which training loop (a registered task)
    task_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the task
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool | str = False  # true (torch.compile's default mode), one of COMPILE_MODES, or auto
    channels_last: bool = False
    sync_batchnorm: bool = False  # BatchNorm statistics over all processes under torchrun
    expect: dict[str, str] = field(default_factory=dict)  # metric -> "OP NUMBER", e.g. ">= 0.99"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against type ``tp``; returns the converted value or raises ConfigError."""

    def bad() -> ConfigError:
        return ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key, source)
            except ConfigError:
                continue
        raise bad()
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return _build(tp, value, key + ".", source)
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        return {str(k): v for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise bad()
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise bad()


def _build(cls: type, data: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            valid = ", ".join(fields)
            raise ConfigError(f"{source}: unknown key {prefix}{k!r}; valid keys here: {valid}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], prefix + name, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"{source}: missing required key {prefix}{name!r}")
    return cls(**kwargs)


_EXPECT = re.compile(r"^\s*(>=|<=|>|<|==)\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")


def parse_expectation(text: str) -> tuple[str, float]:
    m = _EXPECT.match(str(text))
    if not m:
        raise ValueError(text)
    return m.group(1), float(m.group(2))


def check_expectation(value: float, text: str) -> bool:
    op, target = parse_expectation(text)
    return {
        ">=": value >= target,
        "<=": value <= target,
        ">": value > target,
        "<": value < target,
        "==": value == target,
    }[op]


def check_seed(seed: int | None, key: str = "--seed", source: str = "") -> None:
    """The one seed check, for recipes (``source`` names the file or ``--set``: a ConfigError) and for every
    ``--seed`` option (a UsageError). None (not set) passes."""
    if seed is not None and not 0 <= seed < SEED_LIMIT:
        message = f"{key}: expected an integer in [0, {SEED_LIMIT - 1}] (below 2**32), got {seed}"
        raise ConfigError(f"{source}: {message}") if source else UsageError(message)


def _valid_name(name: str) -> bool:
    """A recipe name becomes the run folder's prefix (``runs/<name>-<time>``): one plain folder name."""
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _check_values(r: Recipe, source: str, check_builders: bool = True) -> None:
    def fail(key: str, expected: str, got: Any) -> None:
        raise ConfigError(f"{source}: {key}: expected {expected}, got {got!r}")

    if not _valid_name(r.name):
        fail("name", "a non-empty name without / or \\ that is not . or .. (it names the run folder "
             "runs/<name>-<time>)", r.name)
    if r.epochs < 1:
        fail("epochs", "an integer >= 1", r.epochs)
    if r.batch_size < 1:
        fail("batch_size", "an integer >= 1", r.batch_size)
    if r.eval_batch_size < 1:
        fail("eval_batch_size", "an integer >= 1", r.eval_batch_size)
    check_seed(r.seed, "seed", source)
    if r.optim.name not in OPTIMIZERS:
        fail("optim.name", "one of " + ", ".join(OPTIMIZERS), r.optim.name)
    if not (math.isfinite(r.optim.lr) and r.optim.lr > 0):
        fail("optim.lr", "a number > 0 and finite", r.optim.lr)
    if not (math.isfinite(r.optim.weight_decay) and r.optim.weight_decay >= 0):
        fail("optim.weight_decay", "a number >= 0 and finite", r.optim.weight_decay)
    if not 0 <= r.optim.momentum < 1:
        fail("optim.momentum", "a number in [0, 1)", r.optim.momentum)
    if len(r.optim.betas) != 2 or not all(0 <= b < 1 for b in r.optim.betas):
        fail("optim.betas", "two numbers in [0, 1)", r.optim.betas)
    if not (isinstance(r.optim.fused, bool) or r.optim.fused == "auto"):
        fail("optim.fused", "auto, true or false", r.optim.fused)
    if r.optim.fused is True and r.optim.name not in ("sgd", "adam", "adamw"):
        fail("optim.fused", f"auto or false ({r.optim.name} has no fused implementation)", r.optim.fused)
    if r.schedule.name not in SCHEDULES:
        fail("schedule.name", "one of " + ", ".join(SCHEDULES), r.schedule.name)
    if r.schedule.step_size < 1:
        fail("schedule.step_size", "an integer >= 1", r.schedule.step_size)
    if not 0 < r.schedule.gamma <= 1:
        fail("schedule.gamma", "a number in (0, 1]", r.schedule.gamma)
    if not 0 < r.schedule.pct_start < 1:
        fail("schedule.pct_start", "a number in (0, 1)", r.schedule.pct_start)
    if not (math.isfinite(r.schedule.warmup_epochs) and r.schedule.warmup_epochs >= 0):
        fail("schedule.warmup_epochs", "a number >= 0 and finite", r.schedule.warmup_epochs)
    if r.precision not in PRECISIONS:
        fail("precision", "one of " + ", ".join(PRECISIONS), r.precision)
    if isinstance(r.compile, str) and r.compile not in ("auto", *COMPILE_MODES):
        fail("compile", "true, false, auto or a torch.compile mode: " + ", ".join(COMPILE_MODES), r.compile)
    for metric, text in r.expect.items():
        if not isinstance(text, str):
            fail(f"expect.{metric}", 'a string such as ">= 0.99"', text)
        try:
            parse_expectation(text)
        except ValueError:
            fail(f"expect.{metric}", 'a comparison such as ">= 0.99" or "<= 0.05"', text)
    if check_builders:
        _check_builder_args(r, source)


def _check_builder_args(r: Recipe, source: str) -> None:
    """Model, data and task args must name parameters their builders accept (and have the right type)."""
    from dlcli import registry
    from dlcli.data import DATASETS
    from dlcli.envs import ENVS

    checks = [
        ("model.name", r.model.name, registry.MODELS, "model.args", r.model.args),
        ("task", r.task, registry.TASKS, "task_args", r.task_args),
    ]
    if r.data is not None:
        checks.insert(1, ("data.source", r.data.source, DATASETS, "data.args", r.data.args))
    if r.env is not None:
        checks.insert(1, ("env.id", r.env.id, ENVS, "env.args", r.env.args))
    for name_key, name, reg, args_key, args in checks:
        if name not in reg:
            raise ConfigError(f"{source}: {name_key}: unknown {reg.kind} {name!r}; valid names: {', '.join(reg.names())}")
        params = registry.accepted_args(reg.get(name))
        for k, v in args.items():
            if k not in params:
                raise ConfigError(
                    f"{source}: unknown key {args_key}.{k!r}; {reg.kind} {name!r} takes: {', '.join(params) or 'nothing'}"
                )
            hint = params[k]
            if hint is not None:
                _convert(v, hint, f"{args_key}.{k}", source)


def recipe_from_dict(data: Any, source: str, name: str, *, check_builders: bool = True,
                     legacy: bool = False) -> Recipe:
    """Validate a mapping into a Recipe. ``check_builders=False`` skips the checks that need the model, data
    and task registries (and so torch): ``dlcli list`` stays fast. ``legacy=True`` (recipes read back from
    checkpoints) drops keys that older versions wrote."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of recipe keys at the top level, got {type(data).__name__}")
    data = dict(data)
    if legacy:
        for key in LEGACY_KEYS:
            data.pop(key, None)
    data.setdefault("name", name)
    recipe = _build(Recipe, data, "", source)
    _check_values(recipe, source, check_builders)
    return recipe


# ----------------------------------------------------------------------------------------- finding recipes


def recipes_dir() -> Path:
    """The folder of built-in recipes: ``DLCLI_RECIPES``; else ``dlcli/recipes/`` inside an installed wheel
    (package data); else ``recipes/`` at the top of a source checkout (editable install)."""
    env = os.environ.get("DLCLI_RECIPES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    packaged = here / "recipes"
    if packaged.is_dir() and any(packaged.glob("*.yaml")):
        return packaged
    return here.parent / "recipes"


def recipe_names() -> list[str]:
    d = recipes_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def recipe_path(spec: str) -> Path:
    """A recipe name (``lenet``) or the path of a YAML file -> the file's path, or a clear error."""
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or os.sep in spec:
        if not p.is_file():
            raise UsageError(f"recipe file {spec} does not exist")
        return p
    candidate = recipes_dir() / f"{spec}.yaml"
    if candidate.is_file():
        return candidate
    names = ", ".join(recipe_names()) or "(none found in " + str(recipes_dir()) + ")"
    raise UsageError(f"unknown recipe {spec!r}; valid names: {names}")


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:  # e.g. a Latin-1 accent
        line = e.object[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte {e.object[e.start]:#04x}); save the recipe "
                          "file as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None


def load_recipe(spec: str, *, check_builders: bool = True) -> Recipe:
    path = recipe_path(spec)
    data = read_yaml(path)
    return recipe_from_dict(data, str(path), path.stem, check_builders=check_builders)


# ---------------------------------------------------------------------------------------------- overrides


def parse_set(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> (``a.b``, value parsed as YAML: numbers, booleans, lists)."""
    if "=" not in item:
        raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=0.05")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or not all(part.isidentifier() for part in key.split(".")):
        raise UsageError(f"--set {item!r}: {key!r} is not a dotted key such as optim.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(recipe: Recipe, overrides: dict[str, Any], source: str = "--set") -> Recipe:
    """A new Recipe with dotted keys replaced, validated exactly like a YAML file."""
    if not overrides:
        return recipe
    data = recipe.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) > 1 and parts[0] in ("data", "env") and data.get(parts[0]) is None:
            raise ConfigError(f"{source} {key}: this recipe has no {parts[0]!r} section")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                if isinstance(node, dict) and part in node:
                    raise ConfigError(f"{source} {key}: {'.'.join(parts[: i + 1])} is not a mapping")
                raise ConfigError(f"{source} {key}: unknown key {'.'.join(parts[: i + 1])!r}")
            node = child
        leaf = parts[-1]
        free_form = len(parts) >= 2 and parts[-2] in ("args", "expect") or parts[0] == "task_args"
        if leaf not in node and not free_form:
            raise ConfigError(f"{source} {key}: unknown key {key!r}")
        node[leaf] = value
    return recipe_from_dict(data, f"{source} {', '.join(overrides)}", recipe.name)


def run_dir_for(recipe: Recipe, out: str | None, root: str | os.PathLike[str] = "runs") -> Path:
    """``--out`` or ``runs/<recipe>-<YYYYmmdd-HHMMSS>`` (a suffix keeps two runs in one second apart)."""
    if out:
        return Path(out)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{recipe.name}-{stamp}"
    path, n = base, 1
    while path.exists():
        path = Path(f"{base}-{n}")
        n += 1
    return path


def to_yaml(recipe: Recipe | dict[str, Any]) -> str:
    data = recipe.to_dict() if isinstance(recipe, Recipe) else recipe
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
