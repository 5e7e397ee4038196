"""The sidecar configuration file: TOML read with the stdlib ``tomllib`` into frozen settings.

    config = load_config("configs/siprec-src.toml")     # SidecarConfig, or ConfigErrors
    engine = Engine(config.engine)                       # EngineConfig
    sidecar = Sidecar(engine, settings=config.control)  # ControlSettings

What an operator gets from this module, and why:

- **Every problem at once.** A config is checked to the end and every problem is raised
  together in one ``ConfigErrors``: fixing one line per restart of a telephony service is
  how outages get longer.
- **Each problem names the file, the dotted key and what is allowed**
  (``siprec-src.toml:connectors.main.session_timeout: 30 is below ...``). Unknown keys are
  errors, not silently ignored (a misspelt ``sesion_timeout`` would otherwise leave the
  default in force), with a "did you mean" when a known key is close.
- **Secrets stay out of files and out of messages.** Any string may be written
  ``"${NAME}"`` (the whole value) and is read from the environment; a missing variable is
  an error naming the key and the variable. Secret values (API tokens, digest passwords,
  signing secrets) are never echoed in an error, even when they have the wrong type.
- **The domain's own validators decide.** SRS URIs go through ``parse_srs`` (``;edge=``
  resolution, TLS for ``secure``), port ranges through ``check_port_range`` and
  ``split_port_range``, TLS files through ``TlsConfig``; the dataclasses' own checks run as
  a last line, so a rule added there is enforced here without a change.

Relative file paths (``[sip.tls]``) are relative to the directory of the config file, so a
config and its certificates can move together.

``add_check_arguments`` and ``check_main`` implement ``siprec-src check-config FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import ipaddress
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from siprec_src.control.settings import ApiCredentials, CallbackSettings, ControlSettings
from siprec_src.control.sidecar import StreamSettings
from siprec_src.errors import ConfigError
from siprec_src.media.engine import MAX_RESTART_DELAY, MediaConfig
from siprec_src.media.ports import check_port_range, split_port_range
from siprec_src.recording.connector import (
    DEFAULT_SESSION_EXPIRES,
    DEFAULT_SRTP_SUITES,
    MIN_SESSION_EXPIRES,
    SRTP_SUITES,
    Connector,
    Edge,
    SrsTarget,
    parse_srs,
)
from siprec_src.recording.engine import EngineConfig
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.sip.auth import Credentials
from siprec_src.sip.syntax import SipParseError, is_token
from siprec_src.sip.target import DEFAULT_PORTS, TRANSPORTS, target_for_uri
from siprec_src.sip.uri import SipUri

T = TypeVar("T")

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
# What the shipped example configs write in their demo credentials ("change-me-demo-token-...").
DEMO_MARK = "change-me"
_ENGINE_DEFAULTS = EngineConfig()
_CONTROL_DEFAULTS = ControlSettings()

# A whole-value environment reference; anything else is taken literally (a password may
# contain "$" and must not be mangled).
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Keys TOML writes bare; any other key is shown quoted in a dotted path.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Connector and edge names: an edge name is written as a SIP URI parameter value (;edge=NAME),
# and connector names travel in API bodies and TwiML attributes, so both stay plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}")
# Names people carry over from other products or from the Python/ssl spelling.
_ALIASES = {
    "session_expires": "session_timeout",
    "session_timeout_secs": "session_timeout",
    "certfile": "cert",
    "keyfile": "key",
    "cafile": "ca",
    "user": "username",
    "advertise": "advertised",
    "proxy": "outbound_proxy",
}


class _Missing:
    """The absence of a usable value (not given, or given wrong and already reported)."""


_MISSING = _Missing()


class ConfigFileError(ConfigError):
    """The file cannot be read, or is not TOML. ``line``/``column`` locate a syntax error."""

    def __init__(self, message: str, *, file: str, line: int | None = None, column: int | None = None):
        super().__init__(message, file=file)
        self.line = line
        self.column = column


class ConfigErrors(ConfigError):  # noqa: N818 - a ConfigError that holds many
    """Every problem found in one config file; ``errors`` holds one ``ConfigError`` each."""

    def __init__(self, errors: Sequence[ConfigError], *, file: str) -> None:
        count = len(errors)
        lines = "\n".join(f"  {error}" for error in errors)
        super().__init__(f"{count} configuration error{'s' if count != 1 else ''}:\n{lines}", file=file)
        self.errors = list(errors)


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    engine: EngineConfig
    control: ControlSettings
    log_format: str = "text"  # "text" | "json"
    log_level: str = "info"  # one of LOG_LEVELS
    source: str | None = None  # the file it came from
    # [streams]: how WebSocket streams connect (the CA of wss:// services) and queue
    streams: StreamSettings = dataclasses.field(default_factory=StreamSettings)


def _default(cls: type, name: str, kind: type[T]) -> T:
    """A field's default: slotted dataclasses keep it only in their fields, not as a class attribute."""
    value = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    assert isinstance(value, kind), (cls, name)
    return value


def message_of(error: ConfigError) -> str:
    """The message of a ``ConfigError`` without its ``file:key:`` prefix."""
    text = str(error)
    where = ":".join(part for part in (error.file, error.key) if part)
    return text[len(where) + 2 :] if where and text.startswith(f"{where}: ") else text


def default_workers() -> int:
    """One media worker per core this process may run on (the affinity mask, as in a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --- reading ----------------------------------------------------------------------------------


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """Read and check a config file; raise ``ConfigFileError`` or ``ConfigErrors``."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read the file: {exc.strerror or exc}", file=file) from None
    except UnicodeDecodeError as exc:
        # TOML files are UTF-8 (TOML 1.0 "Spec").
        raise ConfigFileError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    return parse_config(text, file=file, environ=environ, base_dir=path.parent)


