"""Per-song optimisation: the default way `AutoMixChain` sets its console (docs/design.md, *The per-song
optimiser*).

1. Start from the predictor's settings (`AutoMixChain.predict`: its bus, and its trim to the target loudness),
   its strips' balance or every stem at the same loudness (`OptimizeSettings.balance_start`).
2. Correct them on the full render (`SongOptimizer.refine`): a loudness trim before the master section,
   the M/S width (the ratio scales exactly with it) and a master EQ tilt for the centroid, each a small
   controller stepping on the full render's own measurements, until it is within tolerance. The trim
   stops rising where the limiter takes nearly all of a further dB.
3. Songs the corrections cannot finish (a width or tilt at the end of its range) get Adam on the
   normalised settings (as logits) against the loss, measured on excerpts of the song
   (`SongOptimizer.on_excerpts`), then step 2 again, for up to `attempts` rounds. Each stem's loudness
   in the mix (through the master's EQ and width) relative to the stems together stays within
   `balance_budget_db` of the start (`BalanceHold`), and each strip's EQ band within `eq_budget_db` of
   its start (`EqBudget`): the tone, width and loudness are reached with the master and moderate strip
   EQ, not by burying a stem or carving it away.
4. The user gets the closest full render made: excerpts and whole songs measure differently; Adam's
   strips replace the start's only by keeping more promises (`SongOptimizer.kept_render`). A target
   still missed is said so in the analysis's `notes`, with the balance kept.
5. A render short of its loudness with the limiter at the limiting budget, or past the budget, gets its
   strips driven into their saturation, each stem's loudness kept (`SongOptimizer.louder_by_drive`):
   harmonics only where the loudness needs them.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from automix import metrics
from automix.analysis import measure
from automix.balance import stem_balance_db
from automix.controllers import (
    MIN_CENTROID_HZ,
    MIN_MS_FOR_WIDTH,
    TILT_OCTAVES_PER_DB,
    BalanceHold,
    EqBudget,
    TiltController,
    TrimController,
    WidthController,
    needed_width,
    range_bounds,
)
from automix.dsp.console import bus_detector_power
from automix.dsp.limiter import reconstruction_limit
from automix.excerpts import select_excerpts
from automix.loudness import SILENCE_LUFS, integrated_loudness, loudness_after_gain
from automix.mastering import BUDGET_SLACK_DB, gain_reduction, limiting_note, over_budget
from automix.memory import release_freed_memory
from automix.params import logit
from automix.reference_balance import fit_reference_balance, long_term_spectrum_db
from automix.renders import (
    AT_BUDGET_DB,
    MEASURES,
    Console,
    FullRender,
    Strips,
    at_limiting_budget,
    choose,
    closer_render,
    is_closer,
    missed_targets,
    scaled_errors,
)
from automix.settings import OptimizeSettings
from automix.staging import input_gain_db
from automix.targets import Targets
from automix.trim import trimmed_power

# A width this close to an end of its range, or a tilt with this little room left toward the target,
# is pinned there (`SongOptimizer.pinned`).
PINNED_WIDTH = 1e-3
PINNED_TILT_DB = 0.1
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
# The strips' drives tried in turn where the crest factor bounds the loudness
# (`SongOptimizer.louder_by_drive`): the saturation's blend halfway, then whole.
DRIVE_STEPS = (2.0, 3.0)
DRIVE_STILL = 0.05  # a step that raises no strip's drive by more than this is not rendered
# A limiter this close to the limiting budget (dB) is at it for the drive: the refinement's trim stops
# rising a little short of the budget, where the limiter takes nearly all of a further dB.
NEAR_BUDGET_DB = 1.0


class Round(NamedTuple):
    """One refinement round: the settings rendered and what the render measured, each `[B]`."""

    trim_db: torch.Tensor
    tilt_db: torch.Tensor
    width: torch.Tensor
    lufs: torch.Tensor
    centroid_hz: torch.Tensor
    ms_ratio: torch.Tensor


class Refined(NamedTuple):
    """`SongOptimizer.refine`'s result: the closest render (with its audio, unless the refinement gave up
    early), the master settings and trim to go on from, the rounds rendered and whether it gave up
    after the first."""

    render: FullRender
    master_params: dict
    trim_db: torch.Tensor
    rounds: list[Round]
    gave_up: bool = False


class Excerpts(NamedTuple):
    """`SongOptimizer.on_excerpts`'s result: the settings Adam ended with (detached), the targets the
    excerpts aimed at, the Adam steps taken and the balance held."""

    console: Console
    aim: Targets
    steps: int
    hold: BalanceHold | None = None


@dataclass
class SongState:
    """Where the optimisation of a batch of songs stands.

    Attributes:
        console: the settings the next full render uses.
        trim_db: `[B]` the master's input trim the next refinement starts from.
        best: each song's closest full render so far.
        renders: every refinement's closest render (without audio), in order.
        start_balance_db: `[B, N]` each stem's `stem_balance_db` in the first full render.
        hold: the balance Adam keeps, set at its first step.
        eq_budget: the strips' EQ Adam keeps near the start's.
        best_from_start: `[B]` whether `best` has the start's strips.
    """

    console: Console
    trim_db: torch.Tensor
    best: FullRender | None = None
    renders: list[FullRender] = dataclasses.field(default_factory=list)
    start_balance_db: torch.Tensor | None = None
    hold: BalanceHold | None = None
    eq_budget: EqBudget | None = None
    best_from_start: torch.Tensor | None = None


class SongOptimizer:
    """Sets a chain's console for each song: corrections on the full render, Adam on excerpts where they
    cannot finish, the closest render kept.

    Example::

        optimizer = SongOptimizer(chain, OptimizeSettings(steps=10))
        mix, analysis = optimizer(stems, resolve_targets("rock_punk", chain.style_targets, 1))
        optimizer.state.renders  # every refinement's closest render

    Args:
        chain: the `AutoMixChain` whose renders, ranges and loss are used (its predictor gives the start).
        settings: None takes the chain's `optimize_settings`.
    """

    def __init__(self, chain, settings: OptimizeSettings | None = None):
        self.chain = chain
        self.settings = settings or chain.optimize_settings
        self.space = chain.space
        self.sample_rate = chain.sample_rate
        self.state: SongState | None = None

    def __call__(self, stems: torch.Tensor, targets: Targets, mask=None, *, progress: bool = False):
        """Optimise the console for stems `[B, N, 2, T]`, in any grad mode: Adam records its own gradients
        (under `torch.no_grad()` or `torch.inference_mode()` too), and none reaches the stems' `.grad`.

        Returns:
            `(mix [B, 2, T], analysis)` of each song's closest full-length render (no gradient).
        """
        with torch.inference_mode(False):
            # Tensors made under inference mode cannot join Adam's graph: copies of them can.
            stems, mask = (_outside_inference(t) for t in (stems.detach(), mask))
            targets = targets.map(_outside_inference)
            return self._optimise(stems, targets, mask, progress)

    def _optimise(self, stems: torch.Tensor, targets: Targets, mask, progress: bool):
        """`__call__` on stems, targets and mask made outside inference mode."""
        settings, chain = self.settings, self.chain
        with torch.no_grad():
            # No full-length render needs a gradient: a long song goes through them a block at a time.
            input_gain = input_gain_db(stems, self.sample_rate, mask, blockwise=True)
            # The refinement corrects the loudness on its own renders: no search renders before it.
            prediction = chain.predict(
                stems, targets, mask, loudness_steps=0, input_gain=input_gain, blockwise=True
            )
            balance_db = self.start_balance_db(stems, targets, mask, input_gain)
            if balance_db is not None:
                start = self.balanced_strips(prediction.stem_unit, prediction.stem_lufs, balance_db, mask)
                prediction = None  # its bus freed before the next
                prediction = chain.predict(
                    stems, targets, mask, 0, input_gain, stem_unit=start, blockwise=True
                )
        state = self.state = SongState(
            Console(prediction.stem_unit, prediction.master_unit), prediction.trim_db
        )
        given_up = None  # the start's strips and refinement, where it gave up for Adam
        state.start_balance_db = stem_balance_db(prediction.stem_lufs, mask)
        state.eq_budget = EqBudget(self.space, prediction.stem_unit, settings.eq_budget_db)
        strips = Strips(prediction.stem_unit, prediction.stem_params, prediction.stem_lufs)
        bus = prediction.bus
        del prediction  # its bus is `bus`, freed with it before the next render
        for attempt in range(settings.attempts):
            adam_follows = attempt < settings.attempts - 1 and settings.steps > 0
            # The start often needs the strips changed: a first render that shows it goes straight to Adam.
            give_up = adam_follows and attempt == 0
            with torch.no_grad():
                if attempt > 0:
                    bus, stem_params, stem_lufs, _ = chain.render_bus(
                        stems, state.console.stem_unit, mask, input_gain, blockwise=True
                    )
                    strips = Strips(state.console.stem_unit, stem_params, stem_lufs)
                master_params = self.space.denormalize_master(state.console.master_unit)
                refined = self.refine(
                    bus, master_params, targets, state.trim_db, give_up=give_up, progress=progress
                )
            render = dataclasses.replace(refined.render, strips=strips)
            state.renders.append(render.without_audio())
            if attempt == 0 and refined.gave_up:
                given_up = (strips, refined)
            master_params, trim_db = refined.master_params, refined.trim_db
            if not refined.gave_up:
                render, bus = self.louder_by_drive(stems, targets, mask, input_gain, render, bus, progress)
                driven = (render.strips.stem_unit != strips.stem_unit).flatten(1).any(dim=1)
                master_params = choose(driven, render.master_params, master_params)
                trim_db, strips = torch.where(driven, render.trim_db, trim_db), render.strips
            master_unit = self.space.normalize_master(master_params).clamp(0, 1)
            state.console, state.trim_db = Console(strips.stem_unit, master_unit), trim_db
            state.best = self.kept_render(state, render, refined.gave_up)
            if self.settled(state.best, targets).all() or not adam_follows:
                break
            # (the give-up's width was not rendered: its render reads the M/S of another width)
            pinned = None if give_up else self.pinned(render, targets)
            bus = render = refined = None  # freed for Adam's graph: the next attempt renders again
            state.best = state.best.without_audio()
            excerpts = self.on_excerpts(
                stems, targets, mask, state.console, trim_db=state.trim_db, input_gain=input_gain,
                pinned=pinned, hold=state.hold, eq_budget=state.eq_budget, progress=progress,
            )  # fmt: skip
            state.console, state.hold = excerpts.console, excerpts.hold
        needed = ~state.best_from_start & (state.best.broken > 0)
        if given_up is not None and needed.any():
            bus = render = refined = None  # the start's bus takes its place
            bus, strips = self.revisit_start(
                stems, targets, mask, input_gain, *given_up, needed, progress=progress
            )
        same_strips = state.best.strips.stem_unit is strips.stem_unit
        return self._finish(stems, targets, mask, input_gain, bus if same_strips else None)

    def crest_bound(self, render: FullRender, targets: Targets) -> torch.Tensor:
        """`[B]` whether the crest factor is what keeps a render from its loudness within the limiting
        budget: it is past the budget, or short of its loudness promise with the limiter near the budget
        (within `NEAR_BUDGET_DB`; the trim stops rising where the limiter takes nearly all of a further
        dB)."""
        budget_db = self.chain.mastering_settings.max_limiting_db
        deepest = render.measured["gain_reduction"]["limiter"]["max_db"]
        short = targets.lufs - render.measured["lufs"] > self.settings.promise.lufs_lu
        return over_budget(render.measured["gain_reduction"], budget_db) | (
            short & (deepest >= budget_db - NEAR_BUDGET_DB)
        )

    @torch.no_grad()
    def louder_by_drive(
        self, stems, targets: Targets, mask, input_gain, render: FullRender, bus, progress=False
    ) -> tuple[FullRender, torch.Tensor]:
        """Where the crest factor keeps a refined `render` (its `bus` `[B, 2, T]`) from its loudness within
        the limiting budget (`crest_bound`): its strips' saturation driven to each of `DRIVE_STEPS` in
        turn, as an engineer clips before the limiter, each stem's level moved back to its loudness
        before, and refined from the render's master settings; taken where closer (`closer_render`'s
        order). The neutral drive is clean (`automix.dsp.saturation`): harmonics only where the
        loudness needs them. Returns the closer render and its bus."""
        bound = self.crest_bound(render, targets)
        for drive in DRIVE_STEPS:
            if not bound.any():
                break
            params = self.space.denormalize_stems(render.strips.stem_unit)
            before = params["drive"]
            params["drive"] = torch.where(bound[:, None], before.clamp_min(drive), before)
            raised = bound & (params["drive"] - before > DRIVE_STILL).any(dim=1)
            if not raised.any():
                continue  # the strips are driven this far already (Adam's, or an earlier attempt's)
            stem_unit = self.space.normalize_stems(params).clamp(0.0, 1.0)
            driven = self.chain.render_bus(stems, stem_unit, mask, input_gain, blockwise=True)
            kept = render.strips.stem_lufs
            audible = (driven.stem_lufs > SILENCE_LUFS) & (kept > SILENCE_LUFS)
            stem_unit = self.moved_levels(stem_unit, torch.where(audible, kept - driven.stem_lufs, 0.0))
            driven = None  # one driven bus in memory at a time
            driven = self.chain.render_bus(stems, stem_unit, mask, input_gain, blockwise=True)
            strips = Strips(stem_unit, driven.stem_params, driven.stem_lufs)
            refined = self.refine(
                driven.bus, render.master_params, targets, render.trim_db, progress=progress
            )
            candidate = dataclasses.replace(refined.render, strips=strips)
            self.state.renders.append(candidate.without_audio())
            take = raised & is_closer(candidate, render)
            if take.any():
                render = closer_render(render, candidate, take)
                bus = driven.bus if take.all() else choose(take, driven.bus, bus)
            bound = bound & self.crest_bound(render, targets)
        return render, bus

    @torch.no_grad()
    def revisit_start(
        self,
        stems,
        targets: Targets,
        mask,
        input_gain,
        strips: Strips,
        start: Refined,
        needed,
        *,
        progress=False,
    ) -> tuple[torch.Tensor, Strips]:
        """For the songs `needed` `[B]`, whose start's refinement gave up for Adam and whose Adam's strips
        still break a promise: the start's `strips` refined to the end (trim, width, tilt) from where
        `start` left them, kept where they break none of the promises Adam's keep (`kept_render`'s
        rule: moves that miss the same targets anyway cost the balance for nothing), else by the usual
        rule (`closer_render`); driven where the crest factor bounds it (`louder_by_drive`). Returns the
        start's bus `[B, 2, T]` and strips."""
        state = self.state
        bus = self.chain.render_bus(stems, strips.stem_unit, mask, input_gain, blockwise=True).bus
        refined = self.refine(bus, start.master_params, targets, start.trim_db, progress=progress)
        render = dataclasses.replace(refined.render, strips=strips)
        state.renders.append(render.without_audio())
        render, bus = self.louder_by_drive(stems, targets, mask, input_gain, render, bus, progress)
        best = state.best
        ours = (best.strips.stem_unit == strips.stem_unit).flatten(1).all(dim=1)  # best has these strips
        within = ~ours & (self.broken_promises(render, targets) <= self.broken_promises(best, targets)).all(0)
        take = needed & (within | is_closer(render, best))
        state.best_from_start = state.best_from_start | take
        state.best = closer_render(state.best, render, take)
        return bus, render.strips

    def broken_promises(self, render: FullRender, targets: Targets) -> torch.Tensor:
        """`[4, B]` which promises a render breaks: LUFS, centroid, M/S, and the limiting budget."""
        broken = scaled_errors(render.measured, targets, self.settings.promise) > 1
        return torch.cat([broken, (render.broken > len(MEASURES))[None]])

    def kept_render(self, state: SongState, render: FullRender, gave_up: bool = False) -> FullRender:
        """The closer of `state.best` and an attempt's `render` (`closer_render`), where strips that Adam
        moved replace the start's only by keeping more promises: moves that miss the same targets
        anyway change the balance and the stems' tone for nothing, and the miss is reported either
        way. A start whose refinement gave up after its first render (`refine`) is not the master's
        best and gets no such preference. Updates `state.best_from_start`."""
        if state.best is None:  # the first attempt: the start's strips
            state.best_from_start = torch.full_like(render.broken, not gave_up, dtype=torch.bool)
            return render
        best = state.best
        fewer = render.broken < best.broken
        take = fewer | (~state.best_from_start & (render.broken == best.broken) & (render.miss <= best.miss))
        state.best_from_start = state.best_from_start & ~take
        return closer_render(best, render, take)

    def settled(self, render: FullRender, targets: Targets) -> torch.Tensor:
        """`[B]` whether Adam has nothing left to do for each song: the render is within the stop
        tolerances, or only its loudness is short, with the limiter at the limiting budget (no change
        of the strips makes the song louder without more limiting)."""
        errors = scaled_errors(render.measured, targets, self.settings.stop)
        deepest = render.measured["gain_reduction"]["limiter"]["max_db"]
        at_budget = deepest >= self.chain.mastering_settings.max_limiting_db - AT_BUDGET_DB
        short = render.measured["lufs"] < targets.lufs
        return (render.miss <= 1) | (at_budget & short & (errors[1:] <= 1).all(dim=0))

    def balance_source(self, targets: Targets) -> str:
        """Where the start's balance comes from: "predicted" (the predictor's strips as they are),
        "checkpoint", "reference" or "equal_loudness" (`OptimizeSettings.balance_start`, "auto"
        resolved)."""
        start = self.settings.balance_start
        if start != "auto":
            return start
        if getattr(self.chain, "trained", False):
            return "predicted"
        if self.settings.balance_checkpoint:
            return "checkpoint"
        return "equal_loudness" if targets.spectrum_db is None else "reference"

    def song_balance_sources(self, targets: Targets) -> list[str]:
        """Per song, where its start's balance came from (`balance_source`; "equal_loudness" for a song
        without a reference spectrum where the source is "reference")."""
        source = self.balance_source(targets)
        if source != "reference":
            return [source] * targets.batch_size
        return ["reference" if known else "equal_loudness" for known in targets.has_reference.tolist()]

    def start_balance_db(self, stems, targets: Targets, mask, input_gain) -> torch.Tensor | None:
        """The balance `[B, N]` (`stem_balance_db`, dB) the start's strips are set to, or None to keep
        the predictor's: equal shares, the moves from them that match each song's reference spectrum
        (equal shares for a song without one), or what `OptimizeSettings.balance_checkpoint`'s predictor
        gives these stems (NaN where it has no balance: that stem gets the stems' mean loudness)."""
        source = self.balance_source(targets)
        if source == "predicted":
            return None
        if source == "equal_loudness" or (source == "reference" and targets.spectrum_db is None):
            return torch.zeros(stems.shape[:2], device=stems.device)
        if source == "reference":
            return self.reference_balance_db(stems, targets.spectrum_db, mask)
        path = self.settings.balance_checkpoint_path()
        balance_chain = (
            type(self.chain)
            .from_checkpoint(path, style_targets=self.chain.style_targets, sample_rate=self.sample_rate)
            .to(stems.device)
        )
        prediction = balance_chain.predict(stems, targets, mask, 0, input_gain, blockwise=True)
        return stem_balance_db(prediction.stem_lufs, mask)

    def reference_balance_db(self, stems, spectrum_db: torch.Tensor, mask) -> torch.Tensor:
        """`[B, N]` dB: each stem's move from equal loudness that brings the stems' summed long-term
        spectrum closest to the song's reference `spectrum_db` `[B, K]` (`fit_reference_balance`; 0 for
        a song whose row is NaN)."""
        lufs = integrated_loudness(stems, self.sample_rate, blockwise=True)  # [B, N]
        audible, mean = _audible_mean(lufs, mask)
        audible = audible & ~spectrum_db.isnan().all(dim=-1, keepdim=True)  # a NaN row: no reference
        shift_db = torch.where(audible, mean[:, None] - lufs, 0.0)
        at_equal_loudness = long_term_spectrum_db(stems, self.sample_rate) + shift_db[..., None]
        spread_db = self.settings.reference_balance_spread_db
        return fit_reference_balance(at_equal_loudness, spectrum_db, spread_db, audible).to(stems.device)

    def reference_strips(self, stems, targets: Targets, mask, stem_unit, stem_lufs) -> torch.Tensor | None:
        """The strips `stem_unit` `[B, N, n_stem]` with each song mixed to a reference set to the reference
        balance (`reference_balance_db`, `balanced_strips`; `stem_lufs` `[B, N]`: what these strips
        bring the stems to), the others' as they are; None where no song has a reference."""
        has_reference = targets.has_reference
        if not has_reference.any():
            return None
        balance_db = self.reference_balance_db(stems, targets.spectrum_db, mask)
        moved = self.balanced_strips(stem_unit, stem_lufs, balance_db, mask)
        return torch.where(has_reference.to(moved.device)[:, None, None], moved, stem_unit)

    def balanced_strips(
        self, stem_unit: torch.Tensor, stem_lufs: torch.Tensor, balance_db: torch.Tensor, mask=None
    ) -> torch.Tensor:
        """The strips `stem_unit` `[B, N, n_stem]` (normalised) with each audible stem's level moved so
        that the stems, which these strips bring to `stem_lufs` `[B, N]` LUFS, play at the balance
        `balance_db` `[B, N]` about their mean loudness (`moved_levels`; equal values: equal loudness).
        Silent and masked stems keep their level."""
        audible, mean = _audible_mean(stem_lufs, mask)
        known = audible & balance_db.isfinite()
        balance_db = torch.where(known, balance_db, 0.0)
        balance_db = balance_db - balance_db.sum(-1, keepdim=True) / known.sum(-1, keepdim=True).clamp_min(1)
        offset_db = torch.where(audible, mean[:, None] + torch.where(known, balance_db, 0.0) - stem_lufs, 0.0)
        return self.moved_levels(stem_unit, offset_db + self.level_room_db(stem_unit, offset_db, audible))

    def level_room_db(self, stem_unit: torch.Tensor, offset_db: torch.Tensor, audible) -> torch.Tensor:
        """`[B, 1]` dB added to every audible stem's level move `offset_db` `[B, N]` so that the moved
        levels fit the level's range where they can (split between its ends where they cannot): the
        stems' common level is the master trim's, and a clamped level would change the balance."""
        level = self.space.denormalize_stems(stem_unit)["level_db"] + offset_db
        low, high = range_bounds(self.space.stem["level_db"], level)
        over = torch.where(audible, level - high, -math.inf).amax(-1, keepdim=True).clamp_min(0.0)
        under = torch.where(audible, low - level, -math.inf).amax(-1, keepdim=True).clamp_min(0.0)
        return torch.where((over > 0) & (under > 0), (under - over) / 2, under - over)

    def moved_levels(self, stem_unit: torch.Tensor, offset_db: torch.Tensor) -> torch.Tensor:
        """The strips `stem_unit` `[B, N, n_stem]` (normalised) with each stem's level moved by `offset_db`
        `[B, N]`, within the level's range. The level is a strip's last gain: its dB are the stem's."""
        params = self.space.denormalize_stems(stem_unit)
        low, high = range_bounds(self.space.stem["level_db"], offset_db)
        params["level_db"] = (params["level_db"] + offset_db).clamp(low, high)
        return self.space.normalize_stems(params).clamp(0.0, 1.0)

    def notes(self, render: FullRender, targets: Targets) -> list[list[str]]:
        """Per song, a line for each promise (`OptimizeSettings.promise`) the render breaks."""
        budget, eq = self.settings.balance_budget_db, self.settings.eq_budget_db
        promise = self.settings.promise
        limiting_db = self.chain.mastering_settings.max_limiting_db
        deepest = render.measured["gain_reduction"]["limiter"]["max_db"]
        notes = []
        for song in range(targets.batch_size):
            lines = []
            for k, missed, measured, goal in missed_targets(render.measured, targets, promise, song):
                held = f"each stem held within {budget:g} dB of its start balance, its EQ {eq:g} dB"
                if at_limiting_budget(k, measured, goal, float(deepest[song]), limiting_db):
                    held = f"at most {limiting_db:g} dB of limiting (--max-limiting-db)"
                lines.append(f"{missed}: not reached with {held}; the closest mix is kept")
            note = limiting_note(render.measured["gain_reduction"], song, limiting_db)
            notes.append(lines + ([note] if note else []))
        return notes

    def _finish(self, stems, targets: Targets, mask, input_gain, bus=None):
        """`(mix, analysis)` of the closest render: rendered again where its audio was not kept, given the
        last trim step (`final_trim`) and the limiter's reconstruction check
        (`automix.dsp.limiter.reconstruction_limit`). `bus`: the closest render's bus, where at hand."""
        best, chain = self.state.best, self.chain
        stem_unit, stem_params, stem_lufs = best.strips
        release_freed_memory()  # as before a refinement (`refine`)
        with torch.no_grad():
            if bus is None:
                bus, stem_params, stem_lufs, _ = chain.render_bus(
                    stems, stem_unit, mask, input_gain, blockwise=True
                )
            power = bus_detector_power(bus, self.sample_rate, blockwise=True)
            if best.mix is None:
                best = dataclasses.replace(
                    self.render_full(bus, power, best.master_params, best.trim_db, targets),
                    strips=best.strips,
                )
            best = self.state.best = self.final_trim(bus, power, best, targets)
            del bus, power
            mix, peak = reconstruction_limit(best.mix, self.sample_rate, ceiling_dbtp=chain.ceiling_dbtp)
            measured = dict(best.measured)
            if mix is not best.mix:  # the check limited some peaks: measured again
                measured |= measure(mix, self.sample_rate, blockwise=True)
            measured["reconstructed_peak_dbtp"] = peak
            measured["loudness_range"] = metrics.loudness_range(mix, self.sample_rate, blockwise=True)
        analysis = {
            **measured,
            "stem_lufs": loudness_after_gain(stem_lufs, best.trim_db[:, None]),  # at the master's input
            "stem_params": stem_params,
            "master_params": best.master_params,
            "master_trim_db": best.trim_db,
            "balance_start_db": self.state.start_balance_db,
            "balance_start": self.song_balance_sources(targets),
            "balance_budget_db": self.settings.balance_budget_db,
            "notes": self.notes(best, targets),
        }
        return mix, analysis

    def refine(
        self,
        bus,
        master_params: dict,
        targets: Targets,
        trim_db,
        *,
        give_up: bool = False,
        progress: bool = False,
    ) -> Refined:
        """Corrections on the full render of a bus `[B, 2, T]`: the trim (LUFS), the width (M/S) and a master
        EQ tilt (centroid), from `master_params` and `trim_db` `[B]`, for up to `refine_steps` rounds
        after the first render. Songs within the stop tolerances are left as they are. With `give_up`, a
        first render on which some song's M/S needs a width out of range ends the refinement there, with
        the trim and width it asks for (not rendered): Adam on excerpts has to change the strips first.
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
            out_of_reach = ~done & (errors[2] > 1) & ~self._width_reaches(width.width, ms, targets)
            # Only a round that moved the trim alone tells the loudness's slope against it.
            held = None if previous is None else _held(previous, params)
            active = (~done).to(bus.dtype)
            trim.update(
                measured["lufs"], targets.lufs, active, held, measured["gain_reduction"]["limiter"]["max_db"]
            )
            # A centroid within its stop tolerance holds the tilt: a probe would only move it away.
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
        the render kept gets it once (`_finish`)."""
        mix, limiter_gain = self.chain.render_master(
            bus, master_params, trim_db, power, blockwise=True, reconstruct=False, return_gain=True
        )
        measured = measure(mix, self.sample_rate, blockwise=True)
        measured["gain_reduction"] = gain_reduction(
            limiter_gain, trimmed_power(power, trim_db), master_params, self.sample_rate
        )
        budget = self.chain.mastering_settings.max_limiting_db
        return FullRender.of(mix, master_params, trim_db, measured, targets, self.settings, budget)

    def final_trim(self, bus, power, render: FullRender, targets: Targets) -> FullRender:
        """The last loudness step on the render kept (`automix.settings.MasteringSettings`): the trim
        alone moved, by secant steps, while the limiter is past the limiting budget (down to it) or the
        loudness is more than `final_lufs_lu` but within the promise from the target (a rise never taking
        the limiter past the budget). Before a step measures them, the loudness and the limiter's
        deepest reduction are taken to move dB for dB with the trim. A song takes the new render where it
        is within the budget or closer to it, and otherwise where its loudness is closer and it breaks no
        more promises."""
        mastering, promise = self.chain.mastering_settings, self.settings.promise.lufs_lu
        budget = mastering.max_limiting_db
        lufs_slope = limiting_slope = torch.ones_like(render.trim_db)
        for _ in range(mastering.final_trim_steps):
            error = targets.lufs - render.measured["lufs"]
            deepest = render.measured["gain_reduction"]["limiter"]["max_db"]
            over = deepest > budget + BUDGET_SLACK_DB
            room = (budget - deepest) / limiting_slope  # dB of trim the budget leaves
            wanted = (error.abs() > mastering.final_lufs_lu) & (error.abs() <= promise)
            wanted &= (error < 0) | (room > BUDGET_SLACK_DB)
            active = over | wanted
            if not active.any():
                break
            step = torch.where(over, room, torch.minimum(error / lufs_slope, room.clamp_min(0)))
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
            take = active & torch.where(over, less, closer & (candidate.broken <= render.broken))
            render = closer_render(render, dataclasses.replace(candidate, strips=render.strips), take=take)
        return render

    def on_excerpts(
        self,
        stems,
        targets: Targets,
        mask,
        console: Console,
        *,
        trim_db,
        input_gain,
        pinned=None,
        hold: BalanceHold | None = None,
        eq_budget: EqBudget | None = None,
        progress=False,
    ) -> Excerpts:
        """Adam on the logits of the normalised settings against the loss on the songs' excerpts
        (`select_excerpts`), with the trim `trim_db` and input gain `input_gain` `[B]` held; stops once
        the refinement can finish every song (`refinable`).

        `pinned` `[B, 2]` (`pinned`): the full render's centroid and M/S where the refinement's tilt or
        width could not bring it to the target, else NaN; there the excerpts aim at the target times what
        they read against the full render at the start (`excerpt_aim`).

        `hold`: the balance to keep (`BalanceHold`); None holds the balance the excerpts read after the
        strips at the first step. The loss adds its cost on the balance in the mix (`stem_mix_lufs`), and
        after the last step each stem's level takes back what the last render read past the budget.
        `eq_budget`: where the strips' EQ gains may go (`EqBudget`); None: anywhere in their range.
        """
        settings, chain = self.settings, self.chain
        stem_logits = logit(console.stem_unit).detach().requires_grad_(True)
        master_logits = logit(console.master_unit).detach().requires_grad_(True)
        optimizer = torch.optim.Adam([stem_logits, master_logits], lr=settings.learning_rate)
        excerpts = select_excerpts(
            stems, self.sample_rate, settings.excerpt_s, settings.n_excerpts, settings.playing_db
        )
        batch, n_excerpts = excerpts.shape[:2]
        flat = excerpts.flatten(0, 1)
        flat_mask = None if mask is None else mask.repeat_interleave(n_excerpts, dim=0)
        flat_trim = trim_db.repeat_interleave(n_excerpts, dim=0)
        flat_gain = input_gain.repeat_interleave(n_excerpts, dim=0)
        bar = tqdm(range(settings.steps), desc="optimising mix", disable=not progress, leave=False)
        aim, steps, analysis = targets, 0, None
        with torch.enable_grad():  # Adam's own gradients, whatever the caller's grad mode
            for step in bar:
                _, analysis = chain.render(
                    flat,
                    torch.sigmoid(stem_logits).repeat_interleave(n_excerpts, dim=0),
                    torch.sigmoid(master_logits).repeat_interleave(n_excerpts, dim=0),
                    flat_mask,
                    trim_db=flat_trim,
                    join=(batch, n_excerpts),
                    input_gain=flat_gain,
                    in_mix=True,
                )
                if step == 0 and pinned is not None:
                    read = torch.stack([analysis["spectral_centroid"], analysis["stereo_ms_ratio"]], dim=-1)
                    aim = self.excerpt_aim(targets, read.detach(), pinned)
                if hold is None:
                    hold = BalanceHold(
                        stem_balance_db(analysis["stem_lufs"].detach(), mask), settings.balance_budget_db
                    )
                loss = chain.loss_fn(analysis, aim) + hold.cost(analysis["stem_mix_lufs"], mask).mean()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if self.refinable(analysis, aim, n_excerpts).all():
                    break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if eq_budget is not None:
                    eq_budget.project(stem_logits)
                steps += 1
        stem_unit = torch.sigmoid(stem_logits).detach()
        if analysis is not None:  # each stem's level takes back what the last render read past the budget
            excess_db = hold.excess_db(analysis["stem_mix_lufs"].detach(), mask)
            stem_unit = self.moved_levels(stem_unit, -excess_db)
        console = Console(stem_unit, torch.sigmoid(master_logits).detach())
        return Excerpts(console, aim, steps, hold)

    def excerpt_aim(self, targets: Targets, read: torch.Tensor, pinned: torch.Tensor) -> Targets:
        """The excerpts' targets: where the full render's centroid or M/S is pinned (`pinned` `[B, 2]`, NaN
        elsewhere), the target times what the excerpts read (`read` `[B, 2]`) over what the full render
        read, within `max_aim_ratio` either way; the target itself elsewhere."""
        floor = pinned.new_tensor([MIN_CENTROID_HZ, MIN_MS_FOR_WIDTH])
        limit = self.settings.max_aim_ratio
        ratio = (read / torch.maximum(pinned, floor)).clamp(1 / limit, limit)
        goal = torch.stack([targets.centroid_hz, targets.ms_ratio], dim=-1)
        aimed = torch.where(torch.isnan(pinned), goal, goal * ratio)
        return targets.replace(centroid_hz=aimed[:, 0], ms_ratio=aimed[:, 1])

    def pinned(self, render: FullRender, targets: Targets) -> torch.Tensor | None:
        """`[B, 2]` the full render's centroid and M/S ratio where they are off by more than the stop
        tolerances with the refinement's correction for them pinned at an end of its range (the tilt; the
        width), NaN elsewhere; None where nothing is."""
        stop, width_range = self.settings.stop, self.space.master["width"]
        width, ms = render.master_params["width"], render.measured["stereo_ms_ratio"]
        ms_pinned = (width >= width_range.high - PINNED_WIDTH) | (width <= width_range.low + PINNED_WIDTH)
        ms_pinned &= (ms - targets.ms_ratio).abs() > stop.ms_ratio
        centroid = render.measured["spectral_centroid"]
        room, _ = self._tilt_room(render.master_params["eq_gain_db"], centroid, targets)
        centroid_pinned = (room <= PINNED_TILT_DB) & (
            (centroid - targets.centroid_hz).abs() > stop.centroid_hz
        )
        pinned = torch.stack([centroid_pinned, ms_pinned], dim=-1)
        if not pinned.any():
            return None
        return torch.where(pinned, torch.stack([centroid, ms], dim=-1), torch.nan)

    def tilt_reaches(self, centroid_hz, eq_gain_db, targets: Targets) -> torch.Tensor:
        """`[B]` whether each centroid is within `handover_centroid_hz` of the target and the master EQ's
        shelves `eq_gain_db` `[B, 4]` have room left, toward the target, for the tilt that closes the gap
        at `TILT_OCTAVES_PER_DB` (twice it, for the excerpts' own error)."""
        room, octaves = self._tilt_room(eq_gain_db, centroid_hz, targets)
        needed = 2 * octaves.abs() / TILT_OCTAVES_PER_DB
        close = (centroid_hz - targets.centroid_hz).abs() <= self.settings.handover_centroid_hz
        return close & (room >= needed)

    def refinable(self, analysis, targets: Targets, n_excerpts: int) -> torch.Tensor:
        """`[B]` whether the refinement's tilt and width can bring each song's joined excerpts
        (`analysis`, its master settings per excerpt) to the targets."""
        master = {name: value[::n_excerpts].detach() for name, value in analysis["master_params"].items()}
        ms, centroid = analysis["stereo_ms_ratio"].detach(), analysis["spectral_centroid"].detach()
        width_ok = self._width_reaches(master["width"], ms, targets)
        return width_ok & self.tilt_reaches(centroid, master["eq_gain_db"], targets)

    def _width_reaches(self, width, ms_ratio, targets: Targets) -> torch.Tensor:
        """`[B]` whether the width, kept `handover_width_margin` inside its range, can scale each M/S
        ratio to the target."""
        width_range, margin = self.space.master["width"], self.settings.handover_width_margin
        needed = needed_width(width, ms_ratio, targets.ms_ratio)
        return (needed >= width_range.low + margin) & (needed <= width_range.high - margin)

    def _tilt_room(self, eq_gain_db, centroid_hz, targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        """`([B] dB, [B] octaves)`: the tilt left in the master EQ's shelves `eq_gain_db` `[B, 4]` toward
        each target centroid, and the octaves from each centroid `[B]` to it."""
        low, high = range_bounds(self.space.master["eq_gain_db"], eq_gain_db)
        low_shelf, high_shelf = eq_gain_db[:, 0], eq_gain_db[:, -1]
        room_up = 2 * torch.minimum(low_shelf - low[0], high[-1] - high_shelf)
        room_down = 2 * torch.minimum(high[0] - low_shelf, high_shelf - low[-1])
        octaves = torch.log2(targets.centroid_hz / centroid_hz.clamp_min(MIN_CENTROID_HZ))
        return torch.where(octaves > 0, room_up, room_down), octaves


def _audible_mean(lufs: torch.Tensor, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The audible stems of `lufs` `[B, N]` (above −70 LUFS, in `mask`) and their mean loudness `[B]`."""
    audible = lufs > SILENCE_LUFS
    if mask is not None:
        audible = audible & (mask > 0)
    return audible, torch.where(audible, lufs, 0.0).sum(-1) / audible.sum(-1).clamp_min(1)


def _outside_inference(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A tensor made under inference mode copied (called outside it) so that autograd may save it; any
    other returned as it is."""
    return tensor.clone() if tensor is not None and tensor.is_inference() else tensor


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
