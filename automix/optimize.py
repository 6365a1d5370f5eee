"""Per-song optimisation: the default way `AutoMixChain` sets its console (docs/design.md, *The per-song
optimiser*).

1. Start from the predictor's settings (`AutoMixChain.predict`: its bus, and its trim to the target loudness),
   its strips' balance or every stem at the same loudness (`OptimizeSettings.balance_start`).
2. Correct them on the full render (`automix.refinement.MasterRefinement`): a loudness trim before the
   master section, the M/S width (the ratio scales exactly with it) and a master EQ tilt for the centroid,
   each a small controller stepping on the full render's own measurements, until it is within tolerance.
   The trim stops rising where the limiter takes nearly all of a further dB.
3. Songs the corrections cannot finish (a width or tilt at the end of its range) get Adam on the
   normalised settings (as logits) against the loss, measured on excerpts of the song
   (`SongOptimizer.on_excerpts`), then step 2 again, for up to `attempts` rounds. Each stem's loudness
   in the mix (through the master's EQ and width) relative to the stems together stays within
   `balance_budget_db` of the start (`BalanceHold`), and each strip's EQ band within `eq_budget_db` of
   its start (`EqBudget`; by default held there: reshaping the stems against one another moves the
   balance a listener hears; `one_tone_eq_budget_db` where the stems are of one tone): the tone, width
   and loudness are reached with the master, not by burying a stem or carving it away.
4. The user gets the closest full render made: excerpts and whole songs measure differently; Adam's
   strips replace the start's only by keeping more promises (`SongOptimizer.kept_render`). A target
   still missed is said so in the analysis's `notes`, with the balance kept.
5. A render short of its loudness with the limiter at the limiting budget, or past the budget, gets its
   strips driven into their saturation, each stem's loudness kept (`SongOptimizer.louder_by_drive`):
   harmonics only where the loudness needs them.
6. Where the balance estimate loses a stem in the kept render that it finds with the master EQ flat, the
   EQ is scaled back until it finds it, each share read at the loudness asked and the width refined
   for the share kept (`MasterRefinement.keep_stems`); the centroid's miss is noted with the stems it
   spares, and a note names each stem the mix still loses (`automix.renders.FoundStems`).
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
from automix.compression import bypassed_loudness, compression_db
from automix.controllers import (
    MIN_CENTROID_HZ,
    MIN_MS_FOR_WIDTH,
    TILT_OCTAVES_PER_DB,
    BalanceHold,
    EqBudget,
    octaves_to_target,
)
from automix.dsp.console import bus_detector_power
from automix.dsp.limiter import reconstruction_limit
from automix.excerpts import select_excerpts
from automix.loudness import SILENCE_LUFS, loudness_after_gain
from automix.mastering import limiting_note, over_budget
from automix.memory import release_freed_memory
from automix.params import logit
from automix.refinement import MasterRefinement, Refined, StemsKept
from automix.renders import (
    AT_BUDGET_DB,
    CANCELS_IN_MONO,
    Console,
    FoundStems,
    FullRender,
    Strips,
    at_limiting_budget,
    broken_promises,
    cancels_in_mono,
    choose,
    closer_render,
    eq_held,
    held_by_louder_trim,
    is_closer,
    limiting_held,
    lost_note,
    missed_targets,
    scaled_errors,
)
from automix.settings import OptimiserStage, OptimizeSettings
from automix.staging import input_gain_db
from automix.start_balance import StartBalance, moved_levels
from automix.targets import Targets

# A width this close to an end of its range, or a tilt with this little room left toward the target,
# is pinned there (`SongOptimizer.pinned`).
PINNED_WIDTH = 1e-3
PINNED_TILT_DB = 0.1
# The strips' drives tried in turn where the crest factor bounds the loudness
# (`SongOptimizer.louder_by_drive`): the saturation's blend halfway, then whole.
DRIVE_STEPS = (2.0, 3.0)
DRIVE_STILL = 0.05  # a step that raises no strip's drive by more than this is not rendered
# A limiter this close to the limiting budget (dB) is at it for the drive: the refinement's trim stops
# rising a little short of the budget, where the limiter takes nearly all of a further dB.
NEAR_BUDGET_DB = 1.0


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
        one_tone: `[B]` whether a song's stems are of one tone (`SongOptimizer.one_tone`); None before
            Adam's first steps.
    """

    console: Console
    trim_db: torch.Tensor
    best: FullRender | None = None
    renders: list[FullRender] = dataclasses.field(default_factory=list)
    start_balance_db: torch.Tensor | None = None
    hold: BalanceHold | None = None
    eq_budget: EqBudget | None = None
    best_from_start: torch.Tensor | None = None
    one_tone: torch.Tensor | None = None


