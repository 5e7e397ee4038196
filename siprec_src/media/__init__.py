"""The media data plane: RTP/RTCP codecs now; fork pipelines, SRTP and workers with the media issue."""

from __future__ import annotations
