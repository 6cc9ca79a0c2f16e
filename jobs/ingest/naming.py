"""Resolve what a data file calls a market into a configured ``Instrument``.

Files name markets their own way (freqtrade ``SOL_USDT_USDT``, Binance ``BTCUSDT``,
Hyperliquid ``BTC``, Drift ``SOL-PERP``). The venue's listings in ``configs/venues.yaml``
win; a market the config does not list is still ingested, under a derived Botmain
symbol and without tick/lot sizes, and the report says so.
"""

from __future__ import annotations

from cluster.config import BotmainConfig
from cluster.domain import Instrument, MarketKind

QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BUSD", "USD", "BTC", "ETH")


class InstrumentResolver:
    def __init__(self, config: BotmainConfig) -> None:
        self._config = config
        self._listed = {(i.venue, i.venue_symbol, i.kind): i for i in config.instruments()}
        self.unlisted: set[str] = set()

    def check_venue(self, venue: str) -> None:
        if venue not in self._config.venues.venues:
            known = ", ".join(sorted(self._config.venues.venues))
            raise KeyError(f"venue {venue!r} is not configured in venues.yaml (configured: {known})")

    def resolve(self, venue: str, venue_symbol: str, kind: MarketKind, base: str, quote: str) -> Instrument:
        self.check_venue(venue)
        listed = self._listed.get((venue, venue_symbol, kind))
        if listed is not None:
            return listed
        symbol = f"{base}-PERP" if kind is MarketKind.PERP else f"{base}-{quote}"
        inst = Instrument(venue=venue, symbol=symbol, kind=kind, base=base, quote=quote, venue_symbol=venue_symbol)
        self.unlisted.add(inst.key)
        return inst


def split_pair(venue_symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` -> (``BTC``, ``USDT``), by the longest known quote suffix."""
    for quote in sorted(QUOTE_ASSETS, key=len, reverse=True):
        if venue_symbol.endswith(quote) and len(venue_symbol) > len(quote):
            return venue_symbol[: -len(quote)], quote
    raise ValueError(f"cannot split {venue_symbol!r} into base and quote assets")