class SongOptimizer(OptimiserStage):
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
        super().__init__(chain, settings)
        self.refinement = MasterRefinement(chain, self.settings)
        self.start = StartBalance(chain, self.settings)
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

    @torch.no_grad()
    def start_render(self, stems: torch.Tensor, targets: Targets, mask, input_gain):
        """The start's render (an `AutoMixChain.predict` result) of stems `[B, N, 2, T]` after the input
        gain `input_gain` `[B]` dB (step 1): the predictor's strips with each song's balance set
        (`StartBalance.balance_db`) and the pans of a mono bus spread for the width. Its bus `[B, 2, T]`
        is the strips' sum before the master."""
        chain = self.chain
        # The refinement corrects the loudness on its own renders: no search renders before it.
        prediction = chain.predict(
            stems, targets, mask, loudness_steps=0, input_gain=input_gain, blockwise=True
        )
        balance_db = self.start.balance_db(stems, targets, mask, input_gain)
        if balance_db is not None:
            start = self.start.balanced_strips(prediction.stem_unit, prediction.stem_lufs, balance_db, mask)
            prediction = None  # its bus freed before the next
            prediction = chain.predict(stems, targets, mask, 0, input_gain, stem_unit=start, blockwise=True)
        panned = self.start.panned_for_width(stems, prediction, targets, input_gain, mask)
        if panned is not None:
            prediction = None  # its bus freed before the next
            prediction = chain.predict(stems, targets, mask, 0, input_gain, stem_unit=panned, blockwise=True)
        return prediction

    def _optimise(self, stems: torch.Tensor, targets: Targets, mask, progress: bool):
        """`__call__` on stems, targets and mask made outside inference mode."""
        settings, chain = self.settings, self.chain
        with torch.no_grad():
            # No full-length render needs a gradient: a long song goes through them a block at a time.
            input_gain = input_gain_db(stems, self.sample_rate, mask, blockwise=True)
            prediction = self.start_render(stems, targets, mask, input_gain)
        state = self.state = SongState(
            Console(prediction.stem_unit, prediction.master_unit), prediction.trim_db
        )
        given_up = None  # the start's strips and refinement, where it gave up for Adam
        state.start_balance_db = stem_balance_db(prediction.stem_lufs, mask)
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
                refined = self.refinement.refine(
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
            state.best = self.kept_render(state, render, targets, refined.gave_up)
            if attempt == 0 and adam_follows:  # `kept_render` and the strips' EQ budget ask it
                state.one_tone = self.one_tone(stems, mask).to(render.broken.device)
                eq_budget_db = torch.where(
                    state.one_tone, settings.one_tone_eq_budget_db, settings.eq_budget_db
                )
                state.eq_budget = EqBudget(self.space, strips.stem_unit, eq_budget_db)
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
            stem_unit = moved_levels(
                self.space, stem_unit, torch.where(audible, kept - driven.stem_lufs, 0.0)
            )
            driven = None  # one driven bus in memory at a time
            driven = self.chain.render_bus(stems, stem_unit, mask, input_gain, blockwise=True)
            strips = Strips(stem_unit, driven.stem_params, driven.stem_lufs)
            refined = self.refinement.refine(
                driven.bus, render.master_params, targets, render.trim_db, progress=progress
            )
            candidate = dataclasses.replace(refined.render, strips=strips)
            if self.state is not None:  # predict mode drives without an optimisation to record
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
        refined = self.refinement.refine(bus, start.master_params, targets, start.trim_db, progress=progress)
        render = dataclasses.replace(refined.render, strips=strips)
        state.renders.append(render.without_audio())
        render, bus = self.louder_by_drive(stems, targets, mask, input_gain, render, bus, progress)
        best = state.best
        ours = (best.strips.stem_unit == strips.stem_unit).flatten(1).all(dim=1)  # best has these strips
        promise = self.settings.promise
        no_more = broken_promises(render, targets, promise) <= broken_promises(best, targets, promise)
        within = ~ours & no_more.all(0)
        take = needed & (within | is_closer(render, best))
        state.best_from_start = state.best_from_start | take
        state.best = closer_render(state.best, render, take)
        return bus, render.strips

    def kept_render(
        self, state: SongState, render: FullRender, targets: Targets, gave_up: bool = False
    ) -> FullRender:
        """The closer of `state.best` and an attempt's `render` (`closer_render`), where strips that Adam
        moved replace the start's only by keeping more promises: moves that miss the same targets
        anyway change the balance and the stems' tone for nothing, and the miss is reported either
        way. Where the start misses the centroid by more than `strip_tone_octaves`, past the master's
        reach, that miss is reported whoever keeps it: Adam's strips replace the start's only by keeping
        more of the other promises (reaching a far tone by the strips reshapes the stems against one
        another), unless the stems are of one tone (`one_tone`). A start whose
        refinement gave up after its first render (`MasterRefinement.refine`) is not the master's best
        and gets no such preference. Updates `state.best_from_start`."""
        if state.best is None:  # the first attempt: the start's strips
            state.best_from_start = torch.full_like(render.broken, not gave_up, dtype=torch.bool)
            return render
        best = state.best
        broken, best_broken = render.broken, best.broken
        far = state.best_from_start & self.far_tone(best, targets)
        if state.one_tone is not None:
            far = far & ~state.one_tone.to(far.device)
        if far.any():
            promise = self.settings.promise
            broken = broken - (far & broken_promises(render, targets, promise)[1]).to(broken.dtype)
            best_broken = best_broken - (far & broken_promises(best, targets, promise)[1]).to(broken.dtype)
        fewer = broken < best_broken
        take = fewer | (~state.best_from_start & (render.broken == best.broken) & (render.miss <= best.miss))
        state.best_from_start = state.best_from_start & ~take
        return closer_render(best, render, take)

    @torch.no_grad()
    def one_tone(self, stems, mask=None) -> torch.Tensor:
        """`[B]` whether each song's audible stems have their centroids (`metrics.spectral_centroid`, on
        the excerpts Adam measures) within `strip_tone_octaves` of one another: stems of one tone
        (noise of one colour, one instrument), whose balance no reshaping of them all changes."""
        settings = self.settings
        excerpts = select_excerpts(
            stems, self.sample_rate, settings.excerpt_s, settings.n_excerpts, settings.playing_db
        )  # [B, K, N, 2, L]
        joined = excerpts.permute(0, 2, 3, 1, 4).flatten(-2)  # [B, N, 2, K·L]
        centroid_hz = metrics.spectral_centroid(joined, self.sample_rate)  # [B, N]
        audible = centroid_hz > 0
        if mask is not None:
            audible = audible & (mask > 0)
        log_hz = torch.log2(centroid_hz.clamp_min(MIN_CENTROID_HZ))
        highest = torch.where(audible, log_hz, -math.inf).amax(-1)
        span = highest - torch.where(audible, log_hz, math.inf).amin(-1)
        return ~(span > settings.strip_tone_octaves)  # a song with one audible stem (span -inf) too

    def far_tone(self, render: FullRender, targets: Targets) -> torch.Tensor:
        """`[B]` whether a render's centroid is more than `strip_tone_octaves` from its target."""
        octaves = octaves_to_target(render.measured["spectral_centroid"], targets.centroid_hz)
        return octaves.abs() > self.settings.strip_tone_octaves

    def settled(self, render: FullRender, targets: Targets) -> torch.Tensor:
        """`[B]` whether Adam has nothing left to do for each song: the render is within the stop
        tolerances, or only its loudness is short, with the limiter at the limiting budget (no change
        of the strips makes the song louder without more limiting)."""
        errors = scaled_errors(render.measured, targets, self.settings.stop)
        deepest = render.measured["gain_reduction"]["limiter"]["max_db"]
        at_budget = deepest >= self.chain.mastering_settings.max_limiting_db - AT_BUDGET_DB
        short = render.measured["lufs"] < targets.lufs
        return (render.miss <= 1) | (at_budget & short & (errors[1:] <= 1).all(dim=0))

    def notes(
        self,
        render: FullRender,
        targets: Targets,
        louder_breaks=None,
        lost=None,
        kept: StemsKept | None = None,
    ) -> list[list[str]]:
        """Per song, a line for each promise (`OptimizeSettings.promise`) the render breaks, with what held
        it: the limiting budget, a louder trim breaking another promise (`louder_breaks` `[4, B]`, the
        last trim step's `FinalTrim`), the stems a fuller master EQ loses (`kept`,
        `MasterRefinement.keep_stems`), or the stems' balance and EQ budgets; and a line naming the stems
        the mix loses (`lost` `[B, N]` bool, `automix.renders.FoundStems`)."""
        budget = self.settings.balance_budget_db
        eq_budget = None if self.state is None else self.state.eq_budget
        promise = self.settings.promise
        limiting_db = self.chain.mastering_settings.max_limiting_db
        deepest = render.measured["gain_reduction"]["limiter"]["max_db"]
        notes = []
        for song in range(targets.batch_size):
            lines = []
            for k, missed, measured, goal in missed_targets(render.measured, targets, promise, song):
                held = f"not reached with each stem held within {budget:g} dB of its start balance"
                if eq_budget is not None:
                    eq_db = float(eq_budget.budget_db[song])
                    held += f", its EQ {eq_db:g} dB" if eq_db > 0 else ", its EQ held"
                if at_limiting_budget(k, measured, goal, float(deepest[song]), limiting_db):
                    held = limiting_held(limiting_db)
                if k == 0 and measured < goal:
                    held = held_by_louder_trim(louder_breaks, song, limiting_db) or held
                if cancels_in_mono(k, measured, goal):
                    held = CANCELS_IN_MONO
                if k == 1 and kept is not None and kept.eq_share[song] < 1:
                    held = eq_held(kept.spared[song], float(kept.eq_share[song]))
                lines.append(f"{missed}: {held}; the closest mix is kept")
            note = limiting_note(render.measured["gain_reduction"], song, limiting_db)
            missing = None if lost is None else lost_note(lost[song])
            notes.append(lines + [line for line in (note, missing) if line])
        return notes

    def _finish(self, stems, targets: Targets, mask, input_gain, bus=None):
        """`(mix, analysis)` of the closest render: rendered again where its audio was not kept, given the
        last trim step (`final_trim`) and the limiter's reconstruction check
        (`automix.dsp.limiter.reconstruction_limit`). `bus`: the closest render's bus, where at hand."""
        best, chain = self.state.best, self.chain
        stem_unit, stem_params, stem_lufs = best.strips
        release_freed_memory()  # as before a refinement (`MasterRefinement.refine`)
        with torch.no_grad():
            if bus is None:
                bus, stem_params, stem_lufs, _ = chain.render_bus(
                    stems, stem_unit, mask, input_gain, blockwise=True
                )
            power = bus_detector_power(bus, self.sample_rate, blockwise=True)
            if best.mix is None:
                best = dataclasses.replace(
                    self.refinement.render_full(bus, power, best.master_params, best.trim_db, targets),
                    strips=best.strips,
                )
            found = FoundStems(stems, stem_params, self.sample_rate, mask)
            trimmed = self.refinement.final_trim(bus, power, best, targets)
            kept = self.refinement.keep_stems(bus, power, trimmed, found, targets)
            best, louder_breaks = kept.trimmed
            self.state.best = best
            del bus, power
            mix, peak = reconstruction_limit(best.mix, self.sample_rate, ceiling_dbtp=chain.ceiling_dbtp)
            # the kept render's read holds where neither the scale-back nor the check changed its audio
            lost = kept.lost if kept.lost is not None and mix is best.mix else found.lost(mix)
            measured = dict(best.measured)
            if mix is not best.mix:  # the check limited some peaks: measured again
                measured |= measure(mix, self.sample_rate, blockwise=True)
            measured["reconstructed_peak_dbtp"] = peak
            measured["loudness_range"] = metrics.loudness_range(mix, self.sample_rate, blockwise=True)
        bypassed = bypassed_loudness(chain, stems, stem_params, stem_lufs, mask, blockwise=True)
        analysis = {
            **measured,
            "stem_lufs": loudness_after_gain(stem_lufs, best.trim_db[:, None]),  # at the master's input
            "stem_params": stem_params,
            "strip_compression_db": compression_db(bypassed, stem_lufs),
            "master_params": best.master_params,
            "master_trim_db": best.trim_db,
            "balance_start_db": self.state.start_balance_db,
            "balance_start": self.start.song_balance_sources(targets),
            "balance_budget_db": self.settings.balance_budget_db,
            "notes": self.notes(best, targets, louder_breaks, lost, kept),
        }
        return mix, analysis

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
            stem_unit = moved_levels(self.space, stem_unit, -excess_db)
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
        room, _ = self.refinement.tilt_room(render.master_params["eq_gain_db"], centroid, targets)
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
        room, octaves = self.refinement.tilt_room(eq_gain_db, centroid_hz, targets)
        needed = 2 * octaves.abs() / TILT_OCTAVES_PER_DB
        close = (centroid_hz - targets.centroid_hz).abs() <= self.settings.handover_centroid_hz
        return close & (room >= needed)

    def refinable(self, analysis, targets: Targets, n_excerpts: int) -> torch.Tensor:
        """`[B]` whether the refinement's tilt and width can bring each song's joined excerpts
        (`analysis`, its master settings per excerpt) to the targets."""
        master = {name: value[::n_excerpts].detach() for name, value in analysis["master_params"].items()}
        ms, centroid = analysis["stereo_ms_ratio"].detach(), analysis["spectral_centroid"].detach()
        width_ok = self.refinement.width_reaches(master["width"], ms, targets)
        return width_ok & self.tilt_reaches(centroid, master["eq_gain_db"], targets)


def _outside_inference(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A tensor made under inference mode copied (called outside it) so that autograd may save it; any
    other returned as it is."""
    return tensor.clone() if tensor is not None and tensor.is_inference() else tensor
