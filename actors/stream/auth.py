"""Who may send to a receiver: CURVE keys, allowed one by one.

Every link is ZeroMQ CURVE: the traffic is encrypted and both ends prove their keys. A
receiver has its own key pair and accepts only the sender keys it was told about; a
sender has its own key pair too. Only public keys are exchanged, over Ray's control plane
(an authenticated actor call: a feed asks the MDS for its stream address and hands over
its public key in the same call). A secret key never leaves the process that made it.

The check itself is ZeroMQ's ZAP protocol, answered by pyzmq's authenticator on the
receiver's own context; ``KeyAuthenticator`` adds what the receiver needs to account for
refusals (the peer's address and key, reported to the receiver's ``on_denied``) and serves
the ZAP socket with a plain ``await recv``. (pyzmq's ``AsyncioAuthenticator`` polls it
through a separate ``Poller`` whose reader is removed a loop turn after ``stop``: a new
receiver whose ZAP socket got the same file descriptor in that turn lost its reader and
never saw a request.)
"""

from __future__ import annotations

from dataclasses import dataclass
import asyncio
from typing import Callable

import zmq
from zmq.auth.base import Authenticator


@dataclass(frozen=True)
class StreamKeys:
    """A CURVE key pair (z85 text as bytes). ``repr`` never shows the secret."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> StreamKeys:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    def __repr__(self) -> str:
        return f"StreamKeys(public={self.public.decode()[:8]}...)"


class KeyAuthenticator(Authenticator):
    """Allows CURVE clients whose public key is in ``allowed`` (key -> peer name) for the
    receiver's ZAP domain, and reports every refusal with the peer's address. ``context``
    must be a ``zmq.asyncio.Context``: its ZAP socket is served on the running loop."""

    def __init__(self, context: zmq.Context, domain: str, on_denied: Callable[[str, bytes], None]) -> None:
        super().__init__(context)
        self.domain = domain
        self.allowed: dict[bytes, str] = {}
        self._on_denied = on_denied
        self._address = "?"
        self._task: asyncio.Task | None = None
        self.configure_curve_callback(domain, credentials_provider=self)

    def start(self) -> None:
        # As the base class's start, with an asyncio socket (the base forces a blocking one).
        self.zap_socket = self.context.socket(zmq.REP)
        self.zap_socket.linger = 1
        self.zap_socket.bind("inproc://zeromq.zap.01")
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        super().stop()

    async def _serve(self) -> None:
        while True:
            await self.handle_zap_message(await self.zap_socket.recv_multipart())

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # The request names the peer's address; the key check below only sees the key.
        # Requests are handled one at a time on this loop, so the field is the current one.
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        if domain == self.domain and key in self.allowed:
            return True
        self._on_denied(self._address, key)
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        # The User-Id every frame of this connection carries: its key, by which the
        # receiver finds the peer's name and its last sequence number.
        return zmq.utils.z85.encode(client_public_key).decode()
