"""The domain model: plain, typed objects every component speaks.

Units (see docs/architecture in the shared docs and README "Units"):

* prices and sizes are float64 in human units (1.5 SOL, 172.31 USDC per SOL); venue
  precisions (Drift prices 1e6, base 1e9, funding 1e9) are converted at the venue edge
  and never appear here;
* timestamps are int64 nanoseconds since the Unix epoch, UTC (``ts_ns``);
* sizes are always positive; direction is carried by ``Side``; a position's ``size``
  is signed (long > 0);
* a funding rate is a fraction of notional per funding interval, positive when longs
  pay shorts.

Objects are frozen where they describe something that happened (a quote, a fill) and
mutable only where they accumulate (a position), whose changes go through methods that
enforce the rules. An order's lifecycle is ``cluster.orders``: frozen orders, changed
only by applying events to them.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any


class VenueKind(str, enum.Enum):
    PERP_DEX = "perp_dex"  # Drift
    SPOT_DEX = "spot_dex"  # Jupiter, Raydium
    CEX = "cex"  # through ccxt


class MarketKind(str, enum.Enum):
    SPOT = "spot"
    PERP = "perp"


class Side(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(str, enum.Enum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(str, enum.Enum):
    GTC = "gtc"
    IOC = "ioc"
    POST_ONLY = "post_only"


class Liquidity(str, enum.Enum):
    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True, slots=True)
class Venue:
    name: str
    kind: VenueKind
    maker_fee: float = 0.0  # fraction of notional; negative is a rebate
    taker_fee: float = 0.0


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable market on one venue.

    ``symbol`` is Botmain's name, shared by the same market on every venue so that the
    Market Data Server can consolidate across venues: ``SOL-PERP`` for a perpetual,
    ``SOL-USDC`` for spot. ``venue_symbol`` is what the venue calls it (``SOLUSDT``,
    ``SOL/USDC:USDC``, a Drift market index as text, a pool id).
    """

    venue: str
    symbol: str
    kind: MarketKind
    base: str
    quote: str
    venue_symbol: str
    tick_size: float | None = None
    lot_size: float | None = None
    min_size: float | None = None
    contract_size: float = 1.0
    max_size: float | None = None  # the largest order the venue takes, base units
    min_notional: float | None = None  # the smallest order the venue takes, quote units

    @property
    def key(self) -> str:
        return f"{self.venue}:{self.symbol}"

    def round_price(self, price: float, side: Side) -> float:
        """Round to the tick, never to a worse price for the order's owner.

        A buy rounds down and a sell rounds up, so a limit never pays more than asked.
        """
        if not self.tick_size:
            return price
        steps = price / self.tick_size
        steps = math.floor(steps + 1e-9) if side is Side.BUY else math.ceil(steps - 1e-9)
        return round(steps * self.tick_size, 12)

    def round_size(self, size: float) -> float:
        """Round a size down to the lot; a rounded size below ``min_size`` becomes 0."""
        if self.lot_size:
            size = round(math.floor(size / self.lot_size + 1e-9) * self.lot_size, 12)
        if self.min_size and size < self.min_size:
            return 0.0
        return size


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book on one venue."""

    ts_ns: int
    instrument: str  # Instrument.key
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    seq: int = 0  # the venue's update id, or the feed's own counter: orders same-ns quotes

    def __reduce__(self):  # positional rebuild pickles ~2.5x faster than the dataclass default
        return (Quote, (self.ts_ns, self.instrument, self.bid, self.bid_size, self.ask, self.ask_size, self.seq))

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)

    @property
    def spread_bps(self) -> float:
        return (self.ask - self.bid) / self.mid * 1e4


@dataclass(frozen=True, slots=True)
class L2Book:
    """An aggregated order book: price levels, best first on each side.

    ``bids`` descend and ``asks`` ascend; each level is ``(price, size)``.
    """

    ts_ns: int
    instrument: str
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    seq: int = 0  # the last venue update id applied

    def __reduce__(self):
        return (L2Book, (self.ts_ns, self.instrument, self.bids, self.asks, self.seq))

    def __post_init__(self) -> None:
        for name, levels, descending in (("bids", self.bids, True), ("asks", self.asks, False)):
            prices = [p for p, _ in levels]
            if prices != sorted(prices, reverse=descending):
                raise ValueError(f"L2Book {self.instrument}: {name} are not sorted best first")
            if any(s < 0 for _, s in levels):
                raise ValueError(f"L2Book {self.instrument}: negative size in {name}")
        if self.bids and self.asks and self.bids[0][0] >= self.asks[0][0]:
            raise ValueError(
                f"L2Book {self.instrument}: crossed book (bid {self.bids[0][0]} >= ask {self.asks[0][0]})"
            )

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None

    @property
    def mid(self) -> float | None:
        if not self.bids or not self.asks:
            return None
        return 0.5 * (self.bids[0][0] + self.asks[0][0])

    def average_fill_price(self, side: Side, size: float) -> float | None:
        """Volume-weighted price of taking ``size`` from the book, or None if too thin."""
        if not size > 0:
            raise ValueError(f"size must be positive, got {size!r}")
        levels = self.asks if side is Side.BUY else self.bids
        remaining, cost = size, 0.0
        tolerance = 1e-9 * size  # float error from summing level sizes
        for price, level_size in levels:
            take = min(remaining, level_size)
            cost += take * price
            remaining -= take
            if remaining <= tolerance:
                return cost / (size - remaining)
        return None


@dataclass(frozen=True, slots=True)
class Bar:
    """OHLCV candle; ``ts_ns`` is the open time, ``interval_s`` its length."""

    ts_ns: int
    instrument: str
    interval_s: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # base units

    def __reduce__(self):
        return (Bar, (self.ts_ns, self.instrument, self.interval_s, self.open, self.high, self.low, self.close, self.volume))


@dataclass(frozen=True, slots=True)
class Trade:
    """A public trade; ``side`` is the aggressor's."""

    ts_ns: int
    instrument: str
    price: float
    size: float
    side: Side
    trade_id: str

    def __reduce__(self):
        return (Trade, (self.ts_ns, self.instrument, self.price, self.size, self.side, self.trade_id))


