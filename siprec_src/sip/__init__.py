"""Sans-I/O SIP (RFC 3261): messages, URIs, headers, framing, multipart bodies.

Nothing in this package does I/O or reads the clock; see docs/architecture.md.
"""

from __future__ import annotations

from siprec_src.sip.framer import FramingError, StreamFramer
from siprec_src.sip.headers import CSeq, Headers, NameAddress, Via
from siprec_src.sip.message import (
    ParseLimits,
    Request,
    Response,
    check_request,
    parse_message,
    response_to,
)
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.uri import AbsoluteUri, SipUri, Uri, parse_uri

__all__ = [
    "AbsoluteUri",
    "CSeq",
    "FramingError",
    "Headers",
    "NameAddress",
    "ParseLimits",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "Uri",
    "Via",
    "check_request",
    "parse_message",
    "parse_uri",
    "response_to",
]
