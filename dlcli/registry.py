"""Name -> builder registries for models and training loops ("tasks").

A plain dict filled by a decorator. A duplicate name raises instead of silently replacing the first entry,
and lookups of unknown names list the valid ones.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Generic, TypeVar

from dlcli.errors import ConfigError, UsageError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A named collection of builders, e.g. ``MODELS`` or ``TASKS``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` with free-form metadata (e.g. ``input_shape``)."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            self._meta[name] = dict(meta)
            return obj

        return decorator

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)  # raises the clear error for unknown names
        return dict(self._meta[name])

    def get(self, name: str) -> T:
        _load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise UsageError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        _load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _load_builtins()
        return name in self._entries


MODELS: Registry[Callable[..., Any]] = Registry("model")
TASKS: Registry[Callable[..., Any]] = Registry("task")

register_model = MODELS.register
register_task = TASKS.register


def model_meta(name: str) -> dict[str, Any]:
    """Metadata given at registration: ``input_shape`` (C, H, W) of a default sample, ``kind``, ``summary``."""
    return MODELS.meta(name)


def list_models() -> list[str]:
    return MODELS.names()


def get_model_builder(name: str) -> Callable[..., Any]:
    return MODELS.get(name)


def accepted_args(builder: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only arguments of a builder (function or class) -> their type hint (None when unannotated).

    Builders take their configurable arguments after ``*``; positional parameters are supplied by dlcli
    itself (a task's context, a data source's root folder) and cannot be set from a recipe.
    """
    target = builder.__init__ if inspect.isclass(builder) else builder
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: skip type checks, keep name checks
        hints = {}
    sig = inspect.signature(builder)
    return {
        k: hints.get(k)
        for k, p in sig.parameters.items()
        if p.kind == p.KEYWORD_ONLY
    }


def build_model(name: str, **kwargs: Any) -> Any:
    builder = MODELS.get(name)
    accepted = accepted_args(builder)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UsageError(
            f"model {name!r} has no argument {unknown[0]!r}; it takes: {', '.join(accepted) or 'none'}"
        )
    try:
        return builder(**kwargs)
    except RuntimeError as e:  # torch refusing a layer size while the model is made (e.g. a negative width)
        if isinstance(e, (NotImplementedError, RecursionError)):  # bugs, not arguments
            raise
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UsageError(f"model {name!r} cannot be built with {args}: {reason}") from None


def build_model_with_defaults(name: str, args: dict[str, Any], **defaults: Any) -> Any:
    """Model ``name`` from a recipe's ``model.args``; ``defaults`` the builder accepts (e.g. ``num_classes``
    from the data) fill in what the recipe leaves out. Used by training and by checkpoint loading alike."""
    accepted = accepted_args(MODELS.get(name))
    kwargs = {k: v for k, v in defaults.items() if k in accepted}
    kwargs.update(args)
    try:
        return build_model(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.args: {e}") from None


_loaded = False


def _load_builtins() -> None:
    """Import the built-in model and task modules once, so their decorators run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import dlcli.models  # noqa: F401  (registers models)
    import dlcli.tasks  # noqa: F401  (registers tasks)
