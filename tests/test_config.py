"""The sidecar config file (siprec_src/config.py) and ``siprec-src check-config``.

Covers: the example config in configs/ (as shipped, and with its commented secure example
turned on); every kind of error naming file, dotted key and what is allowed; all errors of
a file reported at once; ``${NAME}`` environment references; secrets kept out of every
message; TLS files checked and loaded (relative to the config file); check-config output and
exit status. Not covered here: that the settings take effect (the engine and control tests).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from siprec_src.config import (
    ConfigErrors,
    ConfigFileError,
    SidecarConfig,
    add_check_arguments,
    check_main,
    default_workers,
    load_config,
    message_of,
    parse_config,
)
from siprec_src.errors import ConfigError
from siprec_src.signaling.transport import ListenSpec
from siprec_src.sip.auth import Credentials
from tests.pki import Pki, make_pki

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "siprec-src.toml"
FILE = "test.toml"
TOKENS = '[api.auth]\ntokens = ["t0ken-for-tests"]\n'
SIGNED = '[callbacks]\nsigning_secret = "s1gning-secret-for-tests"\n'
AUTH = TOKENS + SIGNED  # the native API enabled, so its callbacks need a signing secret
CONNECTOR = '[connectors.main]\nsrs = ["sip:srs@192.0.2.10:5060"]\n'


def parse(text: str, environ: dict[str, str] | None = None) -> SidecarConfig:
    return parse_config(text, file=FILE, environ=environ or {})


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        parse(text, environ)
    return caught.value.errors


def by_key(errors: list[ConfigError]) -> dict[str | None, str]:
    return {error.key: message_of(error) for error in errors}


def uncommented_secure_example() -> str:
    """The example file with the block between BEGIN/END secure example turned on."""
    lines, inside = [], False
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("# BEGIN secure example"):
            inside = True
        elif line.startswith("# END secure example"):
            inside = False
        elif inside:
            lines.append(line[2:] if line.startswith("# ") else "")
        else:
            lines.append(line)
    return "\n".join(lines)


# --- what loads -------------------------------------------------------------------------------


def test_example_config_loads_without_environment() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.source == str(EXAMPLE)
    assert config.log_format == "text" and config.log_level == "info"
    engine = config.engine
    assert engine.sip_listen == (ListenSpec("udp", "127.0.0.1", 5060), ListenSpec("tcp", "127.0.0.1", 5060))
    assert engine.tls is None
    assert engine.media.workers == default_workers()
    assert (engine.media.port_min, engine.media.port_max) == (20000, 29999)
    local = engine.connectors["local"]
    assert [str(target) for target in local.srs] == ["sip:srs@127.0.0.1:5080"]
    assert local.session_expires == 1800 and not local.secure
    assert local.headers == (("X-Recorder", "siprec-src-demo"),)
    assert engine.edges == {}
    control = config.control
    assert (control.host, control.port) == ("127.0.0.1", 8080)
    assert control.credentials.tokens == ("change-me-demo-token-0123456789",)
    assert control.credentials.twilio_account_sid is not None
    assert control.callbacks.signing_secret == "change-me-demo-callback-secret"
    assert (control.rate_limit, control.rate_burst, control.max_streams) == (200.0, 400, 10000)


def test_example_secure_block_loads_when_uncommented() -> None:
    config = parse(uncommented_secure_example(), {"SRS_PASSWORD": "pw-from-env"})
    secure = config.engine.connectors["secure"]
    dublin = config.engine.edges["dublin"]
    assert (dublin.bind_host, dublin.advertised_host) == ("192.0.2.10", "198.51.100.10")
    assert str(dublin.outbound_proxy) == "sip:sbc.dublin.example.com;lr"
    assert secure.secure and secure.session_expires == 90
    assert [t.edge for t in secure.srs] == ["dublin", "dublin"]
    # ;edge= is ours and leaves the URI; secure turns a sip: URI to TLS (port 5061).
    assert [str(t.uri) for t in secure.srs] == [
        "sips:srs@srs1.example.com",
        "sip:srs@srs2.example.com;transport=tls",
    ]
    assert secure.credentials == (Credentials("recorder", "pw-from-env"),)


def test_minimal_config_takes_the_documented_defaults() -> None:
    config = parse(AUTH)
    assert config.source == FILE
    assert parse_config(AUTH, environ={}).source is None  # text that came from no file
    engine = config.engine
    assert engine.sip_listen == (ListenSpec("udp", "127.0.0.1", 5060), ListenSpec("tcp", "127.0.0.1", 5060))
    assert engine.media.workers == default_workers()
    assert engine.media.stream_timeout == 30.0
    assert engine.connectors == {} and engine.edges == {}
    assert engine.user_agent == "siprec-src" and engine.from_uri == "sip:siprec-src@localhost"
    callbacks = config.control.callbacks
    assert (callbacks.timeout, callbacks.retries, callbacks.backoff, callbacks.queue_size) == (
        5.0,
        3,
        1.0,
        10000,
    )
    assert config.control.max_body_bytes == 65536 and config.control.max_calls == 10000


def test_connector_keys_reach_the_connector() -> None:
    config = parse(
        AUTH
        + """