def parse_config(
    text: str,
    *,
    file: str = "<config>",
    environ: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
) -> SidecarConfig:
    """Check config text; ``base_dir`` anchors relative paths (default: the current directory)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        # Python 3.11's tomllib puts the position only in the message: "... (at line 3, column 7)".
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line, column = (int(found[1]), int(found[2])) if found else (None, None)
        raise ConfigFileError(f"TOML syntax error: {message}", file=file, line=line, column=column) from None
    except ValueError as exc:
        # tomllib lets int()'s own limit through: an integer of more than 4300 digits.
        raise ConfigFileError(f"TOML value cannot be read: {exc}", file=file) from None
    except RecursionError:
        raise ConfigFileError("TOML arrays or tables nested too deeply", file=file) from None
    reader = _Reader(file, os.environ if environ is None else environ, Path(base_dir or "."))
    config = _build(reader, data)
    if reader.errors:
        raise ConfigErrors(reader.errors, file=file)
    assert config is not None
    return SidecarConfig(
        engine=config.engine,
        control=config.control,
        streams=config.streams,
        log_format=config.log_format,
        log_level=config.log_level,
        source=None if file == "<config>" else file,
    )


class _Reader:
    """Collects errors (each keyed by its dotted path) and resolves ``${NAME}`` references."""

    def __init__(self, file: str, environ: Mapping[str, str], base_dir: Path) -> None:
        self.file = file
        self.environ = environ
        self.base_dir = base_dir
        self.errors: list[ConfigError] = []
        self.bad: set[str] = set()

    def error(self, key: str, message: str) -> None:
        self.errors.append(ConfigError(message, file=self.file, key=key))
        self.bad.add(key)

    def ok(self, *keys: str) -> bool:
        """No error was reported for any of these keys (so a check that combines them is fair)."""
        return not any(key in self.bad for key in keys)

    def guard(self, key: str, build: Callable[[], T]) -> T | None:
        """Run a domain constructor or validator; report its ``ConfigError`` under ``key``."""
        try:
            return build()
        except ConfigError as exc:
            self.error(key, message_of(exc))
            return None

    def resolve(self, key: str, value: object) -> tuple[object, str | None]:
        """``value`` with a whole-value ``${NAME}`` replaced, and the variable's name if it was."""
        if isinstance(value, str):
            reference = _ENV_REFERENCE.fullmatch(value)
            if reference is not None:
                name = reference[1]
                if name not in self.environ:
                    self.error(key, f"environment variable {name} is not set (the value is written {value})")
                    return _MISSING, name
                return self.environ[name], name
        return value, None

    def unknown_key(self, key: str, name: str, known: Sequence[str]) -> None:
        guess = _ALIASES.get(name)
        if guess not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            guess = close[0] if close else None
        hint = f" (did you mean {guess!r}?)" if guess else ""
        self.error(key, f"unknown key {name!r}{hint}; allowed here: {', '.join(known)}")

    def wrong_type(self, key: str, expected: str, value: object, *, secret: bool, env: str | None) -> None:
        # Only a scalar of a non-secret key is shown: an array or table may hold secrets (a
        # [[connectors]] array of tables carries passwords), and a long value helps nobody.
        shown = ""
        if not secret and isinstance(value, str | int | float):
            text = _value_text(value) if isinstance(value, int) else repr(value)
            shown = f" ({text if len(text) <= 60 else text[:57] + '...'})"
        source = f"environment variable {env}: " if env else ""
        self.error(key, f"{source}expected {expected}, got {_kind(value)}{shown}")


