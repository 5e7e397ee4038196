"""The two error families of siprec_src (STYLE.md #5, after h11).

``LocalProtocolError`` means *we* (or the caller of our API) asked for something the
protocol does not allow. ``RemoteProtocolError`` means the *peer* broke the protocol;
it carries a SIP status hint so a UAS can answer automatically (400, 413, 416, ...).
This module imports nothing so every layer may use it.
"""

from __future__ import annotations


class SiprecError(Exception):
    """Base class of every error raised on purpose by siprec_src."""


class LocalProtocolError(SiprecError):
    """The API was misused: a request the protocol forbids, a state that does not allow it.

    ``field`` names the argument at fault (the control API reports it in its 4xx body) and
    ``code`` is a stable machine-readable kind (``unknown_connector``, ``stream_limit``...).
    """

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class RemoteProtocolError(SiprecError):
    """The peer sent something that breaks the protocol.

    ``status_hint`` is the SIP status a UAS should answer with (RFC 3261 §21), and
    ``reason`` says precisely what was wrong (which line, which header).
    """

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status_hint={self.status_hint})"


class ConfigError(SiprecError):
    """A configuration value is wrong; the message names the file, the key and what is allowed."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ":".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.key = key