[sip]
from_uri = "sip:src@pbx.example.com"

[connectors.main]
srs = ["sip:srs@192.0.2.10", "sip:srs@192.0.2.11;transport=udp", "sips:srs@192.0.2.12"]
transport = "tcp"
srtp_suites = ["AEAD_AES_128_GCM"]
session_timeout = 0
attempt_timeout = 2.5
options_interval = 30
recovery_attempts = 0
username = "rec"
password = "pw"
realm = "srs.example.com"
headers = { X-Tenant = "acme", X-Site = "3" }

[connectors.single]
srs = "sip:srs@192.0.2.20"
from_uri = "sip:other@example.com"
"""
    )
    main = config.engine.connectors["main"]
    # The connector's transport fills in where the URI names none; the URI's own word and sips: win.
    assert [str(t.uri) for t in main.srs] == [
        "sip:srs@192.0.2.10;transport=tcp",
        "sip:srs@192.0.2.11;transport=udp",
        "sips:srs@192.0.2.12",
    ]
    assert main.srtp_suites == ("AEAD_AES_128_GCM",)
    assert main.session_expires == 0 and main.attempt_timeout == 2.5 and main.options_interval == 30.0
    assert main.recovery_attempts == 0
    assert main.credentials == (Credentials("rec", "pw", "srs.example.com"),)
    assert main.headers == (("X-Tenant", "acme"), ("X-Site", "3"))
    assert main.from_uri == "sip:src@pbx.example.com"  # [sip] from_uri is the default
    single = config.engine.connectors["single"]
    assert single.recovery_attempts == 3  # the default: a lost SRS is replaced
    assert [str(t) for t in single.srs] == ["sip:srs@192.0.2.20"]
    assert single.from_uri == "sip:other@example.com"


def test_listen_forms() -> None:
    config = parse(
        AUTH
        + """
[sip]
listen = ["udp:[::1]:5070", "TCP:127.0.0.1", { transport = "udp", host = "127.0.0.1" }, "udp:0.0.0.0:0"]
"""
    )
    assert config.engine.sip_listen == (
        ListenSpec("udp", "::1", 5070),
        ListenSpec("tcp", "127.0.0.1", 5060),  # RFC 3261 §19.1.2 default port
        ListenSpec("udp", "127.0.0.1", 5060),
        ListenSpec("udp", "0.0.0.0", 0),  # port 0 never clashes: each is a fresh port
    )


def test_edges_and_media_reach_the_engine() -> None:
    config = parse(
        AUTH
        + """
[media]
host = "0.0.0.0"
advertised = "203.0.113.7"
port_min = 30001
port_max = 30010
workers = 0
stream_timeout = 5
worker_restart = 0

[edges.east]
bind = "::"
advertised = "2001:db8::7"

