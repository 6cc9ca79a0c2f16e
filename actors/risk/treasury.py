"""The Botmain Treasury: one account per venue, and the strategies' allocations of it.

A balance starts at risk.yaml's ``treasury.<venue>.balance`` and the actor updates it as the
venue reports it. What the strategies use of an account (initial margin of perps, the value
of spot held) may not go past its balance: a strategy in profit can use more than its
allocation on its own equity, and a balance can shrink below the allocations (a withdrawal,
a loss elsewhere); the pre-trade ``treasury`` rule refuses what would take the sum past it.

``summary`` is what ``botmain positions`` shows: per strategy and venue its allocation,
equity, usage and PnL; per venue the balance, allocated, in use and free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from actors.risk.account import PositionIndex, StrategyAccount
from actors.risk.instruments import InstrumentSpec


@dataclass(frozen=True, slots=True)
class AllocationRow:
    strategy: str
    venue: str
    allocation: float
    equity: float  # allocation + pnl
    usage: float  # margin (perps) or notional (spot) in use
    usage_kind: str  # margin, notional, or margin+notional
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    funding: float  # paid, + out
    pnl: float  # realized + unrealized - fees - funding


@dataclass(frozen=True, slots=True)
class TreasuryRow:
    venue: str
    balance: float
    allocated: float
    in_use: float
    free: float  # balance - in use


@dataclass(frozen=True, slots=True)
class TreasurySummary:
    strategies: tuple[AllocationRow, ...]
    venues: tuple[TreasuryRow, ...]


class Treasury:
    __slots__ = ("balances", "allocated", "usage_kinds", "_index")

    def __init__(self, balances: dict[str, float], allocations: dict[str, dict[str, float]],
                 specs: Iterable[InstrumentSpec], index: PositionIndex) -> None:
        self.balances = dict(balances)
        self.allocated: dict[str, float] = {}
        for venues in allocations.values():
            for venue, amount in venues.items():
                self.allocated[venue] = self.allocated.get(venue, 0.0) + amount
        kinds: dict[str, set[str]] = {}
        for spec in specs:
            kinds.setdefault(spec.venue, set()).add(spec.usage_kind)
        self.usage_kinds = {v: "+".join(sorted(k)) for v, k in kinds.items()}
        self._index = index

    def balance(self, venue: str) -> float | None:
        """None: no treasury account on ``venue``."""
        return self.balances.get(venue)

    def set_balance(self, venue: str, balance: float) -> None:
        if not balance >= 0:
            raise ValueError(f"treasury balance on {venue} must be >= 0, got {balance!r}")
        self.balances[venue] = balance

    def usage(self, venue: str) -> float:
        """What every strategy uses of the account on ``venue``, at the marks."""
        used = 0.0
        for h in self._index.by_venue.get(venue, ()):
            if h.position.size:
                used += h.usage()
        return used

    def summary(self, accounts: Iterable[StrategyAccount]) -> TreasurySummary:
        rows = []
        for acct in accounts:
            for venue in acct.venues():
                held = [h for h in acct.holdings.values() if h.spec.venue == venue]
                realized = sum((h.position.realized_pnl for h in held), 0.0)
                unrealized = sum((h.position.size * (h.mark() - h.position.avg_entry_price) for h in held), 0.0)
                fees = sum((h.position.fees_paid for h in held), 0.0)
                funding = sum((h.position.funding_paid for h in held), 0.0)
                pnl = realized + unrealized - fees - funding
                allocation = acct.allocations.get(venue, 0.0)
                rows.append(AllocationRow(
                    acct.strategy, venue, allocation, allocation + pnl, sum((h.usage() for h in held), 0.0),
                    self.usage_kinds.get(venue, ""), realized, unrealized, fees, funding, pnl,
                ))
        venues = []
        for venue in sorted(set(self.balances) | set(self._index.by_venue)):
            balance = self.balances.get(venue, 0.0)
            in_use = self.usage(venue)
            venues.append(TreasuryRow(venue, balance, self.allocated.get(venue, 0.0), in_use, balance - in_use))
        return TreasurySummary(tuple(rows), tuple(venues))
