"""The news feed: headlines from RSS 2.0, Atom and JSON Feed 1.1 sources, as ``NewsItem``s.

Every ``poll_interval_s`` each configured source is fetched (concurrently) and parsed:

* RSS 2.0: ``channel/item`` with ``title``, ``link``, ``guid``, ``description``, ``pubDate``
  (else ``dc:date``);
* Atom (RFC 4287): ``entry`` with ``title``, ``id``, ``link[@rel=alternate]/@href``,
  ``summary`` (else ``content``), ``published`` (else ``updated``);
* JSON Feed 1.1 (https://jsonfeed.org/version/1.1): ``items`` with ``id``, ``url``, ``title``,
  ``summary`` (else ``content_text``, else ``content_html``), ``date_published`` (else
  ``date_modified``).

Each entry becomes a ``NewsItem``:

* ``item_id`` = the first 32 hex digits of sha256(source name + (guid/id, else link, else
  title)): stable across polls, distinct across sources;
* ``ts_ns`` = the entry's own date (RFC 822 for RSS, RFC 3339 for Atom and JSON Feed; either
  is accepted anywhere), else the time the poll received it;
* ``instruments`` = the venues.yaml symbols whose base asset (``SOL``), that asset's common
  name (``COMMON_NAMES``: SOL -> Solana, BTC -> Bitcoin, ETH -> Ethereum/Ether) or one of
  the symbol's ``keywords`` occurs as a whole word in the title or summary, ignoring case:
  "SOL" and "Solana's" tag SOL-PERP, SOL-USDC and SOL-USDT, "solution" tags nothing;
* ``sentiment``: see ``sentiment()``: (positive - negative) / (positive + negative) over
  whole-word hits from two small word lists, in [-1, 1], 0 when nothing matched.

Duplicates are dropped across polls and across sources: an entry whose ``item_id`` or whose
normalised title (lower case, punctuation and spacing collapsed) was seen before is not
published again; the first source in configuration order wins. The memory is bounded
(``SEEN_MAX`` of each, oldest forgotten first), so an entry that stays in a feed longer
than that many newer ones would be published twice.

Failures: one source that fails a poll (HTTP 429 -> ``rate_limited``, 5xx -> ``unavailable``,
timeout, a body that is not well-formed XML or JSON, or not the configured format ->
``malformed``) is counted with ``self.out.error`` and the other sources' entries are still
published. A source that sent Retry-After is not asked again before it has passed. Only
when every source asked in a poll failed does the session end, with the failure carrying
the longest Retry-After (else the first), so that the runner's backoff spaces the retries
instead of the poll interval hammering sources that are all down; each failure is counted
once either way.

XML is parsed with the standard library's expat, through ElementTree's TreeBuilder, with
entity declarations refused: a document that declares entities (the "billion laughs" and
external-entity attacks) is ``malformed``, and no external entity or DTD is ever fetched.
Bodies above ``MAX_BODY_BYTES`` are refused as ``malformed``.

Simplifications: no conditional GET (ETag/If-Modified-Since; the dedup makes re-reads
harmless, only the bandwidth is spent); HTML in titles and summaries is reduced to text
by dropping tags and unescaping entities, and summaries are cut to ``SUMMARY_MAX``
characters; an entry with neither title nor text is skipped (counted in ``status()``);
RSS 1.0 (RDF) is not read.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import html
import logging
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from xml.parsers import expat

import aiohttp
import orjson

from actors.feeds.base import Feed, classify
from actors.feeds.errors import (
    FeedConfigError,
    FeedError,
    MalformedResponse,
    RateLimited,
)
from actors.feeds.http import request_body, snippet
from cluster.config import BotmainConfig
from cluster.config.models import NewsFeedConfig, NewsSourceConfig
from cluster.events import NewsItem

log = logging.getLogger(__name__)

SEEN_MAX = 10_000  # item ids and titles remembered for de-duplication (each)
SUMMARY_MAX = 1_000  # characters of summary kept
TITLE_FROM_TEXT_MAX = 120  # an untitled entry is titled with this much of its text
MAX_BODY_BYTES = 10 * 1024 * 1024
USER_AGENT = "botmain-news/1.0 (+feed reader)"

ATOM = "{http://www.w3.org/2005/Atom}"
DUBLIN_CORE = "{http://purl.org/dc/elements/1.1/}"

# Base asset -> the names headlines use for it (whole words, any case).
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "SOL": ("Solana",),
    "BTC": ("Bitcoin",),
    "ETH": ("Ethereum", "Ether"),
}

# The sentiment lexicon: market-news words whose direction rarely depends on context.
POSITIVE_WORDS = frozenset(
    """
    surge surges surged surging rally rallies rallied rallying gain gains gained soar soars
    soared soaring jump jumps jumped climb climbs climbed record records approve approves
    approved approval bullish breakout upgrade upgrades upgraded adopt adopts adopted adoption
    partnership inflows rebound rebounds rebounded recover recovers recovered recovery
    outperform outperforms outperformed
    """.split()
)
NEGATIVE_WORDS = frozenset(
    """
    plunge plunges plunged plunging crash crashes crashed hack hacks hacked hacker hackers
    exploit exploits exploited exploiter lawsuit lawsuits sue sues sued bearish liquidation
    liquidations liquidated tumble tumbles tumbled slump slumps slumped outage outages
    outflows fraud scam ban bans banned reject rejects rejected rejection delist delists
    delisted downgrade downgrades downgraded selloff decline declines declined halt halts
    halted drain drains drained
    """.split()
)
# A negation right before a lexicon word flips it ("not approve" counts as negative).
NEGATIONS = frozenset("not no never cannot don't doesn't didn't won't isn't aren't wasn't weren't".split())

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[\W_]+")
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


# --- text ---------------------------------------------------------------------------------


def sentiment(text: str) -> float:
    """(pos - neg) / (pos + neg) over whole-word hits of ``POSITIVE_WORDS`` and
    ``NEGATIVE_WORDS``; a word right after a negation ("not", "no", "never", "doesn't"...)
    counts for the other side. 0.0 when no word matches.

    What it is not: a bag of words without context, so "record losses" scores 0 (one of
    each), "short squeeze" nothing, sarcasm and "falls short of a crash" get it wrong;
    negation reaches only the next word ("not a crash" is still negative); one hit scores as
    strongly (+-1) as ten; English only; the lists are hand-picked, not calibrated against
    price moves. Use it to sort or filter headlines, not as a trading signal on its own."""
    pos = neg = 0
    previous = ""
    for word in _WORD.findall(text.lower()):
        polarity = 1 if word in POSITIVE_WORDS else -1 if word in NEGATIVE_WORDS else 0
        if polarity and previous in NEGATIONS:
            polarity = -polarity
        if polarity > 0:
            pos += 1
        elif polarity < 0:
            neg += 1
        previous = word
    return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


def plain_text(value: str | None) -> str:
    """Markup-free, single-spaced text: tags dropped, HTML entities unescaped."""
    if not value:
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()


def normalised_title(title: str) -> str:
    return _NOT_ALNUM.sub(" ", title.lower()).strip()


def parse_date(value: str | None) -> int | None:
    """An RFC 822 (RSS) or RFC 3339 (Atom, JSON Feed) date as UTC ns; None if unreadable.
    A date without a zone is taken as UTC."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            moment = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", value.upper()))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (moment - epoch) // timedelta(microseconds=1) * 1000


