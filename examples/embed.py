"""Embedding siprec_src in a softswitch: push the call's RTP in-process and record it over SIPREC.

    python examples/embed.py sip:srs@127.0.0.1:5080 [seconds]

The softswitch already holds each leg's packets, so the call is opened with ``tap=False`` and
packets go in with ``call.feed()`` (no sockets, no IPC). Here a synthetic two-tone call stands
in for the softswitch's legs. Exit status 0 when the SRS accepted and the recording ended cleanly.
"""

from __future__ import annotations

import asyncio
import sys

from siprec_src import Engine, EngineConfig, Leg, Party, RecordingError, Track
from siprec_src.synthetic import SyntheticLeg, play


async def main(srs: str, seconds: float) -> int:
    async with Engine(EngineConfig()) as engine:
        call = await engine.open_call(
            caller=Party("sip:+15551230001@pbx.example.com", "Caller"),
            callee=Party("sip:agent-7@pbx.example.com", "Agent 7"),
            tap=False,  # we feed packets ourselves
        )
        recording = await call.record(srs=[srs], track=Track.BOTH, params={"Campaign": "spring"})
        try:
            await recording.wait_started(timeout=10)
        except RecordingError as exc:
            print(f"the SRS did not take the recording: {exc} (SIP {exc.status})", file=sys.stderr)
            return 1
        print(f"recording {recording.sid} in progress on {recording.srs}")
        legs = [SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)]
        await play(legs, call.feed, seconds)  # a softswitch calls call.feed(leg, rtp_bytes) per packet
        stats = await engine.fork_stats(recording)
        await call.close()  # BYE to the SRS, RTCP BYE on each stream
        for label, leg, ssrc in recording.streams:
            print(f"stream {label} ({leg}) SSRC {ssrc:#010x}: {stats[label].packets_sent} packets sent")
        return 0 if recording.status == "stopped" else 1


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 3.0)))
