"""Predict mode as a user gets it (`chain(..., mode="predict")`, `mix.py --mode predict`; docs/design.md,
*Predictor*): one pass of the predictor, a song mixed to a reference set to the reference's balance, the
master corrected on full renders, the strips driven where the crest factor bounds the loudness, pans
spread where no width reaches the M/S, and a note for each promise still broken. Training judges the
predictor's pass alone (`AutoMixChain.predict`, `finish_prediction`).
"""

import dataclasses

import torch

from automix import panning
from automix.balance import stem_balance_db
from automix.compression import bypassed_loudness, compression_db, raised_thresholds
from automix.controllers import MIN_MS_FOR_WIDTH
from automix.dsp.console import bus_detector_power
from automix.mastering import BUDGET_SLACK_DB, limiting_note
from automix.optimize import SongOptimizer
from automix.refinement import FinalTrim, MasterRefinement
from automix.renders import (
    CANCELS_IN_MONO,
    FoundStems,
    FullRender,
    Strips,
    at_limiting_budget,
    cancels_in_mono,
    choose,
    held_by_louder_trim,
    is_closer,
    limiting_held,
    lost_note,
    lost_stems,
    missed_targets,
)
from automix.staging import input_gain_db
from automix.start_balance import StartBalance
from automix.targets import Targets

# A strip's compression counts as within its budget this close to it; a threshold raised from the static
# curve can leave a compressor over it (the knee, what plays under the threshold): rendered again at most
# this many times.
COMPRESSION_SLACK_DB = 0.5
COMPRESSION_ROUNDS = 3
# A song still short of the M/S promise after its pans are spread is spread again from its new render,
# whose M/S says what the strips' EQ, compressors and drive make of the pans: at most this many spreads.
PAN_ROUNDS = 2


