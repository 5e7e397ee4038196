"""HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

An SRS (or a proxy in front of it) may answer our INVITE with 401/407 and a challenge. This
module parses the challenge, computes the Authorization / Proxy-Authorization value, and, for
the reference SRS and the tests, verifies one. It does no I/O and reads no clock: the client
nonce comes from a factory the caller controls.

Supported: algorithms MD5, MD5-sess, SHA-256, SHA-256-sess (RFC 8760 §2.1 adds SHA-256 to
SIP); qop ``auth``, ``auth-int`` and no qop (RFC 2069 compatibility, RFC 2617 §3.2.2.1).
Not supported, refused with a clear reason: SHA-512-256, ``userhash`` and the ``username*``
form of RFC 7616 §3.4.4.

``DigestSession`` holds the client-side rules that are easy to get wrong:

    state per realm   | challenge for that realm          | answer()
    ------------------+-----------------------------------+----------------------------------
    not tried         | any                               | credentials, tried := yes
    tried             | stale=false                       | None: the password is wrong,
                      |                                   | retrying would loop (RFC 3261 §22.2)
    tried             | stale=true, new nonce, 1st time   | credentials with the new nonce
    tried             | stale=true, same nonce or again   | None
    any               | no credentials for the realm      | None

``authenticated()`` (the request went through) resets "tried", so a later request of the same
dialog may answer a fresh challenge once more. The nonce count increments while the nonce
stays the same and restarts at 1 with a new nonce (RFC 7616 §3.4).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.sip.syntax import LWS, is_token, quote, read_quoted

__all__ = [
    "Credentials",
    "DigestChallenge",
    "DigestSession",
    "build_authorization",
    "parse_authorization",
    "parse_challenge",
    "select_challenge",
    "verify_authorization",
]

# Lowercased algorithm name -> (canonical spelling, hashlib name, is a -sess variant).
_ALGORITHMS: dict[str, tuple[str, str, bool]] = {
    "md5": ("MD5", "md5", False),
    "md5-sess": ("MD5-sess", "md5", True),
    "sha-256": ("SHA-256", "sha256", False),
    "sha-256-sess": ("SHA-256-sess", "sha256", True),
}

# RFC 7616 §3.4: nc is 8 hex digits, so it wraps after this many uses of one nonce.
_MAX_NONCE_COUNT = 0xFFFFFFFF

# One stale retry is what a nonce that expired in flight needs; a second one in a row means
# the server will never accept us and we would loop.
_MAX_STALE_RETRIES = 1


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One Digest challenge from a WWW-Authenticate or Proxy-Authenticate header value."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password; ``realm`` None means "for any realm"."""

    username: str
    password: str = field(repr=False)  # never in logs or reprs
    realm: str | None = None


def parse_challenge(header_value: str) -> DigestChallenge:
    """Parse ``Digest realm="x", nonce="y", ...``; raise ``RemoteProtocolError`` if unusable."""
    params = _parse_digest_params(header_value, "challenge")
    # RFC 2617 §3.2.1 / RFC 3261 §22.4: realm and nonce are required in a challenge.
    missing = [name for name in ("realm", "nonce") if name not in params]
    if missing:
        raise RemoteProtocolError(f"Digest challenge lacks {' and '.join(missing)}: {header_value!r}")
    algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
    qop = tuple(option.strip(LWS).lower() for option in params.get("qop", "").split(",") if option.strip(LWS))
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        # RFC 7616 §3.3: stale is TRUE case-insensitively; any other value means false.
        stale=params.get("stale", "").lower() == "true",
    )


def select_challenge(header_values: Iterable[str]) -> DigestChallenge:
    """Pick the challenge to answer from all WWW-Authenticate (or Proxy-Authenticate) values.

    RFC 8760 §2.4: with several challenges (e.g. SHA-256 then MD5), the UAC uses the topmost
    one it supports. Values that are not Digest or use an unknown algorithm are skipped; if
    none is usable the reasons are reported together.
    """
    reasons: list[str] = []
    for value in header_values:
        try:
            return parse_challenge(value)
        except RemoteProtocolError as exc:
            reasons.append(exc.reason)
    if not reasons:
        raise RemoteProtocolError("the response carries no authentication challenge")
    raise RemoteProtocolError("no usable Digest challenge: " + "; ".join(reasons))


