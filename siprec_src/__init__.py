"""siprec_src: a SIPREC Session Recording Client (SRC) media engine.

The embedding API is ``siprec_src.Engine`` (see README.md "Embedding" and
examples/embed.py); the layering is in docs/architecture.md.

Names are loaded on first use (PEP 562) so that importing a pure protocol package such as
``siprec_src.sip`` does not pull in the media engine, numpy or asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Engine": "siprec_src.recording.engine",
    "EngineConfig": "siprec_src.recording.engine",
    "Call": "siprec_src.recording.engine",
    "Recording": "siprec_src.recording.engine",
    "RecordingError": "siprec_src.recording.engine",
    "Party": "siprec_src.recording.call",
    "Track": "siprec_src.recording.call",
    "Leg": "siprec_src.media.spec",
    "SrtpKeys": "siprec_src.media.spec",
    "MediaConfig": "siprec_src.media.engine",
    "Connector": "siprec_src.recording.connector",
    "Edge": "siprec_src.recording.connector",
    "connector_for": "siprec_src.recording.connector",
}

if TYPE_CHECKING:
    from siprec_src.media.engine import MediaConfig
    from siprec_src.media.spec import Leg, SrtpKeys
    from siprec_src.recording.call import Party, Track
    from siprec_src.recording.connector import Connector, Edge, connector_for
    from siprec_src.recording.engine import Call, Engine, EngineConfig, Recording, RecordingError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'siprec_src' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Call",
    "Connector",
    "Edge",
    "Engine",
    "EngineConfig",
    "Leg",
    "MediaConfig",
    "Party",
    "Recording",
    "RecordingError",
    "SrtpKeys",
    "Track",
    "__version__",
    "connector_for",
]
