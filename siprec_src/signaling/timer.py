"""``CoreTimer``: the one ``loop.call_at`` timer an asyncio adapter keeps for its sans-I/O core.

A core says when it next needs ``handle_timer(now)`` (``get_timer()``); after every input the
adapter re-arms one timer to that deadline (STYLE.md #2, after aioquic's protocol.py). The
same deadline keeps the armed handle; a new one replaces it; ``None`` disarms.
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
        """Fire ``fire()`` at loop time ``when`` (``None``: no deadline)."""
        if self._handle is not None:
            if when is not None and self._handle.when() == when:
                return
            self._handle.cancel()
            self._handle = None
        if when is not None:
            self._handle = asyncio.get_running_loop().call_at(when, self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        self._fire()
