"""Features: what the predictor knows about each stem before it sets the strips (`stem_features`),
and about the bus the strips make before it sets the master (`bus_features`).

`stem_features` measures every stem with `automix.metrics` and scales each measurement to roughly unit
range, so a network sees comparable numbers. Features are inputs, never optimised: they are computed
without gradients.

Speed. A stem is analysed on `ANALYSIS_EXCERPTS` one-second excerpts where it plays (blocks above
`ACTIVITY_GATE_DBFS`), spread evenly over those blocks, not on the whole song: 8 stereo stems x 30 s
take a fraction of a second on a laptop CPU, where the whole signal would take seconds. Taking the
excerpts among the blocks where the stem plays (as BS.1770's gate does for loudness) describes the
stem while it sounds, and finds a stem that enters late or plays once, which evenly spaced excerpts of
the song could miss. Levels are therefore while-playing levels: a vocal silent for half the song reads
its sung level, not 3 dB less. Excerpts join with `EXCERPT_FADE_S` raised-cosine fades so a join adds
no click to the spectrum (they lower the RMS by under 0.03 dB). The centroid and the band energies come
from one STFT (`automix.metrics.spectral_shape`).

| index | name | measurement (automix.metrics) | scaling |
|---|---|---|---|
| 0 | rms_db | `rms_db`, dBFS | (dB − LEVEL_REF_DB) / LEVEL_SCALE_DB |
| 1 | crest_factor_db | `crest_factor_db`, dB | (dB − CREST_REF_DB) / CREST_SCALE_DB |
| 2 | centroid_octaves | `spectral_centroid`, Hz | log2(Hz / CENTROID_REF_HZ): octaves re. 1 kHz |
| 3 | dynamic_range_db | `dynamic_range_db`, dB | dB / DYNAMIC_RANGE_SCALE_DB |
| 4-6 | band_low, band_mid, band_high | `band_energy` fractions | as they are (sum 1) |
| 7 | stereo_ms_ratio | `stereo_ms_ratio` | clipped to MS_RATIO_MAX |
| 8 | loudness_lufs | `integrated_loudness`, LUFS | (LUFS − LEVEL_REF_DB) / LEVEL_SCALE_DB |
| 9 | active | mask and any excerpt block above the gate | 1 or 0 |

RMS and loudness share one scaling, so a gain of g dB moves both by g / LEVEL_SCALE_DB. An inactive
stem (mask 0, or silent throughout) has every feature 0, its flag included.
"""

import torch

from automix.errors import AutomixError
from automix.loudness import all_finite, validate_audio
from automix.metrics import (
    crest_factor_db,
    dynamic_range_db,
    integrated_loudness,
    rms_db,
    sample_peak,
    spectral_shape,
    stereo_ms_ratio,
)
from automix.targets import Targets
from automix.units import db_to_amp, power_to_db

FEATURE_NAMES = (
    "rms_db",
    "crest_factor_db",
    "centroid_octaves",
    "dynamic_range_db",
    "band_low",
    "band_mid",
    "band_high",
    "stereo_ms_ratio",
    "loudness_lufs",
    "active",
)
N_FEATURES = len(FEATURE_NAMES)

# Scaling to roughly unit range. Stems sit around -20 dBFS RMS / -20 LUFS, within +-20 dB of it.
LEVEL_REF_DB = -20.0
LEVEL_SCALE_DB = 20.0
# Crest factors run from 3 dB (a sine) to ~25 dB (sparse drums).
CREST_REF_DB = 12.0
CREST_SCALE_DB = 6.0
# Centroids run from ~100 Hz (bass) to ~8 kHz (hi-hats): -3.3 to +3 octaves re. 1 kHz.
CENTROID_REF_HZ = 1000.0
# Floor of the centroid before the log: the lower limit of hearing, so an active stem whose spectrum
# reads 0 Hz (all its energy below the first STFT bin) stays finite.
CENTROID_FLOOR_HZ = 20.0
DYNAMIC_RANGE_SCALE_DB = 10.0  # 0 dB for a steady stem, 10-20 dB for sparse or dynamic ones
# The M/S ratio is 0 (mono) to ~1 (wide); an out-of-phase stem reads huge, so it is clipped.
MS_RATIO_MAX = 2.0

