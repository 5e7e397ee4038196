"""``CoreTimer`` (siprec_src.signaling.timer) on a running loop.

Covers: an earlier deadline replaces the armed handle, a later one keeps it (the early wake-up
is harmless for a sans-I/O core, which fires only what is due), None disarms, the timer fires
once per arming, and a fire that re-arms works. Runtime: about 0.05 s.
"""

from __future__ import annotations

import asyncio

from siprec_src.signaling.timer import CoreTimer


async def test_earlier_replaces_later_keeps_none_disarms() -> None:
    fired: list[float] = []
    loop = asyncio.get_running_loop()
    timer = CoreTimer(lambda: fired.append(loop.time()))
    now = loop.time()
    timer.arm(now + 10)
    assert timer.when == now + 10
    timer.arm(now + 20)  # later: the armed handle stays
    assert timer.when == now + 10
    timer.arm(now + 5)  # earlier: replaces it
    assert timer.when == now + 5
    timer.arm(None)
    assert timer.when is None
    timer.cancel()
    assert fired == []


async def test_it_fires_once_and_can_be_armed_from_the_fire() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    done = asyncio.Event()

    def fire() -> None:
        fired.append(loop.time())
        if len(fired) == 1:
            timer.arm(loop.time() + 0.01)  # the core says when it next needs handle_timer
        else:
            done.set()

    timer = CoreTimer(fire)
    start = loop.time()
    timer.arm(start + 0.01)
    timer.arm(start + 0.5)  # a later deadline: the earlier wake-up still comes
    async with asyncio.timeout(2):
        await done.wait()
    assert len(fired) == 2 and fired[0] < start + 0.5
    assert timer.when is None
