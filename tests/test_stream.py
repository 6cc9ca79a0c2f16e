"""Batch links (the market-data data plane) over real ZeroMQ sockets on 127.0.0.1: order and
acknowledgements, and every kind of bad peer, each leaving the good peers' stream running."""

from __future__ import annotations

import asyncio
import logging
import socket

import msgspec
import pytest
import zmq
import zmq.asyncio

from actors.stream import (
    BatchReceiver,
    BatchSender,
    FrameRefused,
    ReceiverFailed,
    StreamAddress,
    StreamClosed,
    StreamKeys,
    StreamLimits,
    StreamRefused,
)
from actors.stream.codec import encode_batch
from actors.stream.protocol import batch_header, decode_reply
from cluster.domain import Quote
from cluster.events import EventBatch

LIMITS = StreamLimits(max_frame_bytes=64 * 1024, handshake_timeout_s=0.3, connect_timeout_s=3.0)


def quote(i: int) -> Quote:
    return Quote(1_700_000_000_000_000_000 + i, "binance:BTC-USDT", 100.0 + i, 1.0, 100.5 + i, 2.0, i)


class Sink:
    """A receiver's handler that records what it handled."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, EventBatch]] = []

    def __call__(self, batch: EventBatch, origin) -> int:
        self.batches.append((origin.peer, origin.seq, batch))
        return origin.seq

    def seqs(self, peer: str) -> list[int]:
        return [e.seq for p, _, b in self.batches if p == peer for e in b.events]


async def started(handler, name="test", limits=LIMITS) -> tuple[BatchReceiver, StreamAddress]:
    r = BatchReceiver(handler, name, limits)
    return r, await r.start("127.0.0.1")


async def good_sender(r: BatchReceiver, address: StreamAddress, peer="feed:good") -> BatchSender:
    keys = StreamKeys.generate()
    r.allow(keys.public, peer)
    return await BatchSender.connect(address, f"{peer}->test", keys, LIMITS)


async def still_flows(r: BatchReceiver, sink: Sink, sender: BatchSender, start: int) -> None:
    """The good peer's next batches arrive, in order, after whatever the bad one did."""
    acks = [sender.send(EventBatch([quote(i)], i, "good")) for i in range(start, start + 3)]
    await asyncio.wait_for(asyncio.gather(*acks), 5)
    assert sink.seqs("feed:good")[-3:] == list(range(start, start + 3))


def raw_dealer(address: StreamAddress, keys: StreamKeys) -> zmq.asyncio.Socket:
    """A ZeroMQ peer with an allowed key that writes frames by hand (what a buggy or hostile
    cluster member could send)."""
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey = address.server_key
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    sock.connect(address.endpoint)
    return sock


async def wait_for(predicate, timeout=5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def test_batches_arrive_in_order_and_acks_carry_the_handler_result_after_it_ran():
    async def main():
        handled = []

        async def handle(batch, origin):
            await asyncio.sleep(0.002 if len(handled) % 2 else 0)  # uneven handling time
            handled.append(batch)
            return len(handled)

        r, address = await started(handle)
        sender = await good_sender(r, address)
        acks = [sender.send(EventBatch([quote(i), quote(i + 1)], 1000 + i, "t")) for i in range(0, 200, 2)]
        assert sender.inflight == 100
        assert await acks[0] == 1  # acknowledged only once handled, with the handler's result
        assert await asyncio.gather(*acks) == list(range(1, 101))
        assert sender.inflight == 0
        assert [b.emitted_ns for b in handled] == [1000 + i for i in range(0, 200, 2)]
        assert [e.seq for b in handled for e in b.events] == list(range(200))
        assert handled[0].events[0] == quote(0) and handled[0].source == "t"
        assert r.rejected == {}
        await sender.close()
        await r.close()

    asyncio.run(main())


def test_a_handler_error_fails_that_batch_only_with_its_message():
    async def main():
        seen = []

        def handle(batch, origin):
            if batch.source == "bad":
                raise ValueError("unknown instrument 'XYZ'")
            seen.append(batch.source)

        r, address = await started(handle)
        sender = await good_sender(r, address, "feed:x")
        ok1 = sender.send(EventBatch([], 1, "a"))
        bad = sender.send(EventBatch([], 2, "bad"))
        ok2 = sender.send(EventBatch([], 3, "b"))
        await ok1
        with pytest.raises(ReceiverFailed, match=r"feed:x->test: ValueError: unknown instrument 'XYZ'"):
            await bad
        await ok2
        assert seen == ["a", "b"] and not sender.closed
        await sender.close()
        await r.close()

    asyncio.run(main())


def test_a_key_the_receiver_was_not_given_is_refused_counted_and_named(caplog):
    async def main():
        sink = Sink()
        r, address = await started(sink)
        good = await good_sender(r, address)
        with pytest.raises(StreamRefused, match="refused this sender's key"):
            await BatchSender.connect(address, "intruder", StreamKeys.generate(), LIMITS)
        # A frame built by hand and "signed" with a key of its own never reaches the handler.
        rogue = raw_dealer(address, StreamKeys.generate())
        await rogue.send_multipart([batch_header(1), encode_batch(EventBatch([quote(666)], 1, "rogue"))])
        await wait_for(lambda: r.rejected["unauthenticated"] >= 2)
        rogue.close(linger=0)
        await still_flows(r, sink, good, 1)
        assert 666 not in [e.seq for _, _, b in sink.batches for e in b.events]
        await good.close()
        await r.close()

    with caplog.at_level(logging.WARNING, logger="actors.stream.receiver"):
        asyncio.run(main())
    lines = [rec.getMessage() for rec in caplog.records if "unauthenticated" in rec.getMessage()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0]  # once, naming the peer


def test_a_sender_given_the_wrong_server_key_cannot_connect():
    async def main():
        r, address = await started(Sink())
        keys = StreamKeys.generate()
        r.allow(keys.public, "feed:x")
        forged = StreamAddress(address.host, address.port, StreamKeys.generate().public)
        with pytest.raises(StreamRefused, match="closed the connection during the CURVE handshake"):
            await BatchSender.connect(forged, "feed:x->?", keys, LIMITS)
        await r.close()

    asyncio.run(main())


def test_garbage_bytes_are_dropped_at_the_handshake_and_the_stream_goes_on():
    async def main():
        sink = Sink()
        r, address = await started(sink)
        good = await good_sender(r, address)
        await still_flows(r, sink, good, 1)
        for _ in range(3):
            with socket.create_connection((address.host, address.port)) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 8)
        await wait_for(lambda: r.rejected["handshake"] >= 3)
        await still_flows(r, sink, good, 10)
        assert r.handled == 6
        await good.close()
        await r.close()

    asyncio.run(main())


