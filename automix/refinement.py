"""The master's corrections on full renders (`MasterRefinement`): the refinement of the per-song optimiser
(`automix.optimize`), which predict mode uses too on its predicted master.
"""

import dataclasses
import math
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from automix.analysis import measure
from automix.controllers import (
    TiltController,
    TrimController,
    WidthController,
    needed_width,
    octaves_to_target,
)
from automix.dsp.console import bus_detector_power
from automix.mastering import BUDGET_SLACK_DB, gain_reduction
from automix.memory import release_freed_memory
from automix.renders import (
    MEASURES,
    PROMISES,
    FoundStems,
    FullRender,
    broken_promises,
    choose,
    closer_render,
    scaled_errors,
)
from automix.settings import OptimiserStage
from automix.targets import Targets
from automix.trim import trimmed_power

# A round held the master EQ and the width when they moved no more than this (dB; fraction of the
# width): the loudness it measured then answers to the trim alone.
HELD_EQ_DB = 0.2
HELD_WIDTH = 0.005
# A refinement round would render what the last one rendered when its trim and master EQ move by no
# more than this (dB) and its width by no more than this fraction: the rounds stop there.
STILL_DB = 0.01
STILL_WIDTH = 1e-3
# The last trim step's slope (LU a dB) is taken within these bounds once measured; 1 before.
FINAL_TRIM_SLOPES = (0.2, 1.5)
# Bisection steps on the share of the master EQ's gains kept where the full EQ loses a stem (a 16th).
KEEP_STEMS_BISECTIONS = 4
# The EQ kept leaves each stem it spares this far (dB) over the lost threshold: the last trim step and
# the limiter's reconstruction check, after it, move a stem's read by a dB or two.
KEEP_STEMS_MARGIN_DB = 3.0


class Round(NamedTuple):
    """One refinement round: the settings rendered and what the render measured, each `[B]`."""

    trim_db: torch.Tensor
    tilt_db: torch.Tensor
    width: torch.Tensor
    lufs: torch.Tensor
    centroid_hz: torch.Tensor
    ms_ratio: torch.Tensor


class Refined(NamedTuple):
    """`MasterRefinement.refine`'s result: the closest render (with its audio, unless the refinement gave up
    early), the master settings and trim to go on from, the rounds rendered and whether it gave up
    after the first."""

    render: FullRender
    master_params: dict
    trim_db: torch.Tensor
    rounds: list[Round]
    gave_up: bool = False


class FinalTrim(NamedTuple):
    """`MasterRefinement.final_trim`'s result: the render kept and `[4, B]` the promises
    (`automix.renders.broken_promises`' order) that a louder trim broke where this render keeps them:
    what held its loudness short."""

    render: FullRender
    louder_breaks: torch.Tensor

    def taken(self, new: "FinalTrim", take: torch.Tensor) -> "FinalTrim":
        """`new` for the songs `take` `[B]` bool, this one for the others (`closer_render`)."""
        breaks = torch.where(take, new.louder_breaks, self.louder_breaks)
        return FinalTrim(closer_render(self.render, new.render, take=take), breaks)


class StemsKept(NamedTuple):
    """`MasterRefinement.keep_stems`' result: the render kept after its last trim step, `[B]` the share of
    the master EQ's gains it keeps (1 where the full EQ lost no stem), `[B, N]` the stems that share
    spares, and `[B, N]` the stems the render kept loses (`FoundStems.lost`) where the EQ was left as it
    was (None where it was scaled back)."""

    trimmed: FinalTrim
    eq_share: torch.Tensor
    spared: torch.Tensor
    lost: torch.Tensor | None = None


