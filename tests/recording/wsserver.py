"""An in-test WebSocket stream service on real loopback sockets (aiohttp), plain or TLS.

It keeps every text message of every connection, lets a test send messages back (a
bidirectional service) or close the connection, and has two misbehaviours: ``stall=True``
stops reading right after the handshake (its listening socket has a small receive buffer, so
TCP back-pressure reaches the client quickly), and ``hang=True`` accepts TCP but never answers
the WebSocket handshake.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class Connection:
    """One accepted WebSocket: what the client sent, in order."""

    request: web.Request
    ws: web.WebSocketResponse
    texts: list[str] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # loop time of each text
    binaries: int = 0
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # a stalled handler may end

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.texts]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == name]

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()


class WsServer:
    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        stall: bool = False,
        hang: bool = False,
        receive_buffer: int | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.stall = stall
        self.hang = hang
        self.receive_buffer = receive_buffer if receive_buffer is not None else (4096 if stall else None)
        self.connections: list[Connection] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._hang_server: asyncio.Server | None = None
        self._hung: list[asyncio.StreamWriter] = []

    def url(self, path: str = "/stream", host: str = "127.0.0.1") -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{host}:{self.port}{path}"

    async def __aenter__(self) -> WsServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.receive_buffer is not None:
            # Set before listen() so accepted sockets inherit it (and the window it advertises).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        if self.hang:
            self._hang_server = await asyncio.start_server(self._hang, sock=sock)
            return self
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock, ssl_context=self.ssl_context)
        await site.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for connection in self.connections:
            connection.released.set()
            transport = connection.request.transport
            if transport is not None and self.stall:
                transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._hang_server is not None:
            for writer in self._hung:
                writer.close()
            self._hang_server.close()
            await self._hang_server.wait_closed()

    async def connection(self, index: int = 0, timeout: float = 5.0) -> Connection:
        """The ``index``-th connection, once it is accepted."""
        async with asyncio.timeout(timeout):
            while len(self.connections) <= index:
                await asyncio.sleep(0.005)
        return self.connections[index]

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._hung.append(writer)  # read nothing, answer nothing

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = Connection(request, ws)
        self.connections.append(connection)
        loop = asyncio.get_running_loop()
        try:
            if self.stall:
                assert request.transport is not None
                request.transport.pause_reading()
                await connection.released.wait()
                return ws
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    connection.texts.append(message.data)
                    connection.received_at.append(loop.time())
                elif message.type is WSMsgType.BINARY:
                    connection.binaries += 1
        finally:
            connection.close_code = ws.close_code
            connection.closed.set()
        return ws
