"""The small controllers of the per-song optimiser (`automix.optimize`): the refinement's trim, tilt and
width, each stepping on a full render's own measurements, and the budgets Adam's steps are held to (each
stem's balance, each strip's EQ). docs/design.md, *The per-song optimiser*, steps 2 and 7.
"""

import torch

from automix.balance import stem_balance_db
from automix.mastering import BUDGET_SLACK_DB
from automix.params import ParameterRange, ParameterSpace, logit
from automix.secant import SecantStepper
from automix.trim import MAX_TRIM_DB, MIN_LOUDNESS_SLOPE, limiter_stalled

TILT_PROBE_DB = 1.0  # first tilt step, before a secant slope exists
TILT_OCTAVES_PER_DB = 0.05  # the centroid's move a dB of tilt, before a secant slope is measured
MIN_MS_FOR_WIDTH = 1e-3  # a mono mix has no side signal for the width to scale
MIN_CENTROID_HZ = 1.0  # a silent render reads 0 Hz: ratios and octaves to it are taken from this

# A stem's move past the balance budget costs (dB over / this)² in Adam's loss: 1 dB over costs what
# 4 LU of loudness error cost (`automix.loss`, 1 LU per unit).
BALANCE_HOLD_SCALE_DB = 0.5


class BalanceHold:
    """Each stem's loudness relative to the stems together (`automix.balance.stem_balance_db`) held within
    ±`budget_db` of where it started.

    Args:
        start_db: `[B, N]` the start's balance (NaN for silent stems: never held).
        budget_db: how far a stem may move, dB.
    """

    def __init__(self, start_db: torch.Tensor, budget_db: float):
        self.start_db = start_db
        self.budget_db = budget_db

    def excess_db(self, stem_lufs: torch.Tensor, mask=None) -> torch.Tensor:
        """`[B, N]` how far each stem, at loudness `stem_lufs` `[B, N]` (in the mix: `stem_mix_lufs`), has
        moved past the budget, signed (0 within it or when silent)."""
        moved = stem_balance_db(stem_lufs, mask) - self.start_db
        excess = moved - moved.clamp(-self.budget_db, self.budget_db)
        return torch.nan_to_num(excess, nan=0.0)

    def cost(self, stem_lufs: torch.Tensor, mask=None) -> torch.Tensor:
        """`[B]` the hinge Adam's loss adds: Σ over stems of (excess / `BALANCE_HOLD_SCALE_DB`)²."""
        return (self.excess_db(stem_lufs, mask) / BALANCE_HOLD_SCALE_DB).square().sum(dim=-1)


class EqBudget:
    """Each strip's EQ band gains held within ±`budget_db` of where they started (and within their range):
    Adam's steps are projected back onto it.

    Args:
        space: the chain's parameter space.
        start_unit: `[B, N, n_stem]` the start's strips (normalised).
        budget_db: how far a band's gain may move, dB: one for every song, or `[B]`.
    """

    def __init__(self, space: ParameterSpace, start_unit: torch.Tensor, budget_db: float | torch.Tensor):
        self.space = space
        start_db = space.denormalize_stems(start_unit)["eq_gain_db"]  # [B, N, bands]
        self.budget_db = torch.as_tensor(budget_db, dtype=start_db.dtype, device=start_db.device)
        self.budget_db = self.budget_db.expand(start_db.shape[0])
        budget_db = self.budget_db[:, None, None]
        low, high = range_bounds(space.stem["eq_gain_db"], start_db)
        self.low = torch.maximum(start_db - budget_db, low)
        self.high = torch.minimum(start_db + budget_db, high)

    def project(self, stem_logits: torch.Tensor) -> None:
        """Clamp the EQ gains of the strips `stem_logits` `[B, N, n_stem]` (logits of the normalised
        settings) into the budget, in place."""
        with torch.no_grad():
            params = self.space.denormalize_stems(torch.sigmoid(stem_logits))
            params["eq_gain_db"] = params["eq_gain_db"].clamp(self.low, self.high)
            stem_logits.copy_(logit(self.space.normalize_stems(params).clamp(0.0, 1.0)))


