"""The receiving end of batch links: a CURVE-secured ZeroMQ ROUTER on the node's address.

Senders connect with a key the receiver was told about (``allow``); each batch is decoded
and validated (actors/stream/codec.py), handed to ``handler(batch, origin)`` and answered
in order with the handler's result. Batches are handled one at a time, in the order they
arrive (per sender, the order sent).

Nothing a peer sends can stop the stream for the others. What is refused is counted by
reason (``rejected``; ``on_reject`` feeds the Prometheus counter) and logged once per peer
and reason, naming the peer:

* ``unauthenticated``: a key the receiver does not know (refused in the CURVE handshake);
* ``handshake_timeout``: a peer that connects and does not finish the handshake within
  ``handshake_timeout_s`` (libzmq drops it);
* ``handshake``: a connection that closes or breaks the ZMTP greeting (garbage bytes, a
  peer that disconnects mid-frame), a peer speaking another mechanism or a wrong server
  key. libzmq closes such a connection before it can be named, so the log names the
  receiver's endpoint; for a stalled handshake the peer's address is known and named;
* ``oversized`` (the frame is refused and answered; a frame over 4x the limit drops the
  connection before it is read), ``malformed`` (not a MessagePack batch, truncated, a bad
  header), ``unknown_event`` and ``invalid_event`` (a tag or a field the schema refuses):
  from an authenticated peer, named by its allowed name and address.

A sender that re-sends a batch (same key, a seq already handled) is answered without the
handler seeing it again: within one receiver's life, each batch is handled once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections import Counter
from typing import Any, Awaitable, Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from actors.stream.auth import KeyAuthenticator, StreamKeys
from actors.stream.codec import WireError, decode_batch
from actors.stream.protocol import FAILED, OK, REFUSED, Origin, StreamAddress, StreamLimits, encode_reply, read_header
from cluster.events import EventBatch

log = logging.getLogger(__name__)

Handler = Callable[[EventBatch, Origin], Awaitable[Any] | Any]

_MONITORED = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_DISCONNECTED
)


def node_address() -> str:
    """The address Ray uses for this node (the machine's, across nodes)."""
    import ray

    return ray.util.get_node_ip_address()


class BatchReceiver:
    def __init__(
        self,
        handler: Handler,
        name: str,
        limits: StreamLimits | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self._handler = handler
        self._is_async = asyncio.iscoroutinefunction(handler)
        self.name = name
        self.limits = limits or StreamLimits()
        self._on_reject = on_reject or (lambda reason: None)
        self.keys = StreamKeys.generate()
        self._context: zmq.asyncio.Context | None = None
        self._auth: KeyAuthenticator | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []
        self._last_seq: dict[bytes, int] = {}
        self._logged: set[tuple[str, str]] = set()
        self._connections: dict[int, dict] = {}  # fd -> {"peer": str, "handshake": bool}
        self.address: StreamAddress | None = None
        self.rejected: Counter[str] = Counter()
        self.handled = 0
        self.duplicates = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, host: str | None = None) -> StreamAddress:
        host = host or node_address()
        self._context = zmq.asyncio.Context()
        self._auth = KeyAuthenticator(self._context, self.name, self._denied)
        self._auth.start()
        sock = self._context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.curve_server = True
        sock.curve_publickey = self.keys.public
        sock.curve_secretkey = self.keys.secret
        sock.zap_domain = self.name.encode()
        sock.handshake_ivl = int(self.limits.handshake_timeout_s * 1000)
        sock.heartbeat_ivl = int(self.limits.heartbeat_s * 1000)
        sock.heartbeat_timeout = int(self.limits.heartbeat_timeout_s * 1000)
        sock.maxmsgsize = self.limits.hard_max_bytes
        sock.router_mandatory = 1  # an answer to a peer that left raises instead of vanishing
        endpoint_host = f"[{host}]" if ":" in host else host
        if ":" in host:
            sock.ipv6 = True
        port = sock.bind_to_random_port(f"tcp://{endpoint_host}")
        self._socket = sock
        self._monitor = sock.get_monitor_socket(_MONITORED)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._serve()), loop.create_task(self._watch(self._monitor))]
        self.address = StreamAddress(host, port, self.keys.public)
        return self.address

    async def close(self) -> None:
        if self._socket is not None:
            # Stop the monitor while its reading end is still open: libzmq blocks in
            # disable_monitor if that end has gone first.
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None

    # --- who may send ---------------------------------------------------------------------

    def allow(self, public_key: bytes, peer: str) -> None:
        """Accept connections from ``public_key`` (z85), named ``peer`` in logs and metrics."""
        if self._auth is None:
            raise RuntimeError(f"{self.name}: allow() before start()")
        self._auth.allowed[bytes(public_key)] = peer

    def revoke(self, public_key: bytes) -> None:
        """Refuse new connections from ``public_key`` (its open connection stays until it closes)."""
        if self._auth is not None:
            self._auth.allowed.pop(bytes(public_key), None)

    def peer_name(self, key: bytes) -> str:
        allowed = self._auth.allowed if self._auth is not None else {}
        return allowed.get(key, f"key {key.decode(errors='replace')[:8]}...")

    # --- refusals ---------------------------------------------------------------------------

    def _reject(self, reason: str, peer: str, detail: str) -> None:
        self.rejected[reason] += 1
        self._on_reject(reason)
        if (peer, reason) not in self._logged:
            self._logged.add((peer, reason))
            log.warning("%s: refused %s from %s: %s (further ones from this peer are counted, not logged)",
                        self.name, reason.replace("_", " "), peer, detail)

    def _denied(self, address: str, key: bytes) -> None:
        self._reject("unauthenticated", address, f"CURVE key {key[:8].decode(errors='replace')}... is not allowed")

    # --- frames -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        sock = self._socket
        while True:
            parts = await sock.recv_multipart(copy=False)
            try:
                await self._on_frames(parts)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug of ours on one frame must not end the stream
                log.exception("%s: failed on a frame", self.name)
            # libzmq queues whole frames off the loop, so a frame already waiting comes back
            # without suspending: yield, or a busy sender would starve every other task here
            # (the MDS's deliveries to its subscribers) until its stream paused.
            await asyncio.sleep(0)

    async def _on_frames(self, parts: list) -> None:
        routing = parts[0].bytes
        first = parts[1] if len(parts) > 1 else parts[0]
        key = (first.get("User-Id") or "").encode()
        address = first.get("Peer-Address") or "?"
        peer = f"{self.peer_name(key)} at {address}"
        if len(parts) != 3:
            self._reject("malformed", peer, f"{len(parts) - 1} frame(s), expected a header and a body")
            return
        try:
            seq = read_header(parts[1].bytes)
        except ValueError as exc:
            self._reject("malformed", peer, f"bad header: {exc}")
            return  # without a seq there is nothing the sender could match an answer to
        body = parts[2]
        size = len(body.buffer)
        if size > self.limits.max_frame_bytes:
            self._reject("oversized", peer, f"a frame of {size:,} bytes (limit {self.limits.max_frame_bytes:,})")
            await self._answer(routing, seq, REFUSED, f"frame of {size} bytes over the {self.limits.max_frame_bytes} limit")
            self._last_seq[key] = max(seq, self._last_seq.get(key, 0))
            return
        if seq <= self._last_seq.get(key, 0):
            self.duplicates += 1
            await self._answer(routing, seq, OK, None)  # handled before: the sender re-sent it
            return
        self._last_seq[key] = seq
        try:
            batch = decode_batch(body.buffer)
        except WireError as exc:
            self._reject(exc.reason, peer, str(exc))
            await self._answer(routing, seq, REFUSED, str(exc)[:4096])
            return
        origin = Origin(self.peer_name(key), key, address, seq)
        try:
            result = await self._handler(batch, origin) if self._is_async else self._handler(batch, origin)
        except Exception as exc:
            log.exception("%s: handler failed on a batch from %s", self.name, peer)
            await self._answer(routing, seq, FAILED, f"{type(exc).__name__}: {exc}"[:4096])
            return
        self.handled += 1
        await self._answer(routing, seq, OK, result)

    async def _answer(self, routing: bytes, seq: int, status: int, payload: object) -> None:
        try:
            await self._socket.send_multipart([routing, encode_reply(seq, status, payload)])
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:  # the sender left: it fails its own pending batches
                raise

    # --- connections that never become peers ------------------------------------------------

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Account for connections refused before any frame: garbage, stalls, wrong mechanism.

        libzmq's monitor names a connection by its file descriptor only when it is accepted
        and when it goes; handshake results carry no descriptor, so they are matched to the
        oldest accepted connection still waiting for one (exact when handshakes do not
        overlap, and the counts by reason are right either way)."""
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_ACCEPTED:
                self._connections[value] = {"peer": _peer_of_fd(value), "handshake": None}
                continue
            if kind == zmq.EVENT_DISCONNECTED:
                conn = self._connections.pop(value, None)
                if conn is not None and conn["handshake"] is None:
                    self._reject("handshake", conn["peer"] or self._endpoint_peer(),
                                 "the connection closed during the ZMTP greeting (not a ZeroMQ peer, or it went away mid-frame)")
                continue
            conn = next((c for c in self._connections.values() if c["handshake"] is None), None)
            if conn is not None:
                conn["handshake"] = kind
            peer = (conn or {}).get("peer") or self._endpoint_peer()
            if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                if value == errno.EAGAIN:
                    self._reject("handshake_timeout", peer, f"no CURVE handshake within {self.limits.handshake_timeout_s:g} s")
                else:
                    self._reject("handshake", peer, f"the handshake failed ({os.strerror(value)})")
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self._reject("handshake", peer, f"ZMTP/CURVE protocol error {value:#x} (another mechanism, or the wrong server key)")
            # HANDSHAKE_FAILED_AUTH was counted by the authenticator, with the address.

    def _endpoint_peer(self) -> str:
        return f"a peer of {self.address.endpoint if self.address else self.name} (closed before it could be named)"


def _peer_of_fd(fd: int) -> str | None:
    """The remote address of a connection libzmq just accepted, if it is still open."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        s = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None
    try:
        host, port, *_ = s.getpeername()
        return f"{host}:{port}"
    except (OSError, ValueError):
        return None
    finally:
        s.close()
