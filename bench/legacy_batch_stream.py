"""Event-batch streams: the market-data data plane between actors.

Ray actor calls are the control plane (start, subscribe, status); the market data itself,
feed -> MDS and MDS -> subscriber, moves over one TCP connection per link. On the 2-core
machine we measure on, a Ray actor call costs about 1 ms of CPU across both processes and
2-3 ms round trip (p99 6-10 ms); a batch over a socket costs a few tens of microseconds
and arrives in ~0.6 ms (p99 2-4 ms). bench/mds.py prints both.

The link keeps the semantics of the actor call it replaces: ``BatchSender.send`` returns a
future that resolves when the receiver's handler has processed the batch (or fails with the
handler's error, or with ``StreamClosed`` if the connection goes), batches are handled in
the order sent, and callers bound how many are unacknowledged (back-pressure).

Wire format, per connection: the sender first writes the receiver's token (16 bytes, handed
out over Ray's authenticated control plane, so only actors of this cluster can connect),
then frames of ``u32 length | pickle``; the receiver answers each frame in order with one
byte, 0 = handled, or 1 followed by ``u32 length | utf-8 message`` = the handler raised.
The receiver listens on the node address Ray uses, so links work across nodes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import pickle
import secrets
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_LEN = struct.Struct("!I")
TOKEN_BYTES = 16
MAX_FRAME = 512 * 1024 * 1024  # a frame announcing more is a corrupt or foreign stream
_OK = b"\x00"
_FAILED = b"\x01"


class StreamClosed(ConnectionError):
    """The connection to the receiver is gone; unacknowledged batches may not have arrived."""


class ReceiverFailed(RuntimeError):
    """The receiver's handler raised on a batch; the message is its error."""


@dataclass(frozen=True)
class StreamAddress:
    host: str
    port: int
    token: bytes

    def __repr__(self) -> str:  # keep the token out of logs
        return f"StreamAddress({self.host}:{self.port})"


def node_address() -> str:
    """The address Ray uses for this node (the machine's, across nodes)."""
    import ray

    return ray.util.get_node_ip_address()


class BatchReceiver:
    """Accepts sender connections and hands each received object to ``handler``, one at a
    time per connection, acknowledging after the handler returns."""

    def __init__(self, handler: Callable[[Any], Awaitable[Any] | Any], name: str) -> None:
        self._handler = handler
        self._is_async = asyncio.iscoroutinefunction(handler)
        self._name = name
        self._token = secrets.token_bytes(TOKEN_BYTES)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self.address: StreamAddress | None = None
        self.refused = 0  # connections that did not present the token

    async def start(self, host: str | None = None) -> StreamAddress:
        host = host or node_address()
        self._server = await asyncio.start_server(self._serve, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = StreamAddress(host, port, self._token)
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            token = await reader.readexactly(TOKEN_BYTES)
            if not hmac.compare_digest(token, self._token):
                self.refused += 1
                log.warning("%s: refused a stream connection from %s without this receiver's token",
                            self._name, writer.get_extra_info("peername"))
                return
            while True:
                (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
                if size > MAX_FRAME:
                    log.error("%s: a frame of %d bytes is over the %d limit; closing the stream", self._name, size, MAX_FRAME)
                    return
                obj = pickle.loads(await reader.readexactly(size))
                try:
                    if self._is_async:
                        await self._handler(obj)
                    else:
                        self._handler(obj)
                except Exception as exc:
                    message = f"{type(exc).__name__}: {exc}".encode()[:4096]
                    log.exception("%s: handler failed on a batch", self._name)
                    writer.write(_FAILED + _LEN.pack(len(message)) + message)
                else:
                    writer.write(_OK)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the sender went away; it fails its own unacknowledged batches
        except asyncio.CancelledError:
            raise
        finally:
            self._connections.discard(task)
            writer.close()


class BatchSender:
    """One connection to a ``BatchReceiver``; ``send`` writes at once and returns a future
    for the acknowledgement, so several batches can be in flight in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        self._reader = reader
        self._writer = writer
        self._name = name
        self._pending: deque[asyncio.Future] = deque()
        self._error: BaseException | None = None
        self._acks = asyncio.get_running_loop().create_task(self._read_acks())

    @classmethod
    async def connect(cls, address: StreamAddress, name: str, timeout_s: float = 10.0) -> BatchSender:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise StreamClosed(f"{name}: cannot connect to {address.host}:{address.port}: {exc}") from exc
        writer.write(address.token)
        return cls(reader, writer, name)

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def inflight(self) -> int:
        return len(self._pending)

    def send(self, obj: Any) -> asyncio.Future:
        if self._error is not None:
            raise StreamClosed(f"{self._name}: {self._error}")
        data = pickle.dumps(obj, protocol=5)
        future = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        self._writer.write(_LEN.pack(len(data)) + data)
        return future

    async def close(self) -> None:
        self._fail(StreamClosed(f"{self._name}: closed"))
        self._acks.cancel()
        self._writer.close()

    async def _read_acks(self) -> None:
        try:
            while True:
                status = await self._reader.readexactly(1)
                future = self._pending.popleft()
                if status == _OK:
                    if not future.done():
                        future.set_result(None)
                    continue
                (size,) = _LEN.unpack(await self._reader.readexactly(_LEN.size))
                message = (await self._reader.readexactly(size)).decode(errors="replace")
                if not future.done():
                    future.set_exception(ReceiverFailed(f"{self._name}: {message}"))
        except (asyncio.IncompleteReadError, ConnectionError, IndexError) as exc:
            self._fail(StreamClosed(f"{self._name}: connection lost ({type(exc).__name__})"))
        except asyncio.CancelledError:
            raise

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(self._error)
