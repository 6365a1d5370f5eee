"""Seeded augmentation of a song's stems: what varies between real multitracks that the mix must not.

Applied per item with the item's generator, in this order: dropped stems (a song with fewer parts), a
gain per stem (recording levels), an EQ tilt per stem (brighter or darker recordings), a balance per
stem (stereo placement) and a left/right swap of the whole song.
"""

import math
from dataclasses import dataclass

import torch

from automix.dsp.eq import four_band_eq
from automix.dsp.stereo import gain, pan

# The tilt is a low shelf and a high shelf at one pivot, with opposite gains (Butterworth Q: no bump).
TILT_PIVOT_HZ = 1000.0
SHELF_Q = 1 / math.sqrt(2)
PEAK_NEUTRAL_HZ, PEAK_NEUTRAL_Q = (400.0, 2500.0), 1.0  # the peaking bands stay at 0 dB
# The sin/cos pan law is -3 dB at the centre; this restores unity gain there.
CENTRE_GAIN = math.sqrt(2)


@dataclass(frozen=True)
class Augmentation:
    """Ranges of each random change; 0 turns one off. The defaults equal conf/data/*.yaml (tested).

    Attributes:
        gain_db: per-stem gain, uniform in +-gain_db dB.
        eq_tilt_db: per-stem tilt, uniform in +-eq_tilt_db dB between the lows and the highs.
        pan: per-stem balance position, uniform in +-pan (-1 hard left, +1 hard right).
        swap_probability: chance that left and right of the whole song swap.
        drop_probability: chance that each stem is left out (at least `min_stems` stay).
        min_stems: stems that always stay.
    """

    gain_db: float = 12.0
    eq_tilt_db: float = 6.0
    pan: float = 0.3
    swap_probability: float = 0.5
    drop_probability: float = 0.2
    min_stems: int = 1

    def __call__(self, stems: torch.Tensor, sample_rate: int, generator: torch.Generator) -> torch.Tensor:
        """`[N, 2, T]` -> `[N', 2, T]`, N' <= N, drawn from `generator`."""
        n_stems = stems.shape[-3]

        def uniform(half_range: float, size: int) -> torch.Tensor:
            return (2 * torch.rand(size, generator=generator) - 1) * half_range

        keep = torch.rand(n_stems, generator=generator) >= self.drop_probability
        if int(keep.sum()) < min(self.min_stems, n_stems):
            keep[torch.randperm(n_stems, generator=generator)[: self.min_stems]] = True
        stems = stems[keep]
        n_kept = stems.shape[-3]
        gains_db, tilts_db, pans = (
            uniform(self.gain_db, n_kept),
            uniform(self.eq_tilt_db, n_kept),
            uniform(self.pan, n_kept),
        )
        swap = torch.rand((), generator=generator).item() < self.swap_probability
        if self.gain_db:
            stems = gain(stems, gain_db=gains_db)
        if self.eq_tilt_db:
            stems = tilt(stems, sample_rate, tilt_db=tilts_db)
        if self.pan:
            stems = pan(stems, pan=pans) * CENTRE_GAIN
        return stems.flip(-2) if swap else stems


def tilt(x: torch.Tensor, sample_rate: int, *, tilt_db: torch.Tensor) -> torch.Tensor:
    """Tilt the spectrum of `[..., C, T]` by `tilt_db` `[...]` dB: -tilt/2 below and +tilt/2 above
    `TILT_PIVOT_HZ` (RBJ shelves through `automix.dsp.eq.four_band_eq`)."""
    half = tilt_db[..., None] / 2
    zeros = torch.zeros_like(half)
    gain_db = torch.cat([-half, zeros, zeros, half], dim=-1)
    freq_hz = torch.tensor([TILT_PIVOT_HZ, *PEAK_NEUTRAL_HZ, TILT_PIVOT_HZ]).expand_as(gain_db)
    q = torch.tensor([SHELF_Q, PEAK_NEUTRAL_Q, PEAK_NEUTRAL_Q, SHELF_Q]).expand_as(gain_db)
    return four_band_eq(x, sample_rate, gain_db=gain_db, freq_hz=freq_hz, q=q)
