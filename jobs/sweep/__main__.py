"""``python -m jobs.sweep --strategy NAME --grid fast=5:55:2 ...``: the entrypoint that
``botmain sweep`` submits as a Ray job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from cluster.config import ConfigError, load_config
from cluster.store.connection import connect, resolve_dsn
from jobs.sweep import results
from jobs.sweep.job import SweepRequest, default_run_id, run_sweep
from jobs.sweep.leaderboard import render_leaderboard


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.sweep", description=__doc__)
    p.add_argument("--strategy", required=True)
    p.add_argument("--grid", nargs="*", default=[], help="name=start:stop:step | name=a,b,c | name=value")
    p.add_argument("--instrument", action="append", default=[], help="venue:SYMBOL (repeatable)")
    p.add_argument("--random", type=int, dest="samples", help="random search: number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-id")
    p.add_argument("--timeframe")
    p.add_argument("--start")
    p.add_argument("--end")
    p.add_argument("--store-best", type=int)
    p.add_argument("--chunk-size", type=int)
    p.add_argument("--rank-by")
    p.add_argument("--show", type=int, default=10, help="leaderboard rows to print at the end")
    p.add_argument("--report-dir", help="where the best combo's HTML report goes (default reports/<run id>)")
    p.add_argument("--no-report", action="store_true")
    return p.parse_args(argv)


async def _leaderboard(config, run_id: str, rank_by: str, limit: int) -> str:
    conn = await connect(resolve_dsn(config))
    try:
        run, rows = await results.leaderboard(conn, run_id, rank_by, limit)
    finally:
        await conn.close()
    return render_leaderboard(run, rows, rank_by)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config()
        run_id = args.run_id or default_run_id(args.strategy)
        report_dir = None if args.no_report else (args.report_dir or str(config.path("reports") / run_id))
        request = SweepRequest(
            strategy=args.strategy,
            grid=tuple(args.grid),
            instruments=tuple(args.instrument),
            samples=args.samples,
            seed=args.seed,
            run_id=run_id,
            report_dir=report_dir,
            timeframe=args.timeframe,
            start=args.start,
            end=args.end,
            store_best=args.store_best,
            chunk_size=args.chunk_size,
            rank_by=args.rank_by,
        )
        summary = run_sweep(config, request, say=lambda line: print(line, flush=True))
    except (ConfigError, ValueError, KeyError) as exc:
        print(f"sweep refused: {exc}", file=sys.stderr, flush=True)
        return 2
    rank_by = args.rank_by or config.simulation.sweep.rank_by
    print(flush=True)
    print(asyncio.run(_leaderboard(config, summary["run_id"], rank_by, args.show)), flush=True)
    print(f"\nbotmain runs show {summary['run_id']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
