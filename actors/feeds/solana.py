"""The Solana feed: slots, program logs and recent priority fees, as ``ChainEvent``s.

Solana has no public mempool. Leaders are known in advance and RPC nodes and validators
forward transactions straight to the current and next leaders (Gulf Stream, over QUIC to
the TPU), so there is no pool of pending transactions to watch. Jito ran a searcher-visible
mempool stream but shut it down on 8 March 2024. Every low-latency data source, this one
included, sees a transaction only once a leader has processed it. What this feed gives
instead is:

* ``ChainEvent(kind="slot")``: every slot the node processes (``slotSubscribe``), payload
  ``{parent, root}``;
* ``ChainEvent(kind="log")``: the logs of every transaction that mentions one of the
  configured ``programs`` (``logsSubscribe``), with the transaction ``signature``, the
  ``program`` name from the config, and payload ``{logs: [...], err: str | None}``. ``err``
  is the node's error as JSON text (``{"InstructionError":[0,{"Custom":6001}]}``) or a bare
  name (``AccountInUse``). The lowest latency comes from ``commitment: processed``; the
  default ``confirmed`` trades about a second for not seeing transactions from forks that
  are later dropped;
* ``ChainEvent(kind="priority_fee")``: every ``priority_fee_interval_s``, the statistics of
  ``getRecentPrioritizationFees`` for ``priority_fee_accounts`` (the node's last, at most,
  150 slots): payload ``{min, median, p75, max, samples}`` in **micro-lamports per compute
  unit** (the unit of ``set_compute_unit_price``), ``slot`` = the newest slot in the sample.
  Median and p75 interpolate linearly between the closest ranks (numpy's default), and
  slots with a zero fee count: they are part of what a transaction competes with.

One session is one websocket connection: ``slotSubscribe`` plus one
``logsSubscribe({"mentions": [program]})`` per program, because the node accepts only one
mentioned address per subscription. Subscription ids are mapped to program names from the
acks (the ack carries the request id), so a reconnect, which yields new ids, resubscribes
and maps them afresh. The fee poll runs as a task inside the session.

Failures:

* the websocket closing (cleanly or not) ends the session (``disconnected``); so do a
  subscription the node refuses (``rejected``), an HTTP error instead of the websocket
  upgrade (429 -> ``rate_limited`` with its Retry-After, 5xx -> ``unavailable``, other ->
  ``rejected``) and ``request_timeout_s`` without any message (``timeout``; slots arrive
  every ~0.4 s, so silence means a dead connection). The runner reconnects with backoff
  (or after Retry-After) and the new session subscribes again;
* a fee poll that fails (HTTP 429 or JSON-RPC code -32429 -> ``rate_limited``; any other
  JSON-RPC error object -> ``rejected``; 5xx -> ``unavailable``; a body that is not the
  documented shape -> ``malformed``) is counted and the next poll comes at the next
  interval (or after the node's Retry-After, if longer): losing one fee sample is no reason
  to drop the log stream.

The RPC URL is the secret ``BOTMAIN_SOLANA_RPC_URL`` (provider URLs embed keys), else
``rpc_url``; the websocket URL is ``ws_url``, else derived from the RPC URL the way driftpy
does (https -> wss, http -> ws; an explicit port becomes port + 1, the solana-test-validator
layout). URLs never appear in errors or status, only their host.

Simplifications: no ``accountSubscribe``/Geyser streams and no Jito bundle data; a log
notification for a subscription id this session never acknowledged is counted as
``malformed`` and skipped rather than guessed at.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from solana.rpc.websocket_api import SolanaWsClientProtocol, SubscriptionError, connect
from solders.errors import SerdeJSONError
from solders.pubkey import Pubkey
from solders.rpc.config import RpcTransactionLogsFilterMentions
from solders.rpc.responses import LogsNotification, SlotNotification, SubscriptionResult
from websockets.exceptions import InvalidStatusCode

from actors.feeds.base import Feed
from actors.feeds.errors import (
    FeedConfigError,
    FeedError,
    FeedTimeout,
    MalformedResponse,
    RateLimited,
    VenueRejected,
    VenueUnavailable,
)
from actors.feeds.http import request_json, retry_after_seconds
from cluster.config import BotmainConfig, read_secret
from cluster.config.models import SolanaFeedConfig
from cluster.events import ChainEvent

MAX_FEE_ACCOUNTS = 128  # getRecentPrioritizationFees refuses more addresses
RATE_LIMITED_CODE = -32429  # what rate-limiting RPC providers answer inside a 200


def derive_ws_url(rpc_url: str) -> str:
    """The websocket endpoint of an HTTP RPC URL: https -> wss, http -> ws, and an explicit
    port becomes port + 1 (driftpy's ``get_ws_url`` rule), keeping credentials, path and query."""
    parts = urlsplit(rpc_url)
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"not an http(s) URL: scheme {parts.scheme!r}")
    netloc = parts.netloc
    if parts.port is not None:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        userinfo = netloc.rpartition("@")[0]
        netloc = (f"{userinfo}@" if userinfo else "") + f"{host}:{parts.port + 1}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def fee_stats(fees: list[int]) -> dict[str, float]:
    """min, median, p75, max and sample count of fees (micro-lamports per CU)."""
    ordered = sorted(fees)
    return {
        "min": float(ordered[0]),
        "median": _quantile(ordered, 0.5),
        "p75": _quantile(ordered, 0.75),
        "max": float(ordered[-1]),
        "samples": len(ordered),
    }