class InstrumentTagger:
    """Which venues.yaml symbols a text mentions: by base asset, its common names, or the
    symbol's configured keywords, as whole words (a letter, digit or underscore on either
    side means it is part of another word), ignoring case."""

    def __init__(self, bases: dict[str, str], keywords: dict[str, list[str]]) -> None:
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for symbol, base in bases.items():
            words = {base, *COMMON_NAMES.get(base.upper(), ()), *keywords.get(symbol, ())}
            alternatives = "|".join(
                r"\s+".join(map(re.escape, word.split())) for word in sorted(words, key=len, reverse=True)
            )
            self._patterns.append((symbol, re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)))

    def tag(self, text: str) -> tuple[str, ...]:
        return tuple(sorted(symbol for symbol, pattern in self._patterns if pattern.search(text)))


class SeenSet:
    """Insertion-ordered, bounded set: the oldest key is forgotten when it is full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)


# --- fetching and parsing -------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One feed entry, as read, before de-duplication and tagging."""

    key: str  # guid/id, else link, else title
    title: str
    url: str | None
    summary: str
    published_ns: int | None


def parse_xml(body: bytes, what: str) -> ET.Element:
    """An ElementTree from expat with entity declarations refused (see the module docstring).
    Namespaced names come out as ElementTree spells them: ``{uri}local``."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True

    def qualified(name: str) -> str:
        return "{" + name if "}" in name else name

    def refuse_entities(*_: Any) -> None:
        raise MalformedResponse(f"{what}: the document declares XML entities, which are refused")

    parser.EntityDeclHandler = refuse_entities
    parser.ExternalEntityRefHandler = refuse_entities
    parser.StartElementHandler = lambda name, attrs: builder.start(
        qualified(name), {qualified(k): v for k, v in attrs.items()}
    )
    parser.EndElementHandler = lambda name: builder.end(qualified(name))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(body, True)
        return builder.close()
    except expat.ExpatError as exc:
        raise MalformedResponse(f"{what}: not well-formed XML ({exc})") from None


def _text(element: ET.Element, tag: str) -> str | None:
    child = element.find(tag)
    if child is None:
        return None
    text = "".join(child.itertext()).strip()
    return text or None


def _entry(key: str | None, title: str, url: str | None, summary: str, date: str | None) -> Entry | None:
    title = plain_text(title)
    summary = plain_text(summary)
    if not title:
        title = summary[:TITLE_FROM_TEXT_MAX]
    if not title:
        return None
    return Entry(key or url or title, title, url or None, summary[:SUMMARY_MAX], parse_date(date))


def parse_rss(body: bytes, what: str) -> list[Entry | None]:
    root = parse_xml(body, what)
    channel = root.find("channel") if root.tag == "rss" else None
    if channel is None:
        raise MalformedResponse(f"{what}: expected an RSS 2.0 document (<rss><channel>), got <{root.tag}>")
    return [
        _entry(
            _text(item, "guid"),
            _text(item, "title") or "",
            _text(item, "link"),
            _text(item, "description") or "",
            _text(item, "pubDate") or _text(item, f"{DUBLIN_CORE}date"),
        )
        for item in channel.iterfind("item")
    ]


def parse_atom(body: bytes, what: str) -> list[Entry | None]:
    root = parse_xml(body, what)
    if root.tag != f"{ATOM}feed":
        raise MalformedResponse(f"{what}: expected an Atom document (<feed xmlns=\"{ATOM[1:-1]}\">), got <{root.tag}>")
    entries = []
    for entry in root.iterfind(f"{ATOM}entry"):
        links = [link for link in entry.iterfind(f"{ATOM}link") if link.get("rel", "alternate") == "alternate"]
        entries.append(
            _entry(
                _text(entry, f"{ATOM}id"),
                _text(entry, f"{ATOM}title") or "",
                links[0].get("href") if links else None,
                _text(entry, f"{ATOM}summary") or _text(entry, f"{ATOM}content") or "",
                _text(entry, f"{ATOM}published") or _text(entry, f"{ATOM}updated"),
            )
        )
    return entries


def parse_json_feed(body: bytes, what: str) -> list[Entry | None]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"{what}: body is not JSON ({exc}): {snippet(body)}") from None
    version = document.get("version") if isinstance(document, dict) else None
    items = document.get("items") if isinstance(document, dict) else None
    is_json_feed = isinstance(version, str) and version.startswith("https://jsonfeed.org/version/1")
    if not is_json_feed or not isinstance(items, list):
        raise MalformedResponse(f"{what}: expected a JSON Feed 1.x (version, items), got {snippet(body)}")

    def string(item: dict, key: str) -> str | None:
        value = item.get(key)
        return str(value) if isinstance(value, (str, int)) and value != "" else None

    entries = []
    for item in items:
        if not isinstance(item, dict):
            raise MalformedResponse(f"{what}: a JSON Feed item is not an object: {item!r:.100}")
        entries.append(
            _entry(
                string(item, "id"),
                string(item, "title") or "",
                string(item, "url"),
                string(item, "summary") or string(item, "content_text") or string(item, "content_html") or "",
                string(item, "date_published") or string(item, "date_modified"),
            )
        )
    return entries


PARSERS = {"rss": parse_rss, "atom": parse_atom, "json": parse_json_feed}


def _retry_after_rank(error: FeedError) -> float:
    """Orders failures for ending a session: the longest Retry-After first, then any 429."""
    if isinstance(error, RateLimited):
        return error.retry_after or 0.0
    return -1.0


# --- the feed -------------------------------------------------------------------------------


@dataclass
class _SourceState:
    polls: int = 0
    failures: int = 0
    items: int = 0
    skipped: int = 0  # entries with neither title nor text
    not_before: float = 0.0  # monotonic time before which Retry-After forbids asking
    last_error: str | None = None


class NewsFeed(Feed):
    name = "news"

    def __init__(self, config: BotmainConfig, settings: NewsFeedConfig) -> None:
        super().__init__(config, settings)
        self.settings: NewsFeedConfig = settings
        if not settings.sources:
            raise FeedConfigError("feeds.news.sources: empty; configure at least one feed (name, url, format)")
        names = [source.name for source in settings.sources]
        for i, source in enumerate(settings.sources):
            if names.index(source.name) != i:
                raise FeedConfigError(f"feeds.news.sources[{i}].name: {source.name!r} is used twice")
            if not source.url.startswith(("http://", "https://")):
                raise FeedConfigError(f"feeds.news.sources[{i}].url: {source.url!r} is not an http(s) URL")
        bases = {inst.symbol: inst.base for inst in config.venues.instruments}
        for symbol, words in settings.keywords.items():
            if symbol not in bases:
                raise FeedConfigError(
                    f"feeds.news.keywords.{symbol}: unknown symbol (venues.yaml lists {', '.join(sorted(bases))})"
                )
            if any(not word.strip() for word in words):
                raise FeedConfigError(f"feeds.news.keywords.{symbol}: empty keyword")
        self.tagger = InstrumentTagger(bases, settings.keywords)
        self.seen_ids = SeenSet(SEEN_MAX)
        self.seen_titles = SeenSet(SEEN_MAX)
        self.sources = {source.name: _SourceState() for source in settings.sources}
        self._http: aiohttp.ClientSession | None = None

    async def session(self) -> None:
        self._http = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        while True:
            await self.poll()
            await asyncio.sleep(self.settings.poll_interval_s)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def poll(self) -> None:
        """Read every source that Retry-After allows, publish the new entries in time order;
        raise only if every source asked failed."""
        now = time.monotonic()
        asked = [source for source in self.settings.sources if self.sources[source.name].not_before <= now]
        results = await asyncio.gather(*(self._read(source) for source in asked), return_exceptions=True)
        received_ns = time.time_ns()
        failures: list[FeedError] = []
        fresh: list[NewsItem] = []
        for source, result in zip(asked, results):
            state = self.sources[source.name]
            state.polls += 1
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                failures.append(self._failed(source, state, result))
            else:
                fresh.extend(self._new_items(source, state, result, received_ns))
        if asked and len(failures) == len(asked):
            ending = max(failures, key=_retry_after_rank)
            for failure in failures:
                if failure is not ending:
                    self.out.error(failure)
            raise ending
        for failure in failures:
            self.out.error(failure)
        fresh.sort(key=lambda item: item.ts_ns)
        for item in fresh:
            await self.out.emit(item)

    async def _read(self, source: NewsSourceConfig) -> list[Entry | None]:
        assert self._http is not None
        what = f"news source {source.name} ({source.format})"
        body = await request_body(
            self._http, "GET", source.url, timeout_s=self.settings.request_timeout_s, what=what, max_bytes=MAX_BODY_BYTES
        )
        return PARSERS[source.format](body, what)

    def _failed(self, source: NewsSourceConfig, state: _SourceState, raw: Exception) -> FeedError:
        error = classify(raw)
        if error.kind == "unexpected":
            log.error("news source %s: unexpected failure", source.name, exc_info=raw)
        state.failures += 1
        state.last_error = f"{error.kind}: {error}"
        if isinstance(error, RateLimited) and error.retry_after:
            state.not_before = time.monotonic() + error.retry_after
        return error

    def _new_items(
        self, source: NewsSourceConfig, state: _SourceState, entries: list[Entry | None], received_ns: int
    ) -> list[NewsItem]:
        items = []
        for entry in entries:
            if entry is None:
                state.skipped += 1
                continue
            item_id = hashlib.sha256((source.name + entry.key).encode()).hexdigest()[:32]
            title_key = normalised_title(entry.title)
            duplicate = item_id in self.seen_ids or title_key in self.seen_titles
            self.seen_ids.add(item_id)
            self.seen_titles.add(title_key)
            if duplicate:
                continue
            text = f"{entry.title}\n{entry.summary}"
            items.append(
                NewsItem(
                    ts_ns=entry.published_ns or received_ns,
                    item_id=item_id,
                    source=source.name,
                    title=entry.title,
                    url=entry.url,
                    summary=entry.summary or None,
                    instruments=self.tagger.tag(text),
                    sentiment=sentiment(text),
                )
            )
        state.items += len(items)
        return items

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        sources = {}
        for name, state in self.sources.items():
            shown = {k: v for k, v in vars(state).items() if k != "not_before"}
            shown["retry_in_s"] = max(state.not_before - now, 0.0)
            sources[name] = shown
        return {"sources": sources, "seen_items": len(self.seen_ids)}
