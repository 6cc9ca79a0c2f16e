"""The market as the monitor sees it: the actor tells it, the checks read it.

* marks per instrument (``venue:SYMBOL``): the mark or oracle price where the venue has one,
  else the mid of its quote. Positions are valued at them; a position whose instrument has
  no mark yet counts at its entry price (no unrealized PnL);
* the consolidated best bid and ask per symbol across the venues the MDS does not call
  stale, for the price band;
* the venues the MDS calls stale, to which no new order goes.
"""

from __future__ import annotations

from typing import Iterable


class MarketView:
    __slots__ = ("marks", "best_mid", "stale")

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.best_mid: dict[str, float] = {}  # symbol -> mid of the consolidated best bid and ask
        self.stale: frozenset[str] = frozenset()

    def set_mark(self, instrument: str, price: float) -> None:
        if not price > 0:
            raise ValueError(f"mark of {instrument} must be a positive price, got {price!r}")
        self.marks[instrument] = price

    def set_best(self, symbol: str, bid: float | None, ask: float | None) -> None:
        """The consolidated best; a side missing (no live venue quotes it) forgets the mid."""
        if bid and ask and ask >= bid > 0:
            self.best_mid[symbol] = 0.5 * (bid + ask)
        else:
            self.best_mid.pop(symbol, None)

    def set_stale(self, venues: Iterable[str]) -> None:
        self.stale = frozenset(venues)

    def mark(self, instrument: str) -> float | None:
        return self.marks.get(instrument)
