"""Audio as WebSocket stream services want it: formats, 8 ↔ 16 kHz resampling, 20 ms framing, WAV.

A call's legs carry G.711 at 8 kHz; a WebSocket stream (Twilio Media Streams, Plivo
AudioStream) wants µ-law at 8 kHz or 16-bit linear PCM ("L16") at 8 or 16 kHz, in 20 ms
frames, and a bidirectional service may answer with raw audio or a WAV file. Everything here
works on numpy ``int16`` sample arrays (``Samples``) and is pure: no I/O, no clock.

- ``AudioFormat`` turns wire bytes into samples and back. G.711 reuses the tables of
  ``g711.py``. L16 is **little-endian** here, as in WAV files and as the WebSocket services
  send and accept it; RTP's L16 (RFC 3551 §4.5.11) is big-endian and is not this format.
- ``Resampler`` converts 8 kHz ↔ 16 kHz through a 63-tap half-band low-pass filter (a
  Kaiser-windowed sinc, β = 7, designed below): flat within ±0.003 dB up to 3.4 kHz, at least
  70 dB down from 4.6 kHz, 6 dB down at 4 kHz, group delay 31 samples at 16 kHz (1.94 ms).
  The taps are quantised to Q20 integers and the convolution runs in int64, so the result is
  exact and does not depend on how the input was cut into chunks: the filter history carried
  from one call to the next makes a stream cut into 20 ms frames come out bit-identical to
  the same stream converted in one go (no clicks at frame boundaries).
- ``Framer`` cuts chunks of any size into exact 20 ms frames.
- ``decode_wav`` reads a RIFF/WAVE file: mono 16-bit PCM (format 1), µ-law (7) or A-law (6),
  at 8 or 16 kHz (G.711 at 8 kHz only), and says precisely what is wrong with anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from siprec_src.errors import LocalProtocolError, SiprecError
from siprec_src.media.g711 import Samples, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

FRAME_MS = 20
SAMPLE_RATES = (8000, 16000)


class AudioDecodeError(SiprecError, ValueError):
    """Bytes that are not the audio they claim to be (a truncated WAV, an odd L16 payload...).

    The message says what was expected and what was found; callers decoding a peer's message
    wrap it in their protocol error with the field it came from.
    """


class Encoding(StrEnum):
    """Sample encodings, named by the media types the stream services use for them."""

    PCMU = "audio/x-mulaw"  # G.711 µ-law
    PCMA = "audio/x-alaw"  # G.711 A-law
    L16 = "audio/x-l16"  # 16-bit linear PCM, little-endian


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An encoding at a sample rate, mono. G.711 exists at 8 kHz only (ITU-T G.711 §1)."""

    encoding: Encoding
    sample_rate: int

    def __post_init__(self) -> None:
        if self.sample_rate not in SAMPLE_RATES:
            raise LocalProtocolError(
                f"sample rate {self.sample_rate} is not one of 8000, 16000",
                field="sample_rate",
                code="invalid_sample_rate",
            )
        if self.encoding is not Encoding.L16 and self.sample_rate != 8000:
            raise LocalProtocolError(
                f"{self.encoding.value} is defined at 8000 Hz only, not {self.sample_rate}",
                field="sample_rate",
                code="invalid_sample_rate",
            )

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding is Encoding.L16 else 1

    @property
    def samples_per_frame(self) -> int:
        """Samples in one 20 ms frame: 160 at 8 kHz, 320 at 16 kHz."""
        return self.sample_rate * FRAME_MS // 1000

    @property
    def bytes_per_frame(self) -> int:
        return self.samples_per_frame * self.bytes_per_sample

    def encode(self, samples: Samples) -> bytes:
        """Wire bytes of ``samples`` (int16) in this format."""
        if self.encoding is Encoding.PCMU:
            return ulaw_encode(samples).tobytes()
        if self.encoding is Encoding.PCMA:
            return alaw_encode(samples).tobytes()
        return np.asarray(samples, dtype="<i2").tobytes()

    def decode(self, data: bytes) -> Samples:
        """Samples (native int16) of wire bytes in this format; ``AudioDecodeError`` if L16 is cut."""
        if self.encoding is Encoding.PCMU:
            return ulaw_decode(data)
        if self.encoding is Encoding.PCMA:
            return alaw_decode(data)
        if len(data) % 2:
            raise AudioDecodeError(f"{len(data)} bytes of L16 is not a whole number of 16-bit samples")
        return np.frombuffer(data, dtype="<i2").astype(np.int16)


