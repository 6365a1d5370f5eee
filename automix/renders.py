"""Full-length renders of the per-song optimiser (`automix.optimize`) and the order it keeps them in: the
one that keeps more of the three promises (loudness, centroid, M/S), then the smaller miss; and the
targets a render misses, in words.
"""

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch

from automix.balance import LOST_THRESHOLD_DB, TrackBalance
from automix.errors import AutomixError
from automix.mastering import over_budget
from automix.metrics import CANCELS_IN_MONO_MS
from automix.settings import OptimizeSettings, Tolerances
from automix.targets import Targets
from automix.units import db_to_amp

MEASURES = ("lufs", "spectral_centroid", "stereo_ms_ratio")  # analysis keys, in the targets' order
MEASURE_UNITS = (("loudness", " LUFS", 1), ("centroid", " Hz", 0), ("M/S ratio", "", 3))
PROMISES = (*MEASURES, "limiting_budget")  # `broken_promises`' rows
# A limiter this close to the limiting budget (dB) is at it: the loudness cannot rise further.
AT_BUDGET_DB = 0.1


class Console(NamedTuple):
    """Normalised settings in [0, 1]: the strips' `[B, N, n_stem]` and the master's `[B, n_master]`."""

    stem_unit: torch.Tensor
    master_unit: torch.Tensor


class Strips(NamedTuple):
    """The strips behind a render: their normalised settings `[B, N, n_stem]`, settings in units and
    the stems' loudness `[B, N]` LUFS at the bus (before the trim)."""

    stem_unit: torch.Tensor
    stem_params: dict
    stem_lufs: torch.Tensor


@dataclass(frozen=True)
class FullRender:
    """A full-length render of a batch of songs with what made it.

    Attributes:
        mix: `[B, 2, T]`, or None where the audio was not kept.
        master_params: the master's settings in units, each `[B, ...]`.
        trim_db: `[B]` the master's input trim.
        measured: `automix.analysis.measure` of the mix.
        miss: `[B]` the largest error over the stop tolerances (≤ 1 within them and the limiting budget).
        broken: `[B]` how many of the three promises it breaks, 4 more past the limiting budget.
        strips: the strips behind it, once known.
    """

    mix: torch.Tensor | None
    master_params: dict
    trim_db: torch.Tensor
    measured: dict
    miss: torch.Tensor
    broken: torch.Tensor
    strips: Strips | None = None

    @classmethod
    def of(
        cls, mix, master_params, trim_db, measured, targets: Targets, settings: OptimizeSettings, budget_db
    ):
        """From a render's measurements (`gain_reduction` among them); a limiter past the limiting
        budget `budget_db` ranks after every render within it (`broken` past the three promises'
        count), and misses by at least 1 + its excess."""
        miss = scaled_errors(measured, targets, settings.stop).amax(dim=0)
        broken = (scaled_errors(measured, targets, settings.promise) > 1).sum(dim=0)
        over = over_budget(measured["gain_reduction"], budget_db)
        excess = measured["gain_reduction"]["limiter"]["max_db"] - budget_db
        return cls(
            mix,
            master_params,
            trim_db,
            measured,
            torch.where(over, miss.clamp_min(1 + excess), miss),
            broken + over * (len(MEASURES) + 1),
        )

    def without_audio(self) -> "FullRender":
        return dataclasses.replace(self, mix=None)


def missed_targets(
    measured: dict, targets: Targets, tolerances: Tolerances, song: int
) -> list[tuple[int, str, float, float]]:
    """What one song of a measured batch misses by more than `tolerances`: `(k, text, measured, goal)`
    for each, k 0 the loudness, 1 the centroid, 2 the M/S ratio; the text e.g. "centroid 2650 Hz for a
    target of 2200 Hz"."""
    errors = scaled_errors(measured, targets, tolerances)
    goals = (targets.lufs, targets.centroid_hz, targets.ms_ratio)
    missed = []
    for k, (name, unit, digits) in enumerate(MEASURE_UNITS):
        if errors[k, song] > 1:
            value, goal = float(measured[MEASURES[k]][song]), float(goals[k][song])
            text = f"{name} {value:.{digits}f}{unit} for a target of {goal:.{digits}f}{unit}"
            missed.append((k, text, value, goal))
    return missed