@dataclass(frozen=True, slots=True)
class FundingRate:
    """One funding settlement: ``rate`` is a fraction of notional for ``interval_s``."""

    ts_ns: int
    instrument: str
    rate: float
    interval_s: int
    oracle_price: float | None = None
    mark_price: float | None = None

    def __reduce__(self):
        return (
            FundingRate,
            (self.ts_ns, self.instrument, self.rate, self.interval_s, self.oracle_price, self.mark_price),
        )

    @property
    def hourly_rate(self) -> float:
        return self.rate * 3600.0 / self.interval_s


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What a strategy wants; risk checks and the execution server turn it into an Order.

    Two shapes. A *quantity* order (``target`` None) trades ``size`` base units. A *target*
    order says which exposure the strategy wants to hold (``target``: fraction of its
    allocation's equity, + long, - short, 0 flat), the way the backtest decides; the venue
    client sizes it when it reaches the venue, with the simulator's sizing rules, and
    ``size`` is the strategy's estimate at ``reference_price`` (0 when it expects no
    trade), which the pre-trade checks use. ``ts_ns`` is the decision's event time (a bar's
    close, a quote's time); ``leg`` and ``seq`` number the intents of one decision, so that
    the client order id derived from them is the same however often the decision is
    replayed.
    """

    strategy: str
    instrument: str
    side: Side
    size: float
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    ts_ns: int = 0
    target: float | None = None
    reference_price: float | None = None
    leg: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        if self.target is None:
            if not (self.size > 0 and math.isfinite(self.size)):
                raise ValueError(f"order intent size must be a positive number, got {self.size!r}")
        else:
            if not math.isfinite(self.target):
                raise ValueError(f"order intent target must be a finite exposure, got {self.target!r}")
            if not (self.size >= 0 and math.isfinite(self.size)):
                raise ValueError(f"a target order's size estimate must be >= 0, got {self.size!r}")
            if self.order_type is not OrderType.MARKET:
                raise ValueError("a target order is a market order")
        if self.reference_price is not None and not (self.reference_price > 0 and math.isfinite(self.reference_price)):
            raise ValueError(f"order intent reference_price must be a positive number, got {self.reference_price!r}")
        if self.order_type is OrderType.LIMIT:
            if self.limit_price is None or not (self.limit_price > 0):
                raise ValueError("a limit order intent needs a positive limit_price")
        elif self.limit_price is not None:
            raise ValueError("a market order intent takes no limit_price")


class FillReason(str, enum.Enum):
    """Why a fill happened: the strategy's own decision, or a protective rule that closed
    the position for it (the simulator's exit reasons, same names)."""

    SIGNAL = "signal"
    STOP = "stop"
    AUTO_CLOSE = "auto_close"
    LIQUIDATION = "liquidation"
    KILL_SWITCH = "kill_switch"


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of an order, as the venue reported it.

    ``(venue, venue_fill_id)`` identifies it: venues re-deliver fills, and the same key
    again changes nothing. ``leaves_qty`` is what the venue says is still open after this
    fill, where it says so; it is how a target order (sized by the venue client) learns its
    quantity, and a target order whose fill leaves 0 is done. The order lifecycle that
    consumes fills is ``cluster.orders``.
    """

    client_order_id: str
    venue: str
    venue_fill_id: str
    ts_ns: int
    instrument: str  # Instrument.key
    side: Side
    qty: float
    price: float
    fee: float  # in quote units; negative is a rebate
    liquidity: Liquidity = Liquidity.TAKER
    reason: FillReason = FillReason.SIGNAL
    leaves_qty: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.venue, self.venue_fill_id)

    @property
    def signed_qty(self) -> float:
        return self.side.sign * self.qty


@dataclass(slots=True)
class Position:
    """Net position in one instrument, average-cost accounting.

    ``realized_pnl`` excludes fees and funding, which are tracked on their own so that a
    report can show each cost.
    """

    instrument: str
    size: float = 0.0  # signed, base units
    avg_entry_price: float = 0.0
    realized_pnl: float = 0.0
    fees_paid: float = 0.0
    funding_paid: float = 0.0  # positive = paid out
    strategy: str = ""  # whose position, where several strategies trade one instrument

    def apply_fill(self, fill: Fill) -> float:
        """Update with a fill; returns the PnL this fill realized."""
        signed = fill.signed_qty
        self.fees_paid += fill.fee
        realized = 0.0
        if self.size == 0 or (self.size > 0) == (signed > 0):
            new_size = self.size + signed
            self.avg_entry_price = (
                self.avg_entry_price * abs(self.size) + fill.price * abs(signed)
            ) / abs(new_size)
            self.size = new_size
        else:
            closing = min(abs(signed), abs(self.size))
            direction = 1.0 if self.size > 0 else -1.0
            realized = closing * (fill.price - self.avg_entry_price) * direction
            self.realized_pnl += realized
            new_size = self.size + signed
            if abs(new_size) < 1e-12:
                self.size, self.avg_entry_price = 0.0, 0.0
            elif (new_size > 0) != (self.size > 0):  # flipped through zero
                self.size, self.avg_entry_price = new_size, fill.price
            else:
                self.size = new_size
        return realized

    def apply_funding(self, funding: FundingRate, mark_price: float) -> float:
        """Charge one funding settlement; returns the amount paid (negative = received)."""
        paid = self.size * mark_price * funding.rate
        self.funding_paid += paid
        return paid

    def unrealized_pnl(self, mark_price: float) -> float:
        return self.size * (mark_price - self.avg_entry_price)

    def as_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "size": self.size,
            "avg_entry_price": self.avg_entry_price,
            "realized_pnl": self.realized_pnl,
            "fees_paid": self.fees_paid,
            "funding_paid": self.funding_paid,
            "strategy": self.strategy,
        }