PCMU_8K = AudioFormat(Encoding.PCMU, 8000)
L16_8K = AudioFormat(Encoding.L16, 8000)
L16_16K = AudioFormat(Encoding.L16, 16000)


# --- resampling -----------------------------------------------------------------------------------

_TAP_COUNT = 63
_KAISER_BETA = 7.0
_Q = 20  # taps are integers scaled by 2**_Q


def _half_band_taps() -> npt.NDArray[np.int64]:
    """Q20 taps of a half-band low-pass at a quarter of the 16 kHz rate (4 kHz), unity DC gain.

    Half-band: every second tap but the centre is exactly zero, and the centre is exactly 1/2,
    so upsampling passes the original samples through unchanged (only the new ones are
    interpolated). The odd-offset taps are scaled to sum to 1/2 so both polyphase branches
    have unity gain at DC.
    """
    offsets = np.arange(_TAP_COUNT) - (_TAP_COUNT - 1) // 2
    taps = 0.5 * np.sinc(offsets / 2) * np.kaiser(_TAP_COUNT, _KAISER_BETA)
    odd = offsets % 2 == 1
    taps[~odd] = 0.0
    taps[offsets == 0] = 0.5
    taps[odd] *= 0.5 / taps[odd].sum()
    return np.rint(taps * (1 << _Q)).astype(np.int64)


_TAPS = _half_band_taps()
_HISTORY = _TAP_COUNT - 1


def _to_int16(accumulated: npt.NDArray[np.int64]) -> Samples:
    rounded = (accumulated + (1 << (_Q - 1))) >> _Q  # round half up, exactly
    samples: Samples = np.clip(rounded, -32768, 32767).astype(np.int16)
    return samples


