"""The ``botmain`` command: one group gathering each command group's module."""

from __future__ import annotations

import click

from cli import market_data, research, selector, store_cluster, trading


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Botmain: a self-hosted trading platform on a Ray cluster.

    \b
    Typical session:
      botmain up                  start the store and a local Ray cluster (dashboard included)
      botmain ingest data/sample  load recorded market data into the lake and PostgreSQL
      botmain status              where everything is, and how much data it holds
      botmain backtest sol_ema_cross --report reports/
                                  one backtest, in this process, with an HTML report
      botmain sweep --strategy sol_ema_cross --grid fast=5:55:2 slow=20:220:8
                                  a parameter sweep as a Ray job; results in PostgreSQL
      botmain runs [show RUN_ID]  stored sweeps and their leaderboards
      botmain paper --strategy sol_ema_cross --start 2025-05-10 --end 2025-05-11
                                  paper trading on a replay (strategy, risk and execution as
                                  actors), journaled; compared with the backtest
      botmain halt | resume [--strategy NAME]
                                  the running trading session's state (journaled)
      botmain orders | fills | positions [--run RUN_ID]
                                  a paper run's journal
      botmain mds start           the Market Data Server and its feeds (replay by default)
      botmain down                stop Ray and the embedded store

    Configuration is read from configs/*.yaml (or $BOTMAIN_CONFIG_DIR); secrets from
    BOTMAIN_* environment variables, e.g. BOTMAIN_PG_DSN to use your own PostgreSQL.
    """
    from cluster import runtime

    # Ray reads its auth mode once, at import: set it before any command imports Ray.
    runtime.enable_token_auth(create=False)


for command in (
    store_cluster.up, store_cluster.down, store_cluster.status,
    research.ingest, research.backtest, research.sweep, research.train_selector, research.runs,
    trading.paper, trading.halt, trading.resume, trading.orders, trading.fills, trading.positions,
    market_data.mds,
    selector.serve_command, selector.decide,
):
    main.add_command(command)