[connectors.main]
srs = ["sip:srs@192.0.2.10;edge=east"]
"""
    )
    engine = config.engine
    assert (engine.media_host, engine.media_advertised) == ("0.0.0.0", "203.0.113.7")
    assert (engine.media.port_min, engine.media.port_max, engine.media.workers) == (30001, 30010, 0)
    assert engine.media.stream_timeout == 5.0 and engine.media.worker_restart == 0.0
    assert engine.edges["east"].media_host == "2001:db8::7"
    assert engine.connectors["main"].srs[0].edge == "east"
    assert str(engine.connectors["main"].srs[0].uri) == "sip:srs@192.0.2.10"


# --- one error of each kind: it names the file, the dotted key and what is allowed -------------

ERROR_CASES = [
    pytest.param(
        AUTH + CONNECTOR + "[media]\nworker_restart = 600\n",
        "media.worker_restart",
        "600 is above the most, 60 seconds",
        id="worker-restart-too-long",
    ),
    pytest.param(
        AUTH + CONNECTOR + "[media]\nworker_restart = -1\n",
        "media.worker_restart",
        "allowed: a number",
        id="worker-restart-negative",
    ),
    pytest.param(
        AUTH + CONNECTOR + "sesion_timeout = 90\n",
        "connectors.main.sesion_timeout",
        "unknown key 'sesion_timeout' (did you mean 'session_timeout'?); allowed here: srs,",
        id="unknown-key-suggestion",
    ),
    pytest.param(
        AUTH + CONNECTOR + "session_expires = 90\n",
        "connectors.main.session_expires",
        "(did you mean 'session_timeout'?)",
        id="unknown-key-alias",
    ),
    pytest.param(
        AUTH + '[conectors.x]\nsrs = ["sip:a@192.0.2.1"]\n',
        "conectors",
        "(did you mean 'connectors'?)",
        id="unknown-section",
    ),
    pytest.param(
        AUTH + '[api]\nport = "8080"\n',
        "api.port",
        "expected an integer from 0 to 65535, got a string ('8080')",
        id="string-for-int",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'secure = "yes"\n',
        "connectors.main.secure",
        "expected true or false, got a string ('yes')",
        id="string-for-bool",
    ),
    pytest.param(
        AUTH + CONNECTOR + "attempt_timeout = nan\n",
        "connectors.main.attempt_timeout",
        "allowed: a number above 0",
        id="nan-timeout",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = "udp:127.0.0.1:5060"\n',
        "sip.listen",
        'expected an array such as ["udp:127.0.0.1:5060"], got a string',
        id="string-for-array",
    ),
    pytest.param(
        AUTH + CONNECTOR + "session_timeout = 30\n",
        "connectors.main.session_timeout",
        "30 is below the RFC 4028 minimum of 90 s; allowed: 0 (no session timer) or an integer of 90",
        id="session-timeout-30",
    ),
    pytest.param(
        AUTH + CONNECTOR + "session_timeout = -5\n",
        "connectors.main.session_timeout",
        "-5 is out of range; allowed: 0 (no session timer)",
        id="session-timeout-negative",
    ),
    pytest.param(
        AUTH + '[connectors.main]\nsrs = ["http://srs.example.com"]\n',
        "connectors.main.srs[0]",
        "SRS URI 'http://srs.example.com'",
        id="bad-srs-uri",
    ),
    pytest.param(
        AUTH + "[connectors.main]\nsrs = []\n",
        "connectors.main.srs",
        "needs at least one SRS URI",
        id="empty-srs",
    ),
    pytest.param(
        AUTH + "[connectors.main]\nsecure = true\n",
        "connectors.main.srs",
        "required: the ordered list of SRS URIs",
        id="missing-srs",
    ),
    pytest.param(
        AUTH
        + '[edges.east]\nbind = "192.0.2.1"\n[connectors.main]\nsrs = ["sip:srs@192.0.2.10;edge=west"]\n',
        "connectors.main.srs[0]",
        "unknown edge 'west' (known edges: east)",
        id="unknown-edge",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'secure = true\ntransport = "udp"\n',
        "connectors.main.transport",
        "secure = true sends SIP over TLS; transport 'udp' is not allowed",
        id="secure-over-udp",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'transport = "sctp"\n',
        "connectors.main.transport",
        "'sctp' is not allowed; allowed: udp, tcp, tls",
        id="unknown-transport",
    ),
    pytest.param(
        AUTH + '[api]\nhost = "${API_HOST}"\n',
        "api.host",
        "environment variable API_HOST is not set",
        id="missing-env",
    ),
    pytest.param(
        AUTH + "[media]\nport_min = 30000\nport_max = 20000\n",
        "media.port_min",
        "port range 30000-20000: need 1024 <= port_min < port_max <= 65535",
        id="port-range-reversed",
    ),
    pytest.param(
        AUTH + "[media]\nport_min = 80\n",
        "media.port_min",
        "80 is out of range; allowed: an integer from 1024 to 65535",
        id="port-privileged",
    ),
    pytest.param(
        AUTH + "[media]\nport_min = 20000\nport_max = 20003\nworkers = 4\n",
        "media.workers",
        "fewer than the",
        id="port-range-too-small-for-workers",
    ),
    pytest.param(
        AUTH + "[media]\nworkers = -1\n",
        "media.workers",
        "-1 is out of range; allowed: an integer from 0 to 1024",
        id="negative-workers",
    ),
    pytest.param(
        AUTH + '[media]\nhost = "0.0.0.0"\n',
        "media.advertised",
        "required when host is the wildcard 0.0.0.0",
        id="wildcard-media-without-advertised",
    ),
    pytest.param(
        AUTH + '[media]\nhost = "media.example.com"\n',
        "media.host",
        "'media.example.com' is not an IP address",
        id="media-host-name",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = ["sctp:127.0.0.1:5060"]\n',
        "sip.listen[0]",
        "unknown transport 'sctp'; allowed: TRANSPORT:HOST[:PORT] with TRANSPORT udp, tcp or tls",
        id="listen-bad-transport",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = ["udp:::1:5060"]\n',
        "sip.listen[0]",
        "an IPv6 address goes in brackets",
        id="listen-ipv6-unbracketed",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = ["udp:localhost:5060"]\n',
        "sip.listen[0]",
        "'localhost' is not an IP address",
        id="listen-host-name",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = ["udp:127.0.0.1:99999"]\n',
        "sip.listen[0]",
        "port 99999 is out of range 0-65535",
        id="listen-port-out-of-range",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = ["udp:127.0.0.1:x"]\n',
        "sip.listen[0]",
        "port 'x' is not a number from 0 to 65535",
        id="listen-port-not-number",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = [{ transport = "udp" }]\n',
        "sip.listen[0].host",
        "required: the IP address to listen on",
        id="listen-table-without-host",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = [{ transport = "udp", host = "127.0.0.1", prot = 5060 }]\n',
        "sip.listen[0].prot",
        "(did you mean 'port'?)",
        id="listen-table-unknown-key",
    ),
    pytest.param(
        AUTH + "[sip]\nlisten = []\n",
        "sip.listen",
        "no SIP listener",
        id="no-listener",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = ["udp:127.0.0.1:5060", "udp:0.0.0.0:5060"]\n',
        "sip.listen[1]",
        "udp:0.0.0.0:5060 uses the same socket as sip.listen[0] (udp:127.0.0.1:5060)",
        id="listen-duplicate-wildcard",
    ),
    pytest.param(
        AUTH + '[sip]\nlisten = ["tls:127.0.0.1"]\n',
        "sip.listen[0]",
        "a tls listener needs [sip.tls] cert and key",
        id="tls-listener-without-cert",
    ),
    pytest.param(
        AUTH + '[sip.tls]\nca = "/nonexistent/ca.pem"\n',
        "sip.tls.ca",
        "'/nonexistent/ca.pem': no such file",
        id="missing-tls-file",
    ),
    pytest.param(
        AUTH + '[sip.tls]\ncafile = "/nonexistent/ca.pem"\n',
        "sip.tls.cafile",
        "(did you mean 'ca'?)",
        id="tls-alias",
    ),
    pytest.param(
        AUTH + '[sip]\nfrom_uri = "tel:+15551234567"\n',
        "sip.from_uri",
        "is not a SIP URI",
        id="from-uri-not-sip",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'srtp_suites = ["AES_CM_128_HMAC_SHA1_81"]\n',
        "connectors.main.srtp_suites[0]",
        "unknown SRTP suite 'AES_CM_128_HMAC_SHA1_81' (did you mean 'AES_CM_128_HMAC_SHA1_80'?); allowed: "
        "AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM",
        id="unknown-srtp-suite",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'srtp_suites = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"]\n',
        "connectors.main.srtp_suites[1]",
        "is listed twice (also srtp_suites[0])",
        id="duplicate-srtp-suite",
    ),
    pytest.param(
        AUTH + CONNECTOR + "srtp_suites = []\n",
        "connectors.main.srtp_suites",
        "needs at least one of",
        id="no-srtp-suite",
    ),
    pytest.param(
        AUTH + '[connectors.main]\nsrs = ["sip:srs@192.0.2.10", "sip:srs@192.0.2.10"]\n',
        "connectors.main.srs[1]",
        "the same SRS as srs[0]",
        id="duplicate-srs",
    ),
    pytest.param(
        AUTH
        + '[connectors.main]\nsrs = ["sip:srs@192.0.2.10;edge", '
        + '"sip:srs@192.0.2.11", "sip:srs@192.0.2.11"]\n',
        "connectors.main.srs[2]",
        "the same SRS as srs[1]",
        id="duplicate-srs-index-after-a-bad-one",
    ),
    pytest.param(
        '[api.auth]\ntokens = ["abc-token", "abc-token"]\n',
        "api.auth.tokens[1]",
        "the same token as tokens[0]",
        id="duplicate-token",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'headers = { Contact = "sip:x@example.com" }\n',
        "connectors.main.headers.Contact",
        "header name 'Contact' is not allowed; allowed: X-NAME",
        id="header-not-extension",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'headers = { X-A = "1", x-a = "2" }\n',
        "connectors.main.headers.x-a",
        "the same header as X-A",
        id="duplicate-header",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'headers = { X-A = "1\\r\\nRoute: <sip:evil@example.com>" }\n',
        "connectors.main.headers.X-A",
        "must be one line without control characters",
        id="header-injection",
    ),
    pytest.param(
        AUTH + CONNECTOR + 'username = "rec"\n',
        "connectors.main.password",
        "required with username",
        id="username-without-password",
    ),
    pytest.param(
        AUTH + '[connectors."main office"]\nsrs = ["sip:srs@192.0.2.10"]\n',
        'connectors."main office"',
        "the name 'main office' is not allowed",
        id="connector-name",
    ),
    pytest.param(
        AUTH + '[edges.east]\nadvertised = "192.0.2.1"\n',
        "edges.east.bind",
        "required: the local IP address",
        id="edge-without-bind",
    ),
    pytest.param(
        AUTH + '[edges.east]\nbind = "eth0"\n',
        "edges.east.bind",
        "'eth0' is not an IP address",
        id="edge-bind-not-ip",
    ),
    pytest.param(
        AUTH + '[edges.east]\nbind = "192.0.2.1"\noutbound_proxy = "sip:sbc.example.com;transport=sctp"\n',
        "edges.east.outbound_proxy",
        "transport 'sctp' is not supported",
        id="edge-proxy-transport",
    ),
    pytest.param(
        AUTH + '[log]\nlevel = "warn"\n',
        "log.level",
        "'warn' is not allowed (did you mean 'warning'?); allowed: debug, info, warning, error, critical",
        id="log-level",
    ),
    pytest.param(
        AUTH + '[log]\nformat = "xml"\n',
        "log.format",
        "allowed: text, json",
        id="log-format",
    ),
    pytest.param(
        "[api]\nport = 8080\n",
        "api.auth",
        "no API credentials",
        id="no-credentials",
    ),
    pytest.param(
        '[api.auth]\ntwilio_account_sid = "AC123"\n',
        "api.auth.twilio_auth_token",
        "required with twilio_account_sid",
        id="twilio-half",
    ),
    pytest.param(
        AUTH + '[api]\npublic_url = "ftp://example.com"\n',
        "api.public_url",
        "is not an http:// or https:// URL",
        id="public-url",
    ),
    pytest.param(
        AUTH + "[api]\nmax_body_bytes = 10\n",
        "api.max_body_bytes",
        "allowed: an integer 1024 or more",
        id="max-body-bytes",
    ),
    pytest.param(
        AUTH + "timeout = 0\n",  # AUTH ends in [callbacks]
        "callbacks.timeout",
        "0 is out of range; allowed: a number above 0",
        id="callback-timeout",
    ),
    pytest.param(
        AUTH + "retries = 1.5\n",
        "callbacks.retries",
        "expected an integer from 0 to 100, got a number (1.5)",
        id="float-for-int",
    ),
    pytest.param(
        AUTH + '[connectors.main]\nsrs = ["sip:srs@192.0.2.1"]\nrecovery_attempts = -1\n',
        "connectors.main.recovery_attempts",
        "allowed: an integer from 0 to 100",
        id="recovery-attempts",
    ),
    pytest.param(
        "log = 5\n" + AUTH,
        "log",
        "expected a table, got an integer",
        id="scalar-for-table",
    ),
]


@pytest.mark.parametrize(("text", "key", "message"), ERROR_CASES)
def test_each_error_names_file_key_and_what_is_allowed(text: str, key: str, message: str) -> None:
    errors = errors_of(text)
    found = by_key(errors)
    assert key in found, f"no error for {key}; got {found}"
    assert message in found[key]
    error = next(e for e in errors if e.key == key)
    assert error.file == FILE
    assert str(error).startswith(f"{FILE}:{key}: ")


def test_a_declared_but_broken_edge_is_not_also_unknown() -> None:
    errors = errors_of(
        AUTH + '[edges.east]\nbind = "eth0"\n[connectors.main]\nsrs = ["sip:s@192.0.2.1;edge=east"]\n'
    )
    assert list(by_key(errors)) == ["edges.east.bind"]


def test_broken_tls_section_does_not_also_blame_the_listener() -> None:
    errors = errors_of(AUTH + '[sip]\nlisten = ["tls:127.0.0.1"]\n[sip.tls]\ncert = "/nonexistent.pem"\n')
    assert set(by_key(errors)) == {"sip.tls.cert", "sip.tls.key"}


def test_a_bad_secure_transport_is_reported_once_not_per_srs() -> None:
    errors = errors_of(
        AUTH
        + '[connectors.main]\nsrs = ["sip:a@192.0.2.1", "sip:b@192.0.2.2"]\n'
        + 'secure = true\ntransport = "tcp"\n'
    )
    assert list(by_key(errors)) == ["connectors.main.transport"]


# --- security defaults (issue 9 §4) ------------------------------------------------------------


def test_an_api_whose_callbacks_need_the_signing_secret_does_not_start_without_it() -> None:
    for auth, names in (
        (TOKENS, "api.auth.tokens"),
        ('[api.auth]\ntelnyx_api_key = "KEY1"\n', "api.auth.telnyx_api_key"),
        (
            '[api.auth]\ntokens = ["t1"]\ntelnyx_api_key = "K"\n',
            "api.auth.tokens and api.auth.telnyx_api_key",
        ),
    ):
        (error,) = errors_of(auth)
        assert error.key == "callbacks.signing_secret"
        assert message_of(error).startswith(f"required with {names}: status callbacks are signed")
        assert "allow_unsigned = true" in message_of(error)
    # Twilio-shaped callbacks are signed with the auth token: no secret needed for that shape.
    twilio = parse('[api.auth]\ntwilio_account_sid = "AC1"\ntwilio_auth_token = "tw"\n')
    assert twilio.control.callbacks.signing_secret is None
    # Unsigned only when asked for in so many words.
    unsigned = parse(TOKENS + "[callbacks]\nallow_unsigned = true\n")
    assert unsigned.control.callbacks.signing_secret is None
    assert parse(AUTH).control.callbacks.signing_secret == "s1gning-secret-for-tests"
    assert by_key(errors_of(TOKENS + '[callbacks]\nallow_unsigned = "yes"\n')) == {
        "callbacks.allow_unsigned": "expected true or false, got a string ('yes')"
    }
    assert parse(AUTH + "allow_unsigned = false\n").control.callbacks.signing_secret is not None


def test_the_shipped_demo_credentials_only_work_on_loopback() -> None:
    text = EXAMPLE.read_text()
    for host in ("127.0.0.1", "::1", "localhost"):
        assert parse(text.replace('host = "127.0.0.1"       # IP', f'host = "{host}"       # IP', 1))
    exposed = text.replace('host = "127.0.0.1"       # IP', 'host = "0.0.0.0"       # IP', 1)
    assert exposed != text
    errors = errors_of(exposed)
    assert set(by_key(errors)) == {
        "api.auth.tokens[0]",
        "api.auth.twilio_auth_token",
        "callbacks.signing_secret",
    }
    for error in errors:
        assert "a demo value (it contains 'change-me') is refused while [api] host '0.0.0.0'" in str(error)
        assert "demo-token" not in str(error) and "demo-auth" not in str(error)
    # Your own values are fine anywhere.
    assert parse(TOKENS.replace("t0ken", "prod-t0ken") + SIGNED + '[api]\nhost = "0.0.0.0"\n')


def test_rate_limit_stream_limit_and_metrics_token_keys() -> None:
    defaults = parse(AUTH).control
    assert (defaults.rate_limit, defaults.rate_burst, defaults.max_streams) == (200.0, 400, 10000)
    assert defaults.credentials.metrics_token is None
    control = parse(
        TOKENS
        + 'metrics_token = "m3trics"\n'
        + SIGNED
        + "[api]\nrate_limit = 2.5\nrate_burst = 5\nmax_streams = 7\n"
    ).control
    assert (control.rate_limit, control.rate_burst, control.max_streams) == (2.5, 5, 7)
    assert control.credentials.metrics_token == "m3trics"
    assert "m3trics" not in repr(control)
    assert parse(AUTH + "[api]\nrate_limit = 0\n").control.rate_limit == 0  # 0: off
    assert by_key(errors_of(AUTH + "[api]\nrate_limit = -1\nrate_burst = 0\nmax_streams = 0\n")) == {
        "api.rate_limit": "-1 is out of range; allowed: a number 0 or more",
        "api.rate_burst": "0 is out of range; allowed: an integer 1 or more",
        "api.max_streams": "0 is out of range; allowed: an integer 1 or more",
    }
    spaced = errors_of(TOKENS + 'metrics_token = "two words"\n' + SIGNED)
    assert by_key(spaced) == {"api.auth.metrics_token": "a token must not contain spaces"}
    assert "two words" not in str(spaced[0])
    # A metrics token enables no API: alone it is still "no API credentials".
    assert "api.auth" in by_key(errors_of('[api.auth]\nmetrics_token = "m"\n'))


# --- all problems at once ---------------------------------------------------------------------


def test_every_error_is_reported_not_just_the_first() -> None:
    text = """
