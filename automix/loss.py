"""The mixing loss: distance of a mix's measurements from the style targets, plus musical regularisers,
plus, where a person's mix of the same tracks is known (`ProducerMix`), the distance from it.

`create_training_loss(targets)(analysis, style)` is part of the public API (docs/design.md, *Public
API*); the per-song optimiser and the Lightning module use the same function.
"""

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch

from automix.dsp.filters import rfft
from automix.loudness import SILENCE_LUFS
from automix.settings import PredictSettings
from automix.styles import StyleTarget
from automix.targets import Targets, resolve_targets
from automix.units import db_to_amp

# Tolerances of the validation (measured vs target; docs/design.md, *Style targets*); pass flags and the
# quality score use them.
TOLERANCES = {"lufs": 1.0, "spectral_centroid": 200.0, "stereo_ms_ratio": 0.2}
# Each error is divided by its scale and squared: a scale is the error that costs as much as 1 LU.
LUFS_SCALE_LU = 1.0
CENTROID_SCALE_OCT = 0.05  # 0.05 octave is ~100 Hz at 2 kHz: half the validation tolerance
MS_SCALE = 0.05
# The M/S term reads the ratio up to this (side 20 dB over mid): past it the mix cancels in mono, no setting's
# gradient brings it back, and the square of a ratio read off a floored mid overflows float32.
MS_LOSS_CAP = 10.0
BALANCE_SCALE = 0.05  # per band, in energy fraction
TRUE_PEAK_SCALE_DB = 0.1
# A mix leaning this far to one side (L/R power, dB) costs as much as 1 LU: the M/S target is met by
# spreading the stems both ways, not by pushing them all to one side.
CHANNEL_BALANCE_SCALE_DB = 1.0
# A stem whose loudness in the mix sits more than this far under the mix is buried (inaudible).
BURIED_STEM_LU = 20.0
# A track this far (dB) from where the producer put it, relative to the other tracks, costs as much as 1 LU.
TRACK_BALANCE_SCALE_DB = 1.0
# An MR-STFT distance (log10 magnitudes, `automix.balance.mr_stft_distance`) of 0.1, a mean magnitude
# mismatch of 2 dB, costs as much as 1 LU.
MR_STFT_SCALE = 0.1
# The loss's floor under each bin's magnitude (unnormalised rfft, the mix at -16 LUFS): -100 dB under a
# full-scale sine's bin at n_fft 512. The measurement's 1e-7 sits under float32 rounding, where the log's
# gradient would follow the rounding, not the mix.
MR_STFT_FLOOR = 1e-3
# A strip's compressor may take predict mode's budget of its stem's loudness (`automix.compression`) for
# free; each dB past it costs as 1 LU.
COMPRESSION_BUDGET_DB = PredictSettings.max_strip_compression_db
COMPRESSION_SCALE_DB = 1.0
DEFAULT_WEIGHTS = {
    "lufs": 1.0,
    "spectral_centroid": 1.0,
    "stereo_ms_ratio": 1.0,
    "band_balance": 0.5,
    "true_peak": 1.0,
    "channel_balance": 1.0,
    "buried_stems": 0.1,
    "processing": 0.05,
    "track_balance": 1.0,
    "mr_stft": 0.1,
    "compression": 0.0,
}


class ProducerMix(NamedTuple):
    """A person's (producer's) mix of a batch's tracks, for the terms that compare the chain's mix with it
    (`automix.training.datasets.MultitrackDataset` items, batched)."""

    track_lufs: torch.Tensor  # [B, N] each track's loudness in it; SILENCE_LUFS: silent, or a padding stem
    mix: torch.Tensor  # [B, 2, T] the sum of the tracks
    lufs: torch.Tensor  # [B] the mix's integrated loudness

    @classmethod
    def from_batch(cls, batch: Mapping[str, torch.Tensor]) -> "ProducerMix | None":
        """From a batch's `track_lufs`, `reference_mix` and `reference_lufs`; None if it has none."""
        if "reference_mix" not in batch:
            return None
        return cls(batch["track_lufs"], batch["reference_mix"], batch["reference_lufs"])


def target_errors(analysis: Mapping[str, torch.Tensor], targets: Targets) -> dict[str, torch.Tensor]:
    """Signed errors (measured - target), `[B]` each: LU, Hz, ratio; and the band balance `[B, 3]`."""
    return {
        "lufs": analysis["lufs"] - targets.lufs,
        "spectral_centroid": analysis["spectral_centroid"] - targets.centroid_hz,
        "stereo_ms_ratio": analysis["stereo_ms_ratio"] - targets.ms_ratio,
        "band_balance": analysis["band_energy"] - targets.bands,
    }