def _quantile(ordered: list[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return float(ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower))


def _host(url: str) -> str:
    """What a URL may show in logs and status: its host, never its key-bearing path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class SolanaFeed(Feed):
    name = "solana"

    def __init__(self, config: BotmainConfig, settings: SolanaFeedConfig) -> None:
        super().__init__(config, settings)
        self.settings: SolanaFeedConfig = settings
        secret = read_secret("SOLANA_RPC_URL")
        self.rpc_url = secret.get_secret_value() if secret is not None else settings.rpc_url
        try:
            self.ws_url = settings.ws_url or derive_ws_url(self.rpc_url)
        except ValueError as exc:
            raise FeedConfigError(f"feeds.solana: cannot derive ws_url from the RPC URL ({exc}); set ws_url") from None
        self.programs: dict[str, Pubkey] = {}
        for name, program_id in settings.programs.items():
            self.programs[name] = self._pubkey(program_id, f"feeds.solana.programs.{name}")
        if len(settings.priority_fee_accounts) > MAX_FEE_ACCOUNTS:
            raise FeedConfigError(
                f"feeds.solana.priority_fee_accounts: {len(settings.priority_fee_accounts)} accounts, "
                f"getRecentPrioritizationFees takes at most {MAX_FEE_ACCOUNTS}"
            )
        for i, account in enumerate(settings.priority_fee_accounts):
            self._pubkey(account, f"feeds.solana.priority_fee_accounts[{i}]")
        self._http: aiohttp.ClientSession | None = None
        self._rpc_id = 0
        # Per session: subscription id -> program name (None for the slot subscription).
        self._subscriptions: dict[int, str | None] = {}
        self.last_slot = 0
        self.last_fees: dict[str, Any] | None = None

    @staticmethod
    def _pubkey(value: str, key: str) -> Pubkey:
        try:
            return Pubkey.from_string(value)
        except ValueError:
            raise FeedConfigError(f"{key}: {value!r} is not a base58 Solana address") from None

    # --- session ------------------------------------------------------------------------

    async def session(self) -> None:
        self._http = aiohttp.ClientSession()
        self._subscriptions = {}
        try:
            await self._run_connection()
        except InvalidStatusCode as exc:  # the node refused the websocket upgrade
            raise self._refused_upgrade(exc) from None

    def _refused_upgrade(self, exc: InvalidStatusCode) -> FeedError:
        """An HTTP answer to the upgrade request, classified like any HTTP answer."""
        what = f"websocket upgrade at {_host(self.ws_url)}: HTTP {exc.status_code}"
        if exc.status_code == 429:
            return RateLimited(what, retry_after_seconds(exc.headers.get("Retry-After")))
        if exc.status_code >= 500:
            return VenueUnavailable(what)
        return VenueRejected(what)

    async def _run_connection(self) -> None:
        async with connect(self.ws_url, open_timeout=self.settings.request_timeout_s) as ws:
            pending = await self._subscribe(ws)
            tasks = [
                asyncio.ensure_future(self._stream(ws, pending)),
                asyncio.ensure_future(self._poll_priority_fees()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()  # re-raise what ended the session
            raise FeedError("session tasks ended without an error")  # pragma: no cover - both loop forever

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _subscribe(self, ws: SolanaWsClientProtocol) -> dict[int, str | None]:
        """Send every subscription; return request id -> program name (None: slots)."""
        pending: dict[int, str | None] = {}
        await ws.slot_subscribe()
        pending[next(reversed(ws.sent_subscriptions))] = None
        for name, program in self.programs.items():
            await ws.logs_subscribe(RpcTransactionLogsFilterMentions(program), commitment=self.settings.commitment)
            pending[next(reversed(ws.sent_subscriptions))] = name
        return pending

    async def _stream(self, ws: SolanaWsClientProtocol, pending: dict[int, str | None]) -> None:
        silence = self.settings.request_timeout_s
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                # races with a message arriving, and the session would never stop.
                async with asyncio.timeout(silence):
                    messages = await ws.recv()
            except TimeoutError:
                raise FeedTimeout(f"no websocket message from {_host(self.ws_url)} for {silence:g}s") from None
            except SubscriptionError as exc:
                raise VenueRejected(f"subscription refused by the node: {exc.msg}") from None
            except SerdeJSONError as exc:
                self.out.error(MalformedResponse(f"unreadable websocket message: {exc}"))
                continue
            now = time.time_ns()
            for message in messages:
                await self._handle(message, pending, now)

    async def _handle(self, message: Any, pending: dict[int, str | None], now: int) -> None:
        if isinstance(message, SlotNotification):
            info = message.result
            self.last_slot = max(self.last_slot, info.slot)
            await self.out.emit(ChainEvent(now, "slot", info.slot, payload={"parent": info.parent, "root": info.root}))
        elif isinstance(message, LogsNotification):
            if message.subscription not in self._subscriptions:
                self.out.error(MalformedResponse(f"logs notification for unknown subscription {message.subscription}"))
                return
            value = message.result.value
            err = None
            if value.err is not None:
                raw = orjson.loads(value.to_json())["err"]
                err = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
            await self.out.emit(
                ChainEvent(
                    now,
                    "log",
                    message.result.context.slot,
                    signature=str(value.signature),
                    program=self._subscriptions[message.subscription],
                    payload={"logs": list(value.logs), "err": err},
                )
            )
        elif isinstance(message, SubscriptionResult):
            if message.id in pending:
                self._subscriptions[message.result] = pending.pop(message.id)

    # --- priority fees ------------------------------------------------------------------

    async def _poll_priority_fees(self) -> None:
        interval = self.settings.priority_fee_interval_s
        while True:
            wait = interval
            try:
                event = await self.fetch_priority_fees()
                if event is not None:
                    await self.out.emit(event)
            except FeedError as exc:
                self.out.error(exc)
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    wait = max(interval, exc.retry_after)
            await asyncio.sleep(wait)

    async def fetch_priority_fees(self) -> ChainEvent | None:
        """One ``getRecentPrioritizationFees`` call as a ChainEvent; None if the node has no samples."""
        assert self._http is not None
        self._rpc_id += 1
        accounts = self.settings.priority_fee_accounts
        body = {
            "jsonrpc": "2.0",
            "id": self._rpc_id,
            "method": "getRecentPrioritizationFees",
            "params": [accounts] if accounts else [],
        }
        what = f"getRecentPrioritizationFees at {_host(self.rpc_url)}"
        reply = await request_json(
            self._http, "POST", self.rpc_url, json_body=body, timeout_s=self.settings.request_timeout_s, what=what
        )
        now = time.time_ns()
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            code, message = reply["error"].get("code"), reply["error"].get("message", "")
            if code == RATE_LIMITED_CODE:
                raise RateLimited(f"{what}: JSON-RPC error {code}: {message}")
            raise VenueRejected(f"{what}: JSON-RPC error {code}: {message}")
        result = reply.get("result") if isinstance(reply, dict) else None
        try:
            samples = [(int(entry["slot"]), int(entry["prioritizationFee"])) for entry in result]  # type: ignore
        except (TypeError, KeyError, ValueError):
            expected = "expected result [{slot, prioritizationFee}...]"
            raise MalformedResponse(f"{what}: {expected}, got {reply!r:.200}") from None
        if not samples:
            return None
        stats = fee_stats([fee for _, fee in samples])
        self.last_fees = stats
        return ChainEvent(now, "priority_fee", max(slot for slot, _ in samples), payload=stats)

    def status(self) -> dict[str, Any]:
        names = {program: sub for sub, program in self._subscriptions.items()}
        return {
            "rpc": _host(self.rpc_url),
            "ws": _host(self.ws_url),
            "commitment": self.settings.commitment,
            "subscriptions": {("slots" if name is None else name): sub for name, sub in names.items()},
            "last_slot": self.last_slot,
            "priority_fees": self.last_fees,
        }