[log]
level = "loud"

[api]
port = 70000

[api.auth]
tokens = ["ok-token"]

[sip]
listen = ["sctp:127.0.0.1"]

[media]
port_min = 40000
port_max = 30000

[connectors.main]
srs = ["sip:srs@192.0.2.10;edge=nowhere"]
session_timeout = 30
srtp_suites = ["NULL"]
bogus = 1
"""
    with pytest.raises(ConfigErrors) as caught:
        parse(text)
    keys = {error.key for error in caught.value.errors}
    assert keys == {
        "log.level",
        "api.port",
        "callbacks.signing_secret",  # tokens enable the native API, whose callbacks are signed
        "sip.listen[0]",
        "media.port_min",
        "connectors.main.srs[0]",
        "connectors.main.session_timeout",
        "connectors.main.srtp_suites[0]",
        "connectors.main.bogus",
    }
    summary = str(caught.value)
    assert summary.startswith(f"{FILE}: 9 configuration errors:\n")
    assert all(str(error) in summary for error in caught.value.errors)
    assert isinstance(caught.value, ConfigError)


# --- the environment --------------------------------------------------------------------------


def test_environment_references_are_substituted_and_typed() -> None:
    config = parse(
        """
[api]
port = "${API_PORT}"
public_url = "${PUBLIC_URL}"

