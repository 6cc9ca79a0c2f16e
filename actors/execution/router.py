"""Where an order executes.

An intent that names its market (``venue:SYMBOL``, what strategies.yaml configures) goes
there (``Route.FIXED``). One that names only a symbol or an asset (``SOL-PERP``,
``SOL-USDC``, ``SOL``) is decided by the venue selector (``Route.SELECTOR``: the Serve
deployment's ``decide``, through a handle), among the listed markets on venues that are
not stale. When the selector does not answer in time or fails, the whitepaper's rule
decides (``Route.RULE_FALLBACK``, and the order's reason says why):

    Drift's funding rate < 0 and Jupiter's price below Raydium's -> Jupiter
    Drift's funding rate > 0                                      -> Drift
    otherwise                                                     -> Raydium

(section 4.1 of the whitepaper), each choice skipped when that venue is stale or does not
list the asset, the next one in that order taken instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from cluster.config import BotmainConfig
from cluster.domain import Instrument, OrderIntent
from cluster.orders import Route

Decide = Callable[[dict], Awaitable[dict]]


class NoRoute(LookupError):
    """No market can take the intent (none listed, or every one stale)."""


@dataclass(frozen=True, slots=True)
class Routed:
    instrument: str  # venue:SYMBOL
    route: Route
    note: str | None = None  # why the rule decided, or the selector's note


@dataclass(frozen=True, slots=True)
class RuleInputs:
    """What the whitepaper's rule looks at, from the execution server's market view."""

    drift_funding_rate: float | None
    jupiter_price: float | None
    raydium_price: float | None


class Router:
    def __init__(self, config: BotmainConfig, decide: Decide | None = None, timeout_s: float = 0.25) -> None:
        self._instruments: list[Instrument] = config.instruments()
        self._decide = decide
        self._timeout_s = timeout_s
        self.decisions: dict[str, int] = {}  # venue -> orders routed there (fixed ones included)

    def candidates(self, name: str, stale: Collection[str] = ()) -> list[Instrument]:
        """Listed markets for a symbol (``SOL-PERP``) or an asset (``SOL``) on venues not stale."""
        return [
            inst for inst in self._instruments
            if (inst.symbol == name or inst.base == name) and inst.venue not in stale
        ]  # fmt: skip

    async def route(self, intent: OrderIntent, stale: Collection[str] = (), rule: RuleInputs | None = None) -> Routed:
        if ":" in intent.instrument:
            venue = intent.instrument.partition(":")[0]
            if venue in stale:
                raise NoRoute(f"{intent.instrument}: {venue} is stale; a fixed route does not move elsewhere")
            return self._count(Routed(intent.instrument, Route.FIXED))
        candidates = self.candidates(intent.instrument, stale)
        if not candidates:
            raise NoRoute(f"{intent.instrument}: no listed market on a venue that is not stale ({', '.join(stale) or 'none stale'})")
        why = "no venue selector configured"
        if self._decide is not None:
            request = {
                "instrument": intent.instrument,
                "side": intent.side.value,
                "size": max(intent.size, 1e-9),
                "venues": sorted({c.venue for c in candidates}),
            }
            try:
                decision = await asyncio.wait_for(self._decide(request), self._timeout_s)
                market = decision["market"]
                if any(c.key == market for c in candidates):
                    return self._count(Routed(market, Route.SELECTOR, decision.get("note")))
                why = f"the selector chose {market}, which is not a candidate"
            except asyncio.TimeoutError:
                why = f"the venue selector did not answer within {self._timeout_s * 1000:.0f} ms"
            except Exception as exc:  # the service is down or refused: the rule decides
                why = f"the venue selector failed: {type(exc).__name__}: {exc}"
        return self._count(Routed(self.rule(candidates, rule or RuleInputs(None, None, None)), Route.RULE_FALLBACK, why))

    @staticmethod
    def rule(candidates: list[Instrument], inputs: RuleInputs) -> str:
        """The whitepaper's venue rule over ``candidates``; returns a market key."""
        by_venue: dict[str, Instrument] = {}
        for c in candidates:  # a perp on Drift, spot elsewhere: the rule's own three choices
            if (c.venue == "drift" and c.kind.value == "perp") or (c.venue != "drift" and c.kind.value == "spot"):
                by_venue.setdefault(c.venue, c)
        f, jup, ray = inputs.drift_funding_rate, inputs.jupiter_price, inputs.raydium_price
        if f is not None and f < 0 and jup is not None and ray is not None and jup < ray:
            order = ["jupiter", "drift", "raydium"]
        elif f is not None and f > 0:
            order = ["drift", "raydium", "jupiter"]
        else:
            order = ["raydium", "jupiter", "drift"]
        for venue in order:
            if venue in by_venue:
                return by_venue[venue].key
        return candidates[0].key  # none of the rule's venues lists it: the first listed market

    def _count(self, routed: Routed) -> Routed:
        venue = routed.instrument.partition(":")[0]
        self.decisions[venue] = self.decisions.get(venue, 0) + 1
        return routed
