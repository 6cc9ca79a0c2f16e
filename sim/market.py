"""The kernel's market inputs for one frame and one set of settings, computed once.

Volatility and volume for the impact model and the trailing stop are taken over the
window that ends at the previous bar's close, so an order filled in bar ``i`` never
prices itself with bar ``i``'s own range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.settings import SimSettings
from strategies.frame import Frame
from strategies.indicators import rolling_mean, rolling_return_std, shift_forward


@dataclass(frozen=True)
class MarketArrays:
    open: np.ndarray  # (legs, bars)
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    sigma: np.ndarray  # per-bar return std over the impact window, known before the bar
    volume: np.ndarray  # mean bar volume over the impact window, known before the bar
    stop_sigma: np.ndarray  # per-bar return std over the stop window, known before the bar
    funding: np.ndarray
    book_off: np.ndarray  # (legs, bars, 2, levels) or (legs, 0, 0, 0)
    book_size: np.ndarray

    @classmethod
    def build(cls, frame: Frame, settings: SimSettings, books: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> MarketArrays:
        if len(settings.legs) != len(frame.legs):
            raise ValueError(f"settings describe {len(settings.legs)} leg(s), the frame has {len(frame.legs)}")
        n = len(frame)
        if n < 2:
            raise ValueError(f"a backtest needs at least 2 bars, the frame has {n}")

        def stack(name: str) -> np.ndarray:
            return np.ascontiguousarray(np.vstack([getattr(leg, name) for leg in frame.legs]), dtype=np.float64)

        sigma, volume, stop_sigma = [], [], []
        for leg, costs in zip(frame.legs, settings.legs, strict=True):
            w = costs.impact_window_bars
            sigma.append(shift_forward(rolling_return_std(leg.close, w)))
            volume.append(shift_forward(rolling_mean(leg.volume, w)))
            stop_sigma.append(shift_forward(rolling_return_std(leg.close, settings.risk.stop_window)))
        levels = max((b[0].shape[-1] for b in (books or {}).values()), default=0)
        if levels:
            book_off = np.zeros((len(frame.legs), n, 2, levels))
            book_size = np.zeros_like(book_off)
            for i, (off, size) in books.items():
                book_off[i], book_size[i] = off, size
        else:
            book_off = np.zeros((len(frame.legs), 0, 0, 0))
            book_size = book_off
        return cls(
            open=stack("open"),
            high=stack("high"),
            low=stack("low"),
            close=stack("close"),
            sigma=np.vstack(sigma),
            volume=np.vstack(volume),
            stop_sigma=np.vstack(stop_sigma),
            funding=stack("funding"),
            book_off=book_off,
            book_size=book_size,
        )
