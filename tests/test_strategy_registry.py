"""The strategy registry: the built-ins by an explicit list, a user's strategies through the
``botmain.strategies`` entry points of an installed distribution (a real dist-info on
sys.path, found by importlib.metadata as pip would leave it)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from strategies import registry


def install(tmp_path: Path, module: str, source: str, entry_points: str) -> None:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._registry.cache_clear()
    yield tmp_path
    registry._registry.cache_clear()
    for name in [m for m in sys.modules if m.startswith("user_strats")]:
        del sys.modules[name]


USER_STRATEGY = """
    from strategies.base import Params, Strategy

    class HoldParams(Params):
        exposure: float = 1.0

    class Hold(Strategy):
        name = "user_hold"
        Params = HoldParams
"""


def test_a_user_strategy_is_found_through_its_entry_point(site):
    install(site, "user_strats_ok", USER_STRATEGY, '[botmain.strategies]\nuser_hold = user_strats_ok:Hold\n')
    cls = registry.strategy_class("user_hold")
    assert cls.__module__ == "user_strats_ok" and cls.name == "user_hold"
    assert set(registry.builtin_names()) < set(registry.strategy_names())


def test_a_user_strategy_cannot_take_a_builtin_name(site):
    install(site, "user_strats_dup", USER_STRATEGY.replace('"user_hold"', '"ema_cross"'),
            '[botmain.strategies]\nema = user_strats_dup:Hold\n')
    with pytest.raises(registry.StrategyRegistryError, match=r"'ema_cross' is defined twice.*entry point 'ema'"):
        registry.strategy_class("ema_cross")


def test_an_entry_point_that_is_not_a_strategy_is_named(site):
    install(site, "user_strats_bad", "NOT_A_CLASS = 3\n", '[botmain.strategies]\nbad = user_strats_bad:NOT_A_CLASS\n')
    with pytest.raises(registry.StrategyRegistryError, match=r"entry point 'bad'.*is not a Strategy subclass"):
        registry.strategy_names()


def test_an_entry_point_that_cannot_load_is_named(site):
    install(site, "user_strats_broken", "raise ImportError('needs talib')\n",
            '[botmain.strategies]\nbroken = user_strats_broken:X\n')
    with pytest.raises(registry.StrategyRegistryError, match=r"entry point 'broken'.*cannot be loaded: ImportError: needs talib"):
        registry.strategy_names()


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown strategy 'nope' \(known: ema_cross, funding_carry, ml_direction"):
        registry.strategy_class("nope")
