"""Pans spread where the master's width cannot reach a target M/S ratio (docs/design.md, *Predictor*).

Predict mode's reference start and the per-song optimiser's start leave every pan centred, and the master's
width scales the bus's M/S ratio within its range only: centred stems that are mono or nearly so give a mix
narrower than any width can widen. A person pans them. The layout keeps the darkest and the loudest stem in
the centre and spreads the others with their brightness, to sides chosen so that the mix leans neither way;
one spread, the smallest that brings the bus to the M/S the width's range can finish, scales the whole layout.

The strips of those starts are linear (neutral but for their level; a trained predictor's are near
enough), so the bus's mid and side powers for any pans follow from the stems' channel cross-powers,
summed once: no render per trial spread.
"""

import math
from typing import NamedTuple

import torch

from automix.dsp.stereo import gain, pan
from automix.loudness import SILENCE_LUFS

__all__ = [
    "ChannelPowers", "StereoImage", "channel_powers", "ms_ratio_at", "pan_layout", "spread_pans",
    "stereo_image",
]  # fmt: skip

# A spread never takes a stem past this pan: hard pans are left to a person's choice.
MAX_SPREAD = 0.9
BISECTION_STEPS = 30
BLOCK_SAMPLES = 1 << 20  # the cross-powers are summed this many samples at a time


class ChannelPowers(NamedTuple):
    """Each pair of stems' mean channel cross-powers, `[B, N, N]` each, float64: left × left, right ×
    right and left × right (row: the first stem's left), and each stem's RMS frequency `[B, N]` Hz."""

    left: torch.Tensor
    right: torch.Tensor
    cross: torch.Tensor
    rms_hz: torch.Tensor


def channel_powers(stems: torch.Tensor, sample_rate: int) -> ChannelPowers:
    """The stems' `ChannelPowers`, `stems` `[B, N, 2, T]` (a mono stem has equal channels).

    The RMS frequency is the square root of the power spectrum's second moment, from the first
    difference: mean (Δx)² = Σ 4 sin²(πf/fs) |X(f)|², so f_rms = fs/π · asin(√(mean (Δx)² / mean x²) / 2)
    for a pure tone, and a brightness order for any signal.
    """
    batch, n_stems, _, n_samples = stems.shape
    left, right, cross = (stems.new_zeros(batch, n_stems, n_stems, dtype=torch.float64) for _ in range(3))
    power, slope = (stems.new_zeros(batch, n_stems, dtype=torch.float64) for _ in range(2))
    for start in range(0, n_samples, BLOCK_SAMPLES):
        block = stems[..., start : start + BLOCK_SAMPLES + 1]  # one sample over: the difference
        body = block[..., : min(BLOCK_SAMPLES, n_samples - start)]
        lefts, rights = body[:, :, 0], body[:, :, -1]  # [B, N, t]; each block's sums added in float64
        left += (lefts @ lefts.transpose(-1, -2)).double()
        right += (rights @ rights.transpose(-1, -2)).double()
        cross += (lefts @ rights.transpose(-1, -2)).double()
        power += body.square().sum(dim=(-1, -2)).double()
        slope += block.diff(dim=-1).square().sum(dim=(-1, -2)).double()
    ratio = (slope / power.clamp_min(torch.finfo(torch.float64).tiny)).sqrt() / 2
    rms_hz = sample_rate / math.pi * torch.asin(ratio.clamp(max=1.0))
    return ChannelPowers(left / n_samples, right / n_samples, cross / n_samples, rms_hz)


def ms_ratio_at(powers: ChannelPowers, gain_db: torch.Tensor, pans: torch.Tensor) -> torch.Tensor:
    """The M/S ratio (`automix.metrics.stereo_ms_ratio`) of the stems' sum at `gain_db` `[B, N]` and
    `pans` `[B, N]` (`automix.dsp.stereo.pan`'s law), `[B]`; 0 for silence."""
    # Each stem's left and right gain, by the console's own level and pan.
    gains = pan(
        gain(torch.ones_like(pans, dtype=torch.float64)[..., None, None], gain_db=gain_db.double()), pan=pans
    )
    u, v = gains[..., 0, 0], gains[..., 1, 0]

    def quadratic(matrix, a, b):
        return (a[..., :, None] * matrix * b[..., None, :]).sum(dim=(-1, -2))

    both = quadratic(powers.left, u, u) + quadratic(powers.right, v, v)
    cross = 2 * quadratic(powers.cross, u, v)
    mid, side = (both + cross) / 4, (both - cross) / 4
    return (side.clamp_min(0) / mid.clamp_min(torch.finfo(torch.float64).tiny)).sqrt()


