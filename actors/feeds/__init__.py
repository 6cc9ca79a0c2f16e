"""Feed actors: one per source, all built on the template in ``actors.feeds.base``.

``FEEDS`` names each feed's class by import path, so that starting the replay feed does not
import driftpy or ccxt.
"""

from __future__ import annotations

import importlib

FEEDS: dict[str, str] = {
    "replay": "actors.feeds.replay:ReplayFeed",
    "drift": "actors.feeds.drift:DriftFeed",
    "jupiter": "actors.feeds.jupiter:JupiterFeed",
    "raydium": "actors.feeds.raydium:RaydiumFeed",
    "cex": "actors.feeds.cex:CexFeed",
    "solana": "actors.feeds.solana:SolanaFeed",
    "news": "actors.feeds.news:NewsFeed",
}


def feed_class(name: str):
    try:
        module, cls = FEEDS[name].split(":")
    except KeyError:
        raise KeyError(f"unknown feed {name!r} (known: {', '.join(FEEDS)})") from None
    return getattr(importlib.import_module(module), cls)
