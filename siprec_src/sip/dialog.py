"""SIP dialogs (RFC 3261 §12): identity, route set, remote target and CSeq bookkeeping.

A ``Dialog`` is plain state plus the rules for building requests inside it and for checking
the requests the peer sends in it. It knows nothing of transactions or transports; the
user agent core (``useragent.py``) owns dialogs and decides when they start and end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from siprec_src.errors import LocalProtocolError
from siprec_src.sip.headers import Headers, NameAddress
from siprec_src.sip.message import Request, Response
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri, Uri

# RFC 3261 §12.2: requests that may change the remote target (target refresh requests).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


@dataclass(frozen=True, slots=True)
class DialogId:
    """RFC 3261 §12: Call-ID plus the local and remote tags, from our point of view."""

    call_id: str
    local_tag: str
    remote_tag: str


class DialogState(StrEnum):
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Dialog:
    id: DialogId
    local_address: NameAddress  # our From (UAC) or To (UAS), with our tag
    remote_address: NameAddress  # the peer's, with its tag
    remote_target: Uri  # the peer's Contact URI: Request-URI of our in-dialog requests
    route_set: tuple[NameAddress, ...]
    local_cseq: int
    remote_cseq: int | None
    local_contact: NameAddress
    is_uac: bool
    secure: bool = False
    state: DialogState = DialogState.CONFIRMED
    invite_cseq: int = 0  # CSeq of the INVITE (initial or re-INVITE) whose ACK is pending or sent
    # Where in-dialog requests go when the next hop is a host name the core cannot resolve:
    # the address the dialog was set up with (RFC 3263 lookups are the adapter's business).
    destination: Destination | None = None
    # The From, To and Contact values of our requests, written once: every ACK, BYE and
    # re-INVITE of the dialog repeats them (local_address, remote_address and local_contact
    # do not change during a dialog).
    _texts: tuple[str, str, str] | None = field(default=None, init=False, repr=False, compare=False)

    # --- creation -------------------------------------------------------------------------

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog a 2xx to our INVITE creates (RFC 3261 §12.1.2); early dialogs are not kept."""
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if not remote_tag or not local_tag:
            raise SipParseError("dialog-creating response without a To tag")
        contacts = response.contacts
        if not contacts:
            # RFC 3261 §12.1.2: a 2xx without Contact is broken; fall back to the Request-URI
            # so the BYE still goes somewhere reachable.
            target: Uri = request.uri
        else:
            target = contacts[0].uri
        # RFC 3261 §12.1.2: the route set is the Record-Route of the response, reversed.
        route_set = tuple(reversed(response.record_route))
        secure = isinstance(request.uri, SipUri) and request.uri.secure
        return cls(
            id=DialogId(request.call_id, local_tag, remote_tag),
            local_address=request.from_,
            remote_address=response.to,
            remote_target=target,
            route_set=route_set,
            local_cseq=request.cseq.number,
            remote_cseq=None,
            local_contact=request.contacts[0] if request.contacts else request.from_,
            is_uac=True,
            secure=secure,
            invite_cseq=request.cseq.number,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, local_contact: NameAddress) -> Dialog:
        """The dialog our 2xx to an INVITE creates (RFC 3261 §12.1.1)."""
        contacts = request.contacts
        if not contacts:
            raise SipParseError("INVITE without Contact cannot create a dialog")
        remote_tag = request.from_.tag
        if not remote_tag:
            raise SipParseError("INVITE without a From tag cannot create a dialog")
        secure = isinstance(request.uri, SipUri) and request.uri.secure
        return cls(
            id=DialogId(request.call_id, local_tag, remote_tag),
            local_address=request.to.with_tag(local_tag),
            remote_address=request.from_,
            remote_target=contacts[0].uri,
            route_set=tuple(request.record_route),  # §12.1.1: in order, not reversed
            local_cseq=0,
            remote_cseq=request.cseq.number,
            local_contact=local_contact,
            is_uac=False,
            secure=secure,
            invite_cseq=request.cseq.number,
        )

    # --- requests we send -----------------------------------------------------------------

    def create_request(self, method: str, *, body: bytes = b"", content_type: str | None = None) -> Request:
        """Build an in-dialog request (RFC 3261 §12.2.1.1). Via and Max-Forwards come later."""
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError(f"cannot send {method} in a terminated dialog")
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{method} reuses the INVITE's CSeq: use create_ack / the core's cancel")
        self.local_cseq += 1
        if method == "INVITE":
            self.invite_cseq = self.local_cseq
        return self._request(method, self.local_cseq, body, content_type)

    def create_ack(self, body: bytes = b"", content_type: str | None = None) -> Request:
        """ACK for a 2xx to the INVITE with ``invite_cseq`` (RFC 3261 §13.2.2.4): same CSeq number."""
        return self._request("ACK", self.invite_cseq, body, content_type)

    def _request(self, method: str, cseq: int, body: bytes, content_type: str | None) -> Request:
        headers = Headers()
        request_uri: Uri = self.remote_target
        routes = list(self.route_set)
        # RFC 3261 §12.2.1.1: loose routing when the first route has ;lr, strict routing otherwise
        # (the first route becomes the Request-URI and the remote target goes last).
        if routes and isinstance(routes[0].uri, SipUri) and not routes[0].uri.has_param("lr"):
            request_uri = routes[0].uri.without_headers()
            routes = [*routes[1:], NameAddress(self.remote_target)]
        for route in routes:
            headers.add("Route", str(route))
        if self._texts is None:
            self._texts = (str(self.local_address), str(self.remote_address), str(self.local_contact))
        from_, to, contact = self._texts
        headers.add("From", from_)
        headers.add("To", to)
        headers.add("Call-ID", self.id.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method != "ACK" or body:
            headers.add("Contact", contact)
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method, request_uri, headers, body)

    # --- what the peer sends --------------------------------------------------------------

    def check_remote_cseq(self, request: Request) -> bool:
        """RFC 3261 §12.2.2: a CSeq lower than the last one is out of order (answer 500).

        Returns True when the request is in order (and records its CSeq). ACK and CANCEL
        carry the CSeq of the INVITE and are not checked.
        """
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq.number
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def refresh_target(self, message: Request | Response) -> None:
        """Apply a target refresh (RFC 3261 §12.2.1.2 / §12.2.2): the new Contact becomes the target."""
        contacts = message.contacts
        if contacts:
            self.remote_target = contacts[0].uri


def dialog_id_of(message: Request | Response) -> DialogId | None:
    """The dialog id a message belongs to from our side, or None when a tag is missing.

    For a request *we receive*, our tag is in To and the peer's in From; for a response we
    receive (to a request we sent) it is the other way round.
    """
    from_tag = message.from_.tag
    to_tag = message.to.tag
    if isinstance(message, Request):
        local, remote = to_tag, from_tag
    else:
        local, remote = from_tag, to_tag
    if not local or not remote:
        return None
    return DialogId(message.call_id, local, remote)