# Analysis excerpts (see the module docstring).
ANALYSIS_EXCERPTS = 4
EXCERPT_S = 1.0
EXCERPT_FADE_S = 0.005
# A block plays if its mean square (over channels, unweighted) is above BS.1770-4's absolute gate level.
ACTIVITY_GATE_DBFS = -70.0


def _fade(n_samples: int, sample_rate: int, dtype, device) -> torch.Tensor:
    """`[n_samples]` gain: raised-cosine fade-in and fade-out of `EXCERPT_FADE_S` each, 1 in between."""
    n_fade = min(round(EXCERPT_FADE_S * sample_rate), n_samples // 2)
    ramp = 0.5 - 0.5 * torch.cos(torch.pi * (torch.arange(n_fade, dtype=dtype, device=device) + 0.5) / n_fade)
    gain = torch.ones(n_samples, dtype=dtype, device=device)
    gain[:n_fade] = ramp
    gain[n_samples - n_fade :] = ramp.flip(0)
    return gain


def _excerpts(stems: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The analysis signal of each stem and whether it plays at all.

    The signal is cut into `EXCERPT_S` blocks (a last partial block is left out); `ANALYSIS_EXCERPTS`
    of the blocks above `ACTIVITY_GATE_DBFS` are taken at evenly spaced ranks, in time order (blocks
    repeat when fewer play), faded and joined. A signal shorter than one block is analysed whole.

    Args:
        stems: `[..., N, C, T]`.
        sample_rate: Hz.

    Returns:
        `(analysis [..., N, C, T'], playing [..., N] bool)`.
    """
    n_samples = stems.shape[-1]
    block = round(EXCERPT_S * sample_rate)
    n_blocks = n_samples // block
    if n_blocks == 0:
        return stems, power_to_db(stems.square().mean(dim=(-2, -1))) > ACTIVITY_GATE_DBFS
    blocks = stems[..., : n_blocks * block].unflatten(-1, (n_blocks, block))  # [..., N, C, B, L]
    # Mean square per block by a norm along time (contiguous), which reduces without a squared copy.
    power = torch.linalg.vector_norm(blocks, dim=-1).square().mean(dim=-2) / block
    loud = power_to_db(power) > ACTIVITY_GATE_DBFS  # [..., N, B]
    n_loud = loud.sum(dim=-1, keepdim=True)
    # Blocks that play first, each group in time order; a silent stem picks among all its blocks.
    order = torch.argsort((~loud).to(torch.uint8), dim=-1, stable=True)
    pool = torch.where(n_loud > 0, n_loud, n_blocks)
    ranks = torch.arange(ANALYSIS_EXCERPTS, device=stems.device) + 0.5
    chosen = order.gather(-1, (ranks * pool / ANALYSIS_EXCERPTS).long())  # [..., N, K]
    # One gather of the chosen blocks, [rows, C, K, L] (take_along_dim would expand its index to them).
    rows = blocks.reshape(-1, *blocks.shape[-3:])
    channels = torch.arange(rows.shape[1], device=stems.device)[:, None]
    excerpts = rows[
        torch.arange(rows.shape[0], device=stems.device)[:, None, None],
        channels,
        chosen.reshape(-1, 1, chosen.shape[-1]),
    ]
    excerpts *= _fade(block, sample_rate, stems.dtype, stems.device)
    return excerpts.reshape(*blocks.shape[:-2], -1), n_loud[..., 0] > 0


@torch.no_grad()
def stem_features(
    stems: torch.Tensor,
    sample_rate: int,
    mask: torch.Tensor | None = None,
    gain_db: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled measurements of each stem, for the predictor (see the module docstring for the table).

    Computed without gradients: features are the network's inputs, not something to optimise.

    Args:
        stems: `[..., N, C, T]` stems, C = 1 or 2 (a mono stem reads M/S 0).
        sample_rate: Hz.
        mask: `[..., N]` (bool or 0/1): 0 marks a padded slot, whose features are all 0. None: all real.
        gain_db: `[...]` the stems' input gain (`automix.staging.input_gain_db`): the features are those of
            the stems after it (whether a stem plays is judged before it).

    Returns:
        `[..., N, N_FEATURES]` finite features in `FEATURE_NAMES` order, in the dtype of `stems`.

    Raises:
        AutomixError: stems not `[..., N, C, T]` mono/stereo, NaN or infinite samples, or a mask whose
            shape is not `stems.shape[:-2]`.
    """
    if stems.ndim < 3:
        raise AutomixError(f"expected stems shaped [..., stems, channels, samples], got {tuple(stems.shape)}")
    validate_audio(stems)
    if not all_finite(stems):
        raise AutomixError("stems contain NaN or infinite samples; check the input audio")
    if mask is not None and tuple(mask.shape) != tuple(stems.shape[:-2]):
        raise AutomixError(
            f"mask shape {tuple(mask.shape)} must be the stems' leading shape {tuple(stems.shape[:-2])}"
        )
    analysis, playing = _excerpts(stems, sample_rate)
    if gain_db is not None:
        analysis = analysis * db_to_amp(gain_db).reshape(*gain_db.shape, 1, 1, 1).to(analysis.dtype)
    level_db = rms_db(analysis)
    centroid_hz, bands = spectral_shape(analysis, sample_rate)
    centroid_hz = centroid_hz.clamp_min(CENTROID_FLOOR_HZ)
    features = torch.cat(
        [
            torch.stack(
                [
                    (level_db - LEVEL_REF_DB) / LEVEL_SCALE_DB,
                    (crest_factor_db(analysis) - CREST_REF_DB) / CREST_SCALE_DB,
                    torch.log2(centroid_hz / CENTROID_REF_HZ),
                    dynamic_range_db(analysis, sample_rate) / DYNAMIC_RANGE_SCALE_DB,
                ],
                dim=-1,
            ),
            bands,
            torch.stack(
                [
                    stereo_ms_ratio(analysis).clamp_max(MS_RATIO_MAX),
                    (integrated_loudness(analysis, sample_rate) - LEVEL_REF_DB) / LEVEL_SCALE_DB,
                    torch.ones_like(level_db),
                ],
                dim=-1,
            ),
        ],
        dim=-1,
    )
    active = playing if mask is None else playing & mask.to(device=stems.device).bool()
    return torch.where(active[..., None], features, 0.0).to(stems.dtype)


# What the master head hears of the bus (see `bus_features`).
BUS_FEATURE_NAMES = (
    "peak_to_loudness",
    "centroid_gap_octaves",
    "ms_ratio",
    "ms_gap",
    "band_low",
    "band_mid",
    "band_high",
)
N_BUS_FEATURES = len(BUS_FEATURE_NAMES)
# Peak-to-loudness ratios of mixes run from ~6 dB (a limited master) to ~20 dB (sparse, dynamic).
PLR_REF_DB = 12.0
PLR_SCALE_DB = 6.0
MS_GAP_MAX = 4.0  # log2 ratios of the M/S ratio are clipped here (a mono bus has none)
MS_FLOOR = 1e-2


@torch.no_grad()
def bus_features(bus: torch.Tensor, bus_lufs: torch.Tensor, targets: Targets, sample_rate: int):
    """What the master section's settings depend on, measured on the summed strips `[B, 2, T]`.

    Level-free (the master's input is trimmed to the target loudness first), each relative to the
    target where one exists: the peak-to-loudness ratio (sample peak − LUFS, what the limiter must take
    off to reach the target), log2(bus centroid / target centroid), the M/S ratio and log2(bus M/S /
    target M/S) (the width scales M/S), and the band energies.

    Args:
        bus: `[B, 2, T]`.
        bus_lufs: `[B]` its integrated loudness.
        targets: the songs' targets.

    Returns:
        `[B, N_BUS_FEATURES]` finite, in `BUS_FEATURE_NAMES` order.
    """
    centroid_hz, bands = spectral_shape(bus, sample_rate)
    ms_ratio = stereo_ms_ratio(bus)
    plr_db = sample_peak(bus) - bus_lufs
    centroid_gap = torch.log2(centroid_hz.clamp_min(CENTROID_FLOOR_HZ) / targets.centroid_hz)
    ms_gap = torch.log2(ms_ratio.clamp_min(MS_FLOOR) / targets.ms_ratio.clamp_min(MS_FLOOR))
    features = torch.cat(
        [
            torch.stack(
                [
                    (plr_db - PLR_REF_DB) / PLR_SCALE_DB,
                    centroid_gap,
                    ms_ratio.clamp_max(MS_RATIO_MAX),
                    ms_gap.clamp(-MS_GAP_MAX, MS_GAP_MAX),
                ],
                dim=-1,
            ),
            bands,
        ],
        dim=-1,
    )
    return torch.nan_to_num(features).to(bus.dtype)
