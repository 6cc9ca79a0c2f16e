"""``python -m jobs.ingest [--venue V] PATH...``: the ingest job's entrypoint (also the Ray job's)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from cluster.config import ConfigError, load_config
from jobs.ingest import to_store
from jobs.ingest.job import ingest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ingest", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--venue", help="venue for files whose name or folder does not say")
    parser.add_argument(
        "--snapshot-interval",
        type=float,
        default=to_store.BOOK_SNAPSHOT_INTERVAL_S,
        help="seconds between stored book snapshots (default %(default)s)",
    )
    parser.add_argument(
        "--snapshot-depth",
        type=int,
        default=to_store.BOOK_SNAPSHOT_DEPTH,
        help="levels per side in stored book snapshots (default %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    report = asyncio.run(
        ingest(
            args.paths,
            config,
            venue=args.venue,
            snapshot_interval_s=args.snapshot_interval,
            snapshot_depth=args.snapshot_depth,
        )
    )
    print(report.render())
    return 1 if report.refused else 0


if __name__ == "__main__":
    sys.exit(main())
