"""What the control plane is configured with (built by ``siprec_src.config`` from TOML).

Frozen values only: the control modules never read files or the environment themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """Who may drive the API. There is no anonymous default (every shape needs one of these).

    - ``tokens``: Bearer tokens for the native ``/v1`` API;
    - ``twilio_account_sid`` / ``twilio_auth_token``: HTTP Basic for the Twilio-shaped API
      (the token also signs Twilio-style status callbacks, as Twilio does);
    - ``telnyx_api_key``: Bearer token for the Telnyx-shaped ``/v2`` API;
    - ``metrics_token``: when set, ``/metrics`` wants ``Authorization: Bearer`` with it (or
      with one of ``tokens``); a scraper then needs no token that can drive calls.
    A shape whose credentials are not configured answers 404 (it is not enabled).
    """

    # Secrets stay out of reprs, so a logged config never shows them.
    tokens: tuple[str, ...] = field(default=(), repr=False)
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    telnyx_api_key: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CallbackSettings:
    """Status callback delivery: bounded queue, per-attempt timeout, retries with backoff."""

    # HMAC-SHA256 key of native callbacks (X-Siprec-Signature)
    signing_secret: str | None = field(default=None, repr=False)
    timeout: float = 5.0  # seconds per delivery attempt
    retries: int = 3  # attempts after the first one
    backoff: float = 1.0  # first retry delay; doubles each retry
    queue_size: int = 10_000  # events waiting beyond this are dropped and logged


# Requests per second (and at once) one client may make; see ``http.RateLimiter``.
DEFAULT_RATE_LIMIT = 200.0
DEFAULT_RATE_BURST = 400


@dataclass(frozen=True, slots=True)
class ControlSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    credentials: ApiCredentials = ApiCredentials()
    public_url: str | None = None  # base URL as clients see it (for `uri` fields); default from the request
    max_body_bytes: int = 64 * 1024
    max_calls: int = 10_000
    max_recordings: int = 10_000  # SIPREC recordings not ended, across every call (Sidecar.record)
    max_streams: int = 10_000  # WebSocket streams not ended, across every call (Sidecar.start_stream)
    # Token bucket per client: ``rate_limit`` requests/s on average, ``rate_burst`` at once;
    # 0 turns it off. Over it: 429 with Retry-After.
    rate_limit: float = DEFAULT_RATE_LIMIT
    rate_burst: int = DEFAULT_RATE_BURST
    callbacks: CallbackSettings = CallbackSettings()
