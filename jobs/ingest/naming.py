"""Resolve what a data file calls a market into a configured ``Instrument``.

Files name markets their own way (freqtrade ``SOL_USDT_USDT``, Binance ``BTCUSDT``,
Hyperliquid ``BTC``, Drift ``SOL-PERP``); each reader turns its file's name into the
venue's own symbol, the ``venue_symbol`` of the listings in ``venues.yaml``. A listing
wins; a market the config does not list is still ingested, under a derived Botmain symbol
and without tick/lot sizes, and the report says so. A derived symbol that is already a
listed instrument's (``binanceusdm`` ``BTCUSDC`` would be ``BTC-PERP``, listed as
``BTCUSDT``) is refused: its rows would be merged into the listed market's.
"""

from __future__ import annotations

from cluster.config import BotmainConfig
from cluster.domain import Instrument, MarketKind

QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BUSD", "USD", "BTC", "ETH")


class UnknownVenue(KeyError):
    """The venue is not in venues.yaml."""


class ListingConflict(KeyError):
    """An unlisted market would take a listed instrument's symbol."""


class InstrumentResolver:
    def __init__(self, config: BotmainConfig) -> None:
        self._config = config
        instruments = config.instruments()
        self._listed = {(i.venue, i.venue_symbol, i.kind): i for i in instruments}
        self._keys = {i.key: i for i in instruments}

    def check_venue(self, venue: str) -> None:
        if venue not in self._config.venues.venues:
            known = ", ".join(sorted(self._config.venues.venues))
            raise UnknownVenue(f"venue {venue!r} is not configured in venues.yaml (configured: {known})")

    def exchange(self, venue: str) -> str:
        """The venue's ccxt id (what freqtrade's folders are named after), else its name."""
        cfg = self._config.venues.venues.get(venue)
        return (cfg.ccxt_id if cfg is not None else None) or venue

    def is_listed(self, instrument: Instrument) -> bool:
        return self._keys.get(instrument.key) == instrument

    def resolve(self, venue: str, venue_symbol: str, kind: MarketKind, base: str, quote: str) -> Instrument:
        self.check_venue(venue)
        listed = self._listed.get((venue, venue_symbol, kind))
        if listed is not None:
            return listed
        symbol = f"{base}-PERP" if kind is MarketKind.PERP else f"{base}-{quote}"
        inst = Instrument(venue=venue, symbol=symbol, kind=kind, base=base, quote=quote, venue_symbol=venue_symbol)
        taken = self._keys.get(inst.key)
        if taken is not None:
            raise ListingConflict(
                f"{venue} {venue_symbol!r} would be stored as {inst.key}, which venues.yaml lists as "
                f"{taken.venue_symbol!r}: give {venue_symbol!r} a listing of its own to ingest it"
            )
        return inst


def split_pair(venue_symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` -> (``BTC``, ``USDT``), by the longest known quote suffix."""
    for quote in sorted(QUOTE_ASSETS, key=len, reverse=True):
        if venue_symbol.endswith(quote) and len(venue_symbol) > len(quote):
            return venue_symbol[: -len(quote)], quote
    raise ValueError(f"cannot split {venue_symbol!r} into base and quote assets")
