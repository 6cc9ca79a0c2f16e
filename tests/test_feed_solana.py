"""The Solana feed against a fake RPC node (HTTP JSON-RPC + websocket PubSub on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from actors.feeds.errors import FeedConfigError
from actors.feeds.solana import SolanaFeed, derive_ws_url
from cluster.config import load_config
from cluster.config.models import BackoffConfig
from cluster.events import ChainEvent
from tests.fakes.solana_rpc import INSTRUCTION_ERROR, FakeSolanaRpc
from tests.feed_harness import run_feed

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "configs")
BASE = CONFIG.market_data.feeds.solana
PROGRAM_NAME = {program_id: name for name, program_id in BASE.programs.items()}
JUPITER = BASE.programs["jupiter"]
FEE_ACCOUNTS = [str(Pubkey.new_unique()) for _ in range(3)]

# slot -> micro-lamports per CU. Sorted fees: 0 50 100 200 300 1000 5000 (n = 7), so
# median = the 4th = 200; p75 sits at rank 0.75 * 6 = 4.5, halfway from 300 to 1000 = 650.
FEES = [(311, 100), (305, 0), (309, 5000), (306, 300), (312, 50), (307, 1000), (308, 200)]
EXPECTED_FEES = {"min": 0.0, "median": 200.0, "p75": 650.0, "max": 5000.0, "samples": 7}


@pytest.fixture(autouse=True)
def _no_rpc_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOTMAIN_SOLANA_RPC_URL", raising=False)
    monkeypatch.delenv("BOTMAIN_SOLANA_RPC_URL_FILE", raising=False)


def settings_for(fake: FakeSolanaRpc, **update):
    values = {
        "enabled": True,
        "rpc_url": fake.http_url,  # ws_url left unset: derived as ws://127.0.0.1:P+1
        "commitment": "processed",
        "priority_fee_accounts": FEE_ACCOUNTS,
        "priority_fee_interval_s": 0.05,
        "request_timeout_s": 2.0,
        "backoff": BackoffConfig(initial_s=0.05, max_s=0.2),
    }
    values.update(update)
    return BASE.model_copy(update=values)


def of_kind(events: list, kind: str) -> list[ChainEvent]:
    return [e for e in events if isinstance(e, ChainEvent) and e.kind == kind]


def run_against(fake: FakeSolanaRpc, until, timeout_s: float = 5.0, **update):
    async def main():
        await fake.start()
        try:
            feed = SolanaFeed(CONFIG, settings_for(fake, **update))
            sink, health = await run_feed(feed, until, timeout_s=timeout_s)
            return feed, sink, health
        finally:
            await fake.stop()

    return asyncio.run(main())


def logs_per_program(events: list, signatures: set[str] | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in of_kind(events, "log"):
        if signatures is None or e.signature in signatures:
            counts[e.program] = counts.get(e.program, 0) + 1
    return counts


def test_slots_logs_and_priority_fees_arrive_as_chain_events():
    fake = FakeSolanaRpc(fees=FEES, failing_program=JUPITER)

    def until(sink, health):
        counts = logs_per_program(sink.events)
        return len(counts) == 3 and min(counts.values()) >= 3 and of_kind(sink.events, "priority_fee")

    feed, sink, health = run_against(fake, until)

    # One slotSubscribe and one logsSubscribe per program, each mentioning exactly one address.
    requests = [r for conn, r in fake.subscribe_requests if conn == 1]
    assert [r["method"] for r in requests] == ["slotSubscribe"] + ["logsSubscribe"] * 3
    assert [r["id"] for r in requests] == [1, 2, 3, 4]
    assert [r["params"] for r in requests[1:]] == [
        [{"mentions": [program_id]}, {"commitment": "processed"}] for program_id in BASE.programs.values()
    ]

    sent = {s.slot: s for s in fake.sent if s.kind == "slot"}
    slots = of_kind(sink.events, "slot")
    assert len(slots) >= 3
    for event in slots:
        assert event.payload == {"parent": sent[event.slot].parent, "root": sent[event.slot].root}
        assert event.signature == "" and event.program is None

    sent_logs = {s.signature: s for s in fake.sent if s.kind == "log"}
    logs = of_kind(sink.events, "log")
    for event in logs:
        origin = sent_logs[event.signature]
        assert event.program == PROGRAM_NAME[origin.program_id]
        assert event.slot == origin.slot
        assert event.payload["logs"][1] == f"Program log: slot {origin.slot}"
        expected_err = '{"InstructionError":[0,{"Custom":6001}]}' if origin.err == INSTRUCTION_ERROR else None
        assert event.payload["err"] == expected_err
    assert {e.program for e in logs} == {"drift", "jupiter", "raydium_amm_v4"}
    assert any(e.payload["err"] for e in logs if e.program == "jupiter")

    fee = of_kind(sink.events, "priority_fee")[0]
    assert fee.slot == 312 and fee.payload == EXPECTED_FEES
    assert fake.fee_requests[0]["method"] == "getRecentPrioritizationFees"
    assert fake.fee_requests[0]["params"] == [FEE_ACCOUNTS]

    assert health.errors == {} and health.reconnects == 0
    status = feed.status()
    assert set(status["subscriptions"]) == {"slots", "drift", "jupiter", "raydium_amm_v4"}
    assert status["priority_fees"] == EXPECTED_FEES


def test_websocket_drop_mid_stream_reconnects_and_resubscribes():
    fake = FakeSolanaRpc(drop_after=[3])  # the first connection dies after 3 rounds

    def second_connection_signatures() -> set[str]:
        return {s.signature for s in fake.sent if s.kind == "log" and s.connection == 2}

    def until(sink, health):
        counts = logs_per_program(sink.events, second_connection_signatures())
        return health.reconnects >= 1 and len(counts) == 3 and min(counts.values()) >= 2

    feed, sink, health = run_against(fake, until)

    assert health.errors.get("disconnected", 0) >= 1
    assert health.reconnects >= 1
    assert "websocket closed" in (health.last_error or "")
    # The second connection subscribed again, got new ids, and they map to the right names.
    methods = {conn: [r["method"] for c, r in fake.subscribe_requests if c == conn] for conn in (1, 2)}
    assert methods[1] == methods[2] == ["slotSubscribe"] + ["logsSubscribe"] * 3
    subs = {conn: {s.subscription for s in fake.sent if s.connection == conn} for conn in (1, 2)}
    assert subs[1].isdisjoint(subs[2])
    sent_logs = {s.signature: s for s in fake.sent if s.kind == "log"}
    after = [e for e in of_kind(sink.events, "log") if sent_logs[e.signature].connection == 2]
    assert after and all(e.program == PROGRAM_NAME[sent_logs[e.signature].program_id] for e in after)
    first_rounds = {s.slot for s in fake.sent if s.kind == "slot" and s.connection == 1}
    assert len(first_rounds) == 3
    assert {e.slot for e in of_kind(sink.events, "slot")} >= first_rounds  # nothing before the drop was lost


def test_priority_fee_errors_are_counted_and_the_stream_carries_on(monkeypatch: pytest.MonkeyPatch):
    fake = FakeSolanaRpc(fees=FEES)
    fake.fee_modes = ["http_429", "rpc_error", "rpc_rate_limited", "malformed", "wrong_shape", "http_500"]

    def until(sink, health):
        return len(fake.fee_requests) >= 7 and of_kind(sink.events, "priority_fee")

    async def main():
        await fake.start()
        # The RPC URL comes from the secret, which wins over rpc_url; its key must not leak.
        monkeypatch.setenv("BOTMAIN_SOLANA_RPC_URL", fake.http_url + "/?api-key=sekrit")
        try:
            feed = SolanaFeed(CONFIG, settings_for(fake, rpc_url="http://rpc.invalid:1"))
            sink, health = await run_feed(feed, until, timeout_s=5.0)
            return feed, sink, health
        finally:
            await fake.stop()

    feed, sink, health = asyncio.run(main())

    assert health.errors == {"rate_limited": 2, "rejected": 1, "malformed": 2, "unavailable": 1}
    assert health.last_error.startswith("unavailable: getRecentPrioritizationFees at http://127.0.0.1:")
    assert "sekrit" not in health.last_error and "sekrit" not in str(feed.status())
    # Fee failures never tore the websocket down: one connection, slots throughout.
    assert health.reconnects == 0 and fake.connections == 1
    assert of_kind(sink.events, "slot")
    fees = of_kind(sink.events, "priority_fee")
    assert len(fees) == 1 and fees[0].payload == EXPECTED_FEES


def test_silent_websocket_times_out_and_reconnects():
    fake = FakeSolanaRpc(silent=True)

    def until(sink, health):
        return health.errors.get("timeout", 0) >= 1 and any(conn == 2 for conn, _ in fake.subscribe_requests)

    _, _, health = run_against(fake, until, request_timeout_s=0.3)

    assert health.reconnects >= 1
    assert "no websocket message" in health.last_error
    assert [r["method"] for c, r in fake.subscribe_requests if c == 2][:1] == ["slotSubscribe"]


def test_refused_subscription_ends_the_session_as_rejected():
    fake = FakeSolanaRpc(reject_logs=True)

    def until(sink, health):
        return health.errors.get("rejected", 0) >= 2

    _, _, health = run_against(fake, until)

    assert health.reconnects >= 2 and fake.connections >= 2
    assert "Only 1 address supported" in health.last_error


def test_refused_websocket_upgrade_is_classified_and_retried():
    fake = FakeSolanaRpc()
    fake.refuse_upgrades = [429, 503]

    def until(sink, health):
        return of_kind(sink.events, "log")

    _, sink, health = run_against(fake, until)

    assert health.errors == {"rate_limited": 1, "unavailable": 1}
    assert health.reconnects == 2
    assert health.last_error == f"unavailable: websocket upgrade at ws://127.0.0.1:{fake.port + 1}: HTTP 503"
    assert of_kind(sink.events, "slot")


def test_settings_are_validated_and_the_ws_url_derived():
    base = BASE.model_copy(update={"rpc_url": "https://rpc.example.com/v1/key"})
    assert SolanaFeed(CONFIG, base).ws_url == "wss://rpc.example.com/v1/key"
    assert derive_ws_url("http://127.0.0.1:8899") == "ws://127.0.0.1:8900"
    assert derive_ws_url("https://user:pw@rpc.example.com:8443/x?k=1") == "wss://user:pw@rpc.example.com:8444/x?k=1"
    assert SolanaFeed(CONFIG, base.model_copy(update={"ws_url": "ws://elsewhere:1"})).ws_url == "ws://elsewhere:1"

    with pytest.raises(FeedConfigError, match=r"feeds\.solana\.programs\.bogus: 'nope' is not a base58"):
        SolanaFeed(CONFIG, base.model_copy(update={"programs": {"bogus": "nope"}}))
    too_many = [str(Pubkey.new_unique()) for _ in range(129)]
    with pytest.raises(FeedConfigError, match="129 accounts.*at most 128"):
        SolanaFeed(CONFIG, base.model_copy(update={"priority_fee_accounts": too_many}))
    with pytest.raises(FeedConfigError, match=r"priority_fee_accounts\[1\]"):
        SolanaFeed(CONFIG, base.model_copy(update={"priority_fee_accounts": FEE_ACCOUNTS[:1] + ["0xdead"]}))
    with pytest.raises(FeedConfigError, match="set ws_url"):
        SolanaFeed(CONFIG, base.model_copy(update={"rpc_url": "ftp://rpc.example.com"}))
