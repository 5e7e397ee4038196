"""The asyncio adapter that runs a ``UserAgentCore`` (STYLE.md #2, after aioquic's protocol.py).

It feeds what the transport receives into the core, sends what the core says, re-arms one
``loop.call_at`` timer, and hands the core's events to the transaction user. No SIP rule
lives here: if a behaviour needs a test with a virtual clock, it belongs in ``sip/``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from siprec_src.errors import LocalProtocolError
from siprec_src.signaling.resolver import resolve
from siprec_src.signaling.timer import CoreTimer
from siprec_src.signaling.transport import ListenSpec, SipTransport, TlsConfig, TransportError
from siprec_src.sip.auth import Credentials
from siprec_src.sip.dialog import DialogId
from siprec_src.sip.message import Request, Response, parse_message
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import Destination, target_for_uri
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import (
    RequestFailed,
    ResponseReceived,
    UaEvent,
    UserAgentCore,
)

log = logging.getLogger(__name__)

Outcome = Response | RequestFailed


class UserAgent:
    """A SIP user agent on the running event loop.

    ``on_event`` receives every core event as it happens; without it events queue up for
    ``next_event()``. ``request()`` is the convenient form for a TU that just wants the final
    answer to one request.
    """

    def __init__(
        self,
        core: UserAgentCore | None = None,
        *,
        tls: TlsConfig | None = None,
        on_event: Callable[[UaEvent], None] | None = None,
        on_trace: Callable[[str, Request | Response, Destination], None] | None = None,
        idle_timeout: float = 3700.0,
    ) -> None:
        self.core = core or UserAgentCore()
        # Streams stay open longer than the longest session refresh interval (RFC 4028 default
        # 1800 s) so the SRS can still send its BYE over the connection we opened.
        self.transport = SipTransport(
            self._on_message,
            self._on_parse_error,
            self._on_transport_error,
            tls=tls,
            idle_timeout=idle_timeout,
        )
        self._on_event = on_event
        # A SIP trace hook: ("in" | "out", message, peer) for every message that crosses the wire.
        self._on_trace = on_trace
        self._events: asyncio.Queue[UaEvent] = asyncio.Queue()
        self._waiters: dict[int, asyncio.Future[Outcome]] = {}
        self._server_names: dict[Destination, str] = {}
        self._timer = CoreTimer(self._fire_timer)
        self._sends: set[asyncio.Task[None]] = set()
        self._outgoing: list[tuple[bytes, Destination]] = []  # for _send_outgoing, in order
        self._outgoing_scheduled = False
        self._loop = asyncio.get_running_loop()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, listens: Sequence[ListenSpec]) -> None:
        await self.transport.start(listens)
        for bound in self.transport.addresses:
            self.core.local_addresses.setdefault(bound.transport, (bound.host, bound.port))

    async def close(self) -> None:
        self._timer.cancel()
        self._send_outgoing()  # what was queued last (the BYEs of a shutdown) still goes out
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        await self.transport.close()

    async def __aenter__(self) -> UserAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def now(self) -> float:
        return self._loop.time()

    # --- what a transaction user calls ------------------------------------------------------

    async def destination_for(self, uri: SipUri, *, message_size: int = 0) -> Destination:
        """Resolve a SIP URI to where to send (RFC 3261 §18.1.1 transport rules, A/AAAA lookup)."""
        target = target_for_uri(uri, message_size=message_size)
        addresses = await resolve(target.host, target.port, target.transport)
        host, port = addresses[0]
        destination = Destination(target.transport, host, port)
        if target.server_name:
            self._server_names[destination] = target.server_name
        return destination

    def send(
        self,
        request: Request,
        destination: Destination,
        *,
        via_address: tuple[str, int] | None = None,
        credentials: Sequence[Credentials] | None = None,
    ) -> int:
        request_id = self.core.send(
            request, destination, self.now(), via_address=via_address, credentials=credentials
        )
        return self._track(request_id)

    async def request(
        self, request: Request, destination: Destination | None = None, *, timeout: float | None = None
    ) -> Outcome:
        """Send an out-of-dialog request and wait for its final answer (or its failure)."""
        if destination is None:
            destination = await self.destination_for(request.sip_uri, message_size=len(bytes(request)))
        request_id = self.send(request, destination)
        return await self.wait(request_id, timeout=timeout)

    async def wait(self, request_id: int, *, timeout: float | None = None) -> Outcome:
        """The final answer to a request sent with ``send``, ``send_in_dialog`` or ``bye``.

        Each id's outcome is kept until ``wait`` (or ``forget``) collects it, once.
        """
        future = self._waiters.get(request_id)
        if future is None:
            raise LocalProtocolError(f"request {request_id} was not sent here or was already collected")
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiters.pop(request_id, None)

    def forget(self, request_id: int) -> None:
        """Drop the outcome of a request nobody will ``wait`` for."""
        self._waiters.pop(request_id, None)

    def _track(self, request_id: int) -> int:
        # The future exists before anything runs, so an outcome can never arrive unclaimed;
        # requests the core sends on its own (ACK, BYE after a crossing 2xx) get none.
        self._waiters[request_id] = self._loop.create_future()
        self._after()
        return request_id

    def send_in_dialog(
        self,
        dialog_id: DialogId,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> int:
        request_id = self.core.send_in_dialog(
            dialog_id, method, self.now(), body=body, content_type=content_type, headers=headers
        )
        return self._track(request_id)

    def bye(self, dialog_id: DialogId, *, reason: str | None = None) -> int:
        return self._track(self.core.bye(dialog_id, self.now(), reason=reason))

    def respond(
        self,
        server_id: str,
        status: int,
        *,
        reason: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        response = self.core.respond(
            server_id,
            status,
            self.now(),
            reason=reason,
            body=body,
            content_type=content_type,
            headers=headers,
        )
        self._after()
        return response

    def cancel(self, request_id: int) -> None:
        self.core.cancel(request_id, self.now())
        self._after()

    async def next_event(self) -> UaEvent:
        return await self._events.get()

    def pump(self) -> None:
        """Send what the core has queued and deliver its events: call after driving ``core`` directly.

        A transaction user that is itself sans-I/O (the recording layer) calls the core's methods
        with ``now()``; this flushes their effects through the transport and re-arms the timer.
        """
        self._after()

    # --- transport callbacks --------------------------------------------------------------

    def _on_message(self, message: Request | Response, source: Destination, local: Destination) -> None:
        if self._on_trace is not None:
            self._on_trace("in", message, source)
        self.core.receive(message, source, self.now())
        self._after()

    def _on_parse_error(self, error: SipParseError, raw: bytes | None, source: Destination) -> None:
        log.info("unparseable SIP from %s: %s", source, error.reason)
        if raw is not None:
            self.core.reject_malformed(raw, error, source)
            self._after()

    def _on_transport_error(self, destination: Destination, reason: str) -> None:
        self.core.transport_error(destination, self.now(), reason)
        self._after()

    # --- the loop around the core -----------------------------------------------------------

    def _after(self) -> None:
        outgoing = self.core.messages_to_send()
        if outgoing:
            # Sent from the next turn of the loop, as a task per message used to do (what the
            # transaction user started meanwhile, such as stopping media, keeps going first),
            # but one callback for them all rather than a task each.
            self._outgoing.extend(outgoing)
            if not self._outgoing_scheduled:
                self._outgoing_scheduled = True
                self._loop.call_soon(self._send_outgoing)
        while (event := self.core.next_event()) is not None:
            self._deliver(event)
        self._arm_timer()

    def _send_outgoing(self) -> None:
        self._outgoing_scheduled = False
        outgoing, self._outgoing = self._outgoing, []
        for data, destination in outgoing:
            # A datagram, or a message on an open connection, goes out at once. One that must
            # wait (a connection to open, an error to report) goes through a task, and so does
            # every message after it while such a task is pending, so that none overtakes another.
            if not self._sends and self.transport.send_now(data, destination):
                if self._on_trace is not None:
                    self._on_trace("out", parse_message(data), destination)
                continue
            task = self._loop.create_task(self._send(data, destination))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, data: bytes, destination: Destination) -> None:
        if self._on_trace is not None:
            self._on_trace("out", parse_message(data), destination)
        try:
            await self.transport.send(data, destination, server_name=self._server_names.get(destination))
        except TransportError:
            pass  # already reported through _on_transport_error
        except LocalProtocolError as exc:
            self._on_transport_error(destination, str(exc))

    def _deliver(self, event: UaEvent) -> None:
        request_id: int | None = None
        outcome: Outcome | None = None
        if isinstance(event, ResponseReceived) and event.response.status >= 200:
            request_id, outcome = event.request_id, event.response
        elif isinstance(event, RequestFailed):
            request_id, outcome = event.request_id, event
        if request_id is not None and outcome is not None:
            future = self._waiters.get(request_id)
            if future is not None and not future.done():
                future.set_result(outcome)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("event handler failed on %r", event)
        else:
            self._events.put_nowait(event)

    def _arm_timer(self) -> None:
        self._timer.arm(self.core.get_timer())

    def _fire_timer(self) -> None:
        self.core.handle_timer(self.now())
        self._after()