class MasterRefinement(OptimiserStage):
    """Corrections of a song's master on full renders of its bus: the input trim for the loudness, a
    tilt of the master EQ's shelves for the centroid and the M/S width, each a small controller stepping
    on the render's own measurements (docs/design.md, *The per-song optimiser*, step 2); then the last
    trim step. The default mode's optimiser refines every attempt with it, predict mode its predicted
    master (`PredictSettings.refine`).

    Example::

        refined = MasterRefinement(chain).refine(bus, master_params, targets, trim_db)
        refined.render.measured["lufs"]

    Args:
        chain: the `AutoMixChain` whose master, ranges and mastering settings are used.
        settings: None takes the chain's `optimize_settings` (the rounds, the stop and promise tolerances).
    """

    def refine(
        self,
        bus,
        master_params: dict,
        targets: Targets,
        trim_db,
        *,
        give_up: bool = False,
        hold_eq: bool = False,
        progress: bool = False,
    ) -> Refined:
        """Corrections on the full render of a bus `[B, 2, T]`: the trim (LUFS), the width (M/S) and a master
        EQ tilt (centroid), from `master_params` and `trim_db` `[B]`, for up to `refine_steps` rounds
        after the first render. Songs within the stop tolerances are left as they are. With `give_up`, a
        first render on which some song's M/S needs a width out of range ends the refinement there, with
        the trim and width it asks for (not rendered): Adam on excerpts has to change the strips first.
        With `hold_eq`, the master EQ stays as it is: the trim and width alone step.
        """
        settings = self.settings
        # The heap's free pages handed back: the last stage's temporaries fit this one's rounds badly.
        release_freed_memory()
        trim = TrimController(trim_db, self.chain.mastering_settings.max_limiting_db)
        eq_range = self.space.master["eq_gain_db"]
        tilt = TiltController(master_params["eq_gain_db"], eq_range, torch.zeros_like(trim_db))
        width = WidthController(master_params["width"], self.space.master["width"])
        power = bus_detector_power(
            bus, self.sample_rate, blockwise=True
        )  # every round's bus compressor hears the same bus
        best, previous, rounds = None, None, []
        still = torch.zeros_like(trim_db, dtype=torch.bool)
        params = master_params | {"eq_gain_db": tilt.eq_gain_db(), "width": width.width}
        bar = tqdm(range(settings.refine_steps + 1), desc="refining", disable=not progress, leave=False)
        for _ in bar:
            if best is not None:
                best = best.without_audio()  # one render's audio in memory at a time
            render = self.render_full(bus, power, params, trim.trim_db, targets)
            measured = render.measured
            rounds.append(Round(trim.trim_db, tilt.tilt_db, width.width, *(measured[k] for k in MEASURES)))
            best, done = closer_render(best, render), render.miss <= 1
            render = None
            if done.all():
                break
            # `[3, B]`: each error over its stop tolerance (≤ 1 within it)
            errors = scaled_errors(measured, targets, settings.stop)
            ms = measured["stereo_ms_ratio"]
            out_of_reach = ~done & (errors[2] > 1) & ~self.width_reaches(width.width, ms, targets)
            # Only a round that moved the trim alone tells the loudness's slope against it.
            held = None if previous is None else _held(previous, params)
            active = (~done).to(bus.dtype)
            trim.update(
                measured["lufs"], targets.lufs, active, held, measured["gain_reduction"]["limiter"]["max_db"]
            )
            # A centroid within its stop tolerance holds the tilt: a probe would only move it away.
            if not hold_eq:
                tilt.update(measured["spectral_centroid"], targets.centroid_hz, active * (errors[1] > 1))
            width.update(ms, targets.ms_ratio, done)
            if give_up and previous is None and out_of_reach.any():
                # Adam starts from the loudness and the width (as far as its range goes) this render asks for.
                return Refined(best, params | {"width": width.width}, trim.trim_db, rounds, gave_up=True)
            following = master_params | {"eq_gain_db": tilt.eq_gain_db(), "width": width.width}
            # A song whose controllers are at their caps or converged stops there, as it would alone:
            # the rounds other songs still need render it unchanged.
            still |= ~_moves(params, rounds[-1].trim_db, following, trim.trim_db)
            if still.all():
                break
            trim.trim_db = torch.where(still, rounds[-1].trim_db, trim.trim_db)
            previous, params = params, choose(~still, following, params)
        if best.mix is None:  # an earlier round's render was closer than the last one
            best = self.render_full(bus, power, best.master_params, best.trim_db, targets)
        return Refined(best, best.master_params, best.trim_db, rounds)

    def render_full(self, bus, power, master_params: dict, trim_db, targets: Targets) -> FullRender:
        """The master on a bus `[B, 2, T]` at a trim `[B]` dB, measured with the limiter's and the bus
        compressor's gain reduction (`automix.mastering.gain_reduction`); `power`: the bus compressor's
        detector power of the bus (`bus_detector_power`). Without the limiter's reconstruction check:
        the render kept gets it once (`SongOptimizer`'s last render)."""
        mix, limiter_gain = self.chain.render_master(
            bus, master_params, trim_db, power, blockwise=True, reconstruct=False, return_gain=True
        )
        measured = measure(mix, self.sample_rate, blockwise=True)
        measured["gain_reduction"] = gain_reduction(
            limiter_gain, trimmed_power(power, trim_db), master_params, self.sample_rate
        )
        budget = self.chain.mastering_settings.max_limiting_db
        return FullRender.of(mix, master_params, trim_db, measured, targets, self.settings, budget)

    def final_trim(self, bus, power, render: FullRender, targets: Targets) -> FinalTrim:
        """The last loudness step on the render kept (`automix.settings.MasteringSettings`): the trim
        alone moved, by secant steps, while the limiter is past the limiting budget (down to it) or the
        loudness is more than `final_lufs_lu` from the target (a rise never taking the limiter past the
        budget). Before a step measures them, the loudness and the limiter's deepest reduction are taken
        to move dB for dB with the trim. A song takes the new render where it is within the budget or
        closer to it, and otherwise where its loudness is closer and it breaks no promise the render
        keeps; a rise that broke one bounds the next to half the way to it (the limiting a louder mix
        takes changes its tone: a centroid near the promise's edge can leave it)."""
        mastering, promise = self.chain.mastering_settings, self.settings.promise
        budget = mastering.max_limiting_db
        lufs_slope = limiting_slope = torch.ones_like(render.trim_db)
        broke_at = torch.full_like(render.trim_db, math.inf)  # the lowest trim that broke a kept promise
        louder_breaks = render.trim_db.new_zeros((len(PROMISES), *render.trim_db.shape), dtype=torch.bool)
        for _ in range(mastering.final_trim_steps):
            error = targets.lufs - render.measured["lufs"]
            deepest = render.measured["gain_reduction"]["limiter"]["max_db"]
            over = deepest > budget + BUDGET_SLACK_DB
            room = (budget - deepest) / limiting_slope  # dB of trim the budget leaves
            wanted = (error.abs() > mastering.final_lufs_lu) & ((error < 0) | (room > BUDGET_SLACK_DB))
            active = over | wanted
            if not active.any():
                break
            rise = torch.minimum(error / lufs_slope, room.clamp_min(0))
            rise = torch.minimum(rise, (broke_at - render.trim_db) / 2)
            step = torch.where(over, room, rise)
            candidate = self.render_full(
                bus, power, render.master_params, render.trim_db + active * step, targets
            )
            moved = candidate.trim_db - render.trim_db
            measured = candidate.measured
            if (moved.abs() > 1e-3).any():
                lufs_slope = _secant_slope(measured["lufs"], render.measured["lufs"], moved, lufs_slope)
                now = measured["gain_reduction"]["limiter"]["max_db"]
                limiting_slope = _secant_slope(now, deepest, moved, limiting_slope)
            closer = (targets.lufs - measured["lufs"]).abs() < error.abs()
            less = measured["gain_reduction"]["limiter"]["max_db"] < deepest
            # the promises the candidate breaks that the render keeps
            newly = broken_promises(candidate, targets, promise) & ~broken_promises(render, targets, promise)
            take = active & torch.where(over, less, closer & ~newly.any(dim=0))
            broke = active & ~over & newly.any(dim=0) & (moved > 1e-3)
            broke_at = torch.where(broke, torch.minimum(broke_at, candidate.trim_db), broke_at)
            louder_breaks |= broke & newly
            render = closer_render(render, dataclasses.replace(candidate, strips=render.strips), take=take)
        return FinalTrim(render, louder_breaks & ~broken_promises(render, targets, promise))

    def keep_stems(self, bus, power, trimmed: FinalTrim, found: FoundStems, targets: Targets) -> StemsKept:
        """The render after its last trim step (`final_trim`) with its master EQ's gains scaled back toward
        flat where the balance estimate loses a stem in it that it finds with the EQ flat: a style's tone
        is not worth a stem (docs/design.md, *The per-song optimiser*, step 10). Each share of the gains
        is read at the loudness asked (the last trim step); the share kept is the largest found by
        bisection (`KEEP_STEMS_BISECTIONS` steps) at which the estimate finds those stems, and its trim
        and width are refined again with the EQ held, taken where the estimate still finds them. A stem
        the flat EQ leaves more than `KEEP_STEMS_MARGIN_DB` over the lost threshold is kept that far over
        it; one the flat EQ leaves nearer is kept found. `bus` and `power` as `final_trim` takes them; the
        render holds its audio."""
        render = trimmed.render
        share = torch.ones_like(render.trim_db)
        eq_db = render.master_params["eq_gain_db"]

        def at(fraction) -> FinalTrim:  # the EQ at a share of its gains, at the loudness asked
            params = render.master_params | {"eq_gain_db": eq_db * fraction[:, None]}
            candidate = self.render_full(bus, power, params, render.trim_db, targets)
            return self.final_trim(bus, power, dataclasses.replace(candidate, strips=render.strips), targets)

        def reads(candidate: FinalTrim):  # `[2, B, N]`: the stems lost, and those lost or near it
            return found.near_lost(candidate.render.mix, KEEP_STEMS_MARGIN_DB)

        def loses(read, flat_read):  # `[B]`: a stem lost that flat finds, or near lost that flat has clear
            return (read & ~flat_read).any(dim=0).any(dim=-1).to(share.device)

        full_read = reads(trimmed)
        spared = torch.zeros_like(full_read[0])
        songs = full_read[1].any(dim=-1).to(share.device)
        if not songs.any():
            return StemsKept(trimmed, share, spared, full_read[0])
        flat = at(torch.where(songs, 0.0, 1.0))
        flat_read = reads(flat)
        by_eq = songs & loses(full_read, flat_read)  # the EQ loses what flat finds
        if not by_eq.any():
            return StemsKept(trimmed, share, spared, full_read[0])
        kept = trimmed.taken(flat, by_eq)
        low, high = torch.zeros_like(share), share.clone()
        for _ in range(KEEP_STEMS_BISECTIONS):
            middle = (low + high) / 2
            probe = at(torch.where(by_eq, middle, 1.0))
            keeps = by_eq & ~loses(reads(probe), flat_read)
            kept = kept.taken(probe, keeps)
            low = torch.where(keeps, middle, low)
            high = torch.where(by_eq & ~keeps, middle, high)
        # the width was set for the fuller EQ: refined again with the EQ kept, taken where it loses nothing
        refined = self.refine(bus, kept.render.master_params, targets, kept.render.trim_db, hold_eq=True)
        refined = dataclasses.replace(refined.render, strips=render.strips)
        again = self.final_trim(bus, power, refined, targets)
        kept = kept.taken(again, by_eq & ~loses(reads(again), flat_read))
        spared = (full_read & ~flat_read).any(dim=0) & by_eq.cpu()[:, None]
        return StemsKept(kept, torch.where(by_eq, low, share), spared)

    def width_reaches(self, width, ms_ratio, targets: Targets) -> torch.Tensor:
        """`[B]` whether the width, kept `handover_width_margin` inside its range, can scale each M/S
        ratio to the target."""
        width_range, margin = self.space.master["width"], self.settings.handover_width_margin
        needed = needed_width(width, ms_ratio, targets.ms_ratio)
        return (needed >= width_range.low + margin) & (needed <= width_range.high - margin)

    def tilt_room(self, eq_gain_db, centroid_hz, targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        """`([B] dB, [B] octaves)`: the tilt left in the master EQ's shelves `eq_gain_db` `[B, 4]` toward
        each target centroid, and the octaves from each centroid `[B]` to it."""
        tilt = TiltController(
            eq_gain_db, self.space.master["eq_gain_db"], eq_gain_db.new_zeros(len(eq_gain_db))
        )
        room_up, room_down = tilt.room_db()
        octaves = octaves_to_target(centroid_hz, targets.centroid_hz)
        return torch.where(octaves > 0, room_up, room_down), octaves


def _secant_slope(after, before, moved, previous) -> torch.Tensor:
    """`[B]` a measurement's change per dB of trim, `(after − before) / moved`, within
    `FINAL_TRIM_SLOPES`; `previous` where the trim did not move."""
    slope = ((after - before) / torch.where(moved.abs() > 1e-3, moved, 1.0)).clamp(*FINAL_TRIM_SLOPES)
    return torch.where(moved.abs() > 1e-3, slope, previous)


def _master_moves(before: dict, after: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B]` each: how far the master EQ (its largest gain's move, dB) and the width (a fraction of it)
    move from one round's settings to the next."""
    eq_moved = (after["eq_gain_db"] - before["eq_gain_db"]).abs().amax(dim=-1)
    return eq_moved, (after["width"] / before["width"] - 1).abs()


def _moves(before: dict, trim_before, after: dict, trim_after) -> torch.Tensor:
    """`[B]` whether a round's master settings and trim (dB) move from the last round's by more than
    `STILL_DB` (trim, master EQ) or `STILL_WIDTH` (a fraction of the width)."""
    eq_moved, width_moved = _master_moves(before, after)
    trim_moved = (trim_after - trim_before).abs()
    return (torch.maximum(eq_moved, trim_moved) > STILL_DB) | (width_moved > STILL_WIDTH)


def _held(before: dict, after: dict) -> torch.Tensor:
    """`[B]` whether the master EQ and width stayed (within `HELD_EQ_DB`, `HELD_WIDTH`) from one
    round's settings to the next."""
    eq_moved, width_moved = _master_moves(before, after)
    return (eq_moved <= HELD_EQ_DB) & (width_moved <= HELD_WIDTH)
