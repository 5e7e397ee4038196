"""WebSocket audio streams: a call's audio forked to a WebSocket service, as Twilio and Plivo do it.

Sans-I/O, like ``sip/``: nothing here opens a socket or reads the clock.

- ``options``: what a stream request says (Twilio ``<Stream>`` + ``<Parameter>``, Plivo
  ``<Stream>``), validated into frozen values; misuse is a ``LocalProtocolError`` naming the
  attribute and the allowed values.
- ``twilio_wire`` / ``plivo_wire``: the JSON text messages of each protocol. A per-stream
  encoder writes what we send (start, 20 ms media frames, stop...) with its sequence numbers,
  chunk counters and timestamps; a strict decoder reads what a bidirectional service may send
  back into frozen dataclasses, or raises ``MalformedMessageError`` with the JSON path at fault.

This module holds what both wire modules share: the error and a reader of JSON objects that
knows the path of every field. Import the public API from the submodules.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from siprec_src.errors import RemoteProtocolError

# RFC 6455 §7.4.1: 1007 = "data within a message that was not consistent with the type of the
# message"; the close code a WebSocket adapter uses when a text message cannot be understood.
CLOSE_INVALID_PAYLOAD = 1007


class MalformedMessageError(RemoteProtocolError):
    """A stream service sent a message that breaks the protocol.

    ``field`` is the JSON path at fault (``media.payload``; ``""`` for the message as a whole);
    ``close_code`` is what to close the WebSocket with if the adapter gives up on the peer.
    """

    close_code = CLOSE_INVALID_PAYLOAD

    def __init__(self, reason: str, *, field: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason, status_hint=400)
        self.field = field


def parse_json_object(text: str) -> JsonObject:
    """The top-level JSON object of a text message; ``MalformedMessageError`` if it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedMessageError(f"not JSON: {exc.msg} at character {exc.pos}", field="") from None
    except RecursionError:
        raise MalformedMessageError("not JSON: nested too deeply", field="") from None
    except ValueError as exc:
        # json lets int()'s own limit through: a number of more than 4300 digits.
        raise MalformedMessageError(f"not JSON: {exc}", field="") from None
    if not isinstance(value, dict):
        raise MalformedMessageError(f"expected a JSON object, got {_kind(value)}", field="")
    return JsonObject(value, "")


class JsonObject:
    """A JSON object read by a decoder: each accessor checks one field's type and presence, and
    errors name the field by its full path. Fields nobody asks for are ignored (services add
    fields over time; ignoring them is what keeps an old decoder working)."""

    __slots__ = ("_path", "_value")

    def __init__(self, value: Mapping[str, object], path: str) -> None:
        self._value = value
        self._path = path

    def path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def has(self, key: str) -> bool:
        return key in self._value

    def text(self, key: str) -> str:
        value = self._required(key)
        if not isinstance(value, str):
            raise MalformedMessageError(f"expected a string, got {_kind(value)}", field=self.path(key))
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if key in self._value else None

    def integer(self, key: str) -> int:
        """A JSON integer, or a string of decimal digits (some services quote their numbers)."""
        value = self._required(key)
        # At most 18 digits: an int64, and far from int()'s 4300-digit limit (ValueError).
        if isinstance(value, str) and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise MalformedMessageError(f"expected an integer, got {_kind(value)}", field=self.path(key))

    def section(self, key: str) -> JsonObject:
        value = self._required(key)
        if not isinstance(value, dict):
            raise MalformedMessageError(f"expected an object, got {_kind(value)}", field=self.path(key))
        return JsonObject(value, self.path(key))

    def base64(self, key: str) -> bytes:
        """Standard base64 (RFC 4648 §4, with padding), non-empty."""
        text = self.text(key)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedMessageError("not valid base64", field=self.path(key)) from None
        if not data:
            raise MalformedMessageError("empty payload", field=self.path(key))
        return data

    def _required(self, key: str) -> object:
        if key not in self._value:
            raise MalformedMessageError("missing", field=self.path(key))
        return self._value[key]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "an array"
    return "an object"
