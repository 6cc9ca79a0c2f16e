"""The training job: history from the lake -> dataset -> walk-forward folds as Ray tasks ->
report -> final model on every hour -> model registry (artifact in PostgreSQL).

The new version becomes the active one when it beats the whitepaper rule on held-out cost
(or always with ``activate="always"``, never with ``"never"``); the report says which.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from cluster.config import BotmainConfig
from cluster.store.connection import connect, prepare_store, resolve_dsn
from jobs.train_selector.dataset import DatasetSettings, build_dataset
from jobs.train_selector.walk_forward import STRATEGIES, TrainSettings, fit, fit_predict, fold_plan, picks, summarise
from serve import registry
from serve.selector.features import FEATURES
from serve.selector.history import MarketHistory

MODEL_NAME = "venue_selector"
ARTIFACT_FORMAT = "xgboost-ubj"


@dataclass(frozen=True)
class TrainRequest:
    instrument: str = "SOL-PERP"
    start: str | None = None
    end: str | None = None
    venues: tuple[str, ...] | None = None
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    activate: str = "if_better"  # if_better | always | never
    report_dir: str | None = None


@ray.remote(num_cpus=1)
def _fold_task(X, y, train_rows, test_rows, settings: TrainSettings) -> np.ndarray:
    return fit_predict(X[train_rows], y[train_rows], X[test_rows], settings)


def train_selector(config: BotmainConfig, request: TrainRequest, say: Callable[[str], None] = print) -> dict:
    t0 = time.monotonic()
    history = MarketHistory.from_lake(config, request.instrument, request.start, request.end, list(request.venues) if request.venues else None)
    start, end = (pd.Timestamp(history.grid[0], tz="UTC"), pd.Timestamp(history.grid[-1], tz="UTC"))
    say(f"history: {history.base}, {len(history.grid):,} hours {start:%Y-%m-%d %H:%M} -> {end:%Y-%m-%d %H:%M}; index: {history.index_source}")
    for key, v in sorted(history.venues.items()):
        say(f"  {key:<22} {v.candidate.kind:<5} {v.source}; candidate {history.spans_text(key)}")
    for note in history.notes:
        say(f"  note: {note}")
    dataset = build_dataset(history, request.dataset)
    say(f"dataset: {dataset.n_requests:,} requests x candidates = {len(dataset.y):,} rows ({time.monotonic() - t0:.1f} s)")

    embargo = max(request.dataset.horizons_h)
    plan = fold_plan(dataset, request.train.folds, embargo)
    X_ref, y_ref = ray.put(dataset.X), ray.put(dataset.y)
    futures = [_fold_task.remote(X_ref, y_ref, np.flatnonzero(tr), np.flatnonzero(te), request.train) for tr, te in plan]
    say(f"walk-forward: {len(plan)} folds as Ray tasks (embargo {embargo} h)")
    folds, per_request = [], []
    for k, ((train_rows, test_rows), predicted) in enumerate(zip(plan, ray.get(futures)), start=1):
        p = picks(dataset, test_rows, predicted)
        s = summarise(p)
        hours = dataset.hour[test_rows]
        s["test_from"] = str(pd.Timestamp(history.grid[hours.min()], tz="UTC"))
        s["test_to"] = str(pd.Timestamp(history.grid[hours.max()], tz="UTC"))
        s["train_rows"] = int(train_rows.sum())
        folds.append(s)
        per_request.append(p)
    overall = summarise(pd.concat(per_request))
    report = render_report(history, dataset, folds, overall)
    say(report)

    booster = fit(dataset.X, dataset.y, request.train)
    raw = bytes(booster.save_raw("ubj"))
    version = datetime.now(timezone.utc).strftime("vs-%Y%m%d-%H%M%S-") + hashlib.sha256(raw).hexdigest()[:6]
    beats = overall["model_bps"] < overall["rule_bps"]
    activate = request.activate == "always" or (request.activate == "if_better" and beats)
    metrics = {
        "walk_forward": overall,
        "folds": folds,
        "instrument": request.instrument,
        "candidates": sorted(history.venues),
        "candidate_spans": {k: [[str(t0), str(t1)] for t0, t1 in history.span_times(k)] for k in sorted(history.venues)},
        "notes": history.notes,
        "data": {"from": str(start), "to": str(end), "hours": int(len(history.grid)), "index": history.index_source},
        "dataset": asdict(request.dataset),
        "train": asdict(request.train),
        "beats_rule": bool(beats),
        "report": report,
    }
    entry = asyncio.run(_register(config, version, metrics, raw, activate))
    verdict = (f"the model beats the whitepaper rule on held-out cost by {overall['rule_bps'] - overall['model_bps']:.2f} bps"
               if beats else f"the model does NOT beat the whitepaper rule: it costs {overall['model_bps'] - overall['rule_bps']:.2f} bps more")
    say(verdict)
    say(f"registered {version} ({len(raw):,} bytes, {len(FEATURES)} features)" + (" and activated it" if entry.is_active else ", not activated"))
    if request.report_dir:
        path = Path(request.report_dir) / f"{version}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report + "\n" + verdict + "\n")
        say(f"report: {path}")
    return {"version": version, "active": entry.is_active, "beats_rule": bool(beats), **{k: overall[k] for k in overall if k.endswith("_bps") or k.endswith("accuracy")}}


async def _register(config: BotmainConfig, version: str, metrics: dict, raw: bytes, activate: bool):
    dsn = resolve_dsn(config)
    await prepare_store(dsn)
    conn = await connect(dsn)
    try:
        return await registry.register(conn, MODEL_NAME, version, metrics, FEATURES, raw, ARTIFACT_FORMAT, activate=activate)
    finally:
        await conn.close()


def _hour(ns) -> str:
    return f"{pd.Timestamp(int(ns), tz='UTC'):%Y-%m-%d %H:%M}"


LABELS = {"model": "model", "rule": "whitepaper rule", "always_perp": "always perp", "always_spot": "always spot", "hindsight": "hindsight (floor)"}


def render_report(history: MarketHistory, dataset, folds: list[dict], overall: dict) -> str:
    lines = ["\nvenue selector, walk-forward on held-out periods: mean realised all-in cost per request, bps (lower is better)", ""]
    head = f"{'period (test block)':<36} {'requests':>9}" + "".join(f" {LABELS[s]:>18}" for s in STRATEGIES) + f" {'accuracy':>9} {'rule acc.':>9}"
    lines.append(head)
    lines.append("-" * len(head))

    def row(label: str, s: dict) -> str:
        return f"{label:<36} {s['requests']:>9,}" + "".join(f" {s[f'{n}_bps']:>18.2f}" for n in STRATEGIES) + f" {s['accuracy']:>9.1%} {s['rule_accuracy']:>9.1%}"

    for s in folds:
        lines.append(row(f"{s['test_from'][:16]} -> {s['test_to'][:10]}", s))
    lines.append("-" * len(head))
    lines.append(row("all held-out periods", overall))
    lines.append("")
    lines.append(f"candidates (a venue is one while each series feeding it is current: newest row within its interval "
                 f"+ the venue's stale_after_s), of {len(history.grid):,} h from {_hour(history.grid[0])}:")
    for key in sorted(history.venues):
        lines.append(f"  {key:<22} {history.spans_text(key)}")
    lines.append("")
    lines.append("picks (held out): model " + ", ".join(f"{k} {v:,}" for k, v in overall["model_picks"].items())
                 + "; rule " + ", ".join(f"{k} {v:,}" for k, v in overall["rule_picks"].items())
                 + "; hindsight " + ", ".join(f"{k} {v:,}" for k, v in overall["hindsight_picks"].items()))
    return "\n".join(lines)
