"""Status callbacks: what one delivery is (filled in by the API shape) and the queue that sends them.

The API shapes (native, Twilio, Telnyx) turn recording events into ``Delivery`` values (URL,
method, body, signature header); ``CallbackQueue`` sends them from a bounded queue with
retries and backoff, so a slow or dead callback server never delays media or signaling.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delivery:
    """One HTTP request to make. ``form`` goes in the query string for GET, the body for POST;
    ``json`` (exclusive with ``form``) is always a POST body."""

    url: str
    method: str = "POST"
    form: tuple[tuple[str, str], ...] | None = None
    json: object | None = None
    headers: tuple[tuple[str, str], ...] = ()
    event: str = ""  # what it reports (for logs and metrics), e.g. "siprec-started"
