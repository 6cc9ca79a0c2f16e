"""The news feed against a fake site serving RSS 2.0, Atom and JSON Feed 1.1 on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from actors.feeds.errors import FeedConfigError
from actors.feeds.news import NewsFeed, parse_date, sentiment
from cluster.config import load_config
from cluster.config.models import BackoffConfig, NewsSourceConfig
from cluster.events import NewsItem
from tests.fakes.news import ATOM_PATH, JSON_PATH, RSS_PATH, FakeNews, Headline, at
from tests.feed_harness import run_feed

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "configs")
BASE = CONFIG.market_data.feeds.news
SOL = ("SOL-PERP", "SOL-USDC", "SOL-USDT")
BTC = ("BTC-PERP", "BTC-USDT")


def ns(moment) -> int:
    return int(moment.timestamp()) * 10**9


def item_id(source: str, key: str) -> str:
    return hashlib.sha256((source + key).encode()).hexdigest()[:32]


def settings_for(fake: FakeNews, **update):
    values = {
        "enabled": True,
        "sources": [
            NewsSourceConfig(name="wire", url=fake.url(RSS_PATH), format="rss"),
            NewsSourceConfig(name="ledger", url=fake.url(ATOM_PATH), format="atom"),
            NewsSourceConfig(name="daily", url=fake.url(JSON_PATH), format="json"),
        ],
        "keywords": {"BTC-PERP": ["satoshi"]},
        "poll_interval_s": 0.1,
        "request_timeout_s": 1.0,
        "backoff": BackoffConfig(initial_s=0.05, max_s=0.2),
    }
    values.update(update)
    return BASE.model_copy(update=values)


def run_against(fake: FakeNews, until, timeout_s: float = 5.0, **update):
    async def main():
        await fake.start()
        try:
            feed = NewsFeed(CONFIG, settings_for(fake, **update))
            sink, health = await run_feed(feed, until, timeout_s=timeout_s)
            return feed, sink, health
        finally:
            await fake.stop()

    return asyncio.run(main())


def news(sink) -> list[NewsItem]:
    return [e for e in sink.events if isinstance(e, NewsItem)]


def titles(sink, source: str | None = None) -> list[str]:
    return [e.title for e in news(sink) if source is None or e.source == source]


# (source, key, title, url, summary, published, instruments, sentiment); published None = receipt time.
EXPECTED = [
    ("daily", "daily-1", "Satoshi-era wallet moves coins", "https://daily.example/1", "Old coins moved.", at(6),
     ("BTC-PERP",), 0.0),
    ("ledger", "urn:ledger:3", "Bitcoin rally fades as liquidations mount", "https://ledger.example/3", None, at(7),
     BTC, 0.0),
    ("ledger", "urn:ledger:2", "SEC does not approve spot Solana ETF", "https://ledger.example/2",
     "The agency asked for more time.", at(8), SOL, -1.0),
    ("wire", "wire-4", "Drift Protocol exploit drains vaults", "https://wire.example/4", "Losses are under review.",
     at(9), (), -1.0),
    ("wire", "https://wire.example/3", "New staking solution launches for institutions", "https://wire.example/3",
     "A custody firm adds a staking product.", at(10), (), 0.0),
    ("wire", "wire-2", "Bitcoin miners face lawsuit after exchange hack", "https://wire.example/2",
     "Two suits were filed.", at(11), BTC, -1.0),
    ("wire", "wire-1", "Solana surges to record as ETF approval nears", "https://wire.example/1",
     "SOL rallied 12% on the week.", at(12), SOL, 1.0),
    ("daily", "daily-2", "Solana gains, but hack fears linger and a crash looms", "https://daily.example/2", None,
     None, SOL, -1 / 3),
]


def test_three_formats_parsed_tagged_scored_and_deduplicated_across_sources_and_polls():
    fake = FakeNews()
    late = Headline("wire-5", "Bitcoin ETF inflows hit a record", "https://wire.example/5", None, at(13))
    state = {"added": False}

    def until(sink, health):
        if len(news(sink)) >= len(EXPECTED) and not state["added"]:
            fake.feeds[RSS_PATH].append(late)  # appears on a later poll, between old items
            state["added"] = True
        return state["added"] and late.title in titles(sink) and min(fake.requests.values()) >= 4

    started = time.time_ns()
    feed, sink, health = run_against(fake, until)
    finished = time.time_ns()

    items = news(sink)
    first = items[: len(EXPECTED)]
    for item, (source, key, title, url, summary, published, instruments, score) in zip(first, EXPECTED):
        assert (item.source, item.item_id, item.title, item.url, item.summary) == (
            source, item_id(source, key), title, url, summary
        )
        assert item.instruments == instruments, title
        assert item.sentiment == pytest.approx(score), title
        if published is None:
            assert started <= item.ts_ns <= finished
        else:
            assert item.ts_ns == ns(published)
    # The Atom copy of the Drift headline (other id, case and punctuation) was dropped.
    assert "Drift protocol EXPLOIT drains vaults!" not in titles(sink)
    # Later polls re-read every feed but published only the new entry, once.
    assert len(items) == len(EXPECTED) + 1
    assert items[-1].title == late.title and items[-1].sentiment == 1.0 and items[-1].instruments == BTC
    assert len({i.item_id for i in items}) == len(items)
    assert health.errors == {} and health.reconnects == 0
    assert feed.status()["sources"]["ledger"]["items"] == 2


def test_one_failing_source_does_not_stop_the_others_and_recovers():
    fake = FakeNews()
    fake.modes[RSS_PATH] = "500"
    state = {"healed": False}

    def until(sink, health):
        if not state["healed"] and health.errors.get("unavailable", 0) >= 2:
            assert titles(sink, "wire") == []  # still failing, yet the others published
            assert set(titles(sink, "ledger")) and set(titles(sink, "daily"))
            fake.modes[RSS_PATH] = "ok"
            state["healed"] = True
        return state["healed"] and len(titles(sink, "wire")) == 3

    feed, sink, health = run_against(fake, until)

    assert health.errors.get("unavailable", 0) >= 2 and set(health.errors) == {"unavailable"}
    assert health.reconnects == 0  # the session never ended
    assert health.last_error.startswith("unavailable: news source wire (rss): HTTP 500")
    # The Drift headline went to the Atom source while the wire was down: it is not repeated.
    assert "Drift protocol EXPLOIT drains vaults!" in titles(sink, "ledger")
    assert "Drift Protocol exploit drains vaults" not in titles(sink, "wire")


def test_malformed_xml_entities_and_broken_json_count_as_malformed():
    fake = FakeNews()
    fake.modes.update({ATOM_PATH: "malformed", JSON_PATH: "malformed"})

    def until(sink, health):
        if health.errors.get("malformed", 0) >= 4 and fake.modes[ATOM_PATH] == "malformed":
            fake.modes.update({ATOM_PATH: "entities", JSON_PATH: "ok"})
            fake.feeds[RSS_PATH].append(Headline("wire-9", "Switch made", "https://wire.example/9"))
        return (
            "declares XML entities" in (health.last_error or "")
            and titles(sink, "daily")
            and "Switch made" in titles(sink, "wire")
        )

    feed, sink, health = run_against(fake, until)

    assert set(health.errors) == {"malformed"} and health.reconnects == 0
    status = feed.status()["sources"]
    assert "declares XML entities" in status["ledger"]["last_error"]
    assert titles(sink, "ledger") == []
    assert len(titles(sink, "wire")) == 5  # the RSS feed kept flowing throughout, each item once
    assert titles(sink, "daily")  # the JSON feed, fixed, was read


def test_bad_xml_is_reported_with_the_parser_position():
    fake = FakeNews()
    fake.modes.update({ATOM_PATH: "malformed"})

    def until(sink, health):
        return health.errors.get("malformed", 0) >= 1

    feed, _, health = run_against(fake, until)
    assert "not well-formed XML (mismatched tag: line" in feed.status()["sources"]["ledger"]["last_error"]


def test_timeout_and_rate_limit_on_single_sources_are_counted_and_retry_after_honoured():
    fake = FakeNews()
    fake.modes.update({JSON_PATH: "timeout", ATOM_PATH: "429"})
    fake.retry_after = "1"

    def until(sink, health):
        return health.errors.get("timeout", 0) >= 1 and health.errors.get("rate_limited", 0) >= 2

    started = time.monotonic()
    feed, sink, health = run_against(fake, until, request_timeout_s=0.3)
    elapsed = time.monotonic() - started

    # Polls come every ~0.4 s (0.3 s timeout + 0.1 s interval): the Atom source, told to
    # wait 1 s, sat out the polls in between and was asked again after that.
    assert elapsed >= 1.0
    assert fake.requests[ATOM_PATH] == 2 and fake.requests[RSS_PATH] >= 3
    assert health.errors["timeout"] >= 2
    assert health.reconnects == 0
    assert len(titles(sink, "wire")) == 4 and titles(sink, "ledger") == [] and titles(sink, "daily") == []


def test_every_source_failing_ends_the_session_then_retries_with_backoff():
    fake = FakeNews()
    fake.modes.update({RSS_PATH: "500", ATOM_PATH: "500", JSON_PATH: "429"})  # 429 without Retry-After

    def until(sink, health):
        # Heal only between sessions, so that no poll sees half old, half new modes.
        if health.reconnects >= 2 and health.state == "reconnecting" and fake.modes:
            fake.modes.clear()
        return len(news(sink)) >= len(EXPECTED)

    _, sink, health = run_against(fake, until)

    assert health.reconnects >= 2
    # Each failed request counted once: two 500s and a 429 per failed poll; the 429 is the
    # error that ended each session.
    assert health.errors["rate_limited"] == health.reconnects
    assert health.errors["unavailable"] == 2 * health.reconnects
    assert [i.title for i in news(sink)] == [e[2] for e in EXPECTED]


def test_sentiment_and_dates_on_known_text():
    assert sentiment("Solana surges to record") == 1.0
    assert sentiment("Exchange hack triggers liquidation cascade") == -1.0
    assert sentiment("SEC does not approve ETF") == -1.0
    assert sentiment("No hack, says team") == 1.0
    assert sentiment("Record gains erased by crash") == pytest.approx(1 / 3)
    assert sentiment("Markets are quiet") == 0.0
    assert parse_date("Fri, 08 Mar 2024 12:00:00 GMT") == ns(at(12))
    assert parse_date("Fri, 08 Mar 2024 07:00:00 -0500") == ns(at(12))
    assert parse_date("2024-03-08T12:00:00Z") == ns(at(12))
    assert parse_date("2024-03-08t13:00:00.5+01:00") == ns(at(12)) + 500_000_000
    assert parse_date("yesterday") is None


def test_settings_are_validated():
    fake = FakeNews()
    fake.port = 1
    with pytest.raises(FeedConfigError, match=r"feeds\.news\.keywords\.DOGE-PERP: unknown symbol"):
        NewsFeed(CONFIG, settings_for(fake, keywords={"DOGE-PERP": ["doge"]}))
    with pytest.raises(FeedConfigError, match=r"feeds\.news\.sources: empty"):
        NewsFeed(CONFIG, settings_for(fake, sources=[]))
    twice = [
        NewsSourceConfig(name="a", url="https://a.example/rss"),
        NewsSourceConfig(name="a", url="https://b.example/"),
    ]
    with pytest.raises(FeedConfigError, match=r"sources\[1\]\.name: 'a' is used twice"):
        NewsFeed(CONFIG, settings_for(fake, sources=twice))
    with pytest.raises(FeedConfigError, match="empty keyword"):
        NewsFeed(CONFIG, settings_for(fake, keywords={"SOL-PERP": [" "]}))
