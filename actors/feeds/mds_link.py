"""A feed's link to the MDS: batches in order, each kept until the MDS has stored its rows,
and sent again to an MDS that restarted.

``publish`` sends a batch under the next sequence number and returns once the MDS has
handled it (the back-pressure the feed's output relies on). The MDS's answer carries the
last of this feed's batches whose rows are in the store and the lake; batches up to it are
forgotten, the rest are kept. When the link is lost (the MDS's process died, or it is
restarting), the link looks the MDS up again, connects with the same key and sends every
kept batch again, oldest first, under its original number: an MDS that is still the same
process recognises what it has handled and only acknowledges it; a restarted one handles
it, so nothing it had acknowledged but not yet stored is lost. Publishes wait meanwhile.

Bound: at most ``max_unconfirmed_events`` are kept. Past it the oldest batches the MDS has
already handled are let go (counted in ``released`` and logged): while the store is away for
long, a restart of the MDS could then lose those, and the count says how many.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable

from actors.stream import BatchSender, FrameRefused, ReceiverFailed, StreamAddress, StreamClosed, StreamKeys, StreamLimits
from cluster.events import EventBatch

log = logging.getLogger(__name__)

Locate = Callable[[bytes, str], Awaitable[StreamAddress]]  # (public key, peer name) -> the MDS's address


@dataclass
class _Kept:
    seq: int
    batch: EventBatch
    handled: asyncio.Future  # resolved when the MDS has handled it (what publish waits for)
    sent: bool = False  # sent on some link already (so sending it again is a re-send)


class MdsLink:
    def __init__(
        self,
        peer: str,
        locate: Locate,
        limits: StreamLimits,
        max_unconfirmed_events: int,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.peer = peer
        self.keys = StreamKeys.generate()
        self._locate = locate
        self._limits = limits
        self._max_kept = max_unconfirmed_events
        self._retry = (retry_initial_s, retry_max_s)
        self._sender: BatchSender | None = None
        self._kept: deque[_Kept] = deque()
        self._kept_events = 0
        self._next_seq = 1
        self._connected = asyncio.Event()
        self._reconnecting: asyncio.Task | None = None
        self._closed = False
        self.confirmed_seq = 0
        self.released = 0  # events let go before the MDS confirmed them stored
        self.reconnects = 0
        self.resent = 0
        self.last_error: str | None = None

    # --- what the feed sees -------------------------------------------------------------

    async def publish(self, batch: EventBatch) -> None:
        """Send ``batch``; returns when the MDS has handled it. A batch the MDS refuses
        (``ReceiverFailed``, ``FrameRefused``) raises, like any failure of the session."""
        seq = self._next_seq
        self._next_seq += 1
        kept = _Kept(seq, batch, asyncio.get_running_loop().create_future())
        self._kept.append(kept)
        self._kept_events += len(batch)
        self._bound()
        if self._sender is not None and not self._sender.closed:
            self._send(kept)
        else:
            self._reconnect()  # sends everything kept, this batch included, once connected
        await kept.handled

    def mds_restarted(self) -> None:
        """The MDS announced a (re)start: connect to it now rather than on the next failure."""
        if self._sender is not None:
            asyncio.get_running_loop().create_task(self._sender.close())
        self._reconnect()

    @property
    def kept_events(self) -> int:
        return self._kept_events

    def status(self) -> dict:
        return {
            "connected": self._sender is not None and not self._sender.closed,
            "kept_batches": len(self._kept),
            "kept_events": self._kept_events,
            "confirmed_seq": self.confirmed_seq,
            "released_events": self.released,
            "reconnects": self.reconnects,
            "resent_batches": self.resent,
            "last_error": self.last_error,
        }

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._sender is not None:
            await self._sender.close()
        for kept in self._kept:
            if not kept.handled.done():
                kept.handled.set_exception(StreamClosed(f"{self.peer}: link closed"))

    # --- sending and answers --------------------------------------------------------------

    def _send(self, kept: _Kept) -> None:
        try:
            ack = self._sender.resend(kept.seq, kept.batch)
        except StreamClosed:
            self._reconnect()
            return
        except (TypeError, ValueError) as exc:  # a batch that cannot be encoded: never sendable
            self._forget(kept.seq)
            if not kept.handled.done():
                kept.handled.set_exception(exc)
            return
        kept.sent = True
        ack.add_done_callback(lambda f: self._answered(kept.seq, kept.handled, f))

    def _answered(self, seq: int, handled: asyncio.Future, ack: asyncio.Future) -> None:
        if ack.cancelled():
            return
        error = ack.exception()
        if isinstance(error, StreamClosed):
            self._reconnect()  # the batch stays kept and goes again
            return
        if isinstance(error, (ReceiverFailed, FrameRefused)):
            self._forget(seq)  # the MDS refused it: sending it again would fail again
            if not handled.done():
                handled.set_exception(error)
            return
        if error is not None:
            if not handled.done():
                handled.set_exception(error)
            return
        if not handled.done():
            handled.set_result(None)
        durable = ack.result()
        if isinstance(durable, int):
            self._confirm(durable)

    def _confirm(self, durable_seq: int) -> None:
        self.confirmed_seq = max(self.confirmed_seq, durable_seq)
        while self._kept and self._kept[0].seq <= self.confirmed_seq and self._kept[0].handled.done():
            self._kept_events -= len(self._kept.popleft().batch)

    def _forget(self, seq: int) -> None:
        for i, kept in enumerate(self._kept):
            if kept.seq == seq:
                del self._kept[i]
                self._kept_events -= len(kept.batch)
                return

    def _bound(self) -> None:
        while self._kept_events > self._max_kept and len(self._kept) > 1 and self._kept[0].handled.done():
            batch = self._kept.popleft().batch
            self._kept_events -= len(batch)
            if self.released == 0:
                log.warning("%s: %d events wait for the MDS to confirm them stored; letting the oldest go "
                            "(a restart of the MDS now could lose them; counted as released)", self.peer, self._max_kept)
            self.released += len(batch)

    # --- (re)connecting ---------------------------------------------------------------------

    def _reconnect(self) -> None:
        if self._closed or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = asyncio.get_running_loop().create_task(self._connect_and_resend())

    async def _connect_and_resend(self) -> None:
        delay, cap = self._retry
        first = self._sender is None
        while not self._closed:
            try:
                if self._sender is not None:
                    await self._sender.close()
                    self._sender = None
                address = await self._locate(self.keys.public, self.peer)
                start = self._kept[0].seq if self._kept else self._next_seq
                self._sender = await BatchSender.connect(address, f"{self.peer}->mds", self.keys, self._limits, first_seq=start)
                break
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: cannot reach the MDS (%s); again in %.1fs", self.peer, self.last_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)
        if self._closed:
            return
        again = [k for k in self._kept if k.sent]
        if not first:
            self.reconnects += 1
            log.info("%s: connected to the MDS again; sending the %d batches it may not have stored", self.peer, len(again))
        self.last_error = None
        self.resent += len(again)
        for kept in list(self._kept):
            self._send(kept)