[api.auth]
tokens = ["${TOKEN_A}", "literal-token"]
telnyx_api_key = "${TELNYX_KEY}"

[callbacks]
signing_secret = "${SIGNING}"
timeout = "${CB_TIMEOUT}"

[connectors.main]
srs = ["${SRS_1}"]
secure = "${SECURE}"
username = "rec"
password = "${SRS_PASSWORD}"
headers = { X-Tenant = "${TENANT}" }
""",
        {
            "API_PORT": "8081",
            "PUBLIC_URL": "https://rec.example.com/",
            "TOKEN_A": "from-env-token",
            "TELNYX_KEY": "KEYxyz",
            "SIGNING": "s1gn",
            "CB_TIMEOUT": "2.5",
            "SRS_1": "sips:srs@srs.example.com",
            "SECURE": "true",
            "SRS_PASSWORD": "pa$$word",
            "TENANT": "acme",
        },
    )
    control = config.control
    assert control.port == 8081
    assert control.public_url == "https://rec.example.com"
    assert control.credentials.tokens == ("from-env-token", "literal-token")
    assert control.credentials.telnyx_api_key == "KEYxyz"
    assert control.callbacks.signing_secret == "s1gn" and control.callbacks.timeout == 2.5
    main = config.engine.connectors["main"]
    assert main.secure and str(main.srs[0]) == "sips:srs@srs.example.com"
    assert main.credentials == (Credentials("rec", "pa$$word"),)
    assert main.headers == (("X-Tenant", "acme"),)


def test_only_whole_values_are_references() -> None:
    # A password may contain "$" or "${": only a whole "${NAME}" is read from the environment.
    config = parse(AUTH + CONNECTOR + 'username = "u"\npassword = "x${NOT_READ}"\n', {"NOT_READ": "no"})
    assert config.engine.connectors["main"].credentials[0].password == "x${NOT_READ}"


def test_environment_value_of_the_wrong_type_names_the_variable() -> None:
    errors = errors_of(AUTH + '[api]\nport = "${API_PORT}"\n', {"API_PORT": "eighty"})
    assert by_key(errors)["api.port"] == (
        "environment variable API_PORT: expected an integer from 0 to 65535, got a string ('eighty')"
    )


def test_empty_environment_value_is_an_error() -> None:
    errors = errors_of('[api.auth]\ntokens = ["${TOKEN}"]\n', {"TOKEN": ""})
    assert by_key(errors)["api.auth.tokens[0]"] == "environment variable TOKEN: must not be empty"


def test_missing_variable_error_names_key_and_variable() -> None:
    errors = errors_of(AUTH + CONNECTOR + 'username = "rec"\npassword = "${SRS_PASSWORD}"\n')
    (error,) = errors
    assert error.key == "connectors.main.password"
    assert "environment variable SRS_PASSWORD is not set" in str(error)


# --- secrets never appear in messages ---------------------------------------------------------


def test_secret_values_never_appear_in_errors() -> None:
    secrets = {"TOKEN": "env token with spaces", "PASSWORD": "hunter2-from-env"}
    text = """
