"""Batch streams (the market-data data plane) over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import struct

import pytest

from actors.batch_stream import TOKEN_BYTES, BatchReceiver, BatchSender, ReceiverFailed, StreamAddress, StreamClosed
from cluster.domain import Quote
from cluster.events import EventBatch


def quote(i: int) -> Quote:
    return Quote(1_700_000_000_000_000_000 + i, "binance:BTC-USDT", 100.0 + i, 1.0, 100.5 + i, 2.0, i)


async def receiver(handler, name="test") -> tuple[BatchReceiver, StreamAddress]:
    r = BatchReceiver(handler, name)
    return r, await r.start("127.0.0.1")


def test_batches_arrive_in_order_and_acks_resolve_after_the_handler():
    async def main():
        got: list[EventBatch] = []
        handled = []

        async def handle(batch):
            await asyncio.sleep(0.002 if len(got) % 2 else 0)  # uneven handling time
            got.append(batch)
            handled.append(len(got))

        r, address = await receiver(handle)
        sender = await BatchSender.connect(address, "t")
        acks = [sender.send(EventBatch([quote(i), quote(i + 1)], 1000 + i, "t")) for i in range(0, 200, 2)]
        assert sender.inflight == 100
        first = await acks[0]
        assert first is None and handled[0] == 1  # acknowledged only once handled
        await asyncio.gather(*acks)
        assert sender.inflight == 0
        assert [b.emitted_ns for b in got] == [1000 + i for i in range(0, 200, 2)]
        assert [e.seq for b in got for e in b.events] == list(range(200))
        assert got[0].events[0] == quote(0)
        await sender.close()
        await r.close()

    asyncio.run(main())


def test_a_handler_error_fails_that_batch_only_with_its_message():
    async def main():
        seen = []

        def handle(batch):
            if batch.source == "bad":
                raise ValueError("unknown instrument 'XYZ'")
            seen.append(batch.source)

        r, address = await receiver(handle)
        sender = await BatchSender.connect(address, "feed:x->mds")
        ok1 = sender.send(EventBatch([], 1, "a"))
        bad = sender.send(EventBatch([], 2, "bad"))
        ok2 = sender.send(EventBatch([], 3, "b"))
        await ok1
        with pytest.raises(ReceiverFailed, match=r"feed:x->mds: ValueError: unknown instrument 'XYZ'"):
            await bad
        await ok2
        assert seen == ["a", "b"] and not sender.closed
        await sender.close()
        await r.close()

    asyncio.run(main())


def test_a_connection_without_the_token_is_refused():
    async def main():
        got = []
        r, address = await receiver(got.append)
        forged = StreamAddress(address.host, address.port, b"\x00" * TOKEN_BYTES)
        sender = await BatchSender.connect(forged, "intruder")
        with pytest.raises(StreamClosed, match="intruder: connection lost"):
            await sender.send(EventBatch([quote(1)], 1, "x"))
        with pytest.raises(StreamClosed):
            sender.send(EventBatch([], 2, "x"))
        assert got == [] and r.refused == 1
        await r.close()

    asyncio.run(main())


def test_receiver_gone_fails_unacknowledged_batches_and_later_sends():
    async def main():
        release = asyncio.Event()

        async def handle(batch):
            await release.wait()

        r, address = await receiver(handle)
        sender = await BatchSender.connect(address, "mds->slow")
        pending = [sender.send(EventBatch([quote(i)], i, "x")) for i in range(3)]
        await asyncio.sleep(0.05)
        await r.close()  # the subscriber's process went away mid-stream
        for fut in pending:
            with pytest.raises(StreamClosed, match="mds->slow"):
                await fut
        assert sender.closed
        with pytest.raises(StreamClosed):
            sender.send(EventBatch([], 9, "x"))

    asyncio.run(main())


def test_nobody_listening_is_a_clear_error():
    async def main():
        r, address = await receiver(lambda b: None)
        await r.close()
        with pytest.raises(StreamClosed, match=r"cannot connect to 127\.0\.0\.1:\d+"):
            await BatchSender.connect(address, "feed:replay->mds", timeout_s=2)

    asyncio.run(main())


def test_a_frame_over_the_limit_closes_the_stream():
    async def main():
        got = []
        r, address = await receiver(got.append)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(address.token + struct.pack("!I", 0xFFFFFFFF))
        assert await reader.read(1) == b""  # closed, nothing handled
        assert got == []
        writer.close()
        await r.close()

    asyncio.run(main())