class TrimController:
    """The master's input trim toward the target loudness: secant steps, a LU a dB until a round that
    moved the trim alone measures the slope (a step is at most 1 / `MIN_LOUDNESS_SLOPE` times the miss);
    it stops rising where the limiter takes nearly all of a further dB (`automix.trim.limiter_stalled`)
    or past the limiting budget (`max_limiting_db`).
    """

    def __init__(self, trim_db: torch.Tensor, max_limiting_db: float):
        self.trim_db = trim_db
        self.cap = torch.full_like(trim_db, MAX_TRIM_DB)
        self.max_limiting_db = max_limiting_db
        self.secant = SecantStepper(1.0, min_slope=MIN_LOUDNESS_SLOPE)

    def update(self, lufs, target_lufs, active, held=None, limiting_db=None) -> None:
        """After a render at `self.trim_db` measured `lufs` `[B]`; `held` `[B]`: whether the round moved
        nothing else that changes the loudness (None in the first round); `limiting_db` `[B]`: the
        limiter's deepest gain reduction. Past the limiting budget the trim is capped that many dB
        lower: the limited peaks rise dB for dB with the trim (the bus compressor takes a little)."""
        if limiting_db is not None:
            excess = limiting_db - self.max_limiting_db
            self.cap = torch.where(
                excess > BUDGET_SLACK_DB, torch.minimum(self.cap, self.trim_db - excess), self.cap
            )
        if self.secant.previous is not None:
            previous_trim, previous_lufs = self.secant.previous
            stalled = limiter_stalled(self.trim_db - previous_trim, lufs - previous_lufs) & held
            louder = torch.where(lufs >= previous_lufs, self.trim_db, previous_trim)
            self.cap = torch.where(stalled, torch.minimum(self.cap, louder), self.cap)
        step = self.secant.step(self.trim_db, lufs, target_lufs, trusted=held)
        trim_db = (self.trim_db + active * step).clamp(-MAX_TRIM_DB, MAX_TRIM_DB)
        self.trim_db = torch.minimum(trim_db, self.cap)


class TiltController:
    """A tilt of the master EQ's shelves toward the target centroid: secant steps on log2 of the
    centroid, a `TILT_PROBE_DB` probe first.

    A tilt of t dB moves the high shelf by t and, past the end of its range, the low shelf by what is left
    the other way: the high shelf moves the light top of the spectrum, the low shelf the bass that holds
    most of a mix's power, so the stems' balance moves less (docs/benchmarks.md, *The master's tilt
    from the top first*)."""

    def __init__(self, base_eq_db: torch.Tensor, eq_range: ParameterRange, tilt_db: torch.Tensor):
        """From the master EQ's gains `base_eq_db` `[B, 4]` or `[4]` and a starting tilt `[B]` dB."""
        self.base_eq_db = base_eq_db
        self.low, self.high = range_bounds(eq_range, base_eq_db)
        self.span_db = (self.high - self.low)[[0, -1]].sum()  # a tilt past this moves no shelf further
        self.tilt_db = tilt_db
        self.secant = SecantStepper(TILT_OCTAVES_PER_DB, probe=TILT_PROBE_DB)

    def eq_gain_db(self) -> torch.Tensor:
        """`[B, 4]` the master EQ's gains with the tilt, within their range."""
        base = self.base_eq_db.expand(self.tilt_db.shape[0], -1)
        high_shelf = (base[:, -1] + self.tilt_db).clamp(self.low[-1], self.high[-1])
        left_db = self.tilt_db - (high_shelf - base[:, -1])  # what the high shelf's range could not take
        low_shelf = (base[:, 0] - left_db).clamp(self.low[0], self.high[0])
        return torch.cat([low_shelf[:, None], base[:, 1:-1], high_shelf[:, None]], dim=-1)

    def room_db(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`([B] up, [B] down)` dB: the tilt from the base that takes both shelves to the ends of their range
        (one shelf, then the other), brighter and darker."""
        base = self.base_eq_db.reshape(-1, self.base_eq_db.shape[-1])
        low_shelf, high_shelf = base[:, 0], base[:, -1]
        up = (self.high[-1] - high_shelf) + (low_shelf - self.low[0])
        down = (high_shelf - self.low[-1]) + (self.high[0] - low_shelf)
        return up, down

    def update(self, centroid_hz, target_hz, active) -> None:
        log_centroid = torch.log2(centroid_hz.clamp_min(MIN_CENTROID_HZ))
        step = self.secant.step(self.tilt_db, log_centroid, torch.log2(target_hz))
        self.tilt_db = (self.tilt_db + active * step).clamp(-self.span_db, self.span_db)


class WidthController:
    """The M/S width, which scales the M/S ratio exactly: one step to the target, within its range."""

    def __init__(self, width: torch.Tensor, width_range: ParameterRange):
        self.width = width
        self.range = width_range

    def update(self, ms_ratio, target_ms, done) -> None:
        needed = needed_width(self.width, ms_ratio, target_ms).clamp(self.range.low, self.range.high)
        self.width = torch.where(done, self.width, needed)


def octaves_to_target(centroid_hz, target_hz) -> torch.Tensor:
    """`[B]` the octaves from each centroid (Hz; a silent render's 0 read as `MIN_CENTROID_HZ`) up to its
    target (negative: down)."""
    return torch.log2(target_hz / centroid_hz.clamp_min(MIN_CENTROID_HZ))


def needed_width(width, ms_ratio, target_ms) -> torch.Tensor:
    """`[B]` the width that brings an M/S ratio measured at `width` to `target_ms`."""
    return width * target_ms / ms_ratio.clamp_min(MIN_MS_FOR_WIDTH)


def range_bounds(value_range: ParameterRange, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A range's `(low, high)` in units, in `like`'s dtype and device."""
    return tuple(bound.to(like) for bound in value_range.bounds())
