"""Looking at recordings: the dominant frequency of a track, and the PNG of a session's tracks.

Covered: dominant_frequency on the synthetic call's two tones (after a G.711 round trip and in
noise), between FFT bins, on silence and on bad input; plot_tracks writing a PNG of the
expected size for several tracks (silent and empty ones included), refusing no tracks, and the
error that names the install command when matplotlib is missing.

Not covered: what the picture looks like (a person checks that; the size and signature only
prove a real PNG of the right layout was written).
"""

from __future__ import annotations

import math
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media.g711 import Samples, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from siprec_src.media.spec import Leg
from siprec_src.srs.plot import PLOT_INSTALL, PlotUnavailableError, dominant_frequency, plot_tracks
from siprec_src.synthetic import TONES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tone(frequency: float, seconds: float = 1.0, rate: int = 8000, amplitude: float = 10000) -> Samples:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * math.pi * frequency * t) * amplitude).astype(np.int16)


def write_wav(path: Path, samples: Samples, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("which", [Leg.INBOUND, Leg.OUTBOUND])
def test_the_synthetic_tones_survive_g711(which: Leg) -> None:
    frequency = TONES[which]
    assert dominant_frequency(ulaw_decode(ulaw_encode(tone(frequency))), 8000) == pytest.approx(
        frequency, abs=1
    )
    assert dominant_frequency(alaw_decode(alaw_encode(tone(frequency))), 8000) == pytest.approx(
        frequency, abs=1
    )


def test_a_tone_between_bins_in_noise_is_found_within_half_a_bin() -> None:
    rng = np.random.default_rng(7)
    noisy = tone(1234.6, seconds=0.25, amplitude=3000) + rng.normal(0, 1500, 2000).astype(np.int16)
    # 2000 samples at 8 kHz: bins are 4 Hz apart.
    assert dominant_frequency(noisy, 8000) == pytest.approx(1234.6, abs=2)
    assert dominant_frequency(tone(3000, rate=16000), 16000) == pytest.approx(3000, abs=1)


def test_silence_has_no_dominant_frequency() -> None:
    assert dominant_frequency(np.zeros(800, dtype=np.int16), 8000) == 0.0
    assert dominant_frequency(np.full(800, 500, dtype=np.int16), 8000) == 0.0  # DC is not a tone


@pytest.mark.parametrize(
    ("samples", "rate"), [(np.zeros(3), 8000), (np.zeros((10, 2)), 8000), (np.zeros(100), 0)]
)
def test_dominant_frequency_refuses_what_has_no_spectrum(samples: Samples, rate: int) -> None:
    with pytest.raises(LocalProtocolError):
        dominant_frequency(samples, rate)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack("!II", data[16:24])
    return width, height


def test_plot_tracks_writes_one_png_with_a_row_per_track(tmp_path: Path) -> None:
    inbound = write_wav(tmp_path / "1.wav", tone(TONES[Leg.INBOUND], seconds=2))
    outbound = write_wav(tmp_path / "2.wav", tone(TONES[Leg.OUTBOUND], seconds=1.5))
    png = tmp_path / "session.png"
    result = plot_tracks(
        [("stream 1 — caller (inbound)", inbound), ("stream 2 — platform (outbound)", outbound)],
        png,
        title="session 42",
    )
    assert result == png and png.stat().st_size > 10_000
    two = png_size(png)
    silent = write_wav(tmp_path / "3.wav", np.zeros(4000, dtype=np.int16))
    empty = write_wav(tmp_path / "4.wav", np.zeros(0, dtype=np.int16))
    four = png_size(
        plot_tracks(
            [("a", inbound), ("b", outbound), ("c", silent), ("d", empty)], tmp_path / "4.png", title="t"
        )
    )
    assert two[0] == four[0] == 1100  # 11 in at 100 dpi
    assert four[1] - two[1] == 2 * 240  # each track adds a 2.4 in row


def test_plot_tracks_needs_a_track(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError, match="at least one track"):
        plot_tracks([], tmp_path / "none.png", title="t")


def test_a_missing_matplotlib_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    track = write_wav(tmp_path / "1.wav", tone(440))
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    with pytest.raises(PlotUnavailableError) as caught:
        plot_tracks([("1", track)], tmp_path / "x.png", title="t")
    assert PLOT_INSTALL in str(caught.value) and isinstance(caught.value, ImportError)
    assert not (tmp_path / "x.png").exists()
