"""HTTP Digest for SIP (siprec_src.sip.auth).

Covers: the published vectors (RFC 2617 §3.5 MD5, RFC 7616 §3.9.1 SHA-256), challenge parsing
(case, quoting, commas in quotes, stale, refusals), build/verify round trips for every
algorithm and qop, RFC 8760 challenge selection, and the DigestSession rules: never loop on a
wrong password, one retry on stale=true, nc per nonce, credentials chosen by realm.
Does not cover: nonce issuing and replay checks on the server side (the reference SRS owns those).
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.sip.auth import (
    Credentials,
    DigestChallenge,
    DigestSession,
    build_authorization,
    parse_authorization,
    parse_challenge,
    select_challenge,
    verify_authorization,
)

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC7616_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


def test_rfc2617_example() -> None:
    challenge = parse_challenge(RFC2617_CHALLENGE)
    assert challenge == DigestChallenge(
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        algorithm="MD5",
        qop=("auth", "auth-int"),
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
        stale=False,
    )
    value = build_authorization(
        challenge,
        Credentials("Mufasa", "Circle Of Life"),
        "GET",
        "/dir/index.html",
        cnonce="0a4f113b",
        nonce_count=1,
    )
    assert value == (
        'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="/dir/index.html", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, '
        'cnonce="0a4f113b", qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert verify_authorization(value, "Circle Of Life", "GET")
    assert not verify_authorization(value, "circle of life", "GET")
    assert not verify_authorization(value, "Circle Of Life", "POST")


def test_rfc7616_sha256_example() -> None:
    challenge = parse_challenge(RFC7616_CHALLENGE)
    assert challenge.algorithm == "SHA-256"
    value = build_authorization(
        challenge,
        Credentials("Mufasa", "Circle of Life", realm="http-auth@example.org"),
        "GET",
        "/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nonce_count=1,
    )
    params = parse_authorization(value)
    assert params["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert params["algorithm"] == "SHA-256"
    assert params["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert verify_authorization(value, "Circle of Life", "GET")


def test_parse_challenge_syntax_variants() -> None:
    challenge = parse_challenge(
        'digest  REALM="a, b \\"c\\"" ,NONCE=abc/def==,Algorithm="sha-256-SESS", '
        'qop=auth, stale=TRUE, domain="sip:x"'
    )
    assert challenge.realm == 'a, b "c"'
    assert challenge.nonce == "abc/def=="
    assert challenge.algorithm == "SHA-256-sess"
    assert challenge.qop == ("auth",)
    assert challenge.opaque is None
    assert challenge.stale
    assert not parse_challenge('Digest realm="r", nonce="n", stale=false').stale
    assert not parse_challenge('Digest realm="r", nonce="n", stale=maybe').stale


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Basic realm="r"', "scheme 'Basic' is not supported"),
        ('Digest nonce="n"', "lacks realm"),
        ('Digest realm="r"', "lacks nonce"),
        ("Digest qop=auth", "lacks realm and nonce"),
        ('Digest realm="r", nonce="n", algorithm=SHA-512-256', "'SHA-512-256' is not supported"),
        ('Digest realm="r", nonce="n", algorithm=MD4', "'MD4' is not supported"),
        ('Digest realm="r", realm="s", nonce="n"', "appears twice"),
        ('Digest realm="r, nonce=n', "unterminated"),
        ('Digest realm="r" x, nonce="n"', "text after the quoted value"),
        ("Digest realm", "parameter without value"),
        ("", "does not start with an authentication scheme"),
    ],
)
def test_parse_challenge_refusals(value: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        parse_challenge(value)


@pytest.mark.parametrize(
    ("algorithm", "qop"),
    # -sess without qop cannot be answered: see test_sess_without_qop_refused.
    [
        (a, q)
        for a in ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")
        for q in ("auth", "auth-int", None)
        if q is not None or not a.endswith("-sess")
    ],
)
def test_build_verify_round_trip(algorithm: str, qop: str | None) -> None:
    challenge = DigestChallenge("sip.example.com", "n0nce", algorithm, () if qop is None else (qop,))
    body = b"v=0\r\n"
    value = build_authorization(
        challenge,
        Credentials("src", "s3cret"),
        "INVITE",
        "sip:srs@example.com",
        cnonce="c",
        nonce_count=7,
        body=body,
    )
    params = parse_authorization(value)
    assert params.get("qop") == qop
    assert ("nc" in params) == (qop is not None)
    assert ("cnonce" in params) == (qop is not None)
    assert verify_authorization(value, "s3cret", "INVITE", body)
    assert not verify_authorization(value, "wrong", "INVITE", body)
    # Only auth-int protects the body.
    assert verify_authorization(value, "s3cret", "INVITE", b"other") == (qop != "auth-int")


def test_auth_int_chosen_when_only_it_is_offered_and_unknown_qop_refused() -> None:
    value = build_authorization(
        DigestChallenge("r", "n", qop=("auth-int",)),
        Credentials("u", "p"),
        "BYE",
        "sip:x",
        cnonce="c",
        nonce_count=1,
    )
    assert parse_authorization(value)["qop"] == "auth-int"
    with pytest.raises(RemoteProtocolError, match="unsupported qop"):
        build_authorization(
            DigestChallenge("r", "n", qop=("auth-conf",)),
            Credentials("u", "p"),
            "BYE",
            "sip:x",
            cnonce="c",
            nonce_count=1,
        )


def test_sess_without_qop_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="without qop"):
        build_authorization(
            DigestChallenge("r", "n", "MD5-sess"),
            Credentials("u", "p"),
            "INVITE",
            "sip:x",
            cnonce="c",
            nonce_count=1,
        )


def test_build_misuse_refused() -> None:
    challenge = DigestChallenge("r", "n", qop=("auth",))
    with pytest.raises(LocalProtocolError, match="realm"):
        build_authorization(
            challenge, Credentials("u", "p", realm="other"), "INVITE", "sip:x", cnonce="c", nonce_count=1
        )
    with pytest.raises(LocalProtocolError, match="nonce_count"):
        build_authorization(challenge, Credentials("u", "p"), "INVITE", "sip:x", cnonce="c", nonce_count=0)
    with pytest.raises(LocalProtocolError, match="nonce_count"):
        build_authorization(
            challenge, Credentials("u", "p"), "INVITE", "sip:x", cnonce="c", nonce_count=2**32
        )
    with pytest.raises(LocalProtocolError, match="line break"):
        build_authorization(
            challenge, Credentials("u\r\n", "p"), "INVITE", "sip:x", cnonce="c", nonce_count=1
        )
    with pytest.raises(LocalProtocolError, match="cnonce"):
        build_authorization(challenge, Credentials("u", "p"), "INVITE", "sip:x", cnonce="", nonce_count=1)
    with pytest.raises(LocalProtocolError, match="method"):
        build_authorization(challenge, Credentials("u", "p"), "IN VITE", "sip:x", cnonce="c", nonce_count=1)


def test_username_with_quote_is_escaped_and_verifies() -> None:
    value = build_authorization(
        DigestChallenge("r", "n", qop=("auth",)),
        Credentials('a"b\\c', "p"),
        "INVITE",
        "sip:x",
        cnonce="c",
        nonce_count=1,
    )
    assert 'username="a\\"b\\\\c"' in value
    assert parse_authorization(value)["username"] == 'a"b\\c'
    assert verify_authorization(value, "p", "INVITE")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest username="u", realm="r", nonce="n", uri="sip:x"', "lack response"),
        (
            'Digest username="u", realm="r", nonce="n", uri="sip:x", response="0", qop=auth',
            "lack nc or cnonce",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="x", response="0", qop=auth, nc=1, cnonce="c"',
            "8 hex",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="sip:x", response="0", qop=auth-conf',
            "unsupported qop",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="sip:x", response="0", algorithm=MD5-sess',
            "without qop",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="sip:x", response="0", algorithm=SHA-1',
            "not supported",
        ),
        ("Basic dXNlcjpwYXNz", "only Digest"),
    ],
)
def test_verify_malformed_raises(value: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        verify_authorization(value, "p", "INVITE")


def test_select_challenge_takes_topmost_supported() -> None:
    values = [
        'Basic realm="r"',
        'Digest realm="r", nonce="n1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="n3", algorithm=MD5, qop="auth"',
    ]
    assert select_challenge(values).nonce == "n2"
    with pytest.raises(RemoteProtocolError, match=r"no usable Digest challenge: .*Basic.*SHA-512-256"):
        select_challenge(values[:2])
    with pytest.raises(RemoteProtocolError, match="no authentication challenge"):
        select_challenge([])


def _counter_cnonces() -> DigestSession:
    counter = itertools.count(1)
    return DigestSession([Credentials("src", "wrong")], cnonce_factory=lambda: f"c{next(counter)}")


def test_session_wrong_password_gives_up() -> None:
    session = _counter_cnonces()
    first = session.answer(parse_challenge('Digest realm="r", nonce="n1", qop="auth"'), "INVITE", "sip:srs")
    assert first is not None
    assert parse_authorization(first)["cnonce"] == "c1"
    # The server rejects our credentials with a fresh, non-stale challenge: retrying would loop.
    assert (
        session.answer(parse_challenge('Digest realm="r", nonce="n2", qop="auth"'), "INVITE", "sip:srs")
        is None
    )
    # Same nonce again, non-stale: same verdict.
    assert (
        session.answer(parse_challenge('Digest realm="r", nonce="n1", qop="auth"'), "INVITE", "sip:srs")
        is None
    )


def test_session_stale_allows_one_retry() -> None:
    session = _counter_cnonces()
    assert session.answer(parse_challenge('Digest realm="r", nonce="n1", qop="auth"'), "INVITE", "sip:srs")
    retry = session.answer(
        parse_challenge('Digest realm="r", nonce="n2", qop="auth", stale=true'), "INVITE", "sip:srs"
    )
    assert retry is not None
    assert parse_authorization(retry)["nonce"] == "n2"
    assert parse_authorization(retry)["nc"] == "00000001"
    # A second stale in a row, or a non-stale rejection after it, ends the attempt.
    assert (
        session.answer(parse_challenge('Digest realm="r", nonce="n3", stale=TRUE'), "INVITE", "sip:srs")
        is None
    )
    assert session.answer(parse_challenge('Digest realm="r", nonce="n3"'), "INVITE", "sip:srs") is None


def test_session_stale_on_the_nonce_just_used_gives_up() -> None:
    session = _counter_cnonces()
    assert session.answer(parse_challenge('Digest realm="r", nonce="n1"'), "INVITE", "sip:srs")
    assert (
        session.answer(parse_challenge('Digest realm="r", nonce="n1", stale=true'), "INVITE", "sip:srs")
        is None
    )


def test_session_nonce_count_per_nonce_and_reset_after_success() -> None:
    session = _counter_cnonces()
    n1 = parse_challenge('Digest realm="r", nonce="n1", qop="auth"')
    assert parse_authorization(session.answer(n1, "INVITE", "sip:srs") or "")["nc"] == "00000001"
    session.authenticated()
    # A later request challenged with the same nonce: nc grows (RFC 7616 §3.4).
    assert parse_authorization(session.answer(n1, "BYE", "sip:srs") or "")["nc"] == "00000002"
    session.authenticated()
    n2 = parse_challenge('Digest realm="r", nonce="n2", qop="auth"')
    assert parse_authorization(session.answer(n2, "BYE", "sip:srs") or "")["nc"] == "00000001"


def test_session_picks_credentials_by_realm() -> None:
    session = DigestSession(
        [Credentials("proxy-user", "pp", realm="proxy"), Credentials("any-user", "ap")],
        cnonce_factory=lambda: "c",
    )
    proxy = session.answer(parse_challenge('Digest realm="proxy", nonce="n"'), "INVITE", "sip:srs")
    srs = session.answer(parse_challenge('Digest realm="srs", nonce="n"'), "INVITE", "sip:srs")
    assert proxy is not None
    assert srs is not None
    assert parse_authorization(proxy)["username"] == "proxy-user"
    assert parse_authorization(srs)["username"] == "any-user"
    # Realms are tracked separately: each one was tried once.
    assert session.answer(parse_challenge('Digest realm="proxy", nonce="m"'), "INVITE", "sip:srs") is None
    only_proxy = DigestSession([Credentials("u", "p", realm="proxy")])
    assert only_proxy.answer(parse_challenge('Digest realm="srs", nonce="n"'), "INVITE", "sip:srs") is None


def test_session_default_cnonce_is_random() -> None:
    session = DigestSession([Credentials("u", "p")])
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    first = parse_authorization(session.answer(challenge, "INVITE", "sip:x") or "")["cnonce"]
    session.authenticated()
    second = parse_authorization(session.answer(challenge, "INVITE", "sip:x") or "")["cnonce"]
    assert len(first) == 16
    assert first != second


@given(st.text(max_size=120))
@settings(max_examples=500)
def test_property_parse_challenge_raises_only_remote_protocol_error(value: str) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_challenge(value)


@given(
    username=st.text(min_size=1, max_size=20).filter(lambda s: "\r" not in s and "\n" not in s),
    password=st.text(max_size=20),
    nonce=st.text(min_size=1, max_size=20).filter(lambda s: "\r" not in s and "\n" not in s),
    nonce_count=st.integers(min_value=1, max_value=2**32 - 1),
)
@settings(max_examples=200)
def test_property_build_then_verify(username: str, password: str, nonce: str, nonce_count: int) -> None:
    challenge = DigestChallenge("realm", nonce, "SHA-256", ("auth",), opaque="o")
    value = build_authorization(
        challenge, Credentials(username, password), "INVITE", "sip:x", cnonce="cn", nonce_count=nonce_count
    )
    assert verify_authorization(value, password, "INVITE")
