"""The media data plane: RTP/RTCP codecs, SRTP, fork pipelines, media workers, and the engine.

The recording layer uses :class:`MediaEngine` with the frozen specs of ``spec.py`` and reads the
events and counters of ``events.py``; see ``engine.py`` for where calls run and
``pipeline.py`` for what happens to each packet.
"""

from __future__ import annotations

from siprec_src.media.engine import MediaConfig, MediaEngine, WorkerLostError
from siprec_src.media.events import (
    FirstPacketReceived,
    ForkSendFailed,
    ForkStats,
    LegIdle,
    LegStats,
    MediaEvent,
    ReceptionReport,
    ReceptionReported,
    SourceLatched,
    SrtpFailed,
    WorkerDied,
)
from siprec_src.media.pipeline import ForkPipeline, LegReceiver
from siprec_src.media.ports import PortsExhaustedError
from siprec_src.media.spec import Address, ForkSpec, Leg, LegSpec, SrtpKeys

__all__ = [
    "Address",
    "FirstPacketReceived",
    "ForkPipeline",
    "ForkSendFailed",
    "ForkSpec",
    "ForkStats",
    "Leg",
    "LegIdle",
    "LegReceiver",
    "LegSpec",
    "LegStats",
    "MediaConfig",
    "MediaEngine",
    "MediaEvent",
    "PortsExhaustedError",
    "ReceptionReport",
    "ReceptionReported",
    "SourceLatched",
    "SrtpFailed",
    "SrtpKeys",
    "WorkerDied",
    "WorkerLostError",
]
