"""A fake news site on 127.0.0.1 serving one RSS 2.0, one Atom and one JSON Feed 1.1 feed.

The default headlines are chosen for the tests: the Atom feed repeats one RSS headline
(different id, case and punctuation), some mention SOL or BTC by ticker, by name or only
inside another word ("solution"), some carry lexicon words, with a negation, and one JSON
item has no date. Each feed is rendered from its ``Headline`` list on every request, so a
test can add items between polls.

``modes[path]`` switches one feed into a failure: ``429`` (with ``Retry-After:
retry_after`` if set), ``500``, ``malformed`` (XML cut off mid-element, or broken JSON),
``entities`` (a document declaring entities, the billion-laughs shape), ``timeout``
(answers after ``hang_s``). ``requests[path]`` counts what each feed was asked.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

RSS_PATH, ATOM_PATH, JSON_PATH = "/wire/rss.xml", "/ledger/atom.xml", "/daily/feed.json"


@dataclass
class Headline:
    id: str | None
    title: str
    link: str | None = None
    summary: str | None = None
    published: datetime | None = None
    updated: datetime | None = None  # Atom only


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, 8, hour, minute, tzinfo=timezone.utc)


def default_rss() -> list[Headline]:
    return [
        Headline("wire-1", "Solana surges to record as ETF approval nears", "https://wire.example/1",
                 "<p>SOL rallied 12% on the week.</p>", at(12)),
        Headline("wire-2", "Bitcoin miners face lawsuit after exchange hack", "https://wire.example/2",
                 "Two suits were filed.", at(11)),
        Headline(None, "New staking solution launches for institutions", "https://wire.example/3",
                 "A custody firm adds a staking product.", at(10)),
        Headline("wire-4", "Drift Protocol exploit drains vaults", "https://wire.example/4",
                 "Losses are under review.", at(9)),
    ]


def default_atom() -> list[Headline]:
    return [
        Headline("urn:ledger:1", "Drift protocol EXPLOIT drains vaults!", "https://ledger.example/1",
                 "The same story, told again.", at(9, 5)),
        Headline("urn:ledger:2", "SEC does not approve spot Solana ETF", "https://ledger.example/2",
                 "The agency asked for more time.", None, updated=at(8)),
        Headline("urn:ledger:3", "Bitcoin rally fades as liquidations mount", "https://ledger.example/3",
                 None, at(7)),
    ]


def default_json() -> list[Headline]:
    return [
        Headline("daily-1", "Satoshi-era wallet moves coins", "https://daily.example/1", "Old coins moved.", at(6)),
        Headline("daily-2", "Solana gains, but hack fears linger and a crash looms", "https://daily.example/2",
                 None, None),
    ]


def render_rss(items: list[Headline]) -> str:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>',
             "<title>Wire</title><link>https://wire.example/</link><description>Wire news</description>"]
    for h in items:
        parts.append("<item>")
        parts.append(f"<title>{escape(h.title)}</title>")
        if h.link:
            parts.append(f"<link>{escape(h.link)}</link>")
        if h.id:
            parts.append(f'<guid isPermaLink="false">{escape(h.id)}</guid>')
        if h.summary:
            parts.append(f"<description>{escape(h.summary)}</description>")
        if h.published:
            parts.append(f"<pubDate>{format_datetime(h.published, usegmt=True)}</pubDate>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts)


def render_atom(items: list[Headline]) -> str:
    parts = ['<?xml version="1.0" encoding="utf-8"?>', '<feed xmlns="http://www.w3.org/2005/Atom">',
             "<title>Ledger</title><id>urn:ledger</id><updated>2024-03-08T12:00:00Z</updated>"]
    for h in items:
        parts.append("<entry>")
        parts.append(f'<title type="text">{escape(h.title)}</title>')
        parts.append(f"<id>{escape(h.id or '')}</id>")
        if h.link:
            parts.append(f'<link rel="self" href={quoteattr(h.link + ".atom")}/>')
            parts.append(f'<link rel="alternate" href={quoteattr(h.link)}/>')
        if h.summary:
            parts.append(f"<summary>{escape(h.summary)}</summary>")
        if h.published:
            parts.append(f"<published>{h.published.isoformat().replace('+00:00', 'Z')}</published>")
        updated = h.updated or h.published
        if updated:
            parts.append(f"<updated>{updated.isoformat().replace('+00:00', 'Z')}</updated>")
        parts.append("</entry>")
    parts.append("</feed>")
    return "\n".join(parts)


def render_json(items: list[Headline]) -> str:
    out = []
    for h in items:
        item = {"id": h.id, "title": h.title}
        if h.link:
            item["url"] = h.link
        if h.summary:
            item["summary"] = h.summary
        if h.published:
            item["date_published"] = h.published.isoformat()
        out.append(item)
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "Daily", "items": out})


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    "<rss version=\"2.0\"><channel><item><title>&lol2;</title></item></channel></rss>"
)


class FakeNews:
    def __init__(self) -> None:
        self.feeds = {RSS_PATH: default_rss(), ATOM_PATH: default_atom(), JSON_PATH: default_json()}
        self.modes: dict[str, str] = {}
        self.retry_after: str | None = None
        self.hang_s = 3.0
        self.requests: collections.Counter[str] = collections.Counter()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        for path in self.feeds:
            app.router.add_get(path, self._serve)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        await self._runner.setup()
        self.port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        path = request.path
        self.requests[path] += 1
        mode = self.modes.get(path, "ok")
        if mode == "429":
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return web.Response(status=429, text="slow down", headers=headers)
        if mode == "500":
            return web.Response(status=500, text="upstream exploded")
        if mode == "timeout":
            await asyncio.sleep(self.hang_s)
        if path == JSON_PATH:
            body = render_json(self.feeds[path])
            if mode == "malformed":
                body = body[: len(body) // 2]
            return web.Response(text=body, content_type="application/feed+json")
        body = render_rss(self.feeds[path]) if path == RSS_PATH else render_atom(self.feeds[path])
        if mode == "malformed":
            body = body[: body.rindex("<title")] + "<title>cut off <b>mid</title>"
        elif mode == "entities":
            body = BILLION_LAUGHS
        content_type = "application/rss+xml" if path == RSS_PATH else "application/atom+xml"
        return web.Response(text=body, content_type=content_type)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
