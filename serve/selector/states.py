"""Where a decision's market state comes from when the request does not carry it.

``MarketStates`` is the ``StateProvider`` the service uses. Per base asset it keeps the
lake's history (``history.MarketHistory``, reloaded every ``lake_refresh_s``): the hourly
features at the end of the recording. When the Market Data Server runs, a background poll
(``run``: one ``market_snapshot`` call per second, never on the request path) overlays
what it sees live on top of that: each venue's price (its top of book's mid, or a perp's
mark), settled funding, premium (mark over oracle) and staleness on the MDS's clock. The
history-based features (EMAs, volatility, funding over 24 h) stay the lake's; a live
deployment keeps the lake current by ingesting what the MDS stores. The first request for
an asset the poll has not seen yet waits for one snapshot of it (at most
``FIRST_LIVE_WAIT_S``), so that it too gets the live market.

Every answer says which it used (``StateMap.source``), and which candidates it left out and
why (``StateMap.excluded``): a venue whose lake recording is not current at the newest hour
(``history.MarketHistory``: ended, or a gap, past the venue's ``stale_after_s``) unless the
MDS sees it live, a venue the MDS calls stale (its own rule, the same threshold), and a
venue whose state, lake or live, is out of
``VenueState``'s bounds. Reading the lake can fail (no data, a damaged file): then every
candidate is left out with that reason, and the decision says so instead of failing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

import numpy as np
from pydantic import ValidationError

from cluster.config import BotmainConfig
from serve.selector.candidates import Candidate, base_asset
from serve.selector.features import VenueState
from serve.selector.history import InvalidVenueState, MarketHistory

log = logging.getLogger(__name__)

FIRST_LIVE_WAIT_S = 1.0


class StateMap(dict):
    """venue:SYMBOL -> VenueState, where they came from, and the candidates left out (why)."""

    source: str = ""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.excluded: dict[str, str] = {}


class MarketStates:
    def __init__(self, config: BotmainConfig, lake_refresh_s: float = 300.0, mds_name: str = "mds", namespace: str = "botmain") -> None:
        self.config = config
        self.lake_refresh_s = lake_refresh_s
        self.mds_name = mds_name
        self.namespace = namespace
        self._history: dict[str, tuple[float, MarketHistory]] = {}
        self._live: dict[str, dict] = {}  # base -> the MDS's latest snapshot
        self.live_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where ``run`` polls
        self.last: dict[str, dict] = {}  # base -> the latest answer's source, candidates and exclusions (health)

    # --- the provider ------------------------------------------------------------------------

    def __call__(self, request, candidates: list[Candidate]) -> StateMap:
        base = candidates[0].base
        first = base not in self._history
        try:
            history = self.history(base)
        except Exception as exc:  # noqa: BLE001  (no data, a damaged file: the decision names it, never a 500)
            log.warning("no market state from the lake for %s: %s: %s", base, type(exc).__name__, exc)
            history = None
            lake_error = f"no market state from the lake: {exc}" if isinstance(exc, ValueError) else \
                f"no market state from the lake: {type(exc).__name__}: {exc}"
        if first:
            self._fetch_live_now(base)
        if history is not None:
            i = len(history.grid) - 1
            lake_states, excluded = history.states_at(i)
            states = StateMap(lake_states)
            states.excluded.update(excluded)
            as_of = np.datetime64(int(history.decision_ns[i]), "ns")
            states.source = f"lake, as of {str(as_of)[:16]} UTC"
        else:
            states = StateMap()
            states.excluded.update({c.key: lake_error for c in candidates})
            states.source = "none (no market state from the lake)"
        live = self._live.get(base)
        if live is not None and (live["tops"] or live["funding"] or live["marks"]):
            overlaid = self._overlay(states, live, {c.key: c for c in candidates})
            if overlaid:
                states.source = f"MDS live ({', '.join(sorted(overlaid))}), history features from the lake"
        self.last[base] = {"source": states.source, "candidates": sorted(states), "excluded": dict(states.excluded)}
        return states

    def history(self, base: str) -> MarketHistory:
        loaded = self._history.get(base)
        if loaded is None or time.monotonic() - loaded[0] > self.lake_refresh_s:
            loaded = (time.monotonic(), MarketHistory.from_lake(self.config, base))
            self._history[base] = loaded
        return loaded[1]

    # --- live overlay ---------------------------------------------------------------------------

    def _fetch_live_now(self, base: str) -> None:
        """A new asset's first snapshot, fetched on the polling loop while this (worker)
        thread waits; skipped when nothing polls or when called on the loop itself."""
        loop = self._loop
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # no loop in this thread
            on_loop = False
        if loop is None or on_loop or not loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.refresh_live([base]), loop).result(FIRST_LIVE_WAIT_S)
        except concurrent.futures.TimeoutError:
            log.warning("the MDS did not answer for %s within %.1f s: deciding on the lake's state", base, FIRST_LIVE_WAIT_S)

    async def refresh_live(self, bases: list[str] | None = None) -> None:
        """One poll of the MDS for ``bases``, by default every base asset asked about so far
        (no-op without an MDS)."""
        import ray

        try:
            mds = ray.get_actor(self.mds_name, namespace=self.namespace)
        except ValueError:
            self._live.clear()
            self.live_error = "the MDS is not running"
            return
        try:
            for base in list(self._history) if bases is None else bases:
                self._live[base] = await mds.market_snapshot.remote(base)
            self.live_error = None
        except Exception as exc:  # the MDS went away between the lookup and the call
            self._live.clear()
            self.live_error = f"{type(exc).__name__}: {exc}"

    def start(self, loop: asyncio.AbstractEventLoop, interval_s: float = 1.0) -> concurrent.futures.Future:
        """Poll on ``loop`` (running in another thread) from now on."""
        self._loop = loop
        return asyncio.run_coroutine_threadsafe(self.run(interval_s), loop)

    async def run(self, interval_s: float = 1.0) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            await self.refresh_live()
            await asyncio.sleep(interval_s)

    def warm(self, instrument: str) -> None:
        """Load an asset's history now (startup) instead of on the first request."""
        self.history(base_asset(self.config, instrument))

    @staticmethod
    def _overlay(states: StateMap, live: dict, by_key: dict[str, Candidate]) -> list[str]:
        now = live["now_ns"]
        stale = set(live["stale_venues"])
        overlaid = []
        for key, candidate in by_key.items():
            if candidate.venue in stale:
                # The MDS's own rule: a venue silent past its stale_after_s is out of the
                # consolidated view, and out of the decision too, whatever the lake last saw.
                # A candidate the lake already left out keeps that reason (no funding series...).
                if states.pop(key, None) is not None or key not in states.excluded:
                    states.excluded[key] = (f"the MDS calls {candidate.venue} stale: nothing from it within its "
                                            f"stale_after_s ({candidate.stale_after_s:g} s)")
                continue
            top, funding, mark = live["tops"].get(key), live["funding"].get(key), live["marks"].get(key)
            if top is None and funding is None and mark is None:
                continue
            base_state = states.get(key)
            update: dict = {}
            newest = 0
            if mark is not None and mark["mark"]:
                update["price"] = mark["mark"]
                if mark.get("oracle"):
                    update["premium_bps"] = (mark["mark"] - mark["oracle"]) / mark["oracle"] * 1e4
                newest = max(newest, mark["ts_ns"])
            elif top is not None and top["bid"] and top["ask"]:
                update["price"] = (top["bid"] + top["ask"]) / 2
            if top is not None:
                newest = max(newest, top["ts_ns"])
            if funding is not None and candidate.is_perp:
                update["funding_bps_h"] = funding["rate"] / max(funding["interval_s"], 1) * 3600 * 1e4
                newest = max(newest, funding["ts_ns"])
            if not update:
                continue
            update["staleness_s"] = max((now - newest) / 1e9, 0.0) if newest else 0.0
            if base_state is None:
                # not in the lake's state (none, or left out there): live only with a price
                if "price" not in update:
                    continue
                values = update
            else:
                values = {**base_state.model_dump(), **update}
            try:
                states[key] = VenueState(**values)
            except ValidationError as exc:
                states.pop(key, None)
                states.excluded[key] = f"invalid market state: {InvalidVenueState(key, now, exc)} (live from the MDS)"
                continue
            states.excluded.pop(key, None)
            overlaid.append(key)
        return overlaid