def test_a_stalled_handshake_times_out_and_is_named(caplog):
    async def main():
        sink = Sink()
        r, address = await started(sink)
        good = await good_sender(r, address)
        staller = socket.create_connection((address.host, address.port))
        port = staller.getsockname()[1]
        try:
            await wait_for(lambda: r.rejected["handshake_timeout"] == 1, timeout=3)
            await still_flows(r, sink, good, 1)
            staller.settimeout(2)
            assert staller.recv(1024) == b"" or True  # libzmq has closed it (or sent its greeting first)
        finally:
            staller.close()
        await good.close()
        await r.close()
        return port

    with caplog.at_level(logging.WARNING, logger="actors.stream.receiver"):
        port = asyncio.run(main())
    assert any(f"127.0.0.1:{port}" in rec.getMessage() and "handshake timeout" in rec.getMessage() for rec in caplog.records)


def test_a_peer_that_disconnects_mid_frame_is_dropped_and_the_stream_goes_on():
    async def main():
        sink = Sink()
        r, address = await started(sink)
        good = await good_sender(r, address)
        # Half a ZMTP greeting (signature and part of the version), then gone.
        with socket.create_connection((address.host, address.port)) as s:
            s.sendall(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03")
        await wait_for(lambda: r.rejected["handshake"] >= 1)
        await still_flows(r, sink, good, 1)
        # An authenticated peer that leaves with batches in flight: the receiver carries on.
        leaving = await good_sender(r, address, "feed:leaving")
        for i in range(50):
            leaving.send(EventBatch([quote(i)] * 50, i, "leaving"))
        await leaving.close()
        await still_flows(r, sink, good, 10)
        await good.close()
        await r.close()

    asyncio.run(main())


def test_frames_that_are_not_valid_batches_are_refused_by_reason_and_the_peer_goes_on(caplog):
    async def main():
        sink = Sink()
        r, address = await started(sink)
        good = await good_sender(r, address)
        keys = StreamKeys.generate()
        r.allow(keys.public, "strategy:buggy")
        buggy = raw_dealer(address, keys)
        enc = msgspec.msgpack.Encoder()
        frames = [
            (1, b"\x93garbage that is not msgpack \xc1\xc1"),  # malformed
            (2, encode_batch(EventBatch([quote(1)] * 10, 1, "x"))[:40]),  # truncated
            (3, enc.encode((1, "x", None, [(99, 1, "x")]))),  # unknown event type
            (4, enc.encode((1, "x", None, [(1, "not an int", "x", 1.0, 1.0, 1.0, 1.0, 1)]))),  # wrong field type
            (5, b"\x00" * (LIMITS.max_frame_bytes + 1)),  # oversized
            (6, encode_batch(EventBatch([quote(7)], 1, "ok"))),  # and then a valid one
        ]
        for seq, body in frames:
            await buggy.send_multipart([batch_header(seq), body])
        replies = [decode_reply(await asyncio.wait_for(buggy.recv(), 5)) for _ in frames]
        assert [(seq, status) for seq, status, _ in replies] == [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 0)]
        assert "unknown event type 99" in replies[2][2]
        assert "field 'ts_ns'" in replies[3][2]
        # A header that is not ours gets no answer (nothing to match it to), only a count.
        await buggy.send_multipart([b"HELLO", b"x"])
        await buggy.send_multipart([b"one frame only"])
        await wait_for(lambda: r.rejected["malformed"] == 4)
        assert r.rejected == {"malformed": 4, "unknown_event": 1, "invalid_event": 1, "oversized": 1}
        assert sink.seqs("strategy:buggy") == [7]
        buggy.close(linger=0)
        await still_flows(r, sink, good, 1)
        await good.close()
        await r.close()

    with caplog.at_level(logging.WARNING, logger="actors.stream.receiver"):
        asyncio.run(main())
    malformed = [rec.getMessage() for rec in caplog.records if "refused malformed" in rec.getMessage()]
    assert len(malformed) == 1 and "strategy:buggy at 127.0.0.1" in malformed[0]