class PredictMode:
    """Predict mode on a chain (an `AutoMixChain`), with its `predict_settings`.

    Example::

        mix, analysis = PredictMode(chain)(stems, targets)  # stems [B, N, 2, T]
    """

    def __init__(self, chain):
        self.chain = chain
        self.settings = chain.predict_settings

    def __call__(self, stems, targets: Targets, mask=None, *, blockwise: bool = False):
        """`(mix [B, 2, T], analysis)` for stems `[B, N, 2, T]`: `corrected`, then the chain's
        `finish_prediction`; the analysis adds `balance_start` (where each song's balance came from)
        and, for a mix a user gets (no gradient recorded), its `notes`."""
        prediction, sources, compression, louder_breaks = self.corrected(
            stems, targets, mask, blockwise=blockwise
        )
        mix, analysis = self.chain.finish_prediction(prediction, mask, blockwise=blockwise)
        analysis["balance_start"] = sources
        analysis["strip_compression_db"] = compression
        if "gain_reduction" in analysis:
            lost = lost_stems(stems, analysis["stem_params"], mix, self.chain.sample_rate, mask)
            analysis["notes"] = [
                self.notes(analysis, targets, song, louder_breaks, lost) for song in range(mix.shape[0])
            ]
        return mix, analysis

    def balanced(
        self, stems, targets: Targets, mask=None, loudness_steps=None, input_gain=None, *, blockwise=False
    ):
        """`AutoMixChain.predict`, with each song's balance taken where `PredictSettings` says: a song
        mixed to a reference, where `balance` is "auto", gets the default mode's reference start
        (neutral strips with each stem's level set by `StartBalance.reference_strips`, and a neutral
        master for `refine_master` to correct); a song mixed to a style, where `style_balance` is
        "equal_loudness", gets the predicted strips with each stem's level moved to equal loudness.
        `(prediction, where each song's balance came from)`: "reference", "equal_loudness" or
        "predicted". `loudness_steps`: the last pass's loudness search (`predict`'s). `input_gain` `[B]`
        dB: both passes' (None: `input_gain_db` of the stems)."""
        chain, settings = self.chain, self.settings
        if input_gain is None:
            input_gain = input_gain_db(stems, chain.sample_rate, mask, blockwise=blockwise)
        has_reference = targets.has_reference.to(stems.device)
        to_reference = has_reference & (settings.balance == "auto")
        to_equal = ~has_reference & (settings.style_balance == "equal_loudness")
        sources = [
            "reference" if reference else "equal_loudness" if equal else "predicted"
            for reference, equal in zip(to_reference.tolist(), to_equal.tolist(), strict=True)
        ]
        if not (to_reference.any() or to_equal.any()):
            prediction = chain.predict(stems, targets, mask, loudness_steps, input_gain, blockwise=blockwise)
            return prediction, sources
        # At a reference's balance each of the predictor's settings took the mix further from the producers'
        # than neutral ones (docs/benchmarks.md, *Predict mode with a reference*): its compressors left the
        # bus peaky, its strip EQ reshaped tracks until a gain-per-track reading lost them, its pans leaned
        # the mix, its master EQ coloured it. Those songs get the default mode's reference start.
        strips, _ = chain.space.neutral_unit(stems.shape[1], stems.dtype, stems.device)
        strips = strips.expand(stems.shape[0], -1, -1)
        if not to_reference.all():  # the other songs' strips are the predictor's (the first pass's)
            predicted = chain.predict(stems, targets, mask, 0, input_gain, blockwise=blockwise).stem_unit
            strips = torch.where(to_reference[:, None, None], strips, predicted)
        _, _, stem_lufs, _ = chain.render_bus(stems, strips, mask, input_gain, blockwise=blockwise)
        start = StartBalance(chain)
        balanced = strips
        if to_reference.any():
            moved = start.reference_strips(stems, targets, mask, strips, stem_lufs)
            balanced = torch.where(to_reference[:, None, None], moved, balanced)
        if to_equal.any():
            equal = start.balanced_strips(strips, stem_lufs, torch.zeros_like(stem_lufs), mask)
            balanced = torch.where(to_equal[:, None, None], equal, balanced)
        prediction = chain.predict(
            stems,
            targets,
            mask,
            loudness_steps,
            input_gain,
            stem_unit=balanced,
            neutral_master=to_reference,
            blockwise=blockwise,
        )
        return prediction, sources

    def corrected(self, stems, targets: Targets, mask=None, *, blockwise: bool = False):
        """`balanced`, `compression_budgeted`, then `refine_master`, `driven` and `spread_where_narrow`
        (a song whose refined mix still falls short of the M/S promise, the width at the end of its range,
        gets its pans spread). `(prediction, where each song's balance came from, [B, N] dB each strip's
        compressor takes from its stem in the strips kept, the last trim step's `louder_breaks` [4, B] or
        None where the master is not refined)`."""
        chain = self.chain
        refine = self.settings.refine  # the refinement corrects the loudness: no search first
        input_gain = input_gain_db(stems, chain.sample_rate, mask, blockwise=blockwise)
        steps = 0 if refine else None
        prediction, sources = self.balanced(stems, targets, mask, steps, input_gain, blockwise=blockwise)
        at_reference = torch.tensor([source == "reference" for source in sources], device=stems.device)
        prediction, compression = self.compression_budgeted(
            stems, targets, mask, prediction, at_reference, steps, input_gain, blockwise=blockwise
        )
        if not refine:
            return prediction, sources, compression, None
        measured_unit = prediction.stem_unit.detach()  # the strips `compression` was read on
        prediction, trimmed = self.refine_master(prediction, targets)
        prediction, trimmed = self.driven(stems, targets, mask, prediction, trimmed, input_gain)
        prediction, trimmed = self.spread_where_narrow(
            stems, targets, mask, prediction, trimmed, at_reference, input_gain, blockwise=blockwise
        )
        if not torch.equal(prediction.stem_unit.detach(), measured_unit):  # driven or spread since
            bypassed = bypassed_loudness(
                chain, stems, prediction.stem_params, prediction.stem_lufs, mask, blockwise=blockwise
            )
            compression = compression_db(bypassed, prediction.stem_lufs)
        return prediction, sources, compression, trimmed.louder_breaks

    def spread_where_narrow(
        self,
        stems,
        targets: Targets,
        mask,
        prediction,
        trimmed: FinalTrim,
        at_reference,
        input_gain,
        *,
        blockwise=False,
    ):
        """`(prediction, FinalTrim)` with the pans of each song whose corrected render `trimmed` falls
        short of the M/S promise spread (`panned_for_width`), the song predicted (its master too, but at
        the reference start `at_reference` `[B]` bool), refined and driven again, at most `PAN_ROUNDS`
        times; a spread render is taken where it is the closer render (`automix.renders.is_closer`) and
        the balance estimate finds every stem in it that it found before (`FoundStems`)."""
        chain = self.chain
        declined = torch.zeros_like(at_reference)  # songs whose spread was not taken
        for _ in range(PAN_ROUNDS):
            kept = trimmed.render
            measured = kept.measured["stereo_ms_ratio"]
            narrow = ~declined & (measured < targets.ms_ratio - chain.optimize_settings.promise.ms_ratio)
            if not narrow.any():
                break
            strips = self.panned_for_width(stems, prediction, targets, kept, narrow, input_gain, mask)
            if torch.allclose(strips, prediction.stem_unit.detach(), rtol=0.0, atol=1e-6):
                break  # at the widest spread already
            spread = chain.predict(
                stems,
                targets,
                mask,
                0,
                input_gain,
                stem_unit=strips,
                neutral_master=at_reference,
                blockwise=blockwise,
            )
            spread, spread_trim = self.refine_master(spread, targets)
            spread, spread_trim = self.driven(stems, targets, mask, spread, spread_trim, input_gain)
            # kept where it keeps more promises, or misses by less (spread pans can carry a loud stem's
            # peaks in one channel, which the limiting budget then holds under the loudness), and where
            # the balance estimate finds every stem it found before
            take = narrow & is_closer(spread_trim.render, trimmed.render)
            if take.any():
                take = take & ~self.loses_stems(stems, mask, prediction, trimmed, spread, spread_trim)
            declined |= narrow & ~take
            prediction = choose(take, spread, prediction)
            trimmed = trimmed.taken(spread_trim, take)
        return prediction, trimmed

    def loses_stems(self, stems, mask, prediction, trimmed: FinalTrim, spread, spread_trim: FinalTrim):
        """`[B]` bool: whether the balance estimate loses a stem in the render `spread_trim` (of the strips
        `spread`) that it finds in `trimmed` (of `prediction`'s), the stems read at their strips' levels
        (`FoundStems`)."""
        sample_rate = self.chain.sample_rate
        before = FoundStems(stems, prediction.stem_params, sample_rate, mask)
        after = before  # measured again where a drive moved the levels
        if not torch.equal(spread.stem_params["level_db"], prediction.stem_params["level_db"]):
            after = FoundStems(stems, spread.stem_params, sample_rate, mask)
        lost = after.lost(spread_trim.render.mix) & ~before.lost(trimmed.render.mix)
        return lost.any(dim=-1).to(stems.device)

    def compression_budgeted(
        self, stems, targets: Targets, mask, prediction, neutral_master, steps, input_gain, *, blockwise=False
    ):
        """`prediction` with each strip's compressor within `PredictSettings.max_strip_compression_db`
        (`automix.compression`): those that take more get their thresholds raised (again where a
        render shows one still over, at most `COMPRESSION_ROUNDS` renders), the levels moved back to the
        predicted balance (`StartBalance.balanced_strips`), and the song predicted again on these
        strips (`neutral_master` `[B]` bool and `steps` as `AutoMixChain.predict`'s). To the gradient
        the change is a constant. `(prediction, [B, N] dB each compressor takes from its stem)`."""
        chain, budget = self.chain, self.settings.max_strip_compression_db
        bypassed = bypassed_loudness(
            chain, stems, prediction.stem_params, prediction.stem_lufs, mask, blockwise=blockwise
        )
        taken = compression_db(bypassed, prediction.stem_lufs)
        if budget is None or not (taken > budget + COMPRESSION_SLACK_DB).any():
            return prediction, taken
        strips, lufs = prediction.stem_unit.detach(), prediction.stem_lufs.detach()
        with torch.no_grad():
            for _ in range(COMPRESSION_ROUNDS):
                strips = raised_thresholds(chain.space, strips, taken, budget)
                _, _, lufs, _ = chain.render_bus(stems, strips, mask, input_gain, blockwise=blockwise)
                taken = compression_db(bypassed, lufs)
                if not (taken > budget + COMPRESSION_SLACK_DB).any():
                    break
            balance_db = stem_balance_db(prediction.stem_lufs.detach(), mask)
            strips = StartBalance(chain).balanced_strips(strips, lufs, balance_db, mask)
        unit = prediction.stem_unit + (strips - prediction.stem_unit.detach())
        prediction = chain.predict(
            stems,
            targets,
            mask,
            steps,
            input_gain,
            stem_unit=unit,
            neutral_master=neutral_master,
            blockwise=blockwise,
        )
        return prediction, taken

    def driven(self, stems, targets: Targets, mask, prediction, trimmed: FinalTrim, input_gain):
        """`(prediction, FinalTrim)`, with the strips driven into their saturation where the crest
        factor keeps the corrected render `trimmed` from its loudness within the limiting budget, as the
        default mode drives its own (`SongOptimizer.louder_by_drive`: each stem's loudness kept, the
        master refined on the driven bus), then the last trim step on the drive's render
        (`refine_master`). To the gradient the drive is a constant."""
        chain = self.chain
        strips = Strips(prediction.stem_unit.detach(), prediction.stem_params, prediction.stem_lufs.detach())
        render = dataclasses.replace(trimmed.render, strips=strips)
        driven, _ = SongOptimizer(chain).louder_by_drive(
            stems, targets, mask, input_gain, render, prediction.bus.detach()
        )
        if driven.strips.stem_unit is strips.stem_unit:
            return prediction, trimmed
        unit = prediction.stem_unit + (driven.strips.stem_unit - strips.stem_unit)
        prediction = chain.predict(stems, targets, mask, 0, input_gain, stem_unit=unit, blockwise=True)
        return self.refine_master(prediction, targets, refined=driven)  # the drive's master, refined

    def panned_for_width(
        self, stems, prediction, targets: Targets, kept: FullRender, songs, input_gain, mask=None
    ):
        """The predicted strips `[B, N, n_stem]` with the pans of `songs` `[B]` bool spread
        (`automix.panning`) so that the refined render `kept` would reach the target M/S ratio at the
        width `handover_width_margin` inside the top of its range; the other songs' as predicted.
        The bus's ratio at any pans is read through strips neutral but for their level (exact at the
        reference start; for the predictor's strips, what their EQ and compressors make of it is read
        off `kept`, as the master's part is). `input_gain` `[B]` dB: the strips' input gain."""
        space = self.chain.space
        params = space.denormalize_stems(prediction.stem_unit.detach())
        image = panning.stereo_image(
            stems, self.chain.sample_rate, params["level_db"], prediction.stem_lufs.detach(), input_gain, mask
        )
        # The mix's M/S ratio is the bus's times the width (`automix.dsp.stereo.stereo_width`), and times
        # what the master's EQ makes of it, read off the render kept where it has side signal to read.
        widest = space.master["width"].high - self.chain.optimize_settings.handover_width_margin
        bus_ms = image.ms_ratio(params["pan"])
        measured = kept.measured["stereo_ms_ratio"].double()
        readable = (measured >= MIN_MS_FOR_WIDTH) & (bus_ms >= MIN_MS_FOR_WIDTH)
        master_factor = torch.where(readable, measured / (kept.master_params["width"] * bus_ms), 1.0)
        pans = image.spread(params["pan"], targets.ms_ratio / (widest * master_factor))
        params["pan"] = torch.where(songs[:, None], pans, params["pan"])
        return space.normalize_stems(params).clamp(0.0, 1.0)

    def refine_master(self, prediction, targets: Targets, refined: FullRender | None = None):
        """The predicted master corrected toward the targets on full renders of the predicted bus, as
        the default mode corrects its own (`MasterRefinement.refine`: the trim, the master EQ's tilt and
        the width, then `MasterRefinement.final_trim`); the strips stay as predicted. `refined`: a
        render of this bus already refined (the drive's), which only the last trim step corrects. To the
        gradient the correction is a constant, as the loudness search's is: the mix is the same in any
        grad mode. `(prediction, the last trim step's FinalTrim: the render kept and what a louder trim
        broke)`."""
        chain = self.chain
        refinement, bus = MasterRefinement(chain), prediction.bus.detach()
        with torch.no_grad():
            if refined is None:
                params = chain.space.denormalize_master(prediction.master_unit)
                refined = refinement.refine(bus, params, targets, prediction.trim_db.detach()).render
            power = bus_detector_power(bus, chain.sample_rate, blockwise=True)
            trimmed = refinement.final_trim(bus, power, refined, targets)  # as the default mode's
            kept = trimmed.render
            unit = chain.space.normalize_master(kept.master_params).clamp(0, 1)
        p = prediction
        corrected = p._replace(
            master_unit=p.master_unit + (unit - p.master_unit.detach()),
            trim_db=p.trim_db + (kept.trim_db - p.trim_db.detach()),
            mix=None,  # the render kept is the master's again (`AutoMixChain.finish_prediction`)
            mix_lufs=None,
        )
        return corrected, trimmed

    def notes(self, analysis: dict, targets: Targets, song: int, louder_breaks=None, lost=None) -> list[str]:
        """The notes for one song of a batch: the trim held by the limiting budget, each promise
        (`OptimizeSettings.promise`) the mix breaks, with what held a short loudness where the last trim
        step tried louder (`louder_breaks` `[4, B]`, `FinalTrim`'s), heavy limiting, and the stems the mix
        loses (`lost` `[B, N]` bool, `automix.renders.lost_stems`)."""
        chain = self.chain
        budget = chain.mastering_settings.max_limiting_db
        lowered = float(analysis["limited_trim_db"][song])
        deepest = float(analysis["gain_reduction"]["limiter"]["max_db"][song])
        reach = "the master's trim, tilt and width corrected"
        if not self.settings.refine:
            reach = "the master as predicted"
        notes = []
        if lowered > BUDGET_SLACK_DB:
            notes.append(
                f"loudness {float(analysis['lufs'][song]):.1f} LUFS for a target of "
                f"{float(targets.lufs[song]):.1f} LUFS: the trim held {lowered:.1f} dB lower to keep "
                f"the limiter within {budget:g} dB (--max-limiting-db)"
            )
        promise = chain.optimize_settings.promise
        for k, missed, value, goal in missed_targets(analysis, targets, promise, song):
            if k == 0 and value < goal and lowered > BUDGET_SLACK_DB:
                continue  # noted above
            louder = held_by_louder_trim(louder_breaks, song, budget) if k == 0 and value < goal else None
            if louder is not None:
                notes.append(f"{missed}: {louder}")
            elif at_limiting_budget(k, value, goal, deepest, budget):
                notes.append(f"{missed}: {limiting_held(budget)}")
            elif cancels_in_mono(k, value, goal):
                notes.append(f"{missed}: {CANCELS_IN_MONO}")
            else:
                notes.append(
                    f"{missed}: not reached in predict mode ({reach}); "
                    "the default mode (--mode optimize) also moves the strips"
                )
        note = limiting_note(analysis["gain_reduction"], song, budget)
        missing = None if lost is None else lost_note(lost[song])
        return notes + [line for line in (note, missing) if line]
