"""Start and stop a paper trading session's actors on a running Ray cluster: the paper
venue, the Execution Server, the Risk Rules Monitor and one strategy actor, named (the Ray
dashboard's Actors view shows them as ``paper-venue``, ``execution``, ``risk`` and
``strategy:<name>``) in Botmain's namespace.

One trading session runs on a cluster at a time (one monitor over every strategy is the
design; several strategies in one session are planned). The actors belong to the driver
that started them (not detached): if it dies, they go with it, and the run's journal is
what remains. The Execution Server is supervised (``market_data.supervision``'s restarts):
Ray restarts its process and it reconciles before it sends anything. The other three are
not restarted: the paper venue holds the simulated exchange's memory, and the monitor and
the strategy would have to rebuild their views from the journal (planned).
"""

from __future__ import annotations

from dataclasses import dataclass

import ray

from actors import names
from actors.topology import named_actor
from cluster.config import BotmainConfig
from strategies.base import Strategy


class SessionRunning(RuntimeError):
    pass


@dataclass(frozen=True)
class TradingActors:
    venue: object
    execution: object
    risk: object
    strategy: object


def start_paper_actors(config: BotmainConfig, run_id: str, name: str, strategy: Strategy) -> TradingActors:
    """The four actors for paper-trading instance ``name`` (``strategy``, the same class and
    parameters the backtest runs) under journal run ``run_id`` (opened by the caller)."""
    from actors.trading.execution_actor import ExecutionActor
    from actors.trading.risk_actor import RiskActor
    from actors.trading.strategy_actor import StrategyActor
    from actors.trading.venue_actor import PaperVenueActor

    running = [n for n in (names.RISK, names.EXECUTION, names.PAPER_VENUE) if named_actor(n) is not None]
    if running:
        raise SessionRunning(f"a trading session is running on this cluster ({', '.join(running)}); one at a time")
    common = {"namespace": names.NAMESPACE, "num_cpus": 0, "max_concurrency": 64}
    venue = PaperVenueActor.options(name=names.PAPER_VENUE, max_restarts=0, **common).remote(run_id, list(config.venues.venues))
    sup = config.market_data.supervision
    execution = ExecutionActor.options(name=names.EXECUTION, max_restarts=sup.max_restarts, max_task_retries=0,
                                       **common).remote(config, run_id)  # fmt: skip
    risk = RiskActor.options(name=names.RISK, max_restarts=0, **common).remote(config)
    strategy_actor = StrategyActor.options(name=names.strategy_actor(name), max_restarts=0, **common).remote(name, strategy)
    ray.get(execution.start.remote())
    return TradingActors(venue, execution, risk, strategy_actor)


def stop_paper_actors(actors: TradingActors | None = None, timeout_s: float = 30.0) -> None:
    """Stop the session's actors (those given, or the named ones found)."""
    handles = (
        [actors.strategy, actors.risk, actors.execution, actors.venue]
        if actors is not None
        else [h for h in (named_actor(n) for n in (names.RISK, names.EXECUTION, names.PAPER_VENUE)) if h is not None]
    )
    execution = actors.execution if actors is not None else named_actor(names.EXECUTION)
    if execution is not None:
        try:
            ray.get(execution.stop.remote(), timeout=timeout_s)
        except Exception:  # a dead or hung server is killed all the same; its journal stays
            pass
    for handle in handles:
        ray.kill(handle)
