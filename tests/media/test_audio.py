"""media/audio.py: formats, the 8 ↔ 16 kHz resampler, 20 ms framing and WAV decoding.

The resampler tests measure rather than trust the design: each tone's amplitude is fitted by
least squares at its known frequency after the filter's start-up transient, so passband gain,
stopband attenuation, image rejection and G.711 quantisation noise are numbers compared with
bounds. Chunked versus one-shot conversion must be bit-identical (no clicks at frame edges).
Not covered here: the G.711 tables' own construction (g711.py), used as they are.
"""

from __future__ import annotations

import io
import struct
import wave
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import (
    L16_8K,
    L16_16K,
    PCMU_8K,
    AudioDecodeError,
    AudioFormat,
    Encoding,
    Framer,
    Resampler,
    decode_wav,
)
from siprec_src.media.g711 import Codes, Samples, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

TRANSIENT = 64  # samples skipped at each end: the filter needs 62 to fill
ALL_INT16 = np.arange(-32768, 32768).astype(np.int16)


def tone(freq: float, rate: int, seconds: float = 0.5, amplitude: float = 16000.0) -> npt.NDArray[np.int16]:
    n = np.arange(int(rate * seconds))
    return np.rint(amplitude * np.sin(2 * np.pi * freq * n / rate)).astype(np.int16)


def amplitude_at(samples: npt.NDArray[np.int16], freq: float, rate: int) -> float:
    """Least-squares amplitude of the ``freq`` component, transient edges excluded."""
    y = samples[TRANSIENT:-TRANSIENT].astype(np.float64)
    n = np.arange(TRANSIENT, TRANSIENT + len(y))
    basis = np.column_stack((np.sin(2 * np.pi * freq * n / rate), np.cos(2 * np.pi * freq * n / rate)))
    (a, b), *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(a, b))


def gain_db(out: float, into: float) -> float:
    return 20 * float(np.log10(out / into))


