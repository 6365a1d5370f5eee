"""How hard the master section works on a mix: the limiter's and the bus compressor's gain reduction,
held to the limiting budget (docs/design.md, *Mastering*)."""

import torch

from automix.dsp.console import compressor_settings
from automix.dsp.dynamics import compressor_gain
from automix.units import amp_to_db

# A gain reduction counts as "working" above this many dB (the share of time over it is reported).
ACTIVE_REDUCTION_DB = 1.0
# A limiter this little over the budget is within it: the trim's own rounding.
BUDGET_SLACK_DB = 0.01


def reduction_stats(gain: torch.Tensor) -> dict[str, torch.Tensor]:
    """A gain `[B, T]` (linear, ≤ 1) as gain reduction, each `[B]`: `max_db` (the deepest, dB), `mean_db`
    (over time, dB) and `over_1db` (the share of time it exceeds `ACTIVE_REDUCTION_DB`, 0-1)."""
    reduction_db = -amp_to_db(gain.clamp_max(1.0))
    return {
        "max_db": reduction_db.amax(dim=-1),
        "mean_db": reduction_db.mean(dim=-1),
        "over_1db": (reduction_db > ACTIVE_REDUCTION_DB).to(gain.dtype).mean(dim=-1),
    }


def gain_reduction(
    limiter_gain: torch.Tensor, detector_power: torch.Tensor, master_params: dict, sample_rate: int
) -> dict[str, dict[str, torch.Tensor]]:
    """`{"limiter": ..., "bus_compressor": ...}` (`reduction_stats` each) of one master render: the
    limiter's gain `[B, T]` as it returned it, and the bus compressor's from its detector's power `[B, T]`
    of the trimmed bus (`automix.dsp.console.bus_detector_power`)."""
    bus_gain = compressor_gain(detector_power, sample_rate, compressor_settings(master_params, "bus"))
    return {"limiter": reduction_stats(limiter_gain), "bus_compressor": reduction_stats(bus_gain)}


def over_budget(reduction: dict, max_limiting_db: float):
    """Whether the limiter of a `gain_reduction` (of a batch: `[B]`; of one song: a bool) reduced peaks
    by more than `max_limiting_db` (`BUDGET_SLACK_DB` allowed)."""
    return reduction["limiter"]["max_db"] > max_limiting_db + BUDGET_SLACK_DB


def limiting_note(reduction: dict, song: int, max_limiting_db: float) -> str | None:
    """The note of song `song` of a batch's `gain_reduction` where its limiter reduced peaks by more than
    the budget, else None."""
    deepest = float(reduction["limiter"]["max_db"][song])
    if deepest <= max_limiting_db + BUDGET_SLACK_DB:
        return None
    return (
        f"the limiter reduces peaks by up to {deepest:.1f} dB, over the {max_limiting_db:g} dB limiting "
        "budget (--max-limiting-db)"
    )
