"""``CoreTimer``: the one ``loop.call_at`` timer an asyncio adapter keeps for its sans-I/O core.

A core says when it next needs ``handle_timer(now)`` (``get_timer()``); after every input the
adapter re-arms one timer to that deadline (STYLE.md #2, after aioquic's protocol.py). An
earlier deadline replaces the armed handle; a later one keeps it: the handle fires early, the
core's ``handle_timer(now)`` finds nothing due (sans-I/O cores fire only what is due by
``now``), and the adapter re-arms to the real deadline. Under load the earliest deadline moves
later with nearly every message (each answer stops a retransmission timer), and keeping the
handle saves a cancel and a new handle each time for a wake-up every few hundred milliseconds.
``None`` (nothing due at all) disarms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CoreTimer:
    __slots__ = ("_fire", "_handle")

    def __init__(self, fire: Callable[[], None]) -> None:
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, when: float | None) -> None:
        """Make sure ``fire()`` runs at loop time ``when`` or earlier (``None``: no deadline)."""
        if self._handle is not None:
            if when is not None and self._handle.when() <= when:
                return
            self._handle.cancel()
            self._handle = None
        if when is not None:
            self._handle = asyncio.get_running_loop().call_at(when, self._run)

    @property
    def when(self) -> float | None:
        """The loop time the armed handle fires at, or None."""
        return None if self._handle is None else self._handle.when()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        self._fire()
