"""The README describes what ``make demo`` does: the sweep's size it states is the one the
Makefile's grid gives."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from sim.search import enumerate_combos, plan
from strategies.registry import strategy_class

ROOT = Path(__file__).resolve().parent.parent


def demo_sweep_grid() -> list[str]:
    for line in (ROOT / "Makefile").read_text().splitlines():
        if "botmain sweep" in line and "--strategy sol_ema_cross" in line:
            words = shlex.split(line)
            start = words.index("--grid") + 1
            return [w for w in words[start:] if not w.startswith("--") and "=" in w][:2]
    raise AssertionError("the Makefile's demo runs no `botmain sweep --strategy sol_ema_cross`")


def test_the_readme_states_the_demo_sweeps_size():
    grid = demo_sweep_grid()
    assert grid == ["fast=5:55:2", "slow=20:220:8"]
    combos = len(enumerate_combos(strategy_class("ema_cross"), plan(strategy_class("ema_cross"), grid)).params)
    readme = " ".join((ROOT / "README.md").read_text().split())
    stated = re.findall(r"sweep's leaderboard \(([\d,]+) EMA-cross combos", readme)
    assert stated == [f"{combos:,}"], f"README says {stated}, the demo's grid gives {combos:,}"
