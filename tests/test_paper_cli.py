"""``botmain paper`` end to end (a subprocess, the session's Ray cluster, embedded
PostgreSQL and lake): the replayed paper run, on the trading actors and in one process,
prints the backtest's metrics table and reproduces it, and its journal reads back through
``botmain orders``, ``fills`` and ``positions``."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_cli import botmain


def test_paper_reproduces_the_backtest_and_its_journal_reads_back(ray_head, lake_config, session_config_dir: Path):
    run = botmain(session_config_dir, "paper", "--strategy", "sol_ema_cross", "--start", "2025-05-10",
                  "--end", "2025-05-11", "--run-id", "paper-cli-ema")  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "as Ray actors; bars from the MDS" in out and "across the actors: 1,440 bars" in out, out
    assert "final equity" in out and "trades (round trips)" in out
    line = next(x for x in out.splitlines() if x.startswith("backtest vs paper:"))
    assert "(same trades)" in line and "largest relative equity gap 0.0e+00" in line, line
    sent = int(re.search(r"(\d+) sent", out).group(1))
    fills = int(re.search(r"; (\d+) fills", out).group(1))
    assert sent > 0 and fills > 0

    orders = botmain(session_config_dir, "orders", "--run", "paper-cli-ema")
    assert orders.returncode == 0, orders.stderr
    assert "paper sol_ema_cross, finished" in orders.stdout and " filled " in orders.stdout
    listed = botmain(session_config_dir, "fills", "--run", "paper-cli-ema")
    assert f"{fills:,} fills" in listed.stdout
    positions = botmain(session_config_dir, "positions", "--run", "paper-cli-ema")
    assert "binanceusdm:SOL-PERP" in positions.stdout
    assert "allocation (the Risk Rules Monitor at the run's end)" in positions.stdout, positions.stdout
    assert re.search(r"sol_ema_cross +binanceusdm +10,000\.00", positions.stdout), positions.stdout

    runs = botmain(session_config_dir, "runs")
    assert re.search(r"paper-cli-ema +paper sol_ema_cross +finished", runs.stdout), runs.stdout

    again = botmain(session_config_dir, "paper", "--strategy", "sol_ema_cross", "--run-id", "paper-cli-ema")
    assert again.returncode != 0 and "a new run needs a new run id" in again.stderr
    unknown = botmain(session_config_dir, "orders", "--run", "no-such-run")
    assert unknown.returncode != 0 and "no trading run no-such-run" in unknown.stderr

    alone = botmain(session_config_dir, "paper", "--strategy", "sol_funding_carry", "--in-process",
                    "--start", "2025-05-01", "--end", "2025-05-08", "--run-id", "paper-cli-carry")  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    assert "as Ray actors" not in alone.stdout and "(same trades)" in alone.stdout, alone.stdout
