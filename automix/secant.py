"""Secant steps and brackets on a rising function, per batch item `[B]`.

One helper for every search of a gain toward a measured target: the trim model's own search
(`automix.trim.MasterLoudness`), predict mode's loudness search (`automix.trim.search_trim`) and the
per-song refinement's trim and tilt (`automix.optimize`).
"""

import torch

MIN_SECANT_STEP = 1e-3  # a step smaller than this tells nothing of the slope


def secant_slope(step: torch.Tensor, change: torch.Tensor, default: float) -> torch.Tensor:
    """change / step where the step was large enough to tell, else `default`; never of the wrong sign
    (nor under a tenth of `default`)."""
    slope = change / torch.where(step.abs() > MIN_SECANT_STEP, step, torch.ones_like(step))
    usable = (step.abs() > MIN_SECANT_STEP) & (slope > 0.1 * default)
    return torch.where(usable, slope, torch.full_like(slope, default))


class SecantStepper:
    """Steps `[B]` of x toward the x where a rising y(x) reaches a target, from the last two guesses.

    The first step, with no slope measured yet, is `probe` times the miss's sign where a probe is
    given, else the miss at `default_slope`. Later slopes are secants (`secant_slope`), `default_slope`
    where `trusted` is false (a guess whose y moved for another reason), clamped to
    `[min_slope, max_slope]`: a step is then at most the miss over `min_slope`.
    """

    def __init__(
        self,
        default_slope: float,
        *,
        min_slope: float = 0.0,
        max_slope: float = float("inf"),
        probe: float | None = None,
    ):
        self.default_slope = default_slope
        self.min_slope, self.max_slope = min_slope, max_slope
        self.probe = probe
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None

    def step(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, trusted: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The step `[B]` from the guess `x` whose value is `y` toward `target`; remembers the guess."""
        miss = target - y
        if self.previous is None:
            step = miss / self.default_slope if self.probe is None else self.probe * torch.sign(miss)
        else:
            previous_x, previous_y = self.previous
            slope = secant_slope(x - previous_x, y - previous_y, default=self.default_slope)
            if trusted is not None:
                slope = torch.where(trusted, slope, torch.full_like(slope, self.default_slope))
            step = miss / slope.clamp(self.min_slope, self.max_slope)
        self.previous = (x, y)
        return step


class Bracket:
    """The guesses `(x, y)` `[B]` closest to a target from below and from above (NaN where none yet),
    for a search on a y that rises with x."""

    def __init__(self, target: torch.Tensor):
        self.target = target
        none = torch.full_like(target, float("nan"))
        self.below = self.above = (none, none)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.below = _closer((x, y), self.below, y < self.target, higher=True)
        self.above = _closer((x, y), self.above, y > self.target, higher=False)

    def guard(self, proposal: torch.Tensor) -> torch.Tensor:
        """`proposal` `[B]` where it lies strictly between the closest guesses on either side, or where
        there are none on one side yet; elsewhere the linear interpolation between them (regula falsi),
        so that an overshoot cannot run away."""
        (low, low_y), (high, high_y) = self.below, self.above
        bracketed = torch.isfinite(low_y) & torch.isfinite(high_y)
        between = low + (self.target - low_y) * (high - low) / (high_y - low_y).clamp_min(1e-6)
        inside = (proposal - low) * (proposal - high) < 0
        return torch.where(bracketed & ~inside, between, proposal)


def _closer(guess, best, side: torch.Tensor, higher: bool):
    """The guess `(x, y)` `[B]` each nearest the target on one side: `best`, replaced by `guess` where
    `side` holds and its y is higher (`higher`) or lower than `best`'s. NaN: none yet."""
    x, y = guess
    nearer = y > best[1] if higher else y < best[1]
    replace = side & (torch.isnan(best[1]) | nearer)
    return torch.where(replace, x, best[0]), torch.where(replace, y, best[1])
