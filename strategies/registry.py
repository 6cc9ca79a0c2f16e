"""Strategies by name, as ``strategies.yaml`` and ``botmain sweep --strategy`` refer to them.

The built-ins are listed here, explicitly. A user's own strategies come from installed
packages through the ``botmain.strategies`` entry-point group, each entry naming a
``Strategy`` subclass, e.g. in the package's ``pyproject.toml``:

    [project.entry-points."botmain.strategies"]
    mean_revert = "my_strategies.mean_revert:MeanRevert"

The registry imports the strategy modules; they never import it.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from strategies.base import Strategy
from strategies.ema_cross import EmaCross
from strategies.funding_carry import FundingCarry
from strategies.ml_direction import MlDirection

ENTRY_POINT_GROUP = "botmain.strategies"
BUILTINS: tuple[type[Strategy], ...] = (EmaCross, FundingCarry, MlDirection)


class StrategyRegistryError(ValueError):
    """A strategy entry point that cannot be used: the error names the entry point and why."""


@cache
def _registry() -> dict[str, type[Strategy]]:
    found: dict[str, type[Strategy]] = {}
    sources: dict[str, str] = {}

    def add(cls: type[Strategy], source: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise StrategyRegistryError(f"{source}: {cls!r} is not a Strategy subclass")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise StrategyRegistryError(f"{source}: {cls.__qualname__} has no `name`")
        if name in found:
            raise StrategyRegistryError(f"strategy {name!r} is defined twice: by {sources[name]} and by {source}")
        found[name], sources[name] = cls, source

    for cls in BUILTINS:
        add(cls, f"the built-in {cls.__module__}.{cls.__qualname__}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {ep.name!r} ({ep.value}) of {ENTRY_POINT_GROUP}"
        try:
            cls = ep.load()
        except Exception as exc:  # whatever the user's module raises, named with the entry point
            raise StrategyRegistryError(f"{source} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        add(cls, source)
    return found


def strategy_class(name: str) -> type[Strategy]:
    registry = _registry()
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r} (known: {', '.join(sorted(registry))})") from None


def strategy_names() -> list[str]:
    return sorted(_registry())


def builtin_names() -> list[str]:
    return sorted(cls.name for cls in BUILTINS)