def test_a_sender_refuses_to_send_a_batch_over_the_frame_limit():
    async def main():
        r, address = await started(Sink())
        sender = await good_sender(r, address)
        with pytest.raises(ValueError, match="over the 65,536-byte frame limit"):
            sender.send(EventBatch([quote(i) for i in range(2000)], 1, "big"))
        await sender.close()
        await r.close()

    asyncio.run(main())


def test_a_refused_frame_fails_only_its_own_batch():
    async def main():
        class Strange:  # not an event: the sender cannot encode it
            pass

        r, address = await started(Sink())
        sender = await good_sender(r, address)
        with pytest.raises(TypeError, match="Strange is not a market-data event"):
            sender.send(EventBatch([Strange()], 1, "x"))
        await sender.send(EventBatch([quote(1)], 1, "x"))
        await sender.close()
        await r.close()

    asyncio.run(main())


def test_a_resent_batch_is_acknowledged_but_not_handled_twice():
    async def main():
        sink = Sink()
        r, address = await started(sink)
        keys = StreamKeys.generate()
        r.allow(keys.public, "feed:replay")
        first = await BatchSender.connect(address, "a", keys, LIMITS)
        batches = [EventBatch([quote(i)], i, "replay") for i in range(1, 6)]
        for b in batches[:3]:
            await first.send(b)
        await first.close()  # the link goes; the sender does not know whether 3 arrived
        second = await BatchSender.connect(address, "b", keys, LIMITS, first_seq=3)
        for seq, b in enumerate(batches[2:], start=3):  # re-sends 3, then 4 and 5
            await second.resend(seq, b)
        assert sink.seqs("feed:replay") == [1, 2, 3, 4, 5] and r.duplicates == 1
        await second.close()
        await r.close()

    asyncio.run(main())


def test_receiver_gone_fails_unacknowledged_batches_and_later_sends():
    async def main():
        release = asyncio.Event()

        async def handle(batch, origin):
            await release.wait()

        r, address = await started(handle)
        sender = await good_sender(r, address, "mds")
        pending = [sender.send(EventBatch([quote(i)], i, "x")) for i in range(3)]
        await asyncio.sleep(0.05)
        await r.close()  # the subscriber's process went away mid-stream
        for fut in pending:
            with pytest.raises(StreamClosed, match="connection to tcp://127.0.0.1:\\d+ lost"):
                await asyncio.wait_for(fut, 5)
        assert sender.closed
        with pytest.raises(StreamClosed):
            sender.send(EventBatch([], 9, "x"))
        await sender.close()

    asyncio.run(main())


def test_nobody_listening_is_a_clear_error():
    async def main():
        r, address = await started(Sink())
        keys = StreamKeys.generate()
        r.allow(keys.public, "x")
        await r.close()
        with pytest.raises(StreamClosed, match=r"cannot connect to tcp://127\.0\.0\.1:\d+"):
            await BatchSender.connect(address, "feed:replay->mds", keys, StreamLimits(connect_timeout_s=2))

    asyncio.run(main())


def test_a_link_is_encrypted_on_the_wire():
    """Bytes on the TCP connection never show the events in clear (CURVE encrypts every frame)."""

    async def main():
        sink = Sink()
        # A loopback TCP relay between sender and receiver records what crosses it.
        r, address = await started(sink)
        seen = bytearray()

        async def pipe(reader, writer, record):
            while data := await reader.read(65536):
                if record:
                    seen.extend(data)
                writer.write(data)
                await writer.drain()
            writer.close()

        async def relay(client_reader, client_writer):
            upstream_reader, upstream_writer = await asyncio.open_connection(address.host, address.port)
            await asyncio.gather(pipe(client_reader, upstream_writer, True), pipe(upstream_reader, client_writer, False))

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        keys = StreamKeys.generate()
        r.allow(keys.public, "feed:x")
        sender = await BatchSender.connect(StreamAddress("127.0.0.1", port, address.server_key), "x", keys, LIMITS)
        await sender.send(EventBatch([Quote(1, "binance:SECRET-INSTRUMENT", 1.0, 1.0, 2.0, 1.0, 1)], 1, "plaintext-source"))
        assert sink.batches and b"SECRET-INSTRUMENT" not in seen and b"plaintext-source" not in seen and len(seen) > 100
        await sender.close()
        server.close()
        await r.close()

    asyncio.run(main())
