"""The sending end of a batch link: one CURVE-secured ZeroMQ DEALER connection.

``send`` writes the batch at once and returns a future that resolves, with the receiver's
handler result, once the receiver has handled it (or fails with ``ReceiverFailed``,
``FrameRefused``, or ``StreamClosed`` if the connection goes), so several batches can be
in flight in order and callers bound how many are unacknowledged (back-pressure).

The link does not reconnect by itself (libzmq's silent reconnect would lose what was in
flight without telling anyone): a lost connection fails every pending batch and the
sender is closed. Its owner connects again, and may send the same batches again with
``resend``: the receiver recognises what it has already handled by the key and ``seq``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from actors.stream.auth import StreamKeys
from actors.stream.codec import encode_batch
from actors.stream.protocol import (
    FAILED,
    OK,
    FrameRefused,
    ReceiverFailed,
    StreamAddress,
    StreamClosed,
    StreamLimits,
    StreamRefused,
    batch_header,
    decode_reply,
)
from cluster.events import EventBatch

log = logging.getLogger(__name__)

_CONNECT_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CLOSED
)


class BatchSender:
    def __init__(self, address: StreamAddress, name: str, keys: StreamKeys, limits: StreamLimits, first_seq: int) -> None:
        self.address = address
        self.name = name
        self.limits = limits
        self._keys = keys
        self._seq = first_seq - 1
        self._pending: OrderedDict[int, asyncio.Future] = OrderedDict()
        self._error: BaseException | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def connect(
        cls,
        address: StreamAddress,
        name: str,
        keys: StreamKeys,
        limits: StreamLimits | None = None,
        first_seq: int = 1,
    ) -> BatchSender:
        """Connect and finish the CURVE handshake. ``keys`` must already be allowed by the
        receiver; ``first_seq`` continues a previous link's numbering (the next unused seq)."""
        sender = cls(address, name, keys, limits or StreamLimits(), first_seq)
        await sender._open()
        return sender

    async def _open(self) -> None:
        sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_serverkey = self.address.server_key
        sock.curve_publickey = self._keys.public
        sock.curve_secretkey = self._keys.secret
        sock.reconnect_ivl = -1  # never reconnect silently: a lost link fails its pending batches
        sock.heartbeat_ivl = int(self.limits.heartbeat_s * 1000)
        sock.heartbeat_timeout = int(self.limits.heartbeat_timeout_s * 1000)
        sock.handshake_ivl = int(self.limits.handshake_timeout_s * 1000)
        if ":" in self.address.host:
            sock.ipv6 = True
        monitor = self._monitor = sock.get_monitor_socket(_CONNECT_EVENTS)
        self._socket = sock
        sock.connect(self.address.endpoint)
        try:
            await asyncio.wait_for(self._handshake(monitor), self.limits.connect_timeout_s)
        except asyncio.TimeoutError:
            self._close_socket()
            raise StreamClosed(f"{self.name}: cannot connect to {self.address.endpoint}: no handshake within "
                               f"{self.limits.connect_timeout_s:g} s") from None
        except StreamClosed:
            self._close_socket()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_replies()), loop.create_task(self._watch(monitor))]

    async def _handshake(self, monitor: zmq.asyncio.Socket) -> None:
        connected = False
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            if event == zmq.EVENT_CONNECTED:
                connected = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise StreamRefused(f"{self.name}: {self.address.endpoint} refused this sender's key")
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL or (
                connected and event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            ):
                # A receiver that cannot decrypt our hello (its key is not the one the
                # address names) closes the connection without a word.
                raise StreamRefused(f"{self.name}: {self.address.endpoint} closed the connection during the CURVE "
                                    "handshake (its key is not the one its address names, or it is not a batch receiver)")
            elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED, zmq.EVENT_CONNECT_RETRIED, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                raise StreamClosed(f"{self.name}: cannot connect to {self.address.endpoint}: nobody is listening")

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def inflight(self) -> int:
        return len(self._pending)

    @property
    def next_seq(self) -> int:
        return self._seq + 1

    def send(self, batch: EventBatch) -> asyncio.Future:
        """Send ``batch`` under the next seq."""
        return self.resend(self._seq + 1, batch)

    def resend(self, seq: int, batch: EventBatch) -> asyncio.Future:
        """Send ``batch`` under ``seq`` (a batch sent before under that seq, on an earlier
        link with the same key, or the next one); seqs must not go backwards on a link."""
        if self._error is not None:
            raise StreamClosed(f"{self.name}: {self._error}")
        if self._pending and seq <= next(reversed(self._pending)):
            raise ValueError(f"{self.name}: seq {seq} after {next(reversed(self._pending))} (seqs only grow)")
        data = encode_batch(batch)
        if len(data) > self.limits.max_frame_bytes:
            raise ValueError(f"{self.name}: a batch of {len(batch)} events encodes to {len(data):,} bytes, over the "
                             f"{self.limits.max_frame_bytes:,}-byte frame limit (send smaller batches)")
        future = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        self._seq = max(self._seq, seq)
        self._socket.send_multipart([batch_header(seq), data], copy=False)
        return future

    async def close(self) -> None:
        self._fail(StreamClosed(f"{self.name}: closed"))
        if self._socket is not None:
            self._stop_monitor()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        self._close_socket()

    def _stop_monitor(self) -> None:
        # While the monitor's reading end is open: libzmq blocks if that end has gone first.
        try:
            self._socket.disable_monitor()
        except zmq.ZMQError:
            pass

    def _close_socket(self) -> None:
        if self._socket is None:
            return
        self._stop_monitor()
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        self._socket.close(linger=0)
        self._socket = None

    async def _read_replies(self) -> None:
        sock = self._socket
        while True:
            try:
                seq, status, payload = decode_reply(await sock.recv())
            except (ValueError, TypeError) as exc:  # msgspec errors are ValueErrors
                log.error("%s: unreadable answer from %s: %s", self.name, self.address.endpoint, exc)
                continue
            future = self._pending.pop(seq, None)
            if future is None or future.done():
                continue
            if status == OK:
                future.set_result(payload)
            elif status == FAILED:
                future.set_exception(ReceiverFailed(f"{self.name}: {payload}"))
            else:
                future.set_exception(FrameRefused(f"{self.name}: the receiver refused batch {seq}: {payload}"))

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            if event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                self._fail(StreamClosed(f"{self.name}: connection to {self.address.endpoint} lost"))
                return

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        while self._pending:
            _, future = self._pending.popitem(last=False)
            if not future.done():
                future.set_exception(self._error)
