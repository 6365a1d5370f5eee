"""Signal helpers shared by the instruments: sample counts, filters, panning, pitch, wavetable oscillators."""

import math
import numbers

import torch

from automix.dsp.filters import apply_biquads
from automix.errors import AutomixError

MIN_SAMPLE_RATE = 8000
A4_MIDI, A4_HZ = 69, 440.0
MAX_FILTER_FRACTION = 0.45  # of the sample rate: filters and harmonics stay below Nyquist
BUTTERWORTH_Q = 1 / math.sqrt(2)
TABLE_SIZE = 4096  # samples of one wavetable cycle
FADE_S = 0.005  # fade at the ends of drum samples and notes, against clicks


def _n_samples(duration_s: float, sample_rate: int) -> int:
    if not (isinstance(sample_rate, numbers.Integral) and sample_rate >= MIN_SAMPLE_RATE):
        raise AutomixError(f"sample_rate must be an integer >= {MIN_SAMPLE_RATE} Hz, got {sample_rate!r}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise AutomixError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    return max(1, round(duration_s * sample_rate))


def _safe_hz(freq_hz: float, sample_rate: int) -> float:
    return min(freq_hz, MAX_FILTER_FRACTION * sample_rate)


def _filter(x: torch.Tensor, sections: list, sample_rate: int) -> torch.Tensor:
    """`x` `[T]` through a cascade of `(b, a)` biquads, exactly (zero initial state)."""
    b = torch.stack([section[0] for section in sections])
    a = torch.stack([section[1] for section in sections])
    return apply_biquads(x.unsqueeze(-2), b, a, sample_rate).squeeze(-2)


def _pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power (sin/cos) gains of a pan position in [-1, 1]."""
    angle = (pan + 1.0) * math.pi / 4.0
    return math.cos(angle), math.sin(angle)


def _midi_to_hz(midi: torch.Tensor) -> torch.Tensor:
    return A4_HZ * torch.pow(2.0, (midi - A4_MIDI) / 12.0)


def _wavetable(amplitudes: list[float]) -> torch.Tensor:
    """One cycle `[TABLE_SIZE + 1]` (wrapped end) of a sum of harmonics with the given amplitudes."""
    phase = 2 * math.pi * torch.arange(TABLE_SIZE + 1, dtype=torch.float64) / TABLE_SIZE
    harmonic = torch.arange(1, len(amplitudes) + 1, dtype=torch.float64)
    table = (
        torch.tensor(amplitudes, dtype=torch.float64)[:, None] * torch.sin(harmonic[:, None] * phase)
    ).sum(0)
    return (table / table.abs().max()).float()


def _n_harmonics(wanted: int, top_hz: float, sample_rate: int) -> int:
    return max(1, min(wanted, int(MAX_FILTER_FRACTION * sample_rate / top_hz)))


def _oscillate(freq_hz: torch.Tensor, table: torch.Tensor, sample_rate: int, phase: float) -> torch.Tensor:
    """Wavetable oscillator `[T]` following `freq_hz` `[T]`, from `phase` (cycles).

    The phase accumulates in float64: float32 would drift audibly within a minute.
    """
    cycles = torch.cumsum(freq_hz / sample_rate, 0, dtype=torch.float64) + phase
    position = torch.frac(cycles).float().mul_(TABLE_SIZE)
    index = position.long().clamp_(max=TABLE_SIZE - 1)
    return torch.lerp(table[index], table[index + 1], position.sub_(index))
