"""The frames a batch link exchanges, its limits, addresses and errors.

A sender (ZeroMQ DEALER) sends each batch as two frames: a 12-byte header
``magic "BM" | version u8 | kind u8 | seq u64`` (big-endian; kind 1 = event batch) and the
batch encoded by ``actors.stream.codec``. ``seq`` counts from 1 per sender key and never
repeats, so a batch re-sent after a reconnect is recognised and not handled twice. The
receiver (ROUTER) answers every frame it can attribute with one frame, MessagePack
``[seq, status, payload]``: status 0 = handled (payload: the handler's result), 1 = the
handler raised (payload: its message), 2 = the frame was refused (payload: why).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import msgspec

HEADER = struct.Struct("!2sBBQ")
MAGIC = b"BM"
VERSION = 1
KIND_BATCH = 1

OK, FAILED, REFUSED = 0, 1, 2

_reply_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(tuple[int, int, object])


def batch_header(seq: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, KIND_BATCH, seq)


def read_header(data: bytes) -> int:
    """The header's seq; ``ValueError`` for anything that is not a version-1 batch header."""
    if len(data) != HEADER.size:
        raise ValueError(f"header of {len(data)} bytes, expected {HEADER.size}")
    magic, version, kind, seq = HEADER.unpack(data)
    if magic != MAGIC or version != VERSION or kind != KIND_BATCH:
        raise ValueError(f"not a version-{VERSION} batch header (magic {magic!r}, version {version}, kind {kind})")
    if seq == 0:
        raise ValueError("seq 0 (senders count from 1)")
    return seq


def encode_reply(seq: int, status: int, payload: object) -> bytes:
    return _reply_encoder.encode((seq, status, payload))


def decode_reply(data: bytes) -> tuple[int, int, object]:
    return _reply_decoder.decode(data)


@dataclass(frozen=True)
class StreamLimits:
    """What a receiver tolerates and how long links wait."""

    max_frame_bytes: int = 64 * 1024 * 1024  # a bigger batch is refused (counted); 4x this drops the connection
    handshake_timeout_s: float = 5.0  # a peer that has not completed the CURVE handshake by then is dropped
    heartbeat_s: float = 1.0  # ZMTP heartbeats: a silent dead peer is noticed...
    heartbeat_timeout_s: float = 10.0  # ...after this long
    connect_timeout_s: float = 10.0  # a sender gives up connecting after this long

    @classmethod
    def from_config(cls, config) -> StreamLimits:
        """From ``market_data.yaml``'s ``stream`` section (``StreamConfig``)."""
        return cls(config.max_frame_bytes, config.handshake_timeout_s, config.heartbeat_s,
                   config.heartbeat_timeout_s, config.connect_timeout_s)

    @property
    def hard_max_bytes(self) -> int:
        """libzmq drops a connection whose frame announces more than this, before reading it."""
        return 4 * self.max_frame_bytes


@dataclass(frozen=True)
class StreamAddress:
    """Where a receiver listens and its CURVE public key (z85). Public: it travels over
    Ray's control plane; the receiver's secret key never leaves its process."""

    host: str
    port: int
    server_key: bytes

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def __repr__(self) -> str:
        return f"StreamAddress({self.endpoint})"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who sent a batch: the name the receiver allowed its key under, the key, its
    address as the connection shows it, and the batch's sequence number."""

    peer: str
    key: bytes
    address: str
    seq: int


class StreamClosed(ConnectionError):
    """The link to the receiver is gone; unacknowledged batches may not have arrived."""


class StreamRefused(StreamClosed):
    """The receiver did not accept this sender (its key is not allowed, or the receiver's
    key is not the one the address names)."""


class ReceiverFailed(RuntimeError):
    """The receiver's handler raised on a batch; the message is its error."""


class FrameRefused(RuntimeError):
    """The receiver refused a batch's frame (oversized, or not a valid event batch)."""