def _value_text(value: float) -> str:
    """A number for a message. TOML's hex, octal and binary integers have no length limit, and
    ``str()`` of an integer past 4300 digits raises ValueError: such an integer is summarized."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return str(value)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # TOML dates and times


def _join(path: str, name: str) -> str:
    part = name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"') + '"'
    return f"{path}.{part}" if path else part


def _range_text(minimum: float | None, maximum: float | None, *, above: bool = False) -> str:
    if minimum is not None and maximum is not None:
        return f"from {minimum} to {maximum}"
    if minimum is not None:
        return f"above {minimum}" if above else f"{minimum} or more"
    return "any"


class _Table:
    """One TOML table: typed getters that report problems and fall back to the default."""

    def __init__(self, reader: _Reader, path: str, data: Mapping[str, object], known: Sequence[str]) -> None:
        self.reader = reader
        self.path = path
        self.data = data
        for name in data:
            if name not in known:
                reader.unknown_key(self.key(name), name, known)

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str) -> tuple[object, str | None]:
        if name not in self.data:
            return _MISSING, None
        return self.reader.resolve(self.key(name), self.data[name])

    def table(self, name: str, known: Sequence[str]) -> _Table:
        """A sub-table; an empty one when absent, so its defaults apply."""
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.reader.wrong_type(self.key(name), "a table", value, secret=False, env=None)
            value = {}
        return _Table(self.reader, self.key(name), value, known)

    def named_tables(self, name: str) -> Iterator[tuple[str, str, dict[str, object]]]:
        """(name, dotted key, table) of each ``[NAME.x]`` table."""
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.reader.wrong_type(self.key(name), "a table of named tables", value, secret=False, env=None)
            return
        for item, table in value.items():
            key = _join(self.key(name), item)
            if not isinstance(table, dict):
                self.reader.wrong_type(key, f"a table ([{key}])", table, secret=False, env=None)
            elif not _NAME.fullmatch(item):
                self.reader.error(key, f"the name {item!r} is not allowed; use {_NAME_RULE}")
            else:
                yield item, key, table

    def optional_string(
        self, name: str, *, secret: bool = False, choices: Sequence[str] | None = None
    ) -> str | None:
        value, env = self._get(name)
        if isinstance(value, _Missing):
            return None
        return _check_string(self.reader, self.key(name), value, env, secret=secret, choices=choices)

    def string(self, name: str, default: str, *, choices: Sequence[str] | None = None) -> str:
        value = self.optional_string(name, choices=choices)
        return default if value is None else value

    def strings(self, name: str, default: tuple[str, ...], *, secret: bool = False) -> tuple[str, ...]:
        """An array of strings (each may be ``${NAME}``); the good ones, problems reported."""
        items = self.indexed_strings(name, secret=secret)
        return default if items is None else tuple(text for _, text in items)

    def indexed_strings(
        self, name: str, *, secret: bool = False, single: bool = False
    ) -> list[tuple[int, str]] | None:
        """(index in the file, string) of each good item, None when absent or not an array.
        ``single`` also takes one bare string as a one-item array."""
        value, env = self._get(name)
        if isinstance(value, _Missing):
            return None
        if single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.reader.wrong_type(self.key(name), "an array of strings", value, secret=secret, env=env)
            return None
        items: list[tuple[int, str]] = []
        for index, item in enumerate(value):
            key = f"{self.key(name)}[{index}]"
            resolved, item_env = self.reader.resolve(key, item)
            if isinstance(resolved, _Missing):
                continue
            text = _check_string(self.reader, key, resolved, item_env, secret=secret, choices=None)
            if text is not None:
                items.append((index, text))
        return items

    def integer(
        self, name: str, default: int, *, minimum: int, maximum: int | None = None, allowed: str | None = None
    ) -> int:
        value, env = self._get(name)
        if isinstance(value, _Missing):
            return default
        if env is not None and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            value = int(value)  # environment variables are text; "8080" means 8080 there
        key = self.key(name)
        allowed = allowed or f"an integer {_range_text(minimum, maximum)}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.reader.wrong_type(key, allowed, value, secret=False, env=env)
            return default
        if value < minimum or (maximum is not None and value > maximum):
            self.reader.error(key, f"{_value_text(value)} is out of range; allowed: {allowed}")
            return default
        return value

    def number(self, name: str, default: float, *, minimum: float, above: bool = False) -> float:
        """Seconds and the like: an integer or a float, ``>= minimum`` (``> minimum`` if ``above``)."""
        value, env = self._get(name)
        if isinstance(value, _Missing):
            return default
        if env is not None and isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: reported as a type error below
                value = float(value)
        key = self.key(name)
        allowed = f"a number {_range_text(minimum, None, above=above)}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.reader.wrong_type(key, allowed, value, secret=False, env=env)
            return default
        try:
            number = float(value)
        except OverflowError:  # an integer past the float range
            number = math.inf
        if not math.isfinite(number) or number < minimum or (above and number == minimum):
            self.reader.error(key, f"{_value_text(value)} is out of range; allowed: {allowed}")
            return default
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value, env = self._get(name)
        if isinstance(value, _Missing):
            return default
        if (
            env is not None
            and isinstance(value, str)
            and value.strip().lower() in ("true", "false", "1", "0")
        ):
            value = value.strip().lower() in ("true", "1")
        if not isinstance(value, bool):
            self.reader.wrong_type(self.key(name), "true or false", value, secret=False, env=env)
            return default
        return value


def _check_string(
    reader: _Reader, key: str, value: object, env: str | None, *, secret: bool, choices: Sequence[str] | None
) -> str | None:
    if not isinstance(value, str):
        expected = "one of " + ", ".join(repr(c) for c in choices) if choices else "a string"
        reader.wrong_type(key, expected, value, secret=secret, env=env)
        return None
    source = f"environment variable {env}: " if env else ""
    if not value.strip():
        reader.error(key, f"{source}must not be empty")
        return None
    # Every string here ends up in a SIP or HTTP header, a URI or a path: a CR or LF would let a
    # value inject header lines (RFC 3261 §7.3.1 allows none in a header value).
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value if char != "\t"):
        reader.error(key, f"{source}must be one line without control characters")
        return None
    if choices is not None:
        lowered = value.lower()
        if lowered not in choices:
            close = difflib.get_close_matches(lowered, choices, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            reader.error(key, f"{value!r} is not allowed{hint}; allowed: {', '.join(choices)}")
            return None
        return lowered
    return value


# --- the sections -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Built:
    engine: EngineConfig
    control: ControlSettings
    log_format: str
    log_level: str
    streams: StreamSettings


def _build(reader: _Reader, data: Mapping[str, object]) -> _Built | None:
    root = _Table(
        reader, "", data, ("log", "api", "callbacks", "sip", "media", "streams", "edges", "connectors")
    )
    log_format, log_level = _log(root)
    control = _control(root)
    streams = _streams(root)
    listens, tls, user_agent, from_uri = _sip(root)
    media, media_host, media_advertised = _media(root)
    edges, declared_edges = _edges(root)
    connectors = _connectors(root, declared_edges, edges, from_uri)
    if reader.errors or media is None:
        return None
    engine = reader.guard(
        "",
        lambda: EngineConfig(
            sip_listen=listens,
            tls=tls,
            media=media,
            media_host=media_host,
            media_advertised=media_advertised,
            edges=edges,
            connectors=connectors,
            user_agent=user_agent,
            from_uri=from_uri,
        ),
    )
    if engine is None:
        return None
    return _Built(engine, control, log_format, log_level, streams)


def _log(root: _Table) -> tuple[str, str]:
    section = root.table("log", ("format", "level"))
    log_format = section.string("format", "text", choices=LOG_FORMATS)
    return log_format, section.string("level", "info", choices=LOG_LEVELS)


def _control(root: _Table) -> ControlSettings:
    reader = root.reader
    api = root.table(
        "api",
        (
            "host",
            "port",
            "public_url",
            "max_body_bytes",
            "max_calls",
            "max_recordings",
            "max_streams",
            "rate_limit",
            "rate_burst",
            "auth",
        ),
    )
    host = api.optional_string("host")
    if host is not None and not _is_host(host):
        reader.error(api.key("host"), f"{host!r} is not an IP address or a host name")
    public_url = api.optional_string("public_url")
    if public_url is not None:
        problem = _url_problem(public_url)
        if problem:
            reader.error(api.key("public_url"), f"{public_url!r} {problem}")
    port = api.integer("port", _CONTROL_DEFAULTS.port, minimum=0, maximum=65535)
    max_body_bytes = api.integer("max_body_bytes", _CONTROL_DEFAULTS.max_body_bytes, minimum=1024)
    max_calls = api.integer("max_calls", _CONTROL_DEFAULTS.max_calls, minimum=1)
    max_recordings = api.integer("max_recordings", _CONTROL_DEFAULTS.max_recordings, minimum=1)
    max_streams = api.integer("max_streams", _CONTROL_DEFAULTS.max_streams, minimum=1)
    rate_limit = api.number("rate_limit", _CONTROL_DEFAULTS.rate_limit, minimum=0)
    rate_burst = api.integer("rate_burst", _CONTROL_DEFAULTS.rate_burst, minimum=1)

    auth = api.table(
        "auth", ("tokens", "twilio_account_sid", "twilio_auth_token", "telnyx_api_key", "metrics_token")
    )
    token_items = auth.indexed_strings("tokens", secret=True) or []
    first_seen: dict[str, int] = {}
    for index, token in token_items:
        # An HTTP Authorization value (RFC 6750 §2.1 b64token) has no spaces.
        if any(char.isspace() for char in token):
            reader.error(f"{auth.key('tokens')}[{index}]", "a token must not contain spaces")
        elif token in first_seen:
            reader.error(f"{auth.key('tokens')}[{index}]", f"the same token as tokens[{first_seen[token]}]")
        else:
            first_seen[token] = index
    tokens = tuple(first_seen)
    account_sid = auth.optional_string("twilio_account_sid")
    auth_token = auth.optional_string("twilio_auth_token", secret=True)
    telnyx_key = auth.optional_string("telnyx_api_key", secret=True)
    metrics_token = auth.optional_string("metrics_token", secret=True)
    if metrics_token is not None and any(char.isspace() for char in metrics_token):
        reader.error(auth.key("metrics_token"), "a token must not contain spaces")
        metrics_token = None
    # HTTP Basic for the Twilio shape needs both halves; one alone would enable an API nobody can use.
    for given, missing in (
        ("twilio_account_sid", "twilio_auth_token"),
        ("twilio_auth_token", "twilio_account_sid"),
    ):
        if auth.has(given) and not auth.has(missing) and reader.ok(auth.key(given)):
            reader.error(auth.key(missing), f"required with {given} (the Twilio-shaped API uses both)")
    if not (auth.has("tokens") or auth.has("twilio_account_sid") or auth.has("telnyx_api_key")):
        reader.error(
            api.key("auth"),
            "no API credentials: set tokens, twilio_account_sid + twilio_auth_token, or telnyx_api_key "
            "(there is no anonymous access)",
        )
    elif auth.data.get("tokens") == []:
        reader.error(
            auth.key("tokens"), "an empty list enables nothing; give at least one token or remove the key"
        )

    callbacks = _callbacks(root, signs_for=[auth.key(k) for k in ("tokens", "telnyx_api_key") if auth.has(k)])
    if not _is_loopback(host or _CONTROL_DEFAULTS.host):
        # The shipped configs run as is on one machine with demo credentials; the same values on
        # an address others can reach would be credentials anyone can read in the docs.
        secrets: list[tuple[str, str | None]] = [
            (f"{auth.key('tokens')}[{index}]", token) for index, token in token_items
        ]
        secrets += [
            (auth.key("twilio_auth_token"), auth_token),
            (auth.key("telnyx_api_key"), telnyx_key),
            (auth.key("metrics_token"), metrics_token),
            (_join("callbacks", "signing_secret"), callbacks.signing_secret),
        ]
        for key, value in secrets:
            if value is not None and DEMO_MARK in value.lower():
                reader.error(
                    key,
                    f"a demo value (it contains {DEMO_MARK!r}) is refused while [api] host "
                    f"{host!r} is not a loopback address; set your own, from the environment",
                )
    return ControlSettings(
        host=host or _CONTROL_DEFAULTS.host,
        port=port,
        credentials=ApiCredentials(
            tokens=tokens,
            twilio_account_sid=account_sid,
            twilio_auth_token=auth_token,
            telnyx_api_key=telnyx_key,
            metrics_token=metrics_token,
        ),
        public_url=public_url.rstrip("/") if public_url else None,
        max_body_bytes=max_body_bytes,
        max_calls=max_calls,
        max_recordings=max_recordings,
        max_streams=max_streams,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        callbacks=callbacks,
    )


def _callbacks(root: _Table, *, signs_for: Sequence[str]) -> CallbackSettings:
    """``[callbacks]``. ``signs_for``: the keys of the credentials that enable an API whose
    callbacks only ``signing_secret`` can sign (native and Plivo-shaped ones, Telnyx webhooks).

    Hardened default: with such an API enabled, a missing ``signing_secret`` is an error at
    start, unless ``allow_unsigned = true`` says unsigned callbacks are wanted. A receiver
    cannot tell an unsigned callback from a forged one, and status callbacks drive billing
    and compliance workflows; a generated secret would sign what nobody can verify.
    """
    reader = root.reader
    section = root.table(
        "callbacks", ("signing_secret", "allow_unsigned", "timeout", "retries", "backoff", "queue_size")
    )
    defaults = CallbackSettings()
    signing_secret = section.optional_string("signing_secret", secret=True)
    allow_unsigned = section.boolean("allow_unsigned", False)
    if (
        signs_for
        and not section.has("signing_secret")
        and not allow_unsigned
        and reader.ok(section.key("allow_unsigned"))
    ):
        reader.error(
            section.key("signing_secret"),
            f"required with {' and '.join(signs_for)}: status callbacks are signed with it "
            '(X-Siprec-Signature); set it (signing_secret = "${SIPREC_CALLBACK_SECRET}"), '
            "or allow_unsigned = true to send them unsigned",
        )
    return CallbackSettings(
        signing_secret=signing_secret,
        timeout=section.number("timeout", defaults.timeout, minimum=0, above=True),
        retries=section.integer("retries", defaults.retries, minimum=0, maximum=100),
        backoff=section.number("backoff", defaults.backoff, minimum=0),
        queue_size=section.integer("queue_size", defaults.queue_size, minimum=1),
    )


def _streams(root: _Table) -> StreamSettings:
    reader = root.reader
    section = root.table("streams", ("ca", "queue_frames", "connect_timeout"))
    defaults = StreamSettings()
    ca_text = section.optional_string("ca")
    ca = None if ca_text is None else _readable_file(reader, section.key("ca"), ca_text)
    settings = StreamSettings(
        ca=ca,
        queue_frames=section.integer("queue_frames", defaults.queue_frames, minimum=1, maximum=1_000_000),
        connect_timeout=section.number("connect_timeout", defaults.connect_timeout, minimum=0, above=True),
    )
    if ca is not None:
        # Load it now, as each wss:// stream will: a PEM that does not parse is a config error
        # at start, not a failed stream on the first call.
        try:
            settings.ssl_context()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            reader.error(section.key("ca"), f"{ca!r} is not a PEM file of CA certificates: {exc}")
            return defaults
    return settings


def _sip(root: _Table) -> tuple[tuple[ListenSpec, ...], TlsConfig | None, str, str]:
    reader = root.reader
    sip = root.table("sip", ("listen", "user_agent", "from_uri", "tls"))
    user_agent = sip.string("user_agent", _ENGINE_DEFAULTS.user_agent)
    from_uri = sip.string("from_uri", _ENGINE_DEFAULTS.from_uri)
    if sip.has("from_uri") and reader.ok(sip.key("from_uri")):
        _check_sip_uri(reader, sip.key("from_uri"), from_uri)
    tls = _tls(sip)
    # A broken [sip.tls] is reported there; do not also blame every tls listener for it.
    tls_broken = any(key.startswith(sip.key("tls") + ".") for key in reader.bad)
    listens = _listens(sip, tls, tls_broken=tls_broken)
    return listens, tls, user_agent, from_uri


def _listens(sip: _Table, tls: TlsConfig | None, *, tls_broken: bool) -> tuple[ListenSpec, ...]:
    reader = sip.reader
    key = sip.key("listen")
    value, env = sip._get("listen")
    if isinstance(value, _Missing):
        if sip.has("listen"):
            return ()
        value = list(DEFAULT_LISTEN)
    if not isinstance(value, list):
        reader.wrong_type(key, 'an array such as ["udp:127.0.0.1:5060"]', value, secret=False, env=env)
        return ()
    if not value:
        reader.error(key, 'no SIP listener: give at least one, such as "udp:127.0.0.1:5060"')
    specs: list[tuple[str, ListenSpec]] = []
    for index, item in enumerate(value):
        item_key = f"{key}[{index}]"
        resolved, item_env = reader.resolve(item_key, item)
        spec: ListenSpec | None = None
        if isinstance(resolved, str):
            spec = _listen_from_text(reader, item_key, resolved)
        elif isinstance(resolved, dict):
            spec = _listen_from_table(_Table(reader, item_key, resolved, ("transport", "host", "port")))
        elif not isinstance(resolved, _Missing):
            expected = '"transport:host:port" or a table {transport, host, port}'
            reader.wrong_type(item_key, expected, resolved, secret=False, env=item_env)
        if spec is None:
            continue
        if spec.transport == "tls" and not tls_broken and (tls is None or tls.certfile is None):
            reader.error(item_key, "a tls listener needs [sip.tls] cert and key (the certificate we present)")
        for other_key, other in specs:
            if _listeners_clash(spec, other):
                reader.error(
                    item_key,
                    f"{_listen_text(spec)} uses the same socket as {other_key} ({_listen_text(other)})",
                )
                break
        specs.append((item_key, spec))
    return tuple(spec for _, spec in specs)


def _listen_text(spec: ListenSpec) -> str:
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    return f"{spec.transport}:{host}:{spec.port}"


def _listeners_clash(a: ListenSpec, b: ListenSpec) -> bool:
    # TLS runs over TCP: tcp and tls listeners on one address and port are the same socket. A
    # wildcard address takes the port on every address of its family. Port 0 is always fresh.
    if a.port == 0 or a.port != b.port or (a.transport == "udp") != (b.transport == "udp"):
        return False
    ip_a, ip_b = ipaddress.ip_address(a.host), ipaddress.ip_address(b.host)
    if ip_a.version != ip_b.version:
        return False
    return ip_a == ip_b or ip_a.is_unspecified or ip_b.is_unspecified


def _listen_from_text(reader: _Reader, key: str, text: str) -> ListenSpec | None:
    allowed = "allowed: TRANSPORT:HOST[:PORT] with TRANSPORT udp, tcp or tls, an IP address, IPv6 in brackets"
    transport, _, rest = text.strip().partition(":")
    transport = transport.lower()
    if transport not in TRANSPORTS:
        reader.error(key, f"{text!r}: unknown transport {transport!r}; {allowed}")
        return None
    if rest.startswith("["):
        end = rest.find("]")
        host, after = (rest[1:end], rest[end + 1 :]) if end > 0 else ("", "")
        if end < 0 or (after and not after.startswith(":")):
            reader.error(key, f"{text!r}: unterminated IPv6 address; {allowed}")
            return None
        port_text = after[1:] if after else None
    elif rest.count(":") > 1:
        reader.error(key, f"{text!r}: an IPv6 address goes in brackets, as in tls:[::1]:5061")
        return None
    else:
        host, colon, port_text_found = rest.partition(":")
        port_text = port_text_found if colon else None
    if not _is_ip(host):
        reader.error(key, f"{text!r}: {host!r} is not an IP address; {allowed}")
        return None
    if port_text is None:
        port = DEFAULT_PORTS[transport]  # RFC 3261 §19.1.2: 5060, or 5061 for TLS
    elif port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:  # not "²", not 5000 digits
        port = int(port_text)
    else:
        reader.error(key, f"{text!r}: port {port_text!r} is not a number from 0 to 65535")
        return None
    return reader.guard(key, lambda: ListenSpec(transport, host, port))


def _listen_from_table(table: _Table) -> ListenSpec | None:
    reader = table.reader
    transport = table.optional_string("transport", choices=TRANSPORTS)
    if transport is None and not table.has("transport"):
        reader.error(table.key("transport"), f"required; allowed: {', '.join(TRANSPORTS)}")
    host = table.optional_string("host")
    if host is None and not table.has("host"):
        reader.error(table.key("host"), "required: the IP address to listen on")
    elif host is not None and not _is_ip(host):
        reader.error(table.key("host"), f"{host!r} is not an IP address")
        host = None
    if transport is None or host is None:
        return None
    port = table.integer("port", DEFAULT_PORTS[transport], minimum=0, maximum=65535)
    return reader.guard(table.path, lambda: ListenSpec(transport, host, port))


def _tls(sip: _Table) -> TlsConfig | None:
    reader = sip.reader
    if not sip.has("tls"):
        return None
    section = sip.table("tls", ("cert", "key", "ca", "verify"))
    paths: dict[str, str | None] = {}
    for name in ("cert", "key", "ca"):
        text = section.optional_string(name)
        paths[name] = None if text is None else _readable_file(reader, section.key(name), text)
    verify = section.boolean("verify", True)
    for given, missing in (("cert", "key"), ("key", "cert")):
        if section.has(given) and not section.has(missing):
            reader.error(
                section.key(missing), f"required with {given}: a certificate and its private key go together"
            )
    if not reader.ok(*(section.key(name) for name in ("cert", "key", "ca"))):
        return None
    config = TlsConfig(certfile=paths["cert"], keyfile=paths["key"], cafile=paths["ca"], verify=verify)
    # Load them now, as the transport will: a PEM that does not parse is a config error at
    # start, not a TLS failure on the first recording.
    try:
        config.client_context()
        if config.certfile is not None:
            config.server_context()
    except ConfigError as exc:
        which = "ca" if exc.file is not None and exc.file == config.cafile else "cert"
        reader.error(section.key(which), message_of(exc))
        return None
    return config


def _readable_file(reader: _Reader, key: str, text: str) -> str | None:
    path = Path(text)
    if not path.is_absolute():
        path = reader.base_dir / path
    if not path.is_file():
        reader.error(key, f"{str(path)!r}: no such file")
        return None
    if not os.access(path, os.R_OK):
        reader.error(key, f"{str(path)!r}: not readable by this user")
        return None
    return str(path)


def _media(root: _Table) -> tuple[MediaConfig | None, str, str | None]:
    reader = root.reader
    section = root.table(
        "media", ("host", "advertised", "port_min", "port_max", "workers", "stream_timeout", "worker_restart")
    )
    defaults = MediaConfig()
    host = section.string("host", _ENGINE_DEFAULTS.media_host)
    advertised = section.optional_string("advertised")
    for name, value in (("host", host), ("advertised", advertised)):
        if value is not None and section.has(name) and reader.ok(section.key(name)) and not _is_ip(value):
            reader.error(section.key(name), f"{value!r} is not an IP address")
    _need_advertised(reader, section, host, advertised, bind_name="host")
    port_min = section.integer("port_min", defaults.port_min, minimum=1024, maximum=65535)
    port_max = section.integer("port_max", defaults.port_max, minimum=1024, maximum=65535)
    workers = section.integer("workers", default_workers(), minimum=0, maximum=1024)
    stream_timeout = section.number("stream_timeout", defaults.stream_timeout, minimum=0, above=True)
    worker_restart = section.number("worker_restart", defaults.worker_restart, minimum=0)
    range_keys = (section.key("port_min"), section.key("port_max"))
    if reader.ok(*range_keys):
        reader.guard(range_keys[0], functools.partial(check_port_range, port_min, port_max))
        if reader.ok(range_keys[0]) and workers and reader.ok(section.key("workers")):
            # Each worker owns a disjoint slice of whole RTP/RTCP pairs (media/ports.py).
            reader.guard(
                section.key("workers"), functools.partial(split_port_range, port_min, port_max, workers)
            )
    if not reader.ok(*range_keys, section.key("workers"), section.key("stream_timeout")):
        return None, host, advertised
    restart_key = section.key("worker_restart")
    if reader.ok(restart_key) and worker_restart > MAX_RESTART_DELAY:
        reader.error(restart_key, f"{worker_restart:g} is above the most, {MAX_RESTART_DELAY:g} seconds")
    if not reader.ok(restart_key):
        return None, host, advertised
    media = reader.guard(
        section.path,
        lambda: MediaConfig(
            workers=workers,
            port_min=port_min,
            port_max=port_max,
            stream_timeout=stream_timeout,
            worker_restart=worker_restart,
        ),
    )
    return media, host, advertised


def _need_advertised(
    reader: _Reader, section: _Table, bind: str, advertised: str | None, *, bind_name: str
) -> None:
    # SDP c= must name an address the SRS can send RTCP to (RFC 4566 §5.7); a wildcard bind
    # address says nothing, so it needs an advertised one.
    wildcard = _is_ip(bind) and ipaddress.ip_address(bind).is_unspecified
    if advertised is None and wildcard and reader.ok(section.key(bind_name)):
        reader.error(
            section.key("advertised"),
            f"required when {bind_name} is the wildcard {bind}: the address SDP tells the SRS",
        )


def _edges(root: _Table) -> tuple[dict[str, Edge], set[str]]:
    """The valid edges, and the names of all declared ones (valid or not)."""
    reader = root.reader
    edges: dict[str, Edge] = {}
    declared: set[str] = set()
    for name, key, data in root.named_tables("edges"):
        declared.add(name)
        section = _Table(reader, key, data, ("bind", "advertised", "outbound_proxy"))
        bind = section.optional_string("bind")
        if bind is None and not section.has("bind"):
            reader.error(section.key("bind"), "required: the local IP address media and SIP leave from")
        advertised = section.optional_string("advertised")
        for field_name, value in (("bind", bind), ("advertised", advertised)):
            if value is not None and not _is_ip(value):
                reader.error(section.key(field_name), f"{value!r} is not an IP address")
        if bind is not None:
            _need_advertised(reader, section, bind, advertised, bind_name="bind")
        proxy_text = section.optional_string("outbound_proxy")
        proxy = None
        if proxy_text is not None:
            proxy = _check_sip_uri(reader, section.key("outbound_proxy"), proxy_text, route=True)
        if bind is None or not reader.ok(*(section.key(n) for n in ("bind", "advertised", "outbound_proxy"))):
            continue
        edge = reader.guard(key, functools.partial(Edge, name, bind, advertised, proxy))
        if edge is not None:
            edges[name] = edge
    return edges, declared


CONNECTOR_KEYS = (
    "srs",
    "transport",
    "secure",
    "srtp_suites",
    "session_timeout",
    "attempt_timeout",
    "username",
    "password",
    "realm",
    "headers",
    "options_interval",
    "recovery_attempts",
    "from_uri",
)


def _connectors(
    root: _Table, declared_edges: set[str], edges: Mapping[str, Edge], from_uri: str
) -> dict[str, Connector]:
    reader = root.reader
    # parse_srs only asks whether an edge name exists. An edge that is declared but has its own
    # error is already reported; stand in for it so its users do not get "unknown edge" too.
    known_edges = {name: edges.get(name) or Edge(name, "127.0.0.1") for name in declared_edges}
    connectors: dict[str, Connector] = {}
    for name, key, data in root.named_tables("connectors"):
        connector = _connector(_Table(reader, key, data, CONNECTOR_KEYS), name, known_edges, from_uri)
        if connector is not None:
            connectors[name] = connector
    return connectors


def _connector(section: _Table, name: str, edges: Mapping[str, Edge], default_from: str) -> Connector | None:
    reader = section.reader
    secure = section.boolean("secure", False)
    transport = section.optional_string("transport", choices=TRANSPORTS)
    if secure and transport in ("udp", "tcp"):
        reader.error(
            section.key("transport"),
            f"secure = true sends SIP over TLS; transport {transport!r} is not allowed "
            '(use "tls" or leave it out)',
        )
        transport = None  # reported; applying it would only add an error per SRS URI
    targets = _srs_list(section, secure=secure, transport=transport, edges=edges)

    suite_items = section.indexed_strings("srtp_suites")
    suites = DEFAULT_SRTP_SUITES if suite_items is None else tuple(suite for _, suite in suite_items)
    first_seen: dict[str, int] = {}
    for index, suite in suite_items or ():
        suite_key = f"{section.key('srtp_suites')}[{index}]"
        if suite not in SRTP_SUITES:
            close = difflib.get_close_matches(suite.upper(), SRTP_SUITES, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            reader.error(suite_key, f"unknown SRTP suite {suite!r}{hint}; allowed: {', '.join(SRTP_SUITES)}")
        elif suite in first_seen:
            reader.error(suite_key, f"{suite} is listed twice (also srtp_suites[{first_seen[suite]}])")
        else:
            first_seen[suite] = index
    if suite_items == [] and reader.ok(section.key("srtp_suites")):
        # RFC 4568 §6.1: an SDES offer needs at least one crypto attribute.
        reader.error(section.key("srtp_suites"), f"needs at least one of {', '.join(SRTP_SUITES)}")

    # RFC 4028 §4: Session-Expires and Min-SE are never below 90 seconds.
    timer_rule = f"0 (no session timer) or an integer of {MIN_SESSION_EXPIRES} seconds or more"
    session_timeout = section.integer(
        "session_timeout", DEFAULT_SESSION_EXPIRES, minimum=0, allowed=timer_rule
    )
    if 0 < session_timeout < MIN_SESSION_EXPIRES:
        reader.error(
            section.key("session_timeout"),
            f"{session_timeout} is below the RFC 4028 minimum of {MIN_SESSION_EXPIRES} s; "
            f"allowed: {timer_rule}",
        )
    attempt_timeout = section.number(
        "attempt_timeout", _default(Connector, "attempt_timeout", float), minimum=0, above=True
    )
    options_interval = section.number(
        "options_interval", _default(Connector, "options_interval", float), minimum=0
    )
    recovery_attempts = section.integer(
        "recovery_attempts", _default(Connector, "recovery_attempts", int), minimum=0, maximum=100
    )

    credentials = _credentials(section)
    headers = _headers(section)
    from_uri = section.string("from_uri", default_from)
    if section.has("from_uri") and reader.ok(section.key("from_uri")):
        _check_sip_uri(reader, section.key("from_uri"), from_uri)

    if any(bad.startswith(f"{section.path}.") for bad in reader.bad):
        return None  # reported already; Connector would only repeat the first of them
    return reader.guard(
        section.path,
        lambda: Connector(
            name,
            targets,
            secure=secure,
            srtp_suites=suites,
            session_expires=session_timeout,
            attempt_timeout=attempt_timeout,
            credentials=credentials,
            headers=headers,
            options_interval=options_interval,
            recovery_attempts=recovery_attempts,
            from_uri=from_uri,
        ),
    )


def _srs_list(
    section: _Table, *, secure: bool, transport: str | None, edges: Mapping[str, Edge]
) -> tuple[SrsTarget, ...]:
    reader = section.reader
    key = section.key("srs")
    if not section.has("srs"):
        reader.error(key, 'required: the ordered list of SRS URIs, such as ["sip:srs@192.0.2.10:5060"]')
        return ()
    texts = section.indexed_strings("srs", single=True)
    if texts == [] and reader.ok(key):
        reader.error(key, "needs at least one SRS URI")
    targets: dict[int, SrsTarget] = {}  # by index in the file, for messages
    for index, text in texts or ():
        item_key = f"{key}[{index}]"
        target = reader.guard(item_key, functools.partial(parse_srs, text, secure=secure, edges=edges))
        if target is None:
            continue
        if transport is not None and not target.uri.secure and target.uri.transport is None:
            # The connector's transport fills in for URIs that name none; the URI's own word
            # wins, and sips: means TLS anyway (RFC 3261 §26.2.2).
            target = SrsTarget(target.uri.with_param("transport", transport), target.edge)
        for other_index, other in targets.items():
            if other == target:
                reader.error(
                    item_key, f"the same SRS as srs[{other_index}] (failover to it again is useless)"
                )
                break
        targets[index] = target
    return tuple(targets.values())


def _credentials(section: _Table) -> tuple[Credentials, ...]:
    reader = section.reader
    username = section.optional_string("username")
    password = section.optional_string("password", secret=True)
    realm = section.optional_string("realm")
    # RFC 3261 §22: digest needs both; a realm alone answers no challenge.
    for given, missing in (("username", "password"), ("password", "username"), ("realm", "username")):
        if section.has(given) and not section.has(missing):
            reader.error(
                section.key(missing), f"required with {given} (digest authentication toward the SRS)"
            )
    if username is None or password is None:
        return ()
    return (Credentials(username, password, realm),)


def _headers(section: _Table) -> tuple[tuple[str, str], ...]:
    reader = section.reader
    headers_section = section.data.get("headers")
    if headers_section is None:
        return ()
    if not isinstance(headers_section, dict):
        reader.wrong_type(
            section.key("headers"),
            'a table such as { X-Customer = "42" }',
            headers_section,
            secret=False,
            env=None,
        )
        return ()
    table = _Table(reader, section.key("headers"), headers_section, tuple(headers_section))
    headers: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for header in headers_section:
        key = table.key(header)
        # RFC 3261 §25.1: a header name is a token; we only add extension headers (X-...), never
        # one the SIP stack owns.
        if not is_token(header) or not header.lower().startswith("x-") or len(header) < 3:
            reader.error(key, f"header name {header!r} is not allowed; allowed: X-NAME with NAME a SIP token")
            continue
        if header.lower() in seen:
            reader.error(key, f"the same header as {seen[header.lower()]} (header names ignore case)")
            continue
        seen[header.lower()] = header
        value = table.optional_string(header)
        if value is not None:
            headers.append((header, value))
    return tuple(headers)


def _check_sip_uri(reader: _Reader, key: str, text: str, *, route: bool = False) -> SipUri | None:
    try:
        uri = SipUri.parse(text.strip())
    except SipParseError as exc:
        reader.error(key, f"{text!r} is not a SIP URI: {exc.reason}; allowed: sip:... or sips:...")
        return None
    if route:
        try:
            target_for_uri(uri)  # the transport rules a request to it would go through
        except Exception as exc:  # LocalProtocolError: unknown transport, port 0
            reader.error(key, f"{text!r}: {exc}")
            return None
    return uri


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    return _is_ip(host) and ipaddress.ip_address(host).is_loopback


def _is_host(text: str) -> bool:
    return _is_ip(text) or _HOSTNAME.fullmatch(text) is not None


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"is not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL with a host"
    if parts.query or parts.fragment:
        return "must not have a query or fragment (it is the base of every resource URL)"
    return None


# --- siprec-src check-config ------------------------------------------------------------------


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``siprec-src check-config FILE``."""
    parser.add_argument("file", metavar="FILE", help="the sidecar configuration file (TOML) to check")


def summary(config: SidecarConfig) -> str:
    """One line saying what a config sets up (what check-config prints after "ok")."""
    engine, control = config.engine, config.control
    media = engine.media

    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    workers = "in-process" if media.workers == 0 else count(media.workers, "worker")
    listens = ", ".join(_listen_text(spec) for spec in engine.sip_listen)
    api_host = f"[{control.host}]" if ":" in control.host else control.host
    return (
        f"{count(len(engine.connectors), 'connector')}, {count(len(engine.edges), 'edge')}, "
        f"SIP on {listens}, API on {api_host}:{control.port}, "
        f"media ports {media.port_min}-{media.port_max} ({workers})"
    )


def check_main(args: argparse.Namespace) -> int:
    """Exit status 0: the file is valid; 1: it has errors (each on stderr); 2: unreadable or not TOML."""
    file = str(args.file)
    try:
        config = load_config(file)
    except ConfigErrors as problems:
        for error in problems.errors:
            print(f"{error.file}: {error.key or '(top level)'}: {message_of(error)}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        return 2
    print(f"{file}: ok ({summary(config)})")
    return 0
