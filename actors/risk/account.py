"""The monitor's view of each strategy's book, which the checks read.

A strategy trades on its allocations of the treasury's accounts, one per venue. Its equity
on a venue is that allocation plus the realized and unrealized PnL of its positions there,
less their fees and funding; its equity is the sum over its venues. Collateral does not
cross venues (a Drift position is margined by the Drift account alone), so free collateral
and liquidation are per venue; leverage, drawdown and the daily loss are on the whole.

Positions are ``cluster.domain.Position`` (average cost), fed by the fills the actor
passes on; each is held with its instrument's spec as a ``Holding``, listed once in the
``PositionIndex`` that the exposure and treasury views sum over.
"""

from __future__ import annotations

from cluster.domain import Fill, FundingRate, Position

from actors.risk.instruments import InstrumentSpec

DAY_NS = 86_400 * 1_000_000_000


class Holding:
    """One strategy's position in one instrument. ``closing`` is set while a close the
    monitor asked for (auto-close, stop, kill switch) is outstanding, so that each mark does
    not ask again; a fill in the instrument clears it."""

    __slots__ = ("strategy", "spec", "key", "venue", "position", "closing", "_marks")

    def __init__(self, strategy: str, spec: InstrumentSpec, marks: dict[str, float]) -> None:
        self.strategy = strategy
        self.spec = spec
        self.key = spec.key
        self.venue = spec.venue
        self.position = Position(spec.key)
        self.closing = False
        self._marks = marks

    @property
    def size(self) -> float:
        return self.position.size

    def mark(self) -> float:
        """The instrument's mark, or the entry price while the monitor has none."""
        return self._marks.get(self.key) or self.position.avg_entry_price

    def value(self) -> float:
        return self.position.size * self.mark()

    def notional(self) -> float:
        return abs(self.position.size) * self.mark()

    def usage(self) -> float:
        """Collateral in use: initial margin for a perp, the value held for spot."""
        return abs(self.position.size) * self.mark() * self.spec.usage_ratio

    def maintenance(self) -> float:
        return abs(self.position.size) * self.mark() * self.spec.maintenance_ratio

    def pnl(self) -> float:
        p = self.position
        return p.realized_pnl - p.fees_paid - p.funding_paid + p.size * (self.mark() - p.avg_entry_price)


class PositionIndex:
    """Every holding of every strategy, by instrument, base asset and venue."""

    __slots__ = ("by_instrument", "by_asset", "by_venue")

    def __init__(self) -> None:
        self.by_instrument: dict[str, list[Holding]] = {}
        self.by_asset: dict[str, list[Holding]] = {}
        self.by_venue: dict[str, list[Holding]] = {}

    def add(self, holding: Holding) -> None:
        self.by_instrument.setdefault(holding.spec.key, []).append(holding)
        self.by_asset.setdefault(holding.spec.base, []).append(holding)
        self.by_venue.setdefault(holding.spec.venue, []).append(holding)


class StrategyAccount:
    """One strategy's allocations, holdings, open orders and the equity marks the loss rules
    compare with: ``peak_equity`` (starts at the allocations, as the simulator's peak starts
    at its initial cash) and ``day_start_equity``, the first equity seen in the UTC day."""

    __slots__ = (
        "strategy", "allocations", "allocation", "holdings", "open_orders",
        "peak_equity", "day_start_equity", "day", "_marks", "_index",
    )

    def __init__(self, strategy: str, allocations: dict[str, float], marks: dict[str, float],
                 index: PositionIndex, now_ns: int) -> None:
        self.strategy = strategy
        self.allocations = dict(allocations)
        self.allocation = sum(self.allocations.values())
        self.holdings: dict[str, Holding] = {}
        self.open_orders = 0
        self.peak_equity = self.allocation
        self.day_start_equity = self.allocation
        self.day = now_ns // DAY_NS
        self._marks = marks
        self._index = index

    def holding(self, spec: InstrumentSpec) -> Holding:
        h = self.holdings.get(spec.key)
        if h is None:
            h = self.holdings[spec.key] = Holding(self.strategy, spec, self._marks)
            self._index.add(h)
        return h

    def size(self, instrument: str) -> float:
        h = self.holdings.get(instrument)
        return 0.0 if h is None else h.position.size

    def totals(self, venue: str) -> tuple[float, float, float, float, float]:
        """One pass for a pre-trade check: equity and gross notional, and on ``venue`` its
        equity, collateral in use and maintenance margin (``Holding``'s sums, written out:
        the check's hot path)."""
        eq, gross = self.allocation, 0.0
        v_eq, v_use, v_mm = self.allocations.get(venue, 0.0), 0.0, 0.0
        marks = self._marks
        for h in self.holdings.values():
            p = h.position
            q, entry = p.size, p.avg_entry_price
            m = marks.get(h.key) or entry
            pnl = p.realized_pnl - p.fees_paid - p.funding_paid + q * (m - entry)
            notional = abs(q) * m
            eq += pnl
            gross += notional
            if h.venue == venue:
                spec = h.spec
                v_eq += pnl
                v_use += notional * spec.usage_ratio
                v_mm += notional * spec.maintenance_ratio
        return eq, gross, v_eq, v_use, v_mm

    def equity(self) -> float:
        eq = self.allocation
        for h in self.holdings.values():
            eq += h.pnl()
        return eq

    def venue_equity(self, venue: str) -> float:
        eq = self.allocations.get(venue, 0.0)
        for h in self.holdings.values():
            if h.venue == venue:
                eq += h.pnl()
        return eq

    def gross_notional(self) -> float:
        return sum((h.notional() for h in self.holdings.values()), 0.0)

    def venue_usage(self, venue: str) -> float:
        return sum((h.usage() for h in self.holdings.values() if h.venue == venue), 0.0)

    def venue_maintenance(self, venue: str) -> float:
        return sum((h.maintenance() for h in self.holdings.values() if h.venue == venue), 0.0)

    def venues(self) -> list[str]:
        """Venues it has an allocation or a holding on."""
        seen = dict.fromkeys(self.allocations)
        seen.update(dict.fromkeys(h.spec.venue for h in self.holdings.values()))
        return list(seen)

    def apply_fill(self, spec: InstrumentSpec, fill: Fill) -> float:
        """Book a fill; returns the PnL it realized. A fill clears the holding's
        outstanding close: the monitor looks at what is left afresh."""
        h = self.holding(spec)
        h.closing = False
        return h.position.apply_fill(fill)

    def apply_funding(self, funding: FundingRate, mark: float) -> float:
        h = self.holdings.get(funding.instrument)
        if h is None or h.position.size == 0.0:
            return 0.0
        return h.position.apply_funding(funding, mark)

    def observe(self, equity: float, now_ns: int) -> None:
        """Move the peak up and, on the first look at a new UTC day, the day's start."""
        day = now_ns // DAY_NS
        if day > self.day:
            self.day = day
            self.day_start_equity = equity
        if equity > self.peak_equity:
            self.peak_equity = equity

    def rebase(self, equity: float, now_ns: int) -> None:
        """After a resume: the loss already taken no longer counts against the limits."""
        self.peak_equity = equity
        self.day_start_equity = equity
        self.day = now_ns // DAY_NS
