"""See what a recording holds: each track as a waveform over its spectrogram, in one PNG.

The reference SRS writes one WAV per stream; :func:`plot_tracks` stacks them in one picture
labelled by stream and participant, so a person sees at a glance which tone or voice landed in
which file (the synthetic call puts 440 Hz on the inbound leg and 1250 Hz on the outbound one).
:func:`dominant_frequency` is the same check as a number, for the demo and the tests.

matplotlib is optional (the ``plot`` extra) and imported only inside :func:`plot_tracks`; it is
used through its object API with the Agg canvas, so it never touches pyplot's global state or
needs a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from siprec_src.errors import LocalProtocolError, SiprecError
from siprec_src.media.audio import decode_wav

PLOT_INSTALL: Final = "pip install 'siprec_src[plot]'"
_FFT_SIZE: Final = 256  # 32 ms at 8 kHz: 31 Hz bins, enough to tell tones and voices apart
_DYNAMIC_RANGE_DB: Final = 80.0
_ROW_HEIGHT_IN: Final = 2.4
_WIDTH_IN: Final = 11.0
_DPI: Final = 100


class PlotUnavailableError(SiprecError, ImportError):
    """matplotlib is not installed; the message says how to install it."""


def dominant_frequency(samples: npt.NDArray[Any], rate: int) -> float:
    """The frequency in Hz carrying the most energy in ``samples`` (0.0 for silence).

    A Hann window keeps a tone's energy in its own bins, and a parabola through the peak bin
    and its neighbours (on the log magnitude) refines the estimate to a fraction of a bin.
    """
    signal = np.asarray(samples, dtype=np.float64)
    if signal.ndim != 1 or signal.size < 4:
        raise LocalProtocolError(
            f"dominant_frequency needs a 1-D signal of 4 samples or more, got {signal.shape}"
        )
    if rate <= 0:
        raise LocalProtocolError(f"dominant_frequency needs a positive sampling rate, got {rate}")
    signal = signal - signal.mean()
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    spectrum[0] = 0.0  # what the mean removal leaves of DC is not a frequency anyone hears
    peak = int(np.argmax(spectrum))
    if spectrum[peak] <= 1e-9 * signal.size:
        return 0.0
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        curvature = left - 2 * centre + right
        if curvature < 0:
            offset = 0.5 * (left - right) / curvature
    return float((peak + offset) * rate / signal.size)


def _spectrogram(samples: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.float64]:
    """Power in dB, frequency by time, Hann-windowed frames of _FFT_SIZE with 50 % overlap."""
    hop = _FFT_SIZE // 2
    if samples.size < _FFT_SIZE:
        samples = np.pad(samples, (0, _FFT_SIZE - samples.size))
    count = 1 + (samples.size - _FFT_SIZE) // hop
    index = np.arange(_FFT_SIZE)[None, :] + hop * np.arange(count)[:, None]
    frames = samples[index] * np.hanning(_FFT_SIZE)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    db: npt.NDArray[np.float64] = 10.0 * np.log10(power.T + 1e-3)
    return db


def plot_tracks(tracks: Sequence[tuple[str, Path]], png: Path, *, title: str) -> Path:
    """Draw each ``(label, wav path)`` as a waveform over its spectrogram, stacked; returns ``png``.

    Labels are shown as given (e.g. ``"stream 1 — caller (inbound)"``) with the track's length
    and dominant frequency. Raises :class:`PlotUnavailableError` when matplotlib is missing.
    """
    if not tracks:
        raise LocalProtocolError("plot_tracks needs at least one track", field="tracks")
    try:  # the optional "plot" extra, imported only when a plot is asked for
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        raise PlotUnavailableError(f"plotting recordings needs matplotlib: {PLOT_INSTALL}") from exc

    decoded = [(label, decode_wav(Path(path).read_bytes())) for label, path in tracks]
    figure = Figure(figsize=(_WIDTH_IN, _ROW_HEIGHT_IN * len(decoded) + 0.6), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    grid = figure.add_gridspec(2 * len(decoded), 1, height_ratios=[1, 3] * len(decoded))
    longest = max((audio.duration for _, audio in decoded), default=0.0) or 1.0
    for row, (label, audio) in enumerate(decoded):
        samples = audio.samples.astype(np.float64)
        rate = audio.sample_rate
        wave_axes = figure.add_subplot(grid[2 * row])
        spec_axes = figure.add_subplot(grid[2 * row + 1], sharex=wave_axes)
        if samples.size >= 4 and np.any(samples):
            summary = f"{audio.duration:.2f} s, dominant {dominant_frequency(samples, rate):.0f} Hz"
        else:
            summary = f"{audio.duration:.2f} s, silent"
        wave_axes.set_title(f"{label}  ({summary})", loc="left", fontsize=10)
        times = np.arange(samples.size) / rate
        wave_axes.plot(times, samples / 32768.0, linewidth=0.4, color=f"C{row % 10}")
        wave_axes.set_ylim(-1.0, 1.0)
        wave_axes.set_yticks([])
        wave_axes.tick_params(labelbottom=False)
        db = _spectrogram(samples, rate)
        top = float(db.max())
        spec_axes.imshow(
            db,
            origin="lower",
            aspect="auto",
            extent=(0.0, max(audio.duration, _FFT_SIZE / rate), 0.0, rate / 2),
            vmin=top - _DYNAMIC_RANGE_DB,
            vmax=top,
            cmap="magma",
            interpolation="nearest",
        )
        spec_axes.set_ylabel("Hz")
        spec_axes.set_xlim(0.0, longest)
        if row == len(decoded) - 1:
            spec_axes.set_xlabel("seconds")
        else:
            spec_axes.tick_params(labelbottom=False)
    figure.savefig(png, format="png")
    return png