def track_balance_error(
    stem_lufs: torch.Tensor, track_lufs: torch.Tensor, stem_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """How far each stem's level relative to the others is from the producer's, in dB², differentiable.

    With dᵢ = stem_lufsᵢ − track_lufsᵢ (how much louder stem i sits in the chain's mix than track i in the
    producer's), the weighted variance Σ wᵢ·(dᵢ − Σ wⱼ·dⱼ)²: each stem's loudness relative to the weighted
    mean of the stems' against the track's relative to the weighted mean of the tracks', squared. The
    weights wᵢ are each track's share of the producer's (K-weighted) power, 10^(track_lufsᵢ / 10) over
    the counted tracks: real stems (`stem_mask`) that the producer's mix holds (track_lufs above
    `SILENCE_LUFS`). The squared balance error of `automix.balance.balance_error_db`, with each track's
    gain read from loudness instead of band energies; 0 for fewer than two counted tracks.

    Args:
        stem_lufs: `[..., N]` each stem's loudness in the chain's mix (after its strip).
        track_lufs: `[..., N]` each track's loudness in the producer's mix.
        stem_mask: `[..., N]` 1 for real stems; None: all.

    Returns:
        `[...]` dB².
    """
    counted = track_lufs > SILENCE_LUFS
    if stem_mask is not None:
        counted = counted & (stem_mask > 0)
    level = torch.where(counted, track_lufs, SILENCE_LUFS)
    power = torch.where(counted, 10.0 ** ((level - level.amax(-1, keepdim=True)) / 10.0), 0.0)
    weight = power / power.sum(-1, keepdim=True).clamp_min(torch.finfo(power.dtype).tiny)
    offset_db = torch.where(counted, stem_lufs - level, 0.0)
    mean_db = (weight * offset_db).sum(-1, keepdim=True)
    return (weight * (offset_db - mean_db).square()).sum(-1)


def compression_cost(taken_db: torch.Tensor, stem_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`[...]` the mean over real stems (`stem_mask` `[..., N]`, None: all) of ((dB each strip's
    compressor takes from its stem, `taken_db` `[..., N]` from `automix.compression.compression_db`,
    past `COMPRESSION_BUDGET_DB`) / `COMPRESSION_SCALE_DB`)²: 0 within the budget."""
    over = torch.relu(taken_db - COMPRESSION_BUDGET_DB) / COMPRESSION_SCALE_DB
    mask = torch.ones_like(over) if stem_mask is None else stem_mask.to(over.dtype)
    return (over.square() * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def mr_stft_loss(
    mix: torch.Tensor, mix_lufs: torch.Tensor, reference: torch.Tensor, reference_lufs: torch.Tensor
) -> torch.Tensor:
    """`automix.balance.mr_stft_distance` as a loss: differentiable, with a higher floor under the logs.

    Each mix is scaled from its given loudness to -16 LUFS; M = (L + R) / 2; for each FFT size n (512,
    2048, 8192) a periodic Hann STFT with hop n/4 (`center=False`, unnormalised rfft, a signal shorter
    than n zero-padded to one frame), the mean over frames and bins of |log10(|X| + f) − log10(|Y| + f)|
    with f = `MR_STFT_FLOOR`; the mean over sizes. An item where either mix is silent reads 0.

    Args:
        mix: `[..., 2, T]` the chain's mix; mix_lufs `[...]` its loudness (with gradients).
        reference: `[..., 2, T]` the producer's mix; reference_lufs `[...]` its loudness.

    Returns:
        `[...]` log10 units.
    """
    # Here, not at the top: automix.balance imports scipy.optimize, which `import automix` need not pay for.
    from automix.balance import MR_STFT_HOP_DIVISOR, MR_STFT_N_FFTS, MR_STFT_TARGET_LUFS

    audible = (mix_lufs > SILENCE_LUFS) & (reference_lufs > SILENCE_LUFS)
    mids = []
    for x, lufs in ((mix, mix_lufs), (reference.to(mix.dtype), reference_lufs.to(mix.dtype))):
        gain_db = torch.where(audible, MR_STFT_TARGET_LUFS - lufs, 0.0)
        mids.append((x * db_to_amp(gain_db)[..., None, None]).mean(dim=-2))
    distances = []
    for n_fft in MR_STFT_N_FFTS:
        window = torch.hann_window(n_fft, periodic=True, dtype=mix.dtype, device=mix.device)
        hop = n_fft // MR_STFT_HOP_DIVISOR
        x_log, y_log = (
            torch.log10(rfft(_frames(mid, n_fft, hop) * window).abs() + MR_STFT_FLOOR) for mid in mids
        )
        distances.append((x_log - y_log).abs().mean(dim=(-2, -1)))
    return torch.where(audible, torch.stack(distances).mean(dim=0), 0.0)


def _frames(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """`[..., T]` -> `[..., frames, n_fft]`, frame k at hop·k, the last partial frame left out."""
    padded = torch.nn.functional.pad(x, (0, max(n_fft - x.shape[-1], 0)))
    return padded.unfold(-1, n_fft, hop)


def loss_terms(
    analysis: Mapping[str, torch.Tensor],
    targets: Targets,
    ceiling_dbtp: float = -1.0,
    producer: ProducerMix | None = None,
    mix: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Each term of the loss, `[B]`, unweighted. With `producer`, also `track_balance` (from the
    analysis's `stem_lufs`) and, given the chain's `mix` `[B, 2, T]`, `mr_stft`."""
    errors = target_errors(analysis, targets)
    centroid_oct = torch.log2(analysis["spectral_centroid"].clamp_min(1.0) / targets.centroid_hz)
    ms_ratio = analysis["stereo_ms_ratio"].clamp(max=MS_LOSS_CAP)
    balance = errors["band_balance"]
    has_balance = torch.isfinite(balance).all(dim=-1)
    balance_term = (torch.nan_to_num(balance) / BALANCE_SCALE).square().mean(dim=-1)
    terms = {
        "lufs": (errors["lufs"] / LUFS_SCALE_LU).square(),
        "spectral_centroid": (centroid_oct / CENTROID_SCALE_OCT).square(),
        "stereo_ms_ratio": ((ms_ratio - targets.ms_ratio) / MS_SCALE).square(),
        "band_balance": torch.where(has_balance, balance_term, torch.zeros_like(balance_term)),
        "true_peak": (torch.relu(analysis["true_peak_dbtp"] - ceiling_dbtp) / TRUE_PEAK_SCALE_DB).square(),
    }
    if "channel_balance_db" in analysis:
        terms["channel_balance"] = (analysis["channel_balance_db"] / CHANNEL_BALANCE_SCALE_DB).square()
    if "stem_lufs" in analysis:
        stem_lufs = analysis["stem_lufs"]
        under = torch.relu(analysis["lufs"][..., None] - stem_lufs - BURIED_STEM_LU)
        # A silent stem (a part resting through an excerpt) is not buried: no setting could lift it.
        mask = analysis.get("stem_mask", torch.ones_like(under)) * (stem_lufs > SILENCE_LUFS).to(under.dtype)
        terms["buried_stems"] = (under.square() * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    if "processing" in analysis:
        terms["processing"] = analysis["processing"]
    if "strip_compression_db" in analysis:
        terms["compression"] = compression_cost(analysis["strip_compression_db"], analysis.get("stem_mask"))
    if producer is not None:
        balance_db2 = track_balance_error(
            analysis["stem_lufs"], producer.track_lufs, analysis.get("stem_mask")
        )
        terms["track_balance"] = balance_db2 / TRACK_BALANCE_SCALE_DB**2
        if mix is not None:
            terms["mr_stft"] = (
                mr_stft_loss(mix, analysis["lufs"], producer.mix, producer.lufs) / MR_STFT_SCALE
            ).square()
    return terms


def create_training_loss(
    targets: Mapping[str, StyleTarget], weights: Mapping[str, float] | None = None, ceiling_dbtp: float = -1.0
) -> Callable[..., torch.Tensor]:
    """The loss of a mix against a style (and, where given, a person's mix of the same tracks).

    Args:
        targets: style name -> StyleTarget (from `automix.styles.load_style_targets`).
        weights: per-term weights; missing terms take `DEFAULT_WEIGHTS`.
        ceiling_dbtp: true peaks above it are penalised.

    Returns:
        `loss_fn(analysis, style, producer=None, mix=None) -> scalar tensor`: the weighted sum of
        `loss_terms`, mean over the batch. `analysis` is what `AutoMixChain` returns (tensors with
        gradients); `style` a name, a StyleTarget, one per item, `Targets` or target vectors `[B, 6]`;
        `producer` a person's mix of the same tracks (`ProducerMix`) and `mix` the chain's mix, for the
        terms against it.
    """
    weights = DEFAULT_WEIGHTS | dict(weights or {})

    def loss_fn(
        analysis: Mapping[str, torch.Tensor],
        style,
        producer: ProducerMix | None = None,
        mix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        lufs = analysis["lufs"]
        batch_size = lufs.shape[0] if lufs.ndim else 1
        resolved = resolve_targets(style, targets, batch_size).to(lufs.device, lufs.dtype)
        if lufs.ndim == 0:
            resolved = resolved[0]
        terms = loss_terms(analysis, resolved, ceiling_dbtp, producer, mix)
        return sum(weights[name] * term for name, term in terms.items()).mean()

    return loss_fn