def at_limiting_budget(k: int, value: float, goal: float, deepest_db: float, budget_db: float) -> bool:
    """Whether a miss of `missed_targets` (k, its measured value and goal) is a loudness short of its goal
    with the limiter's deepest reduction at the limiting budget (dB): what held it there."""
    return k == 0 and value < goal and deepest_db >= budget_db - AT_BUDGET_DB


def limiting_held(budget_db: float) -> str:
    """What held a target where the limiter is at the limiting budget (dB), in words."""
    return f"not reached with at most {budget_db:g} dB of limiting (--max-limiting-db)"


def held_by_louder_trim(louder_breaks: torch.Tensor | None, song: int, budget_db: float) -> str | None:
    """What held a loudness short of its goal where the last trim step tried louder, in words: the
    promises a louder trim broke (`MasterRefinement.final_trim`'s `louder_breaks` `[4, B]`, `PROMISES`'
    order), the centroid and M/S ratio named first, else the limiting budget (dB); None where it broke
    none."""
    if louder_breaks is None:
        return None
    _, centroid, ms_ratio, limiting = louder_breaks[:, song].tolist()
    if centroid or ms_ratio:
        names = [MEASURE_UNITS[k][0] for k, broke in ((1, centroid), (2, ms_ratio)) if broke]
        return "a louder master missed the " + " and the ".join(names)
    return limiting_held(budget_db) if limiting else None


CANCELS_IN_MONO = (
    "side 6 dB or more over mid (the channels largely in opposite polarity): the mix cancels in mono, "
    "which the width and pans undo only in part (check the stems' polarity)"
)


class FoundStems:
    """Which stems the balance estimate finds in renders of the same songs (docs/design.md, *The per-song
    optimiser*, step 10): the lost rule of `automix.balance.balance_error_db` (steps 1–3), the tracks being
    the stems `[B, N, C, T]` at the level their strips set (`stem_params`' input gain and fader, dB,
    `[B, N]`); a padding stem (`mask` 0) is left unmeasured. Each stem's band energies are measured once,
    for every render read. A stem lost there sits more than 20 dB under the others, or what the strips and
    the master did covers it, by the measure `benchmarks/human_mixes.py` counts lost tracks with."""

    def __init__(self, stems, stem_params: dict, sample_rate: int, mask=None):
        levels = db_to_amp((stem_params["input_gain_db"] + stem_params["level_db"]).detach().double().cpu())
        self.real = torch.ones(levels.shape, dtype=torch.bool) if mask is None else mask.detach().cpu() > 0
        self.balances = []
        for song, song_levels, kept in zip(stems, levels, self.real, strict=True):
            # the real stems only: a padding stem is not measured (a song without one is not copied)
            tracks = song if bool(kept.all()) else song[kept.to(song.device)]
            self.balances.append(TrackBalance(tracks, sample_rate, song_levels[kept]))

    def lost(self, mix) -> torch.Tensor:
        """`[B, N]` bool (CPU): the stems the estimate does not find in each song's mix `[B, 2, T]`."""
        return self._lost(mix, (LOST_THRESHOLD_DB,))[0]

    def near_lost(self, mix, margin_db: float) -> torch.Tensor:
        """`[2, B, N]` bool (CPU): `lost`, and the stems lost or within `margin_db` over the lost
        threshold, from one estimate of each song's mix `[B, 2, T]`."""
        return self._lost(mix, (LOST_THRESHOLD_DB, LOST_THRESHOLD_DB + margin_db))

    def _lost(self, mix, thresholds_db) -> torch.Tensor:
        lost = torch.zeros((len(thresholds_db), *self.real.shape), dtype=torch.bool)
        for song, (balance, song_mix, kept) in enumerate(zip(self.balances, mix, self.real, strict=True)):
            try:
                lost[:, song, kept] = balance.lost(song_mix, thresholds_db)
            except AutomixError:  # no stem found at all (a silent mix): there is no balance to read
                pass
        return lost


def lost_stems(stems, stem_params: dict, mix, sample_rate: int, mask=None) -> torch.Tensor:
    """`[B, N]` bool (CPU): the stems `[B, N, C, T]` the balance estimate does not find in each song's mix
    `[B, 2, T]`, read once (`FoundStems`)."""
    return FoundStems(stems, stem_params, sample_rate, mask).lost(mix)


