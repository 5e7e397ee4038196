"""G.711 µ-law and A-law with numpy lookup tables (ITU-T G.711).

Decoding is one 256-entry table lookup; encoding is one 65536-entry table indexed by the
16-bit sample, so converting a 20 ms frame is a single vectorised ``take``. The tables are
built once at import from the segment/quantisation rules of G.711 §3/§4 (and checked in the
tests against the standard's properties: round trip of every code, monotonic decode).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]
Codes = npt.NDArray[np.uint8]

_BIAS = 0x84  # µ-law bias (33 << 2): makes segment boundaries powers of two
_CLIP = 32635


def _ulaw_decode_table() -> Samples:
    codes = np.arange(256, dtype=np.int32)
    inverted = ~codes & 0xFF  # G.711 §4: µ-law code words are transmitted inverted
    sign = inverted & 0x80
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> Samples:
    codes = np.arange(256, dtype=np.int32)
    toggled = codes ^ 0x55  # G.711 §3: even bits inverted
    sign = toggled & 0x80
    exponent = (toggled >> 4) & 0x07
    mantissa = toggled & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    # A-law sign bit set means positive.
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def _ulaw_encode_table() -> Codes:
    samples = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _CLIP) + _BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    table: Codes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return table


def _alaw_encode_table() -> Codes:
    samples = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(samples >= 0, 0x80, 0)
    magnitude = np.minimum(np.where(samples < 0, -samples - 1, samples), 32767) >> 3  # 13-bit
    # Segment 0 covers magnitudes 0-31 (mantissa = magnitude / 2); segment e >= 1 starts at 2^(e+4).
    exponent = np.clip(np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    table: Codes = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    return table


ULAW_DECODE = _ulaw_decode_table()
ALAW_DECODE = _alaw_decode_table()
ULAW_ENCODE = _ulaw_encode_table()
ALAW_ENCODE = _alaw_encode_table()


def ulaw_encode(samples: Samples) -> Codes:
    return ULAW_ENCODE.take(samples.astype(np.int32) + 32768)


def alaw_encode(samples: Samples) -> Codes:
    return ALAW_ENCODE.take(samples.astype(np.int32) + 32768)


def ulaw_decode(codes: bytes | Codes) -> Samples:
    return ULAW_DECODE.take(np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, bytes) else codes)


def alaw_decode(codes: bytes | Codes) -> Samples:
    return ALAW_DECODE.take(np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, bytes) else codes)
