"""``python -m jobs.train_selector [--instrument SOL-PERP] ...``: the entrypoint that
``botmain train-selector`` submits as a Ray job."""

from __future__ import annotations

import argparse
import logging
import sys

import ray

from cluster.config import ConfigError, load_config
from jobs.train_selector.dataset import DatasetSettings
from jobs.train_selector.job import TrainRequest, train_selector
from jobs.train_selector.walk_forward import TrainSettings


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.train_selector", description=__doc__)
    p.add_argument("--instrument", default="SOL-PERP", help="the asset to train for: SOL-PERP, SOL-USDC or SOL")
    p.add_argument("--start")
    p.add_argument("--end")
    p.add_argument("--venue", action="append", dest="venues", help="only these venues (repeatable)")
    p.add_argument("--folds", type=int, default=TrainSettings.folds)
    p.add_argument("--trees", type=int, default=TrainSettings.n_estimators)
    p.add_argument("--requests-per-hour", type=int, default=DatasetSettings.requests_per_hour)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--activate", choices=["if_better", "always", "never"], default="if_better")
    p.add_argument("--report-dir", help="also write the report here (default reports/selector)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config()
        request = TrainRequest(
            instrument=args.instrument,
            start=args.start,
            end=args.end,
            venues=tuple(args.venues) if args.venues else None,
            dataset=DatasetSettings(requests_per_hour=args.requests_per_hour, seed=args.seed),
            train=TrainSettings(folds=args.folds, n_estimators=args.trees, seed=args.seed),
            activate=args.activate,
            report_dir=args.report_dir or str(config.path("reports") / "selector"),
        )
        if not ray.is_initialized():
            ray.init(address="auto", log_to_driver=True, logging_level="WARNING")  # submitted as a Ray job: the cluster it runs on
        train_selector(config, request, say=lambda line: print(line, flush=True))
    except (ConfigError, ValueError, KeyError, LookupError) as exc:
        print(f"train-selector refused: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
