"""Launch, inspect and stop the market-data actors on a running Ray cluster.

``start_market_data`` creates the MDS and one actor per enabled feed as named, detached
actors in namespace ``botmain`` (so they outlive the ``botmain`` command that started them
and show by name in the Ray dashboard's Actors view). Each is supervised: Ray restarts it
when its process dies (``market_data.supervision``), it starts itself again and rebuilds its
state (actors/mds/actor.py, actors/feeds/actor.py). The caller must be connected to the
cluster (``ray.init(address=..., namespace="botmain")``).
"""

from __future__ import annotations

import uuid

import ray

from actors import names
from actors.feeds import FEEDS
from cluster.config import BotmainConfig


class TopologyError(RuntimeError):
    pass


def enabled_feeds(config: BotmainConfig) -> list[str]:
    return [name for name in FEEDS if getattr(config.market_data.feeds, name).enabled]


def resolve_clock(config: BotmainConfig, feeds: list[str]) -> str:
    clock = config.market_data.mds.clock
    if clock != "auto":
        return clock
    return "event" if feeds == ["replay"] else "wall"


def named_actor(name: str):
    """The named actor ``name`` in Botmain's namespace, or None when none runs."""
    try:
        return ray.get_actor(name, namespace=names.NAMESPACE)
    except ValueError:
        return None


def start_market_data(config: BotmainConfig, feeds: list[str] | None = None) -> dict:
    """Start the MDS (if not running) and the given feeds (default: the enabled ones).

    The MDS's writer (``mds-store``) reads the store's DSN from its own environment, so
    nothing secret is passed to an actor (Ray keeps constructor arguments in its GCS)."""
    from actors.feeds.actor import FeedActor
    from actors.mds.actor import MdsActor

    feeds = list(feeds) if feeds is not None else enabled_feeds(config)
    unknown = [f for f in feeds if f not in FEEDS]
    if unknown:
        raise TopologyError(f"unknown feed(s) {', '.join(unknown)} (known: {', '.join(FEEDS)})")
    sup = config.market_data.supervision
    mds = named_actor(names.MDS)
    if mds is None:
        mds = MdsActor.options(
            name=names.MDS,
            namespace=names.NAMESPACE,
            lifetime="detached",
            num_cpus=config.market_data.mds.num_cpus,
            max_concurrency=1000,
            max_restarts=sup.max_restarts,
            max_task_retries=sup.max_task_retries,
        ).remote(config, resolve_clock(config, feeds))
    ray.get(mds.start.remote())
    started = {}
    for feed in feeds:
        name = names.feed_actor(feed)
        actor = named_actor(name)
        if actor is not None and ray.get(actor.health.remote())["state"] in ("finished", "failed", "stopped"):
            ray.kill(actor)  # a feed that ended is started afresh: `start` means play again
            actor = _wait_gone(name)
        if actor is None:
            settings = getattr(config.market_data.feeds, feed)
            actor = FeedActor.options(
                name=name,
                namespace=names.NAMESPACE,
                lifetime="detached",
                num_cpus=settings.num_cpus,
                max_concurrency=1000,
                max_restarts=sup.max_restarts,
                max_task_retries=sup.max_task_retries,
            ).remote(feed, config, uuid.uuid4().hex[:12])
        started[feed] = ray.get(actor.start.remote())
    return started


def feed_state(feed: str, timeout_s: float = 10.0) -> str | None:
    """The state of feed actor ``feed`` (None: not running; ``unreachable``)."""
    actor = named_actor(names.feed_actor(feed))
    if actor is None:
        return None
    try:
        return ray.get(actor.health.remote(), timeout=timeout_s)["state"]
    except Exception:
        return "unreachable"


def stop_feed(feed: str, timeout_s: float = 30.0) -> bool:
    """Stop one feed actor; False if it was not running."""
    actor = named_actor(names.feed_actor(feed))
    if actor is None:
        return False
    _stop(actor, timeout_s)
    return True


def stop_market_data(timeout_s: float = 30.0) -> list[str]:
    """Stop every feed actor, then the MDS (which stores what it still holds); returns the
    names of the actors stopped."""
    stopped = []
    for feed in FEEDS:
        actor = named_actor(names.feed_actor(feed))
        if actor is not None:
            _stop(actor, timeout_s)
            stopped.append(names.feed_actor(feed))
    mds = named_actor(names.MDS)
    if mds is not None:
        _stop(mds, timeout_s)  # it drains its rows into the store writer and stops that too
        stopped.append(names.MDS)
    writer = named_actor(names.MDS_STORE)
    if writer is not None:  # left behind by an MDS that died
        _stop(writer, timeout_s)
    return stopped


def _wait_gone(name: str, timeout_s: float = 10.0):
    """None once the killed actor's name is free again."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if named_actor(name) is None:
            return None
        time.sleep(0.05)
    raise TopologyError(f"actor {name!r} did not go away after being killed")


def _stop(actor, timeout_s: float) -> None:
    try:
        ray.get(actor.stop.remote(), timeout=timeout_s)
    except Exception:  # a dead or hung actor is killed all the same
        pass
    ray.kill(actor)


def market_data_status(timeout_s: float = 10.0) -> dict | None:
    """The MDS's status and every feed actor's health, or None if the MDS is not running."""
    mds = named_actor(names.MDS)
    if mds is None:
        return None
    status = ray.get(mds.status.remote(), timeout=timeout_s)
    status["feeds"] = {}
    for feed in FEEDS:
        actor = named_actor(names.feed_actor(feed))
        if actor is not None:
            try:
                status["feeds"][feed] = ray.get(actor.health.remote(), timeout=timeout_s)
            except Exception as exc:
                status["feeds"][feed] = {"feed": feed, "state": "unreachable", "last_error": str(exc)}
    return status