def pan_layout(rms_hz: torch.Tensor, power_db: torch.Tensor, audible: torch.Tensor) -> torch.Tensor:
    """`[B, N]` in [−1, 1]: each audible stem's direction at full spread, 0 for the others.

    The darkest stem (`rms_hz` `[B, N]`) stays centred, and among three or more the loudest too
    (`power_db` `[B, N]`, e.g. LUFS): the low end and the lead in the middle, and no channel carries
    the loudest stem's peaks alone. The others go the further the brighter (their rank among them, the
    brightest all the way); in order of power times distance, each goes to the side whose stems so far
    weigh less, so the whole leans as little as the stems allow.
    """
    layout = torch.zeros_like(rms_hz, dtype=torch.float64)
    for song in range(rms_hz.shape[0]):
        playing = audible[song].nonzero().flatten().tolist()
        if len(playing) < 2:
            continue
        centred = {min(playing, key=lambda i: float(rms_hz[song, i]))}
        if len(playing) >= 3:
            centred.add(max(playing, key=lambda i: float(power_db[song, i])))
        spread = sorted(set(playing) - centred, key=lambda i: float(rms_hz[song, i]))
        distance = {stem: (rank + 1) / len(spread) for rank, stem in enumerate(spread)}
        weight = {stem: 10.0 ** (float(power_db[song, stem]) / 10.0) * distance[stem] for stem in spread}
        sides = [0.0, 0.0]  # right, left
        for stem in sorted(spread, key=lambda i: -weight[i]):
            side = 0 if sides[0] <= sides[1] else 1
            sides[side] += weight[stem]
            layout[song, stem] = distance[stem] * (1.0 if side == 0 else -1.0)
    return layout


def spread_pans(powers: ChannelPowers, gain_db, pans, layout, needed_ms) -> torch.Tensor:
    """`[B, N]` pans: `pans` moved by the smallest spread s·`layout` (each pan within ±`MAX_SPREAD`) whose
    M/S ratio (`ms_ratio_at`) reaches `needed_ms` `[B]`: as they are where they reach it, the widest
    spread (every stem the layout moves at the limit) where none does."""
    pans, layout = pans.double(), layout.double()

    def at(spread):
        return (pans + spread[:, None] * layout).clamp(-MAX_SPREAD, MAX_SPREAD)

    needed = needed_ms.double()
    low = torch.zeros_like(needed)
    # Past `MAX_SPREAD` the brightest stems stay at the limit and the others go on out to it.
    nearest = torch.where(layout != 0, layout.abs(), 1.0).amin(dim=-1)
    high = MAX_SPREAD / nearest
    short = ms_ratio_at(powers, gain_db, pans) < needed
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        reaches = ms_ratio_at(powers, gain_db, at(middle)) >= needed
        low, high = torch.where(reaches, low, middle), torch.where(reaches, middle, high)
    return torch.where(short[:, None], at(high), pans).to(gain_db.dtype)


class StereoImage(NamedTuple):
    """What the bus's M/S ratio at any pans follows from: the stems' `ChannelPowers`, each strip's gain
    `[B, N]` dB (−400 for the stems unheard) and the stems' `pan_layout` `[B, N]`."""

    powers: ChannelPowers
    gain_db: torch.Tensor
    layout: torch.Tensor

    def ms_ratio(self, pans: torch.Tensor) -> torch.Tensor:
        """`[B]` the bus's M/S ratio at `pans` `[B, N]` (`ms_ratio_at`)."""
        return ms_ratio_at(self.powers, self.gain_db, pans)

    def spread(self, pans: torch.Tensor, needed_ms: torch.Tensor) -> torch.Tensor:
        """`[B, N]` `pans` spread along the layout until the bus reaches `needed_ms` `[B]` (`spread_pans`)."""
        return spread_pans(self.powers, self.gain_db, pans, self.layout, needed_ms)


def stereo_image(stems, sample_rate: int, level_db, stem_lufs, input_gain, mask=None) -> StereoImage:
    """The `StereoImage` of stems `[B, N, 2, T]` through strips neutral but for their level `level_db`
    `[B, N]` dB and pan, after the input gain `input_gain` `[B]` dB; `stem_lufs` `[B, N]`: the loudness
    the strips bring each stem to (below −70 LUFS or out of `mask`: unheard)."""
    audible = stem_lufs > SILENCE_LUFS
    if mask is not None:
        audible = audible & mask.bool()
    gain_db = torch.where(audible, level_db + input_gain[:, None], -400.0)
    powers = channel_powers(stems, sample_rate)
    return StereoImage(powers, gain_db, pan_layout(powers.rms_hz, stem_lufs, audible))
