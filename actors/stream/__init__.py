"""Batch links: the market-data data plane between actors.

Ray actor calls are the control plane (start, subscribe, status); the market data itself,
feed -> MDS and MDS -> subscriber, moves over one ZeroMQ connection per link, secured with
CURVE (encrypted, both ends authenticated by keys exchanged over Ray's control plane), in a
schema'd MessagePack encoding (never pickle). On the 2-core machine we measure on, a Ray
actor call costs about 1 ms of CPU across both processes and 2-3 ms round trip; a batch over
a link costs tens of microseconds. bench/mds.py prints both.

* ``codec``: events <-> bytes, validated against one schema per event type;
* ``protocol``: the frames, limits, addresses and errors;
* ``auth``: key pairs and the receiver's key check;
* ``receiver`` / ``sender``: the two ends.
"""

from actors.stream.auth import StreamKeys
from actors.stream.protocol import (
    FrameRefused,
    Origin,
    ReceiverFailed,
    StreamAddress,
    StreamClosed,
    StreamLimits,
    StreamRefused,
)
from actors.stream.receiver import BatchReceiver, node_address
from actors.stream.sender import BatchSender

__all__ = [
    "BatchReceiver",
    "BatchSender",
    "FrameRefused",
    "Origin",
    "ReceiverFailed",
    "StreamAddress",
    "StreamClosed",
    "StreamKeys",
    "StreamLimits",
    "StreamRefused",
    "node_address",
]
