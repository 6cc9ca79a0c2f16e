"""A fake Solana RPC node: HTTP JSON-RPC on port P, websocket PubSub on port P + 1 (the
solana-test-validator layout, so a feed pointed at ``http://127.0.0.1:P`` derives the
websocket URL by itself).

It speaks the wire JSON of venue-apis.md section 5.2: subscription acks
``{"jsonrpc":"2.0","result":<sub id>,"id":<request id>}``, ``slotNotification`` and
``logsNotification``; and answers ``getRecentPrioritizationFees`` with
``[{slot, prioritizationFee}]``. Subscription ids come from one counter starting at 100, so
they never equal request ids and differ on every reconnect.

Streaming: once a connection has subscribed, every ``interval_s`` it pushes one "round": a
slot notification to each slot subscription and one logs notification (signature derived
from the slot and the program) to each logs subscription. ``drop_after[i]`` rounds into the
i-th connection the server aborts the TCP connection without a close frame (a mid-stream
drop); connections past the list stream until the test ends. ``silent`` pushes nothing.

Failure switches: ``refuse_upgrades`` is a queue of HTTP statuses answered to the next
websocket upgrade requests instead of switching protocols (429 with ``Retry-After: 0``);
``fee_modes`` is a queue of answers for the next fee requests (``ok``,
``http_429``, ``http_500``, ``rpc_rate_limited`` (-32429), ``rpc_error``, ``malformed`` (not
JSON), ``wrong_shape``); ``reject_logs`` refuses logsSubscribe with a JSON-RPC error.
Everything sent is recorded in ``sent`` for the test to compare with what the feed emitted.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
from dataclasses import dataclass, field

from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rem = divmod(number, 58)
        out = _B58[rem] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def signature_for(slot: int, program_id: str) -> str:
    """A deterministic, well-formed (64-byte, base58) transaction signature."""
    digest = hashlib.sha512(f"{slot}:{program_id}".encode()).digest()
    return b58encode(digest)


INSTRUCTION_ERROR = {"InstructionError": [0, {"Custom": 6001}]}


@dataclass
class Sent:
    connection: int
    kind: str  # slot | log
    slot: int
    subscription: int
    parent: int = 0
    root: int = 0
    signature: str = ""
    program_id: str = ""
    err: object = None


@dataclass
class _Connection:
    number: int
    ws: ServerConnection
    slot_subs: list[int] = field(default_factory=list)
    logs_subs: dict[int, str] = field(default_factory=dict)  # sub id -> mentioned program id


class FakeSolanaRpc:
    def __init__(
        self,
        fees: list[tuple[int, int]] | None = None,
        drop_after: list[int] | None = None,
        interval_s: float = 0.02,
        silent: bool = False,
        failing_program: str | None = None,
        reject_logs: bool = False,
    ) -> None:
        self.fees = fees if fees is not None else [(1000, 0), (1001, 5000)]
        self.drop_after = list(drop_after or [])
        self.interval_s = interval_s
        self.silent = silent
        self.failing_program = failing_program
        self.reject_logs = reject_logs
        self.refuse_upgrades: list[int] = []
        self.fee_modes: list[str] = []
        self.fee_requests: list[dict] = []
        self.subscribe_requests: list[tuple[int, dict]] = []  # (connection, request)
        self.sent: list[Sent] = []
        self.connections = 0
        self.port = 0
        self._sub_ids = itertools.count(100)
        self._slot = 5000
        self._ws_server = None
        self._runner: web.AppRunner | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port + 1}"

    async def start(self) -> None:
        """Bind HTTP on a free port P and the websocket on P + 1 (retrying if P + 1 is taken)."""
        for _ in range(20):
            port = _free_port()
            app = web.Application()
            app.router.add_post("/", self._rpc)
            runner = web.AppRunner(app)
            await runner.setup()
            try:
                await web.TCPSite(runner, "127.0.0.1", port).start()
                self._ws_server = await serve(
                    self._ws_handler, "127.0.0.1", port + 1, process_request=self._process_upgrade
                )
            except OSError:
                await runner.cleanup()
                continue
            self._runner, self.port = runner, port
            return
        raise RuntimeError("no free port pair for the fake Solana RPC")

    async def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- HTTP JSON-RPC ------------------------------------------------------------------

    async def _rpc(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.fee_requests.append(body)
        rid = body.get("id")
        mode = self.fee_modes.pop(0) if self.fee_modes else "ok"
        if body.get("method") != "getRecentPrioritizationFees":
            return _rpc_error(rid, -32601, "Method not found")
        params = body.get("params") or []
        if params and len(params[0]) > 128:
            return _rpc_error(rid, -32602, "Too many inputs provided; max 128")
        if mode == "http_429":
            return web.Response(status=429, text="Too many requests", headers={"Retry-After": "0"})
        if mode == "http_500":
            return web.Response(status=500, text="internal error")
        if mode == "rpc_rate_limited":
            return _rpc_error(rid, -32429, "rate limit exceeded")
        if mode == "rpc_error":
            return _rpc_error(rid, -32005, "Node is behind by 42 slots")
        if mode == "malformed":
            return web.Response(status=200, text="<html>upstream error</html>", content_type="text/html")
        if mode == "wrong_shape":
            return web.json_response({"jsonrpc": "2.0", "result": {"fees": []}, "id": rid})
        result = [{"slot": slot, "prioritizationFee": fee} for slot, fee in self.fees]
        return web.json_response({"jsonrpc": "2.0", "result": result, "id": rid})

    # --- websocket PubSub ---------------------------------------------------------------

    def _process_upgrade(self, ws: ServerConnection, request: object):
        if not self.refuse_upgrades:
            return None
        status = self.refuse_upgrades.pop(0)
        response = ws.respond(status, "refused\n")
        if status == 429:
            response.headers["Retry-After"] = "0"
        return response

    async def _ws_handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn = _Connection(self.connections, ws)
        pusher = asyncio.ensure_future(self._push(conn))
        try:
            async for raw in ws:
                await self._answer(conn, json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            pusher.cancel()

    async def _answer(self, conn: _Connection, request: dict) -> None:
        self.subscribe_requests.append((conn.number, request))
        rid, method, params = request["id"], request["method"], request.get("params") or []
        if method == "slotSubscribe":
            sub = next(self._sub_ids)
            conn.slot_subs.append(sub)
        elif method == "logsSubscribe":
            mentions = params[0].get("mentions") if params and isinstance(params[0], dict) else None
            if self.reject_logs or not mentions or len(mentions) != 1:
                await conn.ws.send(_ws_error(rid, -32602, "Invalid Request: Only 1 address supported"))
                return
            sub = next(self._sub_ids)
            conn.logs_subs[sub] = mentions[0]
        else:
            await conn.ws.send(_ws_error(rid, -32601, "Method not found"))
            return
        await conn.ws.send(json.dumps({"jsonrpc": "2.0", "result": sub, "id": rid}))

    async def _push(self, conn: _Connection) -> None:
        if self.silent:
            return
        limit = self.drop_after[conn.number - 1] if conn.number <= len(self.drop_after) else None
        rounds = 0
        while True:
            await asyncio.sleep(self.interval_s)
            if not conn.slot_subs and not conn.logs_subs:
                continue
            if limit is not None and rounds >= limit:
                conn.ws.transport.abort()  # no close frame: the client sees 1006
                return
            self._slot += 1
            slot = self._slot
            parent, root = slot - 1, slot - 32
            # Record before sending: a send cancelled at shutdown may still have reached the feed.
            for sub in conn.slot_subs:
                info = {"parent": parent, "root": root, "slot": slot}
                self.sent.append(Sent(conn.number, "slot", slot, sub, parent=parent, root=root))
                await conn.ws.send(_notification("slotNotification", sub, info))
            for sub, program_id in list(conn.logs_subs.items()):
                signature = signature_for(slot, program_id)
                err = INSTRUCTION_ERROR if program_id == self.failing_program else None
                logs = [
                    f"Program {program_id} invoke [1]",
                    f"Program log: slot {slot}",
                    f"Program {program_id} success",
                ]
                value = {"signature": signature, "err": err, "logs": logs}
                sent = Sent(conn.number, "log", slot, sub, signature=signature, program_id=program_id, err=err)
                self.sent.append(sent)
                await conn.ws.send(_notification("logsNotification", sub, {"context": {"slot": slot}, "value": value}))
            rounds += 1


def _notification(method: str, subscription: int, result: dict) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": {"result": result, "subscription": subscription}})


def _ws_error(rid: object, code: int, message: str) -> str:
    return json.dumps({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": rid})


def _rpc_error(rid: object, code: int, message: str) -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": rid})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
