"""A feed's link to the MDS, against real batch receivers on 127.0.0.1 standing in for the
MDS: batches are kept until the receiver says they are stored, sent again to a receiver
that replaced a dead one, and let go (counted) past the bound."""

from __future__ import annotations

import asyncio

from actors.feeds.mds_link import MdsLink
from actors.stream import BatchReceiver, StreamLimits
from cluster.domain import Quote
from cluster.events import EventBatch

LIMITS = StreamLimits(connect_timeout_s=2.0)


def quote(i: int) -> Quote:
    return Quote(1_700_000_000_000_000_000 + i, "drift:SOL-PERP", 100.0 + i, 1.0, 100.5 + i, 2.0, i)


class FakeMds:
    """A receiver whose answer is the last seq it calls stored (``stored_upto``)."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.stored_upto = 0
        self.receiver = BatchReceiver(self.handle, "mds", LIMITS)

    def handle(self, batch: EventBatch, origin) -> int:
        self.got.extend(e.seq for e in batch.events)
        return self.stored_upto

    async def locate(self, key: bytes, peer: str):
        self.receiver.allow(key, peer)
        return self.receiver.address


def test_batches_are_kept_until_stored_and_sent_again_to_a_restarted_mds():
    async def main():
        first = FakeMds()
        await first.receiver.start("127.0.0.1")
        current = {"mds": first}

        async def locate(key, peer):
            return await current["mds"].locate(key, peer)

        link = MdsLink("feed:replay@run1", locate, LIMITS, max_unconfirmed_events=1000, retry_initial_s=0.05)
        for i in range(1, 4):
            await link.publish(EventBatch([quote(i)], i, "replay"))
        first.stored_upto = 2  # batches 1 and 2 are in the store
        await link.publish(EventBatch([quote(4)], 4, "replay"))
        assert first.got == [1, 2, 3, 4]
        assert link.status()["kept_batches"] == 2 and link.confirmed_seq == 2  # 3 and 4 wait
        # The MDS dies; a new one comes up at another address.
        await first.receiver.close()
        second = FakeMds()
        await second.receiver.start("127.0.0.1")
        current["mds"] = second
        await asyncio.wait_for(link.publish(EventBatch([quote(5)], 5, "replay")), 10)
        assert second.got == [3, 4, 5]  # what the dead MDS had not stored, then the new batch
        assert link.reconnects == 1 and link.resent >= 2  # 3 and 4 (and 5, if it went out on the dead link first)
        second.stored_upto = 5
        await link.publish(EventBatch([quote(6)], 6, "replay"))
        assert link.status()["kept_batches"] == 1  # only 6 now
        await link.close()
        await second.receiver.close()

    asyncio.run(main())


def test_the_same_mds_is_not_handed_a_batch_twice_after_a_lost_connection():
    async def main():
        mds = FakeMds()
        await mds.receiver.start("127.0.0.1")
        link = MdsLink("feed:x@1", mds.locate, LIMITS, max_unconfirmed_events=1000, retry_initial_s=0.05)
        for i in range(1, 4):
            await link.publish(EventBatch([quote(i)], i, "x"))
        link.mds_restarted()  # as if the MDS announced itself: the link reconnects and re-sends
        await asyncio.wait_for(link.publish(EventBatch([quote(4)], 4, "x")), 10)
        assert mds.got == [1, 2, 3, 4] and mds.receiver.duplicates == 3
        await link.close()
        await mds.receiver.close()

    asyncio.run(main())


def test_past_the_bound_the_oldest_handled_batches_are_let_go_and_counted():
    async def main():
        mds = FakeMds()
        await mds.receiver.start("127.0.0.1")
        link = MdsLink("feed:x@1", mds.locate, LIMITS, max_unconfirmed_events=10, retry_initial_s=0.05)
        for i in range(1, 8):
            await link.publish(EventBatch([quote(10 * i + k) for k in range(3)], i, "x"))  # never stored
        assert link.kept_events <= 12 and link.released == 21 - link.kept_events
        await link.close()
        await mds.receiver.close()

    asyncio.run(main())


def test_a_feed_waits_while_no_mds_answers_and_goes_on_once_one_does():
    async def main():
        mds = FakeMds()
        up = asyncio.Event()

        async def locate(key, peer):
            if not up.is_set():
                raise ValueError("Failed to look up actor with name 'mds'")
            return await mds.locate(key, peer)

        link = MdsLink("feed:x@1", locate, LIMITS, max_unconfirmed_events=1000, retry_initial_s=0.05)
        pending = asyncio.ensure_future(link.publish(EventBatch([quote(1)], 1, "x")))
        await asyncio.sleep(0.3)
        assert not pending.done() and "Failed to look up actor" in link.status()["last_error"]
        await mds.receiver.start("127.0.0.1")
        up.set()
        await asyncio.wait_for(pending, 10)
        assert mds.got == [1]
        await link.close()
        await mds.receiver.close()

    asyncio.run(main())
