"""The execution engine against the real journal (embedded PostgreSQL) and the paper venue:
routing (fixed, the selector, the whitepaper rule, stale venues), outcomes that stay
unknown until reconciled, definitive rejections, and a reconciliation that halts."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest

from actors.execution.engine import ExecutionEngine, ReconcileMismatch, TradingPaused
from actors.execution.router import NoRoute, Router, RuleInputs
from actors.execution.sim_venue import SimVenue
from actors.execution.venue import VenueUnavailable
from cluster.domain import OrderIntent, Side
from cluster.orders import OrderState, Route
from cluster.store.journal import Journal
from sim.settings import SimSettings
from strategies.stream import LegBar

_runs = itertools.count()
T0 = 1_700_000_000_000_000_000
MINUTE = 60_000_000_000


def intent(instrument="binanceusdm:SOL-PERP", target=0.5, ts=T0 + MINUTE, seq=0, size=10.0, side=Side.BUY):
    return OrderIntent(strategy="sol_ema_cross", instrument=instrument, side=side, size=size, ts_ns=ts,
                       target=target, reference_price=100.0, leg=0, seq=seq, reduce_only=target == 0.0)  # fmt: skip


class LosingAnswers(SimVenue):
    """The paper venue behind a link that loses the venue's answer to the next ``lose``
    submits: the venue took the order, the engine hears a timeout."""

    lose = 0

    async def submit(self, order):
        events = await super().submit(order)
        if self.lose:
            self.lose -= 1
            raise VenueUnavailable("timed out waiting for the venue's answer")
        return events


async def parts(config, dsn, venue_cls=SimVenue, decide=None):
    run_id = f"engine-{next(_runs)}"
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    journal = Journal(pool)
    await journal.open_run(run_id, mode="paper", strategy="sol_ema_cross")
    venue = venue_cls(run_id, list(config.venues.venues))
    settings = SimSettings.from_config(config, ["binanceusdm:SOL-PERP"], "sol_ema_cross")
    venue.open_account("sol_ema_cross", ["binanceusdm:SOL-PERP"], settings, 60.0)
    engine = ExecutionEngine(journal, run_id, [venue], Router(config, decide=decide), clock=lambda: T0 + MINUTE)
    return pool, journal, venue, engine


def bar(price=100.0):
    return LegBar(price, price * 1.001, price * 0.999, price, 1_000.0, 0.0, False)


def test_nothing_goes_out_before_the_first_reconciliation(lake_config, dsn):
    async def main():
        pool, journal, venue, engine = await parts(lake_config, dsn)
        try:
            with pytest.raises(TradingPaused, match="not reconciled"):
                await engine.submit(intent())
            assert not await journal.orders(engine.run_id)
            await engine.reconcile()
            result = await engine.submit(intent())
            assert result.sent and result.order.state is OrderState.ACCEPTED
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_lost_answer_stays_unknown_until_reconciled_and_is_never_sent_twice(lake_config, dsn):
    async def main():
        pool, journal, venue, engine = await parts(lake_config, dsn, LosingAnswers)
        try:
            await engine.reconcile()
            venue.lose = 1
            result = await engine.submit(intent())
            assert result.order.state is OrderState.SUBMITTED and result.order.unknown_since_ns is not None
            (stored,) = await journal.in_flight_orders(engine.run_id)
            assert stored.state is OrderState.SUBMITTED, "a timeout must not reject"
            again = await engine.submit(intent())  # the strategy replays its decision
            assert not again.sent and len(venue._orders) == 1
            summary = await engine.reconcile()
            assert summary["resolved"] == 1
            order = await journal.order(result.order.client_order_id)
            assert order.state is OrderState.ACCEPTED and order.venue_order_id
            # the bar closes: the order fills once
            await venue.on_bar("binanceusdm:SOL-PERP", T0, bar())
            for report in await venue.close_bar("sol_ema_cross", T0 + MINUTE):
                await engine.on_step(report)
            await venue.on_bar("binanceusdm:SOL-PERP", T0 + MINUTE, bar(101.0))
            for report in await venue.close_bar("sol_ema_cross", T0 + 2 * MINUTE):
                await engine.on_step(report)
                await engine.on_step(report)  # re-delivered: a no-op
            order = await journal.order(result.order.client_order_id)
            assert order.state is OrderState.FILLED
            fills = await journal.fills(engine.run_id)
            assert len(fills) == 1 and fills[0].client_order_id == order.client_order_id
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_definitive_refusal_rejects(lake_config, dsn):
    async def main():
        pool, journal, venue, engine = await parts(lake_config, dsn)
        try:
            await engine.reconcile()
            quantity = intent(target=None, size=3.0)  # not a whole-position close: the paper venue refuses
            result = await engine.submit(quantity)
            assert result.order.state is OrderState.REJECTED
            assert "trades to targets" in result.order.reason
            assert not await journal.in_flight_orders(engine.run_id)
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_position_the_journal_cannot_explain_halts_the_engine(lake_config, dsn):
    async def main():
        pool, journal, venue, engine = await parts(lake_config, dsn)
        try:
            await engine.reconcile()
            await engine.submit(intent())
            await venue.on_bar("binanceusdm:SOL-PERP", T0, bar())
            await venue.close_bar("sol_ema_cross", T0 + MINUTE)
            await venue.on_bar("binanceusdm:SOL-PERP", T0 + MINUTE, bar())
            await venue.close_bar("sol_ema_cross", T0 + 2 * MINUTE)  # filled; the engine never heard
            venue._fills.clear()  # and the venue's fill report is gone: only the position remains
            with pytest.raises(ReconcileMismatch, match="the journal's fills make"):
                await engine.reconcile()
            with pytest.raises(ReconcileMismatch):
                await engine.submit(intent(target=0.0, ts=T0 + 3 * MINUTE, side=Side.SELL))
            assert engine.halted
        finally:
            await pool.close()

    asyncio.run(main())


def test_routing_fixed_markets_and_stale_venues(lake_config):
    router = Router(lake_config)

    async def main():
        routed = await router.route(intent())
        assert (routed.instrument, routed.route) == ("binanceusdm:SOL-PERP", Route.FIXED)
        with pytest.raises(NoRoute, match="stale"):
            await router.route(intent(), stale={"binanceusdm"})
        # a symbol-only intent: the rule decides, skipping a stale venue until it recovers
        rising = RuleInputs(drift_funding_rate=1e-4, jupiter_price=None, raydium_price=None)
        assert (await router.route(intent("SOL-PERP"), rule=rising)).instrument == "drift:SOL-PERP"
        away = await router.route(intent("SOL-PERP"), stale={"drift"}, rule=rising)
        assert away.instrument != "drift:SOL-PERP" and away.route is Route.RULE_FALLBACK
        assert (await router.route(intent("SOL-PERP"), stale=set(), rule=rising)).instrument == "drift:SOL-PERP"
        with pytest.raises(NoRoute):
            await router.route(intent("SOL-PERP"), stale={"drift", "binanceusdm", "hyperliquid"})

    asyncio.run(main())


def test_the_whitepaper_rule(lake_config):
    router = Router(lake_config)
    spot = router.candidates("SOL-USDC")

    def pick(f, jup, ray):
        return Router.rule(spot + router.candidates("SOL-PERP"), RuleInputs(f, jup, ray))

    assert pick(-1e-4, 99.0, 100.0) == "jupiter:SOL-USDC"  # shorts pay longs, Jupiter cheaper
    assert pick(1e-4, 99.0, 100.0) == "drift:SOL-PERP"  # longs pay: the perp
    assert pick(-1e-4, 101.0, 100.0) == "raydium:SOL-USDC"
    assert pick(None, None, None) == "raydium:SOL-USDC"


def test_the_selector_decides_and_the_rule_stands_in_when_it_fails(lake_config):
    async def chooses_jupiter(request):
        assert request["venues"] and request["instrument"] == "SOL"
        return {"market": "jupiter:SOL-USDC", "note": "cheapest"}

    async def hangs(request):
        await asyncio.sleep(5)

    async def refuses(request):
        raise ConnectionRefusedError("connection refused")

    async def main():
        routed = await Router(lake_config, decide=chooses_jupiter).route(intent("SOL"))
        assert (routed.instrument, routed.route, routed.note) == ("jupiter:SOL-USDC", Route.SELECTOR, "cheapest")
        slow = await Router(lake_config, decide=hangs, timeout_s=0.05).route(intent("SOL"))
        assert slow.route is Route.RULE_FALLBACK and "did not answer within 50 ms" in slow.note
        down = await Router(lake_config, decide=refuses).route(intent("SOL"))
        assert down.route is Route.RULE_FALLBACK and "ConnectionRefusedError" in down.note
        stale = await Router(lake_config, decide=chooses_jupiter).route(intent("SOL"), stale={"jupiter"})
        assert stale.route is Route.RULE_FALLBACK and "not a candidate" in stale.note

    asyncio.run(main())