def rms(samples: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


# --- formats --------------------------------------------------------------------------------------


def test_formats_frame_sizes() -> None:
    assert (PCMU_8K.samples_per_frame, PCMU_8K.bytes_per_frame) == (160, 160)
    assert (L16_8K.samples_per_frame, L16_8K.bytes_per_frame) == (160, 320)
    assert (L16_16K.samples_per_frame, L16_16K.bytes_per_frame) == (320, 640)


def test_l16_is_little_endian_and_lossless() -> None:
    assert L16_8K.encode(np.array([1, -2], dtype=np.int16)) == b"\x01\x00\xfe\xff"
    assert np.array_equal(L16_16K.decode(L16_16K.encode(ALL_INT16)), ALL_INT16)


def test_l16_odd_length_is_an_error() -> None:
    with pytest.raises(AudioDecodeError, match="3 bytes of L16"):
        L16_8K.decode(b"\x00\x01\x02")


@pytest.mark.parametrize(
    ("encoding", "encode", "decode", "constant"),
    [(Encoding.PCMU, ulaw_encode, ulaw_decode, 4.125), (Encoding.PCMA, alaw_encode, alaw_decode, 8.0)],
)
def test_g711_round_trip_error_bounds(
    encoding: Encoding,
    encode: Callable[[Samples], Codes],
    decode: Callable[[bytes | Codes], Samples],
    constant: float,
) -> None:
    fmt = AudioFormat(encoding, 8000)
    # Through AudioFormat, the same as the g711 tables directly.
    assert fmt.encode(ALL_INT16) == encode(ALL_INT16).tobytes()
    assert np.array_equal(fmt.decode(fmt.encode(ALL_INT16)), decode(encode(ALL_INT16)))
    # Every code word survives decode → encode (G.711 is idempotent after one pass), but µ-law's
    # "negative zero" 0x7F, which decodes to 0 like 0xFF and so comes back as 0xFF.
    codes = bytes(range(256))
    expected = codes.replace(b"\x7f", b"\xff") if encoding is Encoding.PCMU else codes
    assert fmt.encode(fmt.decode(codes)) == expected
    # Below clipping, the error is at most half a quantisation step: |x|/32 plus a constant.
    x = ALL_INT16[np.abs(ALL_INT16.astype(np.int32)) <= 32000]
    error = np.abs(fmt.decode(fmt.encode(x)).astype(np.int32) - x)
    assert np.all(error <= np.abs(x.astype(np.int32)) / 32 + constant)
    # A speech-level (-10 dBFS) tone keeps G.711's ~38 dB signal-to-quantisation-noise ratio.
    signal = tone(1013, 8000, amplitude=32767 / np.sqrt(10))
    noise = fmt.decode(fmt.encode(signal)).astype(np.float64) - signal
    assert gain_db(rms(signal), float(np.sqrt(np.mean(noise**2)))) > 35


@pytest.mark.parametrize(
    ("encoding", "rate"), [(Encoding.PCMU, 16000), (Encoding.PCMA, 16000), (Encoding.L16, 11025)]
)
def test_format_rejects_rates_it_does_not_have(encoding: Encoding, rate: int) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        AudioFormat(encoding, rate)
    assert caught.value.field == "sample_rate"
    assert str(rate) in str(caught.value)


# --- resampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("freq", [300, 1000, 2000, 3000, 3400])
def test_passband_is_flat_each_way_and_round_trip(freq: int) -> None:
    narrow = tone(freq, 8000)
    wide = Resampler(8000, 16000).process(narrow)
    assert len(wide) == 2 * len(narrow)
    back = Resampler(16000, 8000).process(wide)
    assert len(back) == len(narrow)
    into = amplitude_at(narrow, freq, 8000)
    assert abs(gain_db(amplitude_at(wide, freq, 16000), into)) < 0.05
    assert abs(gain_db(amplitude_at(back, freq, 8000), into)) < 0.1  # the brief asks 0.5 dB
    down_only = Resampler(16000, 8000).process(tone(freq, 16000))
    assert (
        abs(gain_db(amplitude_at(down_only, freq, 8000), amplitude_at(tone(freq, 16000), freq, 16000))) < 0.05
    )


def test_6khz_does_not_alias_into_8khz() -> None:
    # 6 kHz sampled at 8 kHz would fold to 2 kHz: the low-pass must remove it first.
    wide = tone(6000, 16000, amplitude=30000)
    narrow = Resampler(16000, 8000).process(wide)
    assert rms(narrow[TRANSIENT:]) <= rms(wide) * 10 ** (-40 / 20)
    assert amplitude_at(narrow, 2000, 8000) <= 30000 * 10 ** (-60 / 20)


@pytest.mark.parametrize("freq", [4700, 5000, 6000, 7000, 7900])
def test_stopband_attenuation_at_least_60_db(freq: int) -> None:
    narrow = Resampler(16000, 8000).process(tone(freq, 16000, amplitude=30000))
    assert amplitude_at(narrow, 8000 - freq, 8000) <= 30000 * 10 ** (-60 / 20)


@pytest.mark.parametrize("freq", [500, 1000, 3000])
def test_upsampling_images_are_removed(freq: int) -> None:
    # Zero-stuffing 8 → 16 kHz mirrors f at 8000 - f; the filter must take it out.
    wide = Resampler(8000, 16000).process(tone(freq, 8000, amplitude=30000))
    assert amplitude_at(wide, 8000 - freq, 16000) <= 30000 * 10 ** (-60 / 20)


def test_upsampling_passes_original_samples_through_exactly() -> None:
    # Half-band filter: the centre tap is exactly 1/2 and every other even tap is 0, so each
    # input sample reappears unchanged, 31 output samples later (the group delay).
    rng = np.random.default_rng(7)
    narrow = rng.integers(-20000, 20000, 800).astype(np.int16)
    wide = Resampler(8000, 16000).process(narrow)
    assert np.array_equal(wide[31::2], narrow[: len(wide[31::2])])
    assert Resampler(8000, 16000).delay == pytest.approx(31 / 16000)


@pytest.mark.parametrize(("from_rate", "to_rate"), [(8000, 16000), (16000, 8000), (8000, 8000)])
def test_chunked_conversion_equals_one_shot(from_rate: int, to_rate: int) -> None:
    rng = np.random.default_rng(1)
    signal = rng.integers(-32768, 32767, from_rate, endpoint=True).astype(np.int16)  # 1 s of noise
    one_shot = Resampler(from_rate, to_rate).process(signal)
    resampler = Resampler(from_rate, to_rate)
    sizes = [0, 1, 159, 160, 161, 7, 320, 33, 1000]
    pieces: list[npt.NDArray[np.int16]] = []
    start = 0
    while start < len(signal):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(resampler.process(signal[start : start + size]))
        start += size
    chunked = np.concatenate(pieces)
    assert chunked.dtype == np.int16
    assert np.array_equal(chunked, one_shot)


def test_20ms_frames_join_without_clicks() -> None:
    # A tone converted frame by frame has no step at the frame edges: every sample-to-sample
    # difference stays below what the tone's slope allows.
    narrow = tone(1000, 8000, amplitude=20000)
    resampler = Resampler(8000, 16000)
    wide = np.concatenate([resampler.process(narrow[i : i + 160]) for i in range(0, len(narrow), 160)])
    max_step = 20000 * 2 * np.pi * 1000 / 16000  # peak slope of the 1 kHz tone per 16 kHz sample
    assert np.max(np.abs(np.diff(wide[TRANSIENT:].astype(np.int32)))) <= max_step * 1.01


def test_equal_rates_copy() -> None:
    samples = np.array([1, 2, 3], dtype=np.int16)
    copied = Resampler(16000, 16000).process(samples)
    assert np.array_equal(copied, samples)
    assert copied is not samples
    assert Resampler(8000, 8000).delay == 0.0


def test_resampler_rejects_other_rates() -> None:
    with pytest.raises(LocalProtocolError, match="44100 Hz to 8000 Hz"):
        Resampler(44100, 8000)


def test_saturation_clips_instead_of_wrapping() -> None:
    # A full-scale square wave overshoots after filtering (Gibbs); it must clip, not wrap round
    # to the other sign. Away from the edges, each output sample has the sign of the input
    # sample it stands for (output j is input (j - 31) / 2: the group delay); the sign changes
    # at the interpolated samples halfway between the last high and the first low input.
    square = np.tile(np.array([32767] * 8 + [-32768] * 8, dtype=np.int16), 50)
    wide = Resampler(8000, 16000).process(square).astype(np.int32)
    assert wide.max() == 32767 and wide.min() == -32768
    ideal = np.repeat(square, 2).astype(np.int32)
    j = np.arange(31 + 8, len(wide))
    phase = (j - 31) % 16  # each half period of the square is 16 output samples; 15 is the edge
    settled = (phase >= 3) & (phase <= 12)
    assert np.all(np.sign(wide[j][settled]) == np.sign(ideal[j - 31][settled]))


# --- framing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "size"), [(8000, 160), (16000, 320)])
def test_framer_cuts_exact_20ms_frames(rate: int, size: int) -> None:
    framer = Framer(rate)
    stream = np.arange(3 * size + 17, dtype=np.int16)
    frames = []
    for piece in (stream[:1], stream[1 : size - 1], stream[size - 1 : size - 1], stream[size - 1 :]):
        frames += framer.push(piece)
    assert [len(f) for f in frames] == [size] * 3
    assert np.array_equal(np.concatenate(frames), stream[: 3 * size])
    assert framer.pending == 17
    last = framer.flush()
    assert last is not None
    assert np.array_equal(last[:17], stream[3 * size :])
    assert not last[17:].any() and len(last) == size
    assert framer.pending == 0
    assert framer.flush() is None


def test_framer_frames_are_independent_copies() -> None:
    framer = Framer(8000)
    chunk = np.ones(320, dtype=np.int16)
    first, second = framer.push(chunk)
    first[0] = 9
    assert second[0] == 1 and chunk[0] == 1


def test_framer_rejects_other_rates() -> None:
    with pytest.raises(LocalProtocolError, match="22050"):
        Framer(22050)


# --- WAV ------------------------------------------------------------------------------------------


def pcm_wav(samples: npt.NDArray[np.int16], rate: int) -> bytes:
    """A WAV written by the standard library's writer (an independent implementation)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def wav_bytes(
    data: bytes,
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = 8000,
    bits: int = 16,
    block_align: int | None = None,
    byte_rate: int | None = None,
    fmt_extra: bytes = b"",
    before_data: bytes = b"",
    riff_size: int | None = None,
) -> bytes:
    align = block_align if block_align is not None else channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", tag, channels, rate, byte_rate if byte_rate is not None else rate * align, align, bits
    )
    fmt += fmt_extra
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + before_data
    body += b"data" + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", riff_size if riff_size is not None else len(body)) + body


@pytest.mark.parametrize("rate", [8000, 16000])
def test_pcm_wav_from_the_standard_library(rate: int) -> None:
    samples = tone(440, rate, seconds=0.1)
    wav = decode_wav(pcm_wav(samples, rate))
    assert (wav.sample_rate, wav.encoding) == (rate, Encoding.L16)
    assert np.array_equal(wav.samples, samples)
    assert wav.duration == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("tag", "encoding", "decode"), [(7, Encoding.PCMU, ulaw_decode), (6, Encoding.PCMA, alaw_decode)]
)
def test_g711_wav(tag: int, encoding: Encoding, decode: Callable[[bytes | Codes], Samples]) -> None:
    codes = bytes(range(256)) + b"\x7f"  # odd length: the data chunk gets a pad byte
    # Format 6/7 files carry cbSize and a 'fact' chunk (sample count), which we skip.
    data = wav_bytes(
        codes, tag=tag, bits=8, fmt_extra=b"\x00\x00", before_data=b"fact" + struct.pack("<II", 4, len(codes))
    )
    wav = decode_wav(data)
    assert (wav.sample_rate, wav.encoding) == (8000, encoding)
    assert np.array_equal(wav.samples, decode(codes))


def test_extensible_pcm_wav_and_odd_sized_chunks_are_read() -> None:
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    guid_pcm = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    extra = struct.pack("<HHI", 22, 16, 4) + guid_pcm
    odd_chunk = b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # 3-byte body, padded to 4
    data = wav_bytes(samples.tobytes(), tag=0xFFFE, rate=16000, fmt_extra=extra, before_data=odd_chunk)
    wav = decode_wav(data)
    assert (wav.sample_rate, wav.encoding) == (16000, Encoding.L16)
    assert np.array_equal(wav.samples, samples)


TWO_SAMPLES = b"\x01\x00\x02\x00"
FMT_ONLY = (
    b"RIFF"
    + struct.pack("<I", 28)
    + b"WAVE"
    + b"fmt "
    + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
)
DATA_FIRST = b"RIFF" + struct.pack("<I", 16) + b"WAVE" + b"data" + struct.pack("<I", 4) + TWO_SAMPLES


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF\x00\x00", "6 bytes is shorter than a RIFF header"),
        (b"RIFX" + bytes(4) + b"WAVE", "not a WAV file: starts with b'RIFX'"),
        (b"RIFF" + bytes(4) + b"AVI ", "not b'RIFF'…b'WAVE'"),
        (wav_bytes(TWO_SAMPLES, riff_size=100), "RIFF header declares 108 bytes, got 48"),
        (wav_bytes(TWO_SAMPLES)[:-2], "RIFF header declares 48 bytes, got 46"),
        (DATA_FIRST, "'data' chunk comes before its 'fmt ' chunk"),
        (FMT_ONLY, "no 'data' chunk"),
        (b"RIFF" + struct.pack("<I", 4) + b"WAVE", "no 'fmt ' chunk"),
        (wav_bytes(TWO_SAMPLES, channels=2, block_align=2), "2 channels: only mono"),
        (wav_bytes(TWO_SAMPLES, bits=8), "PCM file has 8 bits per sample, not 16"),
        (wav_bytes(TWO_SAMPLES, tag=3, bits=32), "format tag 3 (IEEE float) is not supported"),
        (wav_bytes(TWO_SAMPLES, tag=0x55), "format tag 85 (MPEG Layer 3)"),
        (wav_bytes(TWO_SAMPLES, rate=44100), "sample rate 44100 Hz is not 8000 or 16000"),
        (wav_bytes(b"\xff\xff", tag=7, bits=8, rate=16000), "µ-law sample rate 16000 Hz is not 8000"),
        (wav_bytes(TWO_SAMPLES, byte_rate=8000), "block align 2 and byte rate 8000"),
        (wav_bytes(b"\x01\x00\x02"), "'data' chunk of 3 bytes is not a whole number of 2-byte samples"),
        (
            wav_bytes(TWO_SAMPLES, tag=0xFFFE, fmt_extra=b"\x00\x00"),
            "WAVE_FORMAT_EXTENSIBLE but has no sub-format",
        ),
        (
            b"RIFF" + struct.pack("<I", 18) + b"WAVE" + b"fmt " + struct.pack("<I", 6) + bytes(6),
            "'fmt ' chunk is 6 bytes",
        ),
        (
            b"RIFF" + struct.pack("<I", 20) + b"WAVE" + b"LIST" + struct.pack("<I", 50) + bytes(8),
            "chunk 'LIST' at byte 12 declares 50 bytes, 8 remain",
        ),
    ],
)
def test_wav_errors_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(AudioDecodeError) as caught:
        decode_wav(data)
    assert message in str(caught.value)