def lost_note(lost: torch.Tensor) -> str | None:
    """A line naming the stems `[N]` (bool) a song's mix loses (`lost_stems`), or None."""
    if not lost.any():
        return None
    return (
        f"{_stem_list(lost)} not found in the mix by the balance estimate (more than 20 dB under the other "
        "stems, or covered by them); check by ear"
    )


def eq_held(spared: torch.Tensor, share: float) -> str:
    """What held a centroid where the master EQ was scaled back to `share` of its gains to keep the stems
    `spared` `[N]` (bool; `automix.refinement.MasterRefinement.keep_stems`), in words."""
    return (
        f"not reached without losing {_stem_list(spared)} under the others, by the balance estimate; the "
        f"master EQ is kept at {share:.0%} of its gains"
    )


def _stem_list(stems: torch.Tensor) -> str:
    """`[N]` bool as words: "stem 3", "stems 2 and 5" (counted from 1, in the stems' order)."""
    numbers = [str(k + 1) for k in torch.nonzero(stems).flatten().tolist()]
    if len(numbers) == 1:
        return f"stem {numbers[0]}"
    return f"stems {', '.join(numbers[:-1])} and {numbers[-1]}"


def cancels_in_mono(k: int, value: float, goal: float) -> bool:
    """Whether a miss of `missed_targets` is an M/S ratio over its goal and past `CANCELS_IN_MONO_MS`
    (`automix.metrics`): channels largely of opposite polarity, which the narrowest width halves and a
    pan, a balance control on a stereo stem, only leans to one side."""
    return k == 2 and value > max(goal, CANCELS_IN_MONO_MS)


def scaled_errors(measured: dict, targets: Targets, tolerances: Tolerances) -> torch.Tensor:
    """`[3, B]` the errors in LUFS, centroid and M/S, each over its tolerance: ≤ 1 within it."""
    goals = (targets.lufs, targets.centroid_hz, targets.ms_ratio)
    return torch.stack(
        [
            (measured[name] - goal).abs() / tol
            for name, goal, tol in zip(MEASURES, goals, tolerances, strict=True)
        ]
    )


def broken_promises(render: FullRender, targets: Targets, promise: Tolerances) -> torch.Tensor:
    """`[4, B]` which promises a render breaks (`PROMISES`): the loudness, centroid and M/S ratio by
    more than `promise`, and the limiting budget."""
    broken = scaled_errors(render.measured, targets, promise) > 1
    return torch.cat([broken, (render.broken > len(MEASURES))[None]])


def closer_render(old: FullRender | None, new: FullRender, take: torch.Tensor | None = None) -> FullRender:
    """Each song's closer render of the two (the new one on a tie): the one that keeps more of the
    three promises, then the one with the smaller miss; `take` `[B]`: the songs that take the new one,
    where the caller has chosen. The audio follows where both have it."""
    if old is None:
        return new
    if take is None:
        take = is_closer(new, old)
    if take.all():
        return new
    if not take.any():
        return old
    both = old.mix is not None and new.mix is not None
    chosen = {
        f.name: choose(take, getattr(new, f.name), getattr(old, f.name))
        for f in dataclasses.fields(FullRender)
        if f.name != "mix"
    }
    return FullRender(mix=choose(take, new.mix, old.mix) if both else None, **chosen)


def is_closer(new: FullRender, old: FullRender) -> torch.Tensor:
    """`[B]` whether `new` is the closer render (`closer_render`'s order; `new` on a tie)."""
    return (new.broken < old.broken) | ((new.broken == old.broken) & (new.miss <= old.miss))


def choose(take: torch.Tensor, new, old):
    """`new` where `take` `[B]` holds, else `old`, item by item through tensors `[B, ...]`, dicts and
    tuples of them (None stays None)."""
    if new is None:
        return None
    if isinstance(new, dict):
        return {key: choose(take, value, old[key]) for key, value in new.items()}
    if isinstance(new, tuple):
        chosen = (choose(take, a, b) for a, b in zip(new, old, strict=True))
        return type(new)(*chosen) if hasattr(new, "_fields") else tuple(chosen)
    return torch.where(take.reshape(-1, *([1] * (new.ndim - 1))), new, old)