[api.auth]
tokens = ["${TOKEN}", "literal-secret-token", "literal-secret-token"]
twilio_account_sid = "AC1"
twilio_auth_token = 987654321
metrics_token = 13371337

[callbacks]
signing_secret = ["signing-secret-in-a-list"]

[connectors.main]
srs = ["sip:srs@192.0.2.10"]
session_timeout = 30
username = "rec"
password = "${PASSWORD}"

[connectors.other]
srs = ["sip:srs@192.0.2.11"]
password = "hunter2-literal"
unknown_key = "x"
"""
    with pytest.raises(ConfigErrors) as caught:
        parse(text, secrets)
    keys = {error.key for error in caught.value.errors}
    # The secrets were wrong in many ways, and each was reported...
    assert {
        "api.auth.tokens[0]",
        "api.auth.tokens[2]",
        "api.auth.twilio_auth_token",
        "api.auth.metrics_token",
        "callbacks.signing_secret",
        "connectors.other.username",
    } <= keys
    # ...without ever showing one.
    shown = str(caught.value) + "".join(str(e) + repr(e) for e in caught.value.errors)
    for secret in (
        "env token with spaces",
        "literal-secret-token",
        "987654321",
        "13371337",
        "signing-secret-in-a-list",
        "hunter2",
    ):
        assert secret not in shown


def test_an_array_of_tables_with_passwords_is_not_echoed() -> None:
    # [[connectors]] (an array of tables) instead of [connectors.NAME]: a likely slip, and the
    # wrong value holds passwords, so the message says what it is, not what is in it.
    errors = errors_of(AUTH + '[[connectors]]\nsrs = ["sip:srs@192.0.2.12"]\npassword = "hunter2-in-array"\n')
    assert by_key(errors) == {"connectors": "expected a table of named tables, got an array"}


# --- TLS files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("config-pki"), "config")


def test_tls_files_are_loaded_and_relative_to_the_config_file(pki: Pki, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    for source, name in ((pki.server_cert, "src.pem"), (pki.server_key, "src.key"), (pki.ca, "ca.pem")):
        (certs / name).write_bytes(Path(source).read_bytes())
    path = tmp_path / "sidecar.toml"
    path.write_text(
        AUTH
        + """