def parse_authorization(value: str) -> dict[str, str]:
    """Parameters of a ``Digest ...`` Authorization value: names lowercased, values unquoted."""
    return _parse_digest_params(value, "Authorization")


def build_authorization(
    challenge: DigestChallenge,
    credentials: Credentials,
    method: str,
    uri: str,
    *,
    cnonce: str,
    nonce_count: int,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge`` (RFC 3261 §22.4).

    ``uri`` is the Request-URI as sent; ``body`` only matters for qop=auth-int.
    """
    if credentials.realm is not None and credentials.realm != challenge.realm:
        raise LocalProtocolError(
            f"credentials for realm {credentials.realm!r} used for a challenge from {challenge.realm!r}"
        )
    if not 1 <= nonce_count <= _MAX_NONCE_COUNT:
        raise LocalProtocolError(f"nonce_count {nonce_count} is outside 1..0xFFFFFFFF (RFC 7616 §3.4)")
    if not is_token(method):
        raise LocalProtocolError(f"method {method!r} is not a SIP token")
    texts = {
        "username": credentials.username,
        "uri": uri,
        "cnonce": cnonce,
        "realm": challenge.realm,
        "nonce": challenge.nonce,
        "opaque": challenge.opaque or "",
    }
    for name, text in texts.items():
        # Even quoted, a CR or LF would end the header line early (RFC 3261 §25.1 qdtext).
        if "\r" in text or "\n" in text:
            raise LocalProtocolError(f"{name} contains a line break")
    qop = _choose_qop(challenge.qop)
    algorithm = _canonical_algorithm(challenge.algorithm)
    sess = _ALGORITHMS[algorithm.lower()][2]
    if qop is not None and not cnonce:
        raise LocalProtocolError("cnonce must not be empty when a qop is used")
    if sess and qop is None:
        # -sess hashes the cnonce into A1 (RFC 7616 §3.4.2) but RFC 3261 §22.4 forbids sending
        # a cnonce without qop: the challenge cannot be answered consistently.
        raise RemoteProtocolError(f"algorithm {algorithm} offered without qop cannot be answered")
    nc = f"{nonce_count:08x}"
    response = _response(
        algorithm=algorithm,
        username=credentials.username,
        realm=challenge.realm,
        password=credentials.password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )
    fields = [
        f"username={quote(credentials.username)}",
        f"realm={quote(challenge.realm)}",
        f"nonce={quote(challenge.nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(response)}",
        f"algorithm={algorithm}",
    ]
    if qop is not None:
        # RFC 2617 §3.2.2: cnonce and nc are sent exactly when qop is (qop and nc unquoted).
        fields += [f"cnonce={quote(cnonce)}", f"qop={qop}", f"nc={nc}"]
    if challenge.opaque is not None:
        # RFC 2617 §3.2.2: opaque is returned unchanged.
        fields.append(f"opaque={quote(challenge.opaque)}")
    return "Digest " + ", ".join(fields)


def verify_authorization(header_value: str, password: str, method: str, body: bytes = b"") -> bool:
    """Server side: does the Authorization value prove knowledge of ``password``?

    Returns False when the response digest does not match. A malformed value (missing field,
    unknown algorithm or qop, bad nc) raises ``RemoteProtocolError`` so a UAS can answer 400.
    Checking that the nonce is one we issued, is fresh, and that nc grows is the caller's job:
    this function only recomputes the digest.
    """
    params = parse_authorization(header_value)
    missing = [name for name in ("username", "realm", "nonce", "uri", "response") if name not in params]
    if missing:
        raise RemoteProtocolError(f"Digest credentials lack {', '.join(missing)}")
    algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
    qop = params.get("qop")
    nc: str | None = None
    cnonce: str | None = None
    if qop is not None:
        qop = qop.lower()
        if qop not in ("auth", "auth-int"):
            raise RemoteProtocolError(f"unsupported qop {qop!r} in Digest credentials")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        if nc is None or cnonce is None:
            raise RemoteProtocolError("Digest credentials with qop lack nc or cnonce (RFC 2617 §3.2.2)")
        if len(nc) != 8 or any(ch not in "0123456789abcdefABCDEF" for ch in nc):
            raise RemoteProtocolError(f"nc {nc!r} is not 8 hex digits (RFC 7616 §3.4)")
    elif _ALGORITHMS[algorithm.lower()][2]:
        raise RemoteProtocolError(f"algorithm {algorithm} used without qop")
    expected = _response(
        algorithm=algorithm,
        username=params["username"],
        realm=params["realm"],
        password=password,
        method=method,
        uri=params["uri"],
        nonce=params["nonce"],
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )
    # Constant-time comparison: the SRS must not leak how many digest characters matched.
    return hmac.compare_digest(
        expected.encode("ascii"), params["response"].lower().encode("utf-8", "surrogateescape")
    )


def _default_cnonce() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class _RealmState:
    nonce: str | None = None
    nonce_count: int = 0
    tried: bool = False
    stale_retries: int = 0


@dataclass(slots=True)
class DigestSession:
    """Client-side Digest state for one user agent or dialog; see the table in the module header.

    ``credentials`` are searched in order: the first whose realm equals the challenge's wins,
    else the first with realm None.
    """

    credentials: Sequence[Credentials]
    cnonce_factory: Callable[[], str] = _default_cnonce
    _realms: dict[str, _RealmState] = field(default_factory=dict, init=False, repr=False)

    def answer(self, challenge: DigestChallenge, method: str, uri: str, body: bytes = b"") -> str | None:
        """Authorization value to resend the request with, or None to give up.

        Call it for each 401/407 challenge of a request; None means retrying would loop
        (RFC 3261 §22.2: a UAC whose credentials are rejected SHOULD NOT re-send them) or we
        hold no credentials for the realm. The state changes only once the value is built.
        """
        credentials = self._credentials_for(challenge.realm)
        if credentials is None:
            return None
        state = self._realms.get(challenge.realm, _RealmState())
        stale_retries = state.stale_retries
        if state.tried:
            # We already answered this realm and it challenged again. Only stale=true says the
            # password was right (RFC 7616 §3.3); a stale verdict on the very nonce we just
            # used, or twice in a row, is a server we would loop with.
            if not challenge.stale or challenge.nonce == state.nonce or stale_retries >= _MAX_STALE_RETRIES:
                return None
            stale_retries += 1
        nonce_count = state.nonce_count + 1 if challenge.nonce == state.nonce else 1
        if nonce_count > _MAX_NONCE_COUNT:
            return None  # nc would wrap; the server must hand out a new nonce
        value = build_authorization(
            challenge,
            credentials,
            method,
            uri,
            cnonce=self.cnonce_factory(),
            nonce_count=nonce_count,
            body=body,
        )
        self._realms[challenge.realm] = _RealmState(
            nonce=challenge.nonce, nonce_count=nonce_count, tried=True, stale_retries=stale_retries
        )
        return value

    def authenticated(self) -> None:
        """The last request got a final response other than 401/407: start fresh next time.

        Nonces and counts are kept, so a server that reuses its nonce sees nc grow.
        """
        for state in self._realms.values():
            state.tried = False
            state.stale_retries = 0

    def _credentials_for(self, realm: str) -> Credentials | None:
        wildcard: Credentials | None = None
        for credentials in self.credentials:
            if credentials.realm == realm:
                return credentials
            if credentials.realm is None and wildcard is None:
                wildcard = credentials
        return wildcard


def _choose_qop(offered: tuple[str, ...]) -> str | None:
    if not offered:
        return None  # RFC 2069 compatibility (RFC 2617 §3.2.2.1)
    # auth first: auth-int hashes the body, which proxies that rewrite SDP would break.
    for qop in ("auth", "auth-int"):
        if qop in offered:
            return qop
    raise RemoteProtocolError(f"challenge offers only unsupported qop values {', '.join(offered)}")


def _canonical_algorithm(name: str) -> str:
    known = _ALGORITHMS.get(name.strip(LWS).lower())
    if known is None:
        supported = ", ".join(spec[0] for spec in _ALGORITHMS.values())
        raise RemoteProtocolError(f"Digest algorithm {name!r} is not supported (supported: {supported})")
    return known[0]


def _hash(hash_name: str, data: str | bytes) -> str:
    # Header values hold the bytes that are not UTF-8 as surrogate escapes (the message parser
    # decodes with "surrogateescape"): encoding them back gives the bytes the peer hashed.
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if hash_name == "md5":
        # MD5 is what RFC 2617 prescribes, not our security choice; this keeps FIPS builds working.
        return hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return hashlib.sha256(raw).hexdigest()


def _response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes,
) -> str:
    """The request-digest of RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1 for MD5)."""
    _, hash_name, sess = _ALGORITHMS[algorithm.lower()]
    # RFC 7616 §3.4.2: A1 = username:realm:password; -sess hashes it with nonce and cnonce.
    ha1 = _hash(hash_name, f"{username}:{realm}:{password}")
    if sess:
        ha1 = _hash(hash_name, f"{ha1}:{nonce}:{cnonce}")
    # RFC 7616 §3.4.3: A2 = method:uri, plus H(entity-body) for auth-int.
    if qop == "auth-int":
        ha2 = _hash(hash_name, f"{method}:{uri}:{_hash(hash_name, body)}")
    else:
        ha2 = _hash(hash_name, f"{method}:{uri}")
    if qop is None:
        return _hash(hash_name, f"{ha1}:{nonce}:{ha2}")
    return _hash(hash_name, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _parse_digest_params(value: str, what: str) -> dict[str, str]:
    """Parameters of ``Digest name=value, name="quoted, value"`` (RFC 7235 §2.1, RFC 3261 §25.1)."""
    text = value.strip(LWS)
    end = 0
    while end < len(text) and text[end] not in LWS:
        end += 1
    scheme = text[:end]
    if not is_token(scheme):
        raise RemoteProtocolError(f"{what} {value!r} does not start with an authentication scheme")
    if scheme.lower() != "digest":
        # Checked before the parameters: other schemes (Basic's token68) have another syntax.
        raise RemoteProtocolError(f"{what}: authentication scheme {scheme!r} is not supported, only Digest")
    params: dict[str, str] = {}
    i = end
    n = len(text)
    while i < n:
        if text[i] in LWS or text[i] == ",":
            i += 1
            continue
        eq = text.find("=", i)
        if eq < 0:
            raise RemoteProtocolError(f"{what}: parameter without value at {text[i:]!r}")
        name = text[i:eq].strip(LWS).lower()
        if not is_token(name):
            raise RemoteProtocolError(f"{what}: malformed parameter name {name!r}")
        i = eq + 1
        while i < n and text[i] in LWS:
            i += 1
        if i < n and text[i] == '"':
            param_value, i = read_quoted(text, i)
            while i < n and text[i] in LWS:
                i += 1
            if i < n and text[i] != ",":
                raise RemoteProtocolError(f"{what}: text after the quoted value of {name!r}")
        else:
            comma = text.find(",", i)
            stop = n if comma < 0 else comma
            param_value = text[i:stop].strip(LWS)
            # Unquoted values are tokens in the grammar; base64 nonces sent unquoted carry
            # "/" and "=", so anything up to the comma without blanks or quotes is accepted.
            if not param_value or any(ch == '"' or ch in LWS or not ch.isprintable() for ch in param_value):
                raise RemoteProtocolError(f"{what}: malformed value of {name!r}")
            i = stop
        if name in params:
            # RFC 7235 §2.1: each parameter name MUST only occur once per challenge.
            raise RemoteProtocolError(f"{what}: parameter {name!r} appears twice")
        params[name] = param_value
    return params
