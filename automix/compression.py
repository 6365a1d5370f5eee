"""How hard each strip's compressor works (both modes' analysis), and predict mode's budget for it
(docs/design.md, *Predictor*).

A strip's compression is the loudness (BS.1770) its compressor takes from its stem: the stem after the
same strip with the compressor's ratio at 1, less the stem as rendered, in dB. Its makeup gain and
everything after it (drive, level, pan) are in both renders: what is left is the gain reduction as a
listener hears it, averaged as loudness averages. An engineer compresses a track a few dB; a strip
that takes 20 dB flattens what it plays, and its onsets (which a fast attack lets through) then set the
limiter's depth.
"""

import torch

from automix.controllers import range_bounds
from automix.loudness import SILENCE_LUFS
from automix.params import ParameterSpace

# A compressor's gain reduction falls by (1 − 1/ratio) per dB its threshold rises (over the threshold,
# hard knee); the raise divides by at least this (ratio 1.25), so that a ratio near 1 does not ask for a
# raise past the range.
MIN_SLOPE = 0.2
# A ratio this close to 1 (a neutral strip's, normalised and back) compresses nothing: no render needed.
UNITY_RATIO_TOLERANCE = 1e-4


def bypassed_loudness(
    chain, stems, stem_params, stem_lufs, mask=None, *, blockwise=False, differentiable=False
) -> torch.Tensor:
    """`[B, N]` LUFS each stem would have after its strip, whose settings in units `stem_params` (with
    `input_gain_db`, as a render returns them) brought it to `stem_lufs` `[B, N]`, with the compressor's
    ratio at 1 (`AutoMixChain.render_strips`; `mask` as its). Where every ratio is 1 already, `stem_lufs`
    itself, unrendered. `differentiable`: with gradients to the settings (a training loss's render),
    else none."""
    params = (
        dict(stem_params) if differentiable else {key: value.detach() for key, value in stem_params.items()}
    )
    if (params["comp_ratio"] <= 1.0 + UNITY_RATIO_TOLERANCE).all():
        return stem_lufs if differentiable else stem_lufs.detach()
    params["comp_ratio"] = torch.ones_like(params["comp_ratio"])
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        return chain.render_strips(stems, params, mask, blockwise=blockwise).stem_lufs


def compression_db(
    bypassed_lufs: torch.Tensor, stem_lufs: torch.Tensor, *, differentiable=False
) -> torch.Tensor:
    """`[B, N]` dB each strip's compressor takes from its stem: `bypassed_loudness` less the stem's
    loudness as rendered `stem_lufs` (0 for a silent stem). `differentiable`: with the gradients of
    both, else none."""
    if not differentiable:
        bypassed_lufs, stem_lufs = bypassed_lufs.detach(), stem_lufs.detach()
    audible = (bypassed_lufs > SILENCE_LUFS) & (stem_lufs > SILENCE_LUFS)
    return torch.where(audible, bypassed_lufs - stem_lufs, 0.0)


def raised_thresholds(
    space: ParameterSpace, stem_unit: torch.Tensor, taken_db: torch.Tensor, budget_db: float
) -> torch.Tensor:
    """The strips `stem_unit` `[B, N, n_stem]` with each compressor that takes more than `budget_db`
    (`taken_db` `[B, N]`, `compression_db`) given a threshold raised by the excess over (1 − 1/ratio),
    within the threshold's range; the others as they are. Raising the threshold, not lowering the
    ratio, keeps the compressor's character on what still crosses it."""
    params = space.denormalize_stems(stem_unit.detach())
    excess_db = (taken_db - budget_db).clamp_min(0.0)
    slope = (1.0 - 1.0 / params["comp_ratio"]).clamp_min(MIN_SLOPE)
    low, high = range_bounds(space.stem["comp_threshold_db"], excess_db)
    params["comp_threshold_db"] = (params["comp_threshold_db"] + excess_db / slope).clamp(low, high)
    return space.normalize_stems(params).clamp(0.0, 1.0)