[sip]
listen = ["tls:127.0.0.1", "tcp:127.0.0.1:5062"]

[sip.tls]
cert = "certs/src.pem"
key = "certs/src.key"
ca = "certs/ca.pem"
verify = false
"""
    )
    config = load_config(path, environ={})
    tls = config.engine.tls
    assert tls is not None
    assert (tls.certfile, tls.keyfile, tls.cafile) == (
        str(certs / "src.pem"),
        str(certs / "src.key"),
        str(certs / "ca.pem"),
    )
    assert tls.verify is False
    assert config.engine.sip_listen[0] == ListenSpec("tls", "127.0.0.1", 5061)


def test_tls_file_that_is_not_pem_is_reported(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    errors = errors_of(AUTH + f'[sip.tls]\ncert = "{garbage}"\nkey = "{pki.server_key}"\n')
    assert "cannot load certificate and key" in by_key(errors)["sip.tls.cert"]
    errors = errors_of(AUTH + f'[sip.tls]\nca = "{garbage}"\n')
    assert "cannot load CA certificates" in by_key(errors)["sip.tls.ca"]


def test_tcp_and_tls_on_one_port_clash(pki: Pki) -> None:
    errors = errors_of(
        AUTH
        + f"""
[sip]
listen = ["tcp:127.0.0.1:5070", "tls:127.0.0.1:5070"]
[sip.tls]
cert = "{pki.server_cert}"
key = "{pki.server_key}"
"""
    )
    assert by_key(errors) == {
        "sip.listen[1]": "tls:127.0.0.1:5070 uses the same socket as sip.listen[0] (tcp:127.0.0.1:5070)"
    }


# --- files and check-config -------------------------------------------------------------------


def test_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse("[api]\nport = \n")
    assert (caught.value.line, caught.value.column) == (2, 8)
    assert str(caught.value).startswith(f"{FILE}: TOML syntax error: ")
    assert not isinstance(caught.value, ConfigErrors)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read the file"):
        load_config(tmp_path / "absent.toml")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[sip]\nuser_agent = "caf\xe9"\n')
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        load_config(latin1)


def run_check(file: Path | str) -> int:
    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    return check_main(parser.parse_args([str(file)]))


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(EXAMPLE) == 0
    out, err = capsys.readouterr()
    assert err == ""
    workers = default_workers()
    assert out == (
        f"{EXAMPLE}: ok (1 connector, 0 edges, SIP on udp:127.0.0.1:5060, tcp:127.0.0.1:5060, "
        f"API on 127.0.0.1:8080, media ports 20000-29999 "
        f"({workers} worker{'' if workers == 1 else 's'}))\n"
    )


def test_check_config_lists_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(AUTH + CONNECTOR + "session_timeout = 30\n[media]\nworkers = -1\nport_mni = 3\n")
    assert run_check(path) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: media.port_mni: unknown key 'port_mni' (did you mean 'port_min'?); allowed here: host, "
        "advertised, port_min, port_max, workers, stream_timeout, worker_restart",
        f"{path}: media.workers: -1 is out of range; allowed: an integer from 0 to 1024",
        f"{path}: connectors.main.session_timeout: 30 is below the RFC 4028 minimum of 90 s; "
        "allowed: 0 (no session timer) or an integer of 90 seconds or more",
    ]


def test_check_config_exit_2_for_unreadable_or_not_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_check(tmp_path / "absent.toml") == 2
    assert "cannot read the file" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text('[api]\nhost = "127.0.0.1\n')
    assert run_check(broken) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{broken}: TOML syntax error: ")
    assert "line 2, column" in err


def test_check_config_with_no_workers_says_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inproc.toml"
    path.write_text(AUTH + "[media]\nworkers = 0\n")
    assert run_check(path) == 0
    assert "(in-process)" in capsys.readouterr().out


def test_production_example_in_the_docs_loads(pki: Pki) -> None:
    docs = (EXAMPLE.parents[1] / "docs" / "configuration.md").read_text()
    text = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    for name, path in (("src.pem", pki.server_cert), ("src.key", pki.server_key), ("srs-ca.pem", pki.ca)):
        text = text.replace(f"/etc/siprec-src/tls/{name}", path)
    environ = {
        name: f"value-of-{name.lower()}"
        for name in (
            "SIPREC_API_TOKEN",
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "SIPREC_CALLBACK_SECRET",
            "ANALYTICS_SRS_PASSWORD",
        )
    }
    config = parse(text, environ)
    assert config.log_format == "json"
    assert config.engine.tls is not None and config.engine.tls.cafile == pki.ca
    analytics = config.engine.connectors["analytics"]
    assert analytics.secure and [t.edge for t in analytics.srs] == ["dublin", "dublin"]
    assert analytics.credentials == (Credentials("recorder", "value-of-analytics_srs_password"),)