class Resampler:
    """Converts one continuous stream between 8 and 16 kHz (or copies it, at equal rates).

    Keep one per stream and direction: it holds the last 62 samples of filter history (and,
    downsampling, which input sample is the next one kept), so ``process`` can be fed chunks
    of any length and the output is the same as converting the whole stream at once. The
    output lags the input by ``delay`` seconds and has exactly ``len(chunk) * to / from``
    samples per chunk (downsampling an odd-length chunk carries the half sample over).
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate not in SAMPLE_RATES or to_rate not in SAMPLE_RATES:
            raise LocalProtocolError(
                f"cannot resample {from_rate} Hz to {to_rate} Hz: rates are 8000 or 16000",
                field="sample_rate",
                code="invalid_sample_rate",
            )
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._history = np.zeros(_HISTORY, dtype=np.int64)  # at 16 kHz, newest last
        self._parity = 0  # downsampling: index (mod 2) of the next 16 kHz sample to keep

    @property
    def delay(self) -> float:
        """Group delay in seconds: 31 samples at 16 kHz when converting, 0 when copying."""
        return 0.0 if self.from_rate == self.to_rate else (_TAP_COUNT - 1) / 2 / 16000

    def process(self, samples: Samples) -> Samples:
        if self.from_rate == self.to_rate or not len(samples):
            # (np.convolve swaps its arguments when the signal is shorter than the filter, so
            # an empty chunk must not reach it.)
            return np.array(samples, dtype=np.int16)
        if self.from_rate == 8000:
            return self._upsample(samples)
        return self._downsample(samples)

    def _upsample(self, samples: Samples) -> Samples:
        # Zero-stuff to 16 kHz, then low-pass with twice the taps (the stuffing halved the gain).
        stuffed = np.zeros(2 * len(samples), dtype=np.int64)
        stuffed[0::2] = samples
        window = np.concatenate((self._history, stuffed))
        self._history = window[-_HISTORY:]
        return _to_int16(np.convolve(window, 2 * _TAPS, mode="valid"))

    def _downsample(self, samples: Samples) -> Samples:
        window = np.concatenate((self._history, samples.astype(np.int64)))
        self._history = window[-_HISTORY:]
        filtered = np.convolve(window, _TAPS, mode="valid")  # one value per input sample
        kept = filtered[self._parity :: 2]
        self._parity = (self._parity - len(samples)) % 2
        return _to_int16(kept)


# --- framing --------------------------------------------------------------------------------------


class Framer:
    """Cuts a stream of chunks of any size into exact 20 ms frames.

    ``push`` returns the frames completed by a chunk (possibly none) and keeps the remainder;
    ``flush`` returns what is left padded with silence to a whole frame, or ``None``.
    """

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise LocalProtocolError(
                f"sample rate {sample_rate} is not one of 8000, 16000",
                field="sample_rate",
                code="invalid_sample_rate",
            )
        self.samples_per_frame = sample_rate * FRAME_MS // 1000
        self._rest: Samples = np.zeros(0, dtype=np.int16)

    @property
    def pending(self) -> int:
        """Samples held back, waiting for the rest of their frame."""
        return len(self._rest)

    def push(self, samples: Samples) -> list[Samples]:
        buffer = np.concatenate((self._rest, np.asarray(samples, dtype=np.int16)))
        size = self.samples_per_frame
        whole = len(buffer) // size * size
        frames = [buffer[start : start + size].copy() for start in range(0, whole, size)]
        self._rest = buffer[whole:].copy()
        return frames

    def flush(self) -> Samples | None:
        if not len(self._rest):
            return None
        frame = np.zeros(self.samples_per_frame, dtype=np.int16)
        frame[: len(self._rest)] = self._rest
        self._rest = np.zeros(0, dtype=np.int16)
        return frame


# --- WAV ------------------------------------------------------------------------------------------

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_ALAW = 6
_WAVE_FORMAT_MULAW = 7
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {
    _WAVE_FORMAT_PCM: "PCM",
    _WAVE_FORMAT_ALAW: "A-law",
    _WAVE_FORMAT_MULAW: "µ-law",
    3: "IEEE float",
    2: "Microsoft ADPCM",
    0x11: "IMA ADPCM",
    0x55: "MPEG Layer 3",
}
_FORMAT_ENCODINGS = {
    _WAVE_FORMAT_PCM: (Encoding.L16, 16),
    _WAVE_FORMAT_ALAW: (Encoding.PCMA, 8),
    _WAVE_FORMAT_MULAW: (Encoding.PCMU, 8),
}
_CHUNK_HEADER = struct.Struct("<4sI")
_FMT = struct.Struct("<HHIIHH")  # format tag, channels, rate, byte rate, block align, bits


@dataclass(frozen=True, slots=True, eq=False)
class WavAudio:
    """A decoded WAV file: its sample rate, how it was encoded, and its samples as int16."""

    sample_rate: int
    encoding: Encoding
    samples: Samples

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_wav(data: bytes) -> WavAudio:
    """Samples of a mono WAV file: 16-bit PCM at 8/16 kHz, or µ-law/A-law at 8 kHz.

    Chunks other than ``fmt `` and ``data`` (LIST, fact...) are skipped; a RIFF size larger
    than the bytes given, a chunk running past the end, or a ``data`` chunk before ``fmt ``
    is an error. Every error is an ``AudioDecodeError`` naming the field at fault.
    """
    if len(data) < 12:
        raise AudioDecodeError(f"not a WAV file: {len(data)} bytes is shorter than a RIFF header")
    riff, riff_size = _CHUNK_HEADER.unpack_from(data, 0)
    if riff != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioDecodeError(
            f"not a WAV file: starts with {data[:4]!r}…{data[8:12]!r}, not b'RIFF'…b'WAVE'"
        )
    if riff_size + 8 > len(data):
        raise AudioDecodeError(
            f"truncated WAV: the RIFF header declares {riff_size + 8} bytes, got {len(data)}"
        )
    end = riff_size + 8
    offset = 12
    audio_format: AudioFormat | None = None
    while offset + 8 <= end:
        chunk_id, size = _CHUNK_HEADER.unpack_from(data, offset)
        body = offset + 8
        if body + size > end:
            name = chunk_id.decode("latin-1")
            raise AudioDecodeError(
                f"truncated WAV: chunk {name!r} at byte {offset} declares {size} bytes, {end - body} remain"
            )
        if chunk_id == b"fmt ":
            audio_format = _read_fmt(data[body : body + size])
        elif chunk_id == b"data":
            if audio_format is None:
                raise AudioDecodeError("WAV 'data' chunk comes before its 'fmt ' chunk")
            payload = data[body : body + size]
            if len(payload) % audio_format.bytes_per_sample:
                raise AudioDecodeError(
                    f"WAV 'data' chunk of {size} bytes is not a whole number of "
                    f"{audio_format.bytes_per_sample}-byte samples"
                )
            return WavAudio(audio_format.sample_rate, audio_format.encoding, audio_format.decode(payload))
        offset = body + size + (size & 1)  # RIFF chunks are padded to an even size
    if audio_format is None:
        raise AudioDecodeError("WAV file has no 'fmt ' chunk")
    raise AudioDecodeError("WAV file has no 'data' chunk")


def _read_fmt(chunk: bytes) -> AudioFormat:
    if len(chunk) < _FMT.size:
        raise AudioDecodeError(f"WAV 'fmt ' chunk is {len(chunk)} bytes, shorter than {_FMT.size}")
    tag, channels, rate, byte_rate, block_align, bits = _FMT.unpack_from(chunk)
    if tag == _WAVE_FORMAT_EXTENSIBLE:
        # WAVEFORMATEXTENSIBLE: cbSize, valid bits, channel mask, then a GUID whose first two
        # bytes are the actual format tag.
        if len(chunk) < 26:
            raise AudioDecodeError("WAV 'fmt ' chunk says WAVE_FORMAT_EXTENSIBLE but has no sub-format")
        (tag,) = struct.unpack_from("<H", chunk, 24)
    if tag not in _FORMAT_ENCODINGS:
        name = _FORMAT_NAMES.get(tag, "unknown")
        raise AudioDecodeError(
            f"WAV format tag {tag} ({name}) is not supported: use 1 (16-bit PCM), 7 (µ-law) or 6 (A-law)"
        )
    encoding, expected_bits = _FORMAT_ENCODINGS[tag]
    if channels != 1:
        raise AudioDecodeError(f"WAV file has {channels} channels: only mono is supported")
    if bits != expected_bits:
        raise AudioDecodeError(
            f"WAV {_FORMAT_NAMES[tag]} file has {bits} bits per sample, not {expected_bits}"
        )
    allowed = SAMPLE_RATES if encoding is Encoding.L16 else (8000,)
    if rate not in allowed:
        allowed_text = " or ".join(str(r) for r in allowed)
        raise AudioDecodeError(f"WAV {_FORMAT_NAMES[tag]} sample rate {rate} Hz is not {allowed_text}")
    audio_format = AudioFormat(encoding, rate)
    if block_align != audio_format.bytes_per_sample or byte_rate != rate * block_align:
        raise AudioDecodeError(
            f"WAV 'fmt ' chunk is inconsistent: block align {block_align} and byte rate {byte_rate} "
            f"for {bits}-bit mono at {rate} Hz (expected {audio_format.bytes_per_sample} and "
            f"{rate * audio_format.bytes_per_sample})"
        )
    return audio_format
