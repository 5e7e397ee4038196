"""``SrsHealth``: which SRSs answered lately, so new sessions try the live ones first. Sans-I/O.

Failover (DESIGN.md) walks a connector's SRS list in order; without memory every new
recording would wait ``attempt_timeout`` on an SRS that has been dead for an hour. An SRS
that timed out, failed at the transport or answered 5xx is *down*, and tried after the
others, for its 503's Retry-After (RFC 3261 §21.5.4) or ``down_for`` seconds; any answer, or a
session it accepts, makes it *up* again. It is never skipped: when every SRS is down they
are all tried, in configured order, so a recovered SRS is found by the next recording.
"""

from __future__ import annotations

from collections.abc import Sequence

from siprec_src.recording.connector import SrsTarget

DOWN_FOR = 30.0  # seconds an SRS without a Retry-After stays at the back of the list
MAX_DOWN_FOR = 3600.0  # a Retry-After longer than this is read as this (a typo must not bury an SRS)


def marks_down(status: int) -> bool:
    """Whether a failure says the SRS is unavailable (not that it refused this one session)."""
    return status == 408 or 500 <= status <= 599


class SrsHealth:
    def __init__(self, down_for: float = DOWN_FOR) -> None:
        self.down_for = down_for
        self._down_until: dict[str, float] = {}  # SRS URI -> until when it counts as down

    def order(self, targets: Sequence[SrsTarget], now: float) -> tuple[SrsTarget, ...]:
        """``targets`` with the ones that are up first; each group keeps the given order."""
        up = [t for t in targets if not self.is_down(t, now)]
        down = [t for t in targets if self.is_down(t, now)]
        return (*up, *down)

    def is_down(self, target: SrsTarget | str, now: float) -> bool:
        return self._down_until.get(str(target), now) > now

    def failed(self, srs: str, status: int, now: float, retry_after: int | None = None) -> None:
        """``srs`` failed with ``status`` (408 for silence, 503 for a transport failure)."""
        if not marks_down(status):
            return
        seconds = self.down_for if retry_after is None else min(float(retry_after), MAX_DOWN_FOR)
        self._down_until[srs] = now + seconds
        # Forget what has expired: ad-hoc SRS URIs from API calls must not pile up.
        for uri in [uri for uri, until in self._down_until.items() if until <= now]:
            del self._down_until[uri]

    def answered(self, srs: str) -> None:
        self._down_until.pop(srs, None)

    def down(self, now: float) -> dict[str, float]:
        """The SRSs that are down and for how many more seconds."""
        return {uri: until - now for uri, until in self._down_until.items() if until > now}


__all__ = ["DOWN_FOR", "SrsHealth", "marks_down"]
