"""What a mix is judged by: its measurements, and the report against the style's targets."""

import math
from collections.abc import Mapping

import torch

from automix import metrics
from automix.loss import TOLERANCES, target_errors
from automix.mastering import over_budget
from automix.targets import Targets


def measure(
    mix: torch.Tensor, sample_rate: int, lufs: torch.Tensor | None = None, *, blockwise: bool = False
) -> dict[str, torch.Tensor]:
    """The measurements a mix `[B, 2, T]` is judged by (differentiable ones keep their gradients), `[B]`
    each; `lufs`: its integrated loudness where already measured. `blockwise`: a long mix is metered a
    block of time at a time (`automix.metrics.integrated_loudness`), without gradients."""
    centroid_hz, bands = metrics.spectral_shape(mix, sample_rate)
    if lufs is None:
        lufs = metrics.integrated_loudness(mix, sample_rate, blockwise=blockwise)
    return {
        "lufs": lufs,
        "spectral_centroid": centroid_hz,
        "stereo_ms_ratio": metrics.stereo_ms_ratio(mix),
        "channel_balance_db": metrics.channel_balance_db(mix),
        "true_peak_dbtp": metrics.true_peak(mix, sample_rate),
        "band_energy": bands,
    }


def report(
    analysis: Mapping, targets: Targets, ceiling_dbtp: float, max_limiting_db: float | None = None
) -> dict:
    """Targets, errors, pass flags (`automix.loss.TOLERANCES`; true peak under the ceiling) and a quality
    score in [0, 1]: the mean over the three targets of 1 - |error| / (2 tolerance), floored at 0,
    times 0 when the true peak is over the ceiling; an undefined measurement (NaN) fails and counts 0.
    Where the analysis has them, the flags add `reconstructed_peak` (under the ceiling) and `limiting`
    (the limiter's peak gain reduction within `max_limiting_db`)."""
    with torch.no_grad():
        errors = target_errors(analysis, targets)
        passed = {name: errors[name].abs() <= tol for name, tol in TOLERANCES.items()}
        passed["true_peak"] = analysis["true_peak_dbtp"] <= ceiling_dbtp + 1e-3
        if "reconstructed_peak_dbtp" in analysis:
            passed["reconstructed_peak"] = analysis["reconstructed_peak_dbtp"] <= ceiling_dbtp + 1e-3
        if "gain_reduction" in analysis and max_limiting_db is not None:
            passed["limiting"] = ~over_budget(analysis["gain_reduction"], max_limiting_db)
        closeness = [
            (1 - errors[name].abs() / (2 * tol)).clamp_min(0).nan_to_num(0.0)
            for name, tol in TOLERANCES.items()
        ]
        score = torch.stack(closeness).mean(0) * passed["true_peak"]
        return {
            "targets": {
                "lufs": targets.lufs,
                "spectral_centroid": targets.centroid_hz,
                "stereo_ms_ratio": targets.ms_ratio,
            },  # fmt: skip
            "errors": {name: errors[name] for name in TOLERANCES},
            "passed": passed,
            "quality_score": score,
        }


def json_ready(value):
    """An analysis value (tensors, and dicts and lists of them) as JSON-ready numbers and lists; a
    non-finite number (an undefined measurement) as None: JSON has no NaN or infinities."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value
