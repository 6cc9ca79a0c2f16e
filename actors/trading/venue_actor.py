"""The paper venue as its own actor (``paper-venue``), and the venue client the Execution
Server reaches it through.

The paper venue stands where an exchange stands: outside the Execution Server's process,
so that when that process dies the venue still holds the orders it took, the fills it made
and the positions, and the restarted server reconciles against it, as it would against a
live venue. ``PaperVenueActor`` hosts one ``SimVenue``; ``RemoteVenue`` is a
``VenueClient`` over its handle. The actor's calls run one at a time on its event loop
(the venue's methods never wait inside), so each is atomic.

A venue actor that cannot be reached (dead, restarting) is ``VenueUnavailable`` to the
engine: the order's outcome is unknown until reconciled, never guessed. It is not
restarted by Ray: a paper venue that lost its memory would be a venue that forgot its
fills, which no restart can make good; the run fails instead (its journal stays).
"""

from __future__ import annotations

from collections.abc import Sequence

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

from actors.execution.sim_venue import SimVenue, StepReport
from actors.execution.venue import VenueBalance, VenueClient, VenueOrderReport, VenuePosition, VenueUnavailable
from cluster.domain import Fill
from cluster.orders import Order, OrderEvent
from sim.backtest import BacktestResult
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.stream import LegBar

_UNREACHABLE = (ActorDiedError, ActorUnavailableError, RayActorError, GetTimeoutError)


@ray.remote
class PaperVenueActor:
    def __init__(self, run_id: str, venues: Sequence[str]) -> None:
        self.venue = SimVenue(run_id, venues)

    async def open_account(self, strategy: str, legs: list[str], settings: SimSettings, bar_seconds: float) -> None:
        if not self.venue.has_account(strategy):
            self.venue.open_account(strategy, legs, settings, bar_seconds)

    async def on_bar(self, instrument: str, ts_ns: int, bar: LegBar) -> None:
        await self.venue.on_bar(instrument, ts_ns, bar)

    async def on_bars(self, legs: list[str], ts_ns: int, bars: list[LegBar]) -> None:
        await self.venue.on_bars(legs, ts_ns, bars)

    async def close_bar(self, strategy: str, close_ts_ns: int) -> list[StepReport]:
        return await self.venue.close_bar(strategy, close_ts_ns)

    async def step(self, strategy: str, legs: list[str], ts_ns: int, bars: list[LegBar], close_ts_ns: int) -> list[StepReport]:
        return await self.venue.step(strategy, legs, ts_ns, bars, close_ts_ns)

    async def submit(self, order: Order) -> list[OrderEvent]:
        return await self.venue.submit(order)

    async def cancel(self, order: Order) -> list[OrderEvent]:
        return await self.venue.cancel(order)

    async def modify(self, order: Order, quantity: float | None, limit_price: float | None) -> list[OrderEvent]:
        return await self.venue.modify(order, quantity, limit_price)

    async def order_status(self, client_order_id: str) -> VenueOrderReport | None:
        return await self.venue.order_status(client_order_id)

    async def fills_since(self, seq: int) -> tuple[list[Fill], int]:
        return await self.venue.fills_since(seq)

    async def positions(self) -> list[VenuePosition]:
        return await self.venue.positions()

    async def balances(self) -> list[VenueBalance]:
        return await self.venue.balances()

    async def reports_after(self, strategy: str, close_ns: int) -> list[StepReport]:
        """The steps of ``strategy`` closing after ``close_ns``: what a restarted server
        may not have journaled."""
        if not self.venue.has_account(strategy):
            return []
        return [r for r in self.venue.reports(strategy) if r.close_ts_ns > close_ns]

    async def accounts(self) -> list[str]:
        return self.venue.accounts()

    async def finish(self, strategy: str, impl: Strategy) -> BacktestResult:
        return self.venue.finish(strategy, impl)


class RemoteVenue(VenueClient):
    """The paper-venue actor as a venue client (and the paper-only market calls the
    Execution Server's bar flow uses: ``on_bars``, ``close_bar``, ``step``)."""

    def __init__(self, handle, venues: Sequence[str], timeout_s: float = 30.0) -> None:
        self.handle = handle
        self.venues = frozenset(venues)
        self.timeout_s = timeout_s

    async def _call(self, method: str, *args):
        try:
            return await getattr(self.handle, method).remote(*args)
        except _UNREACHABLE as exc:
            raise VenueUnavailable(f"the paper venue is unreachable: {type(exc).__name__}") from exc

    async def on_bar(self, instrument: str, ts_ns: int, bar: LegBar) -> None:
        await self._call("on_bar", instrument, ts_ns, bar)

    async def on_bars(self, legs: Sequence[str], ts_ns: int, bars: Sequence[LegBar]) -> None:
        await self._call("on_bars", list(legs), ts_ns, list(bars))

    async def close_bar(self, strategy: str, close_ts_ns: int) -> list[StepReport]:
        return await self._call("close_bar", strategy, close_ts_ns)

    async def step(self, strategy: str, legs, ts_ns: int, bars, close_ts_ns: int) -> list[StepReport]:
        return await self._call("step", strategy, list(legs), ts_ns, list(bars), close_ts_ns)

    async def submit(self, order: Order) -> list[OrderEvent]:
        return await self._call("submit", order)

    async def cancel(self, order: Order) -> list[OrderEvent]:
        return await self._call("cancel", order)

    async def modify(self, order: Order, quantity: float | None, limit_price: float | None) -> list[OrderEvent]:
        return await self._call("modify", order, quantity, limit_price)

    async def order_status(self, client_order_id: str) -> VenueOrderReport | None:
        return await self._call("order_status", client_order_id)

    async def fills_since(self, seq: int) -> tuple[list[Fill], int]:
        return await self._call("fills_since", seq)

    async def positions(self) -> list[VenuePosition]:
        return await self._call("positions")

    async def balances(self) -> list[VenueBalance]:
        return await self._call("balances")
