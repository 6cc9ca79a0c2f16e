"""Net exposure per asset across venues and strategies.

Each holding counts at its mark with its sign, whatever the venue or market kind: a Drift
SOL-PERP short of 20 SOL against a Jupiter SOL-USDC long of 20 SOL is a net SOL exposure of
about 0, while its gross is both legs. The quote currencies (USD, USDC, USDT) are the
numeraire, taken at par. Limits are per asset (risk.yaml ``exposure``); an asset without
one is not limited.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config.models import AssetExposureLimits

from actors.risk.account import PositionIndex


@dataclass(frozen=True, slots=True)
class AssetExposure:
    asset: str
    net: float  # quote units, + long
    gross: float
    long: float
    short: float  # <= 0
    by_venue: dict[str, float]  # net per venue
    max_net_notional: float | None
    max_gross_notional: float | None


class Exposure:
    __slots__ = ("max_net", "max_gross", "_index", "_marks")

    def __init__(self, limits: dict[str, AssetExposureLimits], index: PositionIndex, marks: dict[str, float]) -> None:
        self.max_net = {a: lim.max_net_notional for a, lim in limits.items() if lim.max_net_notional is not None}
        self.max_gross = {a: lim.max_gross_notional for a, lim in limits.items() if lim.max_gross_notional is not None}
        self._index = index
        self._marks = marks

    def totals(self, asset: str) -> tuple[float, float]:
        """Net and gross in one pass."""
        net = gross = 0.0
        marks = self._marks
        for h in self._index.by_asset.get(asset, ()):
            p = h.position
            q = p.size
            if q:
                value = q * (marks.get(h.key) or p.avg_entry_price)  # Holding.value, on the check's path
                net += value
                gross += abs(value)
        return net, gross

    def net(self, asset: str) -> float:
        return sum((h.value() for h in self._index.by_asset.get(asset, ())), 0.0)

    def gross(self, asset: str) -> float:
        return sum((h.notional() for h in self._index.by_asset.get(asset, ())), 0.0)

    def summary(self) -> list[AssetExposure]:
        rows = []
        for asset in sorted(set(self._index.by_asset) | set(self.max_net) | set(self.max_gross)):
            long = short = 0.0
            by_venue: dict[str, float] = {}
            for h in self._index.by_asset.get(asset, ()):
                v = h.value()
                if v > 0:
                    long += v
                else:
                    short += v
                by_venue[h.spec.venue] = by_venue.get(h.spec.venue, 0.0) + v
            rows.append(AssetExposure(asset, long + short, long - short, long, short, by_venue,
                                      self.max_net.get(asset), self.max_gross.get(asset)))
        return rows
