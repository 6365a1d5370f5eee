"""The mixing loss: distance of a mix's measurements from the style targets, plus musical regularisers.

`create_training_loss(targets)(analysis, style)` is part of the public API (docs/design.md, *Public
API*); the per-song optimiser and the Lightning module use the same function.
"""

from collections.abc import Callable, Mapping

import torch

from automix.loudness import SILENCE_LUFS
from automix.styles import StyleTarget
from automix.targets import Targets, resolve_targets

# Tolerances of the validation (measured vs target; docs/design.md, *Style targets*); pass flags and the
# quality score use them.
TOLERANCES = {"lufs": 1.0, "spectral_centroid": 200.0, "stereo_ms_ratio": 0.2}
# Each error is divided by its scale and squared: a scale is the error that costs as much as 1 LU.
LUFS_SCALE_LU = 1.0
CENTROID_SCALE_OCT = 0.05  # 0.05 octave is ~100 Hz at 2 kHz: half the validation tolerance
MS_SCALE = 0.05
BALANCE_SCALE = 0.05  # per band, in energy fraction
TRUE_PEAK_SCALE_DB = 0.1
# A mix leaning this far to one side (L/R power, dB) costs as much as 1 LU: the M/S target is met by
# spreading the stems both ways, not by pushing them all to one side.
CHANNEL_BALANCE_SCALE_DB = 1.0
# A stem whose loudness in the mix sits more than this far under the mix is buried (inaudible).
BURIED_STEM_LU = 20.0
DEFAULT_WEIGHTS = {
    "lufs": 1.0,
    "spectral_centroid": 1.0,
    "stereo_ms_ratio": 1.0,
    "band_balance": 0.5,
    "true_peak": 1.0,
    "channel_balance": 1.0,
    "buried_stems": 0.1,
    "processing": 0.05,
}


def target_errors(analysis: Mapping[str, torch.Tensor], targets: Targets) -> dict[str, torch.Tensor]:
    """Signed errors (measured - target), `[B]` each: LU, Hz, ratio; and the band balance `[B, 3]`."""
    return {
        "lufs": analysis["lufs"] - targets.lufs,
        "spectral_centroid": analysis["spectral_centroid"] - targets.centroid_hz,
        "stereo_ms_ratio": analysis["stereo_ms_ratio"] - targets.ms_ratio,
        "band_balance": analysis["band_energy"] - targets.bands,
    }


def loss_terms(
    analysis: Mapping[str, torch.Tensor], targets: Targets, ceiling_dbtp: float = -1.0
) -> dict[str, torch.Tensor]:
    """Each term of the loss, `[B]`, unweighted."""
    errors = target_errors(analysis, targets)
    centroid_oct = torch.log2(analysis["spectral_centroid"].clamp_min(1.0) / targets.centroid_hz)
    balance = errors["band_balance"]
    has_balance = torch.isfinite(balance).all(dim=-1)
    balance_term = (torch.nan_to_num(balance) / BALANCE_SCALE).square().mean(dim=-1)
    terms = {
        "lufs": (errors["lufs"] / LUFS_SCALE_LU).square(),
        "spectral_centroid": (centroid_oct / CENTROID_SCALE_OCT).square(),
        "stereo_ms_ratio": (errors["stereo_ms_ratio"] / MS_SCALE).square(),
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
    return terms


def create_training_loss(
    targets: Mapping[str, StyleTarget], weights: Mapping[str, float] | None = None, ceiling_dbtp: float = -1.0
) -> Callable[[Mapping[str, torch.Tensor], object], torch.Tensor]:
    """The loss of a mix against a style.

    Args:
        targets: style name -> StyleTarget (from `automix.styles.load_style_targets`).
        weights: per-term weights; missing terms take `DEFAULT_WEIGHTS`.
        ceiling_dbtp: true peaks above it are penalised.

    Returns:
        `loss_fn(analysis, style) -> scalar tensor`: the weighted sum of `loss_terms`, mean over the batch.
        `analysis` is what `AutoMixChain` returns (tensors with gradients); `style` a name, a
        StyleTarget, one per item, `Targets` or target vectors `[B, 6]`.
    """
    weights = DEFAULT_WEIGHTS | dict(weights or {})

    def loss_fn(analysis: Mapping[str, torch.Tensor], style) -> torch.Tensor:
        lufs = analysis["lufs"]
        batch_size = lufs.shape[0] if lufs.ndim else 1
        resolved = resolve_targets(style, targets, batch_size).to(lufs.device, lufs.dtype)
        if lufs.ndim == 0:
            resolved = resolved[0]
        terms = loss_terms(analysis, resolved, ceiling_dbtp)
        return sum(weights[name] * term for name, term in terms.items()).mean()

    return loss_fn
