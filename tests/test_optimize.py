"""The per-song optimiser (`automix.optimize.SongOptimizer`) through its public methods: the refinement's
controllers on full renders, Adam's handover and aim, the closest render kept, and its settings file."""

import dataclasses
import itertools
import math
from typing import NamedTuple

import pyloudnorm
import pytest
import torch

from automix import AutoMixChain
from automix.analysis import measure
from automix.balance import balance_error_db, stem_balance_db
from automix.cli.mix import DEFAULT_CHECKPOINT
from automix.controllers import EqBudget, TiltController
from automix.dsp.console import bus_detector_power
from automix.errors import AutomixError
from automix.excerpts import select_excerpts
from automix.metrics import band_energy, spectral_centroid, stereo_ms_ratio
from automix.optimize import DRIVE_STEPS, Excerpts, SongOptimizer, SongState
from automix.predict_mode import PredictMode
from automix.refinement import STILL_DB, STILL_WIDTH, MasterRefinement
from automix.renders import Console, FoundStems, FullRender, Strips, closer_render, lost_stems
from automix.settings import MIX_CONFIG, MixSettings, OptimizeSettings, load_mix_settings
from automix.styles import style_from_reference
from automix.synth import pink_noise, synth_stems, white_noise
from automix.targets import Targets, resolve_targets
from automix.trim import MAX_TRIM_DB, MIN_LOUDNESS_SLOPE, MIN_USEFUL_SLOPE

SAMPLE_RATE = 44100
NAN = float("nan")


@pytest.fixture(scope="module")
def chain():
    return AutoMixChain(n_stems=4, sample_rate=SAMPLE_RATE)


def targets_of(*rows) -> Targets:
    """Targets of songs given as (lufs, centroid_hz, ms_ratio), no band balance."""
    return Targets.from_tensor(torch.tensor([[*row, NAN, NAN, NAN] for row in rows]))


def dense_noise(seed: int, level: float) -> torch.Tensor:
    return torch.randn(1, 2, 4 * SAMPLE_RATE, generator=torch.Generator().manual_seed(seed)) * level


def test_the_defaults_equal_conf_mix_yaml_and_a_config_overrides_them(tmp_path):
    assert load_mix_settings() == MixSettings()
    override = tmp_path / "fast.yaml"
    override.write_text("optimize:\n  steps: 5\n  stop: {lufs_lu: 0.1}\n")
    settings = load_mix_settings(override)
    assert settings.optimize.steps == 5 and settings.optimize.stop.lufs_lu == 0.1
    assert settings.optimize.stop.centroid_hz == OptimizeSettings().stop.centroid_hz
    assert settings.predict == MixSettings().predict
    assert MIX_CONFIG.is_file()
    unlimited = tmp_path / "unlimited.yaml"
    unlimited.write_text("predict:\n  max_strip_compression_db: null\n")
    assert load_mix_settings(unlimited).predict.max_strip_compression_db is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimize:\n  stepz: 5\n", r"optimize\.stepz: unknown setting"),
        ("optimize:\n  steps: 2.5\n", r"optimize\.steps: expected a whole number"),
        ("optimize:\n  learning_rate: fast\n", r"optimize\.learning_rate: expected a finite number"),
        ("optimize:\n  stop: {lufs: 0.1}\n", r"optimize\.stop\.lufs: unknown"),
        ("optimize:\n  balance_start: loudest\n", r"optimize\.balance_start: expected one of"),
        ("optimize:\n  balance_checkpoint: 3\n", r"optimize\.balance_checkpoint: expected a checkpoint path"),
        (
            "optimize:\n  balance_start: checkpoint\n  balance_checkpoint: null\n",
            r"balance_start: checkpoint needs a balance_checkpoint",
        ),
        ("optimize:\n  balance_checkpoint_share: 1.5\n", r"balance_checkpoint_share must be within 0\.\.1"),
        ("predict:\n  refine: 1\n", r"predict\.refine: expected true or false"),
        ("predict:\n  style_balance: reference\n", r"predict\.style_balance: expected one of"),
        ("predict:\n  max_strip_compression_db: -2\n", r"max_strip_compression_db: must be >= 0"),
        ("predict:\n  max_strip_compression_db: lots\n", r"max_strip_compression_db: expected a finite"),
        ("- a list\n", "expected a mapping"),
        ("optimize: [\n", "not valid YAML"),
    ],
)
def test_a_bad_settings_file_is_one_error_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(AutomixError, match=f"bad.yaml.*{message}"):
        load_mix_settings(path)


@pytest.mark.parametrize(
    "name", ["balance_budget_db", "eq_budget_db", "one_tone_eq_budget_db", "strip_tone_octaves"]
)
@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_a_budget_below_zero_or_nan_is_refused_when_settings_are_built_in_python(name, value):
    with pytest.raises(AutomixError, match=f"{name} must be >= 0"):
        OptimizeSettings(**{name: value})


def test_excerpts_hear_a_stem_that_rests_through_the_loudest_sections():
    """Drums that stop before a louder last section: the loudest windows alone never hear them. The
    excerpts take the loudest window where every stem plays, then the loudest windows."""
    gen = torch.Generator().manual_seed(0)
    seconds, excerpt_s = 30, 3.0
    t = torch.arange(seconds * SAMPLE_RATE) / SAMPLE_RATE
    drums = 0.1 * torch.randn(2, t.shape[0], generator=gen) * (t < 12)
    bass = 0.1 * torch.randn(2, t.shape[0], generator=gen) * torch.where(t < 12, 1.0, 3.0)
    stems = torch.stack([drums, bass])[None]
    excerpts = select_excerpts(stems, SAMPLE_RATE, excerpt_s, 3, playing_db=20.0)[0]  # [K, N, 2, L]
    drum_power = excerpts[:, 0].square().mean(dim=(-2, -1))
    assert (drum_power > 0.5 * 0.1**2).sum() == 1  # one excerpt hears the drums play
    loud = excerpts.sum(dim=1).square().mean(dim=(-2, -1)) > 8 * 0.1**2
    assert loud.sum() == 2 and (drum_power[loud] == 0).all()  # the two others are the loud section's


class WreckingOptimizer(SongOptimizer):
    """Adam replaced by a step that sets every strip setting at the top of its range."""

    def on_excerpts(self, stems, targets, mask, console, **held):
        return Excerpts(Console(torch.ones_like(console.stem_unit), console.master_unit), targets, 0)


def test_the_closest_full_render_is_returned_when_a_later_attempt_misses_more(chain):
    """After a wrecked attempt the mix returned is the first attempt's closer render, rendered again,
    not the last one."""
    stems, _ = synth_stems(8.0, SAMPLE_RATE, seed=11)
    optimizer = WreckingOptimizer(chain, dataclasses.replace(chain.optimize_settings, refine_steps=0))
    targets = resolve_targets("rnb_ballad", chain.style_targets, 1)
    mix, analysis = optimizer(stems[None], targets)
    renders = optimizer.state.renders
    ranks = [(int(render.broken), float(render.miss)) for render in renders]  # `closer_render`'s order
    closest = renders[ranks.index(min(ranks))]
    assert len(renders) > 1 and max(ranks) > min(ranks)  # a later attempt missed more
    again = measure(mix, SAMPLE_RATE)  # the returned audio is the closest render's
    for name in ("lufs", "spectral_centroid", "stereo_ms_ratio"):
        assert float(analysis[name]) == pytest.approx(float(closest.measured[name]), rel=1e-4)
        assert float(again[name]) == pytest.approx(float(closest.measured[name]), rel=1e-4)
    assert float(analysis["master_trim_db"]) == float(closest.trim_db)


def test_the_refinement_stops_raising_the_trim_where_the_limiter_takes_it(chain):
    """Dense noise to an unreachable −3 LUFS: past some trim the limiter takes nearly every further dB.
    The refinement's renders stop raising the trim within a secant step of that knee (found here by
    renders 4 dB apart adding under `MIN_USEFUL_SLOPE` LU a dB), instead of climbing to `MAX_TRIM_DB`;
    its answer is at the plateau's loudness."""
    noise = dense_noise(0, 0.05)
    params = chain.space.neutral(1)[1]
    trims = torch.arange(0.0, MAX_TRIM_DB + 1, 4.0)
    with torch.no_grad():
        scan = [measure(chain.render_master(noise, params, t[None]), SAMPLE_RATE) for t in trims]
        lufs = torch.cat([m["lufs"] for m in scan])
        knee = trims[int(torch.nonzero(lufs.diff() / 4.0 < MIN_USEFUL_SLOPE)[0])]
        targets = targets_of((-3.0, float(scan[0]["spectral_centroid"]), float(scan[0]["stereo_ms_ratio"])))
        refined = MasterRefinement(chain).refine(noise, params, targets, torch.zeros(1))
    rendered = [float(round_.trim_db) for round_ in refined.rounds]
    assert len(rendered) > 3 and max(rendered) <= float(knee) + 6.0 < MAX_TRIM_DB
    assert float(refined.render.measured["lufs"]) >= float(lufs.max()) - 0.1


def test_the_refinement_ends_where_no_round_would_render_anything_new(chain):
    """Dense noise to an unreachable −3 LUFS at its own centroid and M/S: once the trim stops at the
    limiter's knee, nothing is left to move (the centroid, within its stop tolerance, holds the tilt).
    The rounds end there instead of rendering the same settings again up to `refine_steps`: no two
    rounds in a row render the same trim, tilt and width."""
    noise = dense_noise(0, 0.05)
    params = chain.space.neutral(1)[1]
    refinement = MasterRefinement(chain)
    with torch.no_grad():
        start = measure(chain.render_master(noise, params, torch.zeros(1)), SAMPLE_RATE)
        targets = targets_of((-3.0, float(start["spectral_centroid"]), float(start["stereo_ms_ratio"])))
        refined = refinement.refine(noise, params, targets, torch.zeros(1))
    rendered = [(float(r.trim_db), float(r.tilt_db), float(r.width)) for r in refined.rounds]
    assert 1 < len(rendered) < refinement.settings.refine_steps + 1
    for (trim, tilt, width), (next_trim, next_tilt, next_width) in itertools.pairwise(rendered):
        moved = max(abs(next_trim - trim), abs(next_tilt - tilt)) > STILL_DB
        assert moved or abs(next_width / width - 1) > STILL_WIDTH
    for before, after in itertools.pairwise(refined.rounds):
        if abs(float(before.centroid_hz - targets.centroid_hz)) <= refinement.settings.stop.centroid_hz:
            assert float(after.tilt_db) == float(before.tilt_db)
    assert float(refined.render.measured["lufs"]) > float(start["lufs"])


def test_a_narrower_width_in_the_same_round_does_not_stop_the_trim(chain):
    """Wide noise (M/S ~1) to M/S 0.55, 0.6 LU louder than at trim 0, the limiter idle: the first
    correction raises the trim 0.6 dB and narrows the width to 0.55, which takes ~2 dB of loudness in
    the same round. That fall is the width's, not the limiter's: the trim goes on rising to the target."""
    noise = dense_noise(1, 0.01)
    params = chain.space.neutral(1)[1]
    refinement = MasterRefinement(chain)
    stop = refinement.settings.stop
    with torch.no_grad():
        start = measure(chain.render_master(noise, params, torch.zeros(1)), SAMPLE_RATE)
        targets = targets_of((float(start["lufs"]) + 0.6, float(start["spectral_centroid"]), 0.55))
        refined = refinement.refine(noise, params, targets, torch.zeros(1))
    assert float(start["stereo_ms_ratio"]) > 0.9
    assert abs(float(refined.render.measured["lufs"] - targets.lufs)) <= stop.lufs_lu
    assert abs(float(refined.render.measured["stereo_ms_ratio"] - targets.ms_ratio)) <= stop.ms_ratio
    assert float(refined.trim_db) > 2.0  # the 0.6 dB asked for and the width's ~2 dB


def test_the_refinements_trim_steps_at_most_four_times_its_miss_on_the_limiters_plateau(chain):
    """Dense noise trimmed up into the limiter, where each dB of trim adds 0.1-0.25 LU, to a target
    0.7 LU under that render: a secant step at the plateau's slope would be over four times what the
    render missed. Each step is at most 1 / `MIN_LOUDNESS_SLOPE` times the miss before it, and the
    refinement ends within its tolerance."""
    noise = dense_noise(0, 0.05)
    params = chain.space.neutral(1)[1]
    trims = torch.arange(14.0, 22.0, 0.5)  # about this noise's knee (see the test above)
    refinement = MasterRefinement(chain)
    with torch.no_grad():
        lufs = torch.cat(
            [measure(chain.render_master(noise, params, t[None]), SAMPLE_RATE)["lufs"] for t in trims]
        )
        slopes = lufs.diff() / 0.5
        start = trims[1:][(slopes > 0.1) & (slopes < MIN_LOUDNESS_SLOPE)][0]
        first = measure(chain.render_master(noise, params, start[None]), SAMPLE_RATE)
        targets = targets_of(
            (float(first["lufs"]) - 0.7, float(first["spectral_centroid"]), float(first["stereo_ms_ratio"]))
        )
        refined = refinement.refine(noise, params, targets, start[None])
    rounds = [(float(r.trim_db), float(r.lufs)) for r in refined.rounds]
    assert len(rounds) > 1
    for (trim, lufs_at), (next_trim, _) in itertools.pairwise(rounds):
        assert abs(next_trim - trim) <= abs(float(targets.lufs) - lufs_at) / MIN_LOUDNESS_SLOPE + 1e-3
    assert abs(float(refined.render.measured["lufs"] - targets.lufs)) <= refinement.settings.stop.lufs_lu


def clicks_over_a_pad(batch: int) -> torch.Tensor:
    """`[batch, 2, 4 s]` a 150-Hz tone under 16 bright noise clicks that peak 11 dB under full scale: the
    limiter is idle up to ~10 dB of trim, and past it takes the clicks first, darkening the mix."""
    time = torch.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    clicks = torch.zeros_like(time)
    generator = torch.Generator().manual_seed(0)
    for k in range(16):
        start = int((0.25 * k + 0.1) * SAMPLE_RATE)
        clicks[start : start + 200] = 0.05 * torch.randn(200, generator=generator)
    pad = 0.1 * torch.sin(2 * math.pi * 150.0 * time)
    return torch.stack([pad + clicks, 0.9 * pad + clicks])[None].expand(batch, -1, -1)


def test_the_last_trim_step_rises_as_far_as_the_other_promises_allow(chain):
    """Two songs of the same bus at their own centroid and M/S, short of their loudness by 8 and 13 LU
    (past the ±0.5-LU promise): the first reaches its target with the limiter idle. The second's
    trim would bring the limiter onto the clicks and the centroid more than 100 Hz down; the step
    halves its way back from that render, and keeps the louder render that still keeps the centroid,
    naming the centroid as what held the loudness (`FinalTrim.louder_breaks`, the notes of both modes)."""
    bus = clicks_over_a_pad(2)
    params = chain.space.denormalize_master(chain.space.neutral_unit(1)[1].expand(2, -1))
    refinement = MasterRefinement(chain)
    promise = refinement.settings.promise
    with torch.no_grad():
        power = bus_detector_power(bus, SAMPLE_RATE)
        first = {name: value[:1] for name, value in params.items()}
        start = measure(chain.render_master(bus[:1], first, torch.zeros(1)), SAMPLE_RATE)
        lufs, hz, ms = (float(start[name]) for name in ("lufs", "spectral_centroid", "stereo_ms_ratio"))
        targets = targets_of((lufs + 8.0, hz, ms), (lufs + 13.0, hz, ms))
        render = refinement.render_full(bus, power, params, torch.zeros(2), targets)
        kept, louder_breaks = refinement.final_trim(bus, power, render, targets)
    reached, held = (kept.measured[name] for name in ("lufs", "spectral_centroid"))
    assert float(reached[0]) == pytest.approx(lufs + 8.0, abs=chain.mastering_settings.final_lufs_lu)
    assert lufs + 5.0 < float(reached[1]) < lufs + 13.0 - promise.lufs_lu  # higher, still short
    assert abs(float(held[1]) - hz) <= promise.centroid_hz
    assert louder_breaks[:, 0].tolist() == [False] * 4
    assert louder_breaks[:, 1].tolist() == [False, True, False, False]  # the centroid
    notes = SongOptimizer(chain).notes(kept, targets, louder_breaks)
    assert notes[0] == []
    assert (
        len(notes[1]) == 1
        and "loudness" in notes[1][0]
        and "a louder master missed the centroid" in notes[1][0]
    )
    # Predict mode's last trim step is the same, and so is what its note says held the loudness.
    analysis = {**kept.measured, "limited_trim_db": torch.zeros(2)}
    predict_notes = [PredictMode(chain).notes(analysis, targets, song, louder_breaks) for song in (0, 1)]
    assert predict_notes[0] == []
    assert len(predict_notes[1]) == 1
    assert predict_notes[1][0].endswith(": a louder master missed the centroid")


def test_the_tilt_moves_the_high_shelf_first_and_the_low_shelf_past_its_range(chain):
    """A tilt of t dB moves the master's high shelf by t and, past its ±6 dB, the low shelf by what is left
    the other way; the peaking bands stay. The refinement's room is the tilt that reaches both ends."""
    eq_range = chain.space.master["eq_gain_db"]
    base = torch.tensor([[0.0, 1.0, -1.0, 0.0], [0.0, 1.0, -1.0, 0.0], [-1.0, 0.0, 0.0, 5.0], [0.0] * 4])
    tilt = TiltController(base, eq_range, torch.tensor([-4.0, -9.0, 3.0, 14.0]))
    expected = [[0.0, 1.0, -1.0, -4.0], [3.0, 1.0, -1.0, -6.0], [-3.0, 0.0, 0.0, 6.0], [-6.0, 0.0, 0.0, 6.0]]
    torch.testing.assert_close(tilt.eq_gain_db(), torch.tensor(expected))
    targets = targets_of((-10.5, 2200.0, 0.7))
    refinement = MasterRefinement(chain)
    for eq_db, hz, room_db in (([3.0, 0, 0, -6.0], 3000.0, 3.0), ([3.0, 0, 0, -6.0], 1000.0, 21.0)):
        room, _ = refinement.tilt_room(torch.tensor([eq_db]), torch.tensor([hz]), targets)
        assert float(room) == room_db
        past = TiltController(
            torch.tensor([eq_db]), eq_range, torch.tensor([math.copysign(room_db + 2, 2200 - hz)])
        )
        edge = TiltController(
            torch.tensor([eq_db]), eq_range, torch.tensor([math.copysign(room_db, 2200 - hz)])
        )
        torch.testing.assert_close(past.eq_gain_db(), edge.eq_gain_db())


class ShelvedNoise(NamedTuple):
    """Two songs of three synthetic stems and a white noise 15 dB under them on neutral strips, the first
    under master shelves at +6 dB (100 Hz) and -6 dB (8 kHz), the second's master EQ flat."""

    songs: torch.Tensor
    bus: torch.Tensor
    power: torch.Tensor
    stem_params: dict
    render: FullRender
    targets: Targets


def shelved_noise(chain, targets: Targets) -> ShelvedNoise:
    stems = synth_stems(4.0, SAMPLE_RATE, seed=0)[0][:3]
    noise = white_noise(1, 4.0, SAMPLE_RATE, seed=0)[0]
    noise = noise * 10 ** (-15 / 20) * stems.square().mean().sqrt() / noise.square().mean().sqrt()
    songs = torch.cat([stems, noise[None]])[None].expand(2, -1, -1, -1)
    space, refinement = chain.space, MasterRefinement(chain)
    with torch.no_grad():
        stem_unit = space.neutral_unit(4)[0].expand(2, -1, -1)
        bus, stem_params, _, _ = chain.render_bus(songs, stem_unit, None, torch.zeros(2), blockwise=True)
        power = bus_detector_power(bus, SAMPLE_RATE, blockwise=True)
        params = space.denormalize_master(space.neutral_unit(1)[1].expand(2, -1))
        params["eq_gain_db"] = torch.tensor([[6.0, 0.0, 0.0, -6.0], [0.0] * 4])
        render = refinement.render_full(bus, power, params, torch.zeros(2), targets)
    return ShelvedNoise(songs, bus, power, stem_params, render, targets)


def test_a_stem_the_balance_estimate_loses_in_the_mix_is_named_in_a_note(chain):
    """`shelved_noise`: under the first song's shelves the contract's balance estimate loses the noise,
    with the second's EQ flat it finds it. `lost_stems` (the stems at their strips' level) reads the same,
    and the notes of both modes name the first song's stem 4."""
    songs, _, _, stem_params, render, targets = shelved_noise(
        chain, targets_of((-14.0, 2000.0, 0.5), (-14.0, 2000.0, 0.5))
    )
    lost = lost_stems(songs, stem_params, render.mix, SAMPLE_RATE)
    levels_db = stem_params["input_gain_db"] + stem_params["level_db"]
    assert levels_db.unique().numel() == 1  # neutral strips: one level, so the stems as given are the tracks
    expected = [balance_error_db(songs[k], render.mix[k], SAMPLE_RATE).lost.tolist() for k in (0, 1)]
    assert lost.tolist() == expected == [[False] * 3 + [True], [False] * 4]
    notes = SongOptimizer(chain).notes(render, targets, lost=lost)
    assert notes[0][-1].startswith("stem 4 not found in the mix by the balance estimate")
    assert not any("not found" in line for line in notes[1])
    two = torch.tensor([[False, True, False, True], [False] * 4])
    assert SongOptimizer(chain).notes(render, targets, lost=two)[0][-1].startswith("stems 2 and 4 not found")
    analysis = {**render.measured, "limited_trim_db": torch.zeros(2)}  # predict mode says the same
    predicted = [PredictMode(chain).notes(analysis, targets, song, lost=lost) for song in (0, 1)]
    assert predicted[0][-1] == notes[0][-1]
    assert not any("not found" in line for line in predicted[1])


def test_a_master_eq_that_loses_a_stem_is_taken_back_until_the_estimate_finds_it(chain):
    """`shelved_noise` after its last trim step: the first song's EQ is scaled back until the contract's
    estimate finds the noise (a share under 1 of each gain), the noise named as spared and the centroid's
    note saying why; the trim and width are stepped again for that EQ, to the loudness and M/S asked.
    The second song, which loses nothing, is left as it was."""
    songs, bus, power, stem_params, render, targets = shelved_noise(
        chain, targets_of((-16.0, 900.0, 0.3), (-16.0, 900.0, 0.3))
    )
    refinement = MasterRefinement(chain)
    with torch.no_grad():
        trimmed = refinement.final_trim(bus, power, render, targets)
        found = FoundStems(songs, stem_params, SAMPLE_RATE)
        kept = refinement.keep_stems(bus, power, trimmed, found, targets)
    mix = kept.trimmed.render.mix
    assert balance_error_db(songs[0], trimmed.render.mix[0], SAMPLE_RATE).lost[3]
    assert not balance_error_db(songs[0], mix[0], SAMPLE_RATE).lost.any()
    share = float(kept.eq_share[0])
    assert 0.0 <= share < 1.0 and float(kept.eq_share[1]) == 1.0
    torch.testing.assert_close(
        kept.trimmed.render.master_params["eq_gain_db"],
        render.master_params["eq_gain_db"] * kept.eq_share[:, None],
    )
    assert kept.spared.tolist() == [[False] * 3 + [True], [False] * 4]
    torch.testing.assert_close(mix[1], trimmed.render.mix[1])
    measured = measure(mix[:1], SAMPLE_RATE)
    promise, given = chain.optimize_settings.promise, render.measured
    assert abs(float(measured["lufs"][0]) + 16.0) <= promise.lufs_lu < abs(float(given["lufs"][0]) + 16.0)
    ms_ratio = float(measured["stereo_ms_ratio"][0])
    assert abs(ms_ratio - 0.3) <= promise.ms_ratio < abs(float(given["stereo_ms_ratio"][0]) - 0.3)
    notes = SongOptimizer(chain).notes(kept.trimmed.render, targets, kept=kept)
    assert any(line.startswith("centroid") and "losing stem 4 under the others" in line for line in notes[0])
    assert not any("losing" in line for line in notes[1])


def test_adam_hands_the_centroid_over_only_where_the_tilt_has_room_for_it(chain):
    """The tilt moves the master EQ's shelves within ±6 dB (high shelf first): a song 80 Hz too bright at
    2200 Hz (0.052 octaves: ~1 dB of tilt at 0.05 octaves a dB, asked twice over) is handed over with
    flat shelves, not with the shelves already at +6 / -6 dB (the tilt's end), and is handed over there
    once on target, or when 80 Hz too dark (the other way has 24 dB of room)."""
    optimizer = SongOptimizer(chain)
    targets = targets_of((-10.5, 2200.0, 0.7))
    flat, darkest = torch.zeros(1, 4), torch.tensor([[6.0, 0.0, 0.0, -6.0]])
    bright, on_target, dark, far = (torch.tensor([hz]) for hz in (2280.0, 2200.0, 2120.0, 2350.0))
    assert bool(optimizer.tilt_reaches(bright, flat, targets))
    assert not bool(optimizer.tilt_reaches(bright, darkest, targets))
    assert bool(optimizer.tilt_reaches(on_target, darkest, targets))
    assert bool(optimizer.tilt_reaches(dark, darkest, targets))
    assert not bool(optimizer.tilt_reaches(far, flat, targets))


def test_the_excerpts_aim_scales_only_what_is_pinned(chain):
    """Closed form: a pinned M/S aims at the target times excerpts / full (within `max_aim_ratio`), a
    pinned centroid likewise; NaN (not pinned) aims at the target; loudness and bands stay."""
    optimizer = SongOptimizer(chain)
    targets = Targets.from_tensor(
        torch.tensor([[-12.0, 1800.0, 0.8, 0.3, 0.5, 0.2], [-12.0, 1800.0, 0.8] + [NAN] * 3])
    )
    read = torch.tensor([[2000.0, 0.6], [3000.0, 0.9]])
    pinned = torch.tensor([[NAN, 0.3], [2400.0, NAN]])
    aim = optimizer.excerpt_aim(targets, read, pinned)
    limit = optimizer.settings.max_aim_ratio
    assert aim.ms_ratio.tolist() == pytest.approx([0.8 * min(0.6 / 0.3, limit), 0.8])
    assert aim.centroid_hz.tolist() == pytest.approx([1800.0, 1800.0 * 3000.0 / 2400.0])
    torch.testing.assert_close(aim.lufs, targets.lufs)
    torch.testing.assert_close(aim.bands, targets.bands, equal_nan=True)


def test_adam_on_excerpts_aims_where_the_full_render_is_pinned(chain):
    """On two songs, one with its width pinned and one with its tilt pinned: Adam's aim differs from the
    target in exactly those columns, and its settings leave (0, 1) alone."""
    stems = torch.stack([synth_stems(8.0, SAMPLE_RATE, seed=s)[0] for s in (12, 13)])
    targets = resolve_targets(["rnb_ballad"] * 2, chain.style_targets, 2).to(dtype=stems.dtype)
    stem_unit, master_unit = chain.space.neutral_unit(4, stems.dtype)
    console = Console(stem_unit.expand(2, -1, -1), master_unit.expand(2, -1))
    optimizer = SongOptimizer(chain, dataclasses.replace(chain.optimize_settings, steps=2))
    result = optimizer.on_excerpts(
        stems, targets, None, console, trim_db=torch.zeros(2), input_gain=torch.zeros(2),
        pinned=torch.tensor([[NAN, 0.3], [2400.0, NAN]]),
    )  # fmt: skip
    aim = result.aim
    assert float(aim.ms_ratio[0]) != float(targets.ms_ratio[0])
    assert float(aim.centroid_hz[1]) != float(targets.centroid_hz[1])
    assert float(aim.centroid_hz[0]) == float(targets.centroid_hz[0])
    assert float(aim.ms_ratio[1]) == float(targets.ms_ratio[1])
    torch.testing.assert_close(aim.lufs, targets.lufs)
    assert result.steps <= 2
    assert ((result.console.stem_unit > 0) & (result.console.stem_unit < 1)).all()


def test_the_full_render_s_tilt_and_width_are_pinned_where_their_range_ends(chain):
    """A centroid 300 Hz too bright with the shelves at +6 / -6 dB (no tilt left downward) and an M/S 0.1
    short at the widest width are pinned; the same render with room in the shelves and width is not."""
    optimizer = SongOptimizer(chain)
    targets = resolve_targets("rock_punk", chain.style_targets, 1)
    master = chain.space.neutral(1)[1]
    measured = {
        "lufs": torch.tensor([-9.5]),
        "spectral_centroid": torch.tensor([3100.0]),
        "stereo_ms_ratio": torch.tensor([0.5]),
        "gain_reduction": limiting([2.0]),
    }
    settings = optimizer.settings
    pinned = master | {"eq_gain_db": torch.tensor([[6.0, 0.0, 0.0, -6.0]]), "width": torch.tensor([1.5])}
    render = FullRender.of(None, pinned, torch.zeros(1), measured, targets, settings, BUDGET_DB)
    torch.testing.assert_close(optimizer.pinned(render, targets), torch.tensor([[3100.0, 0.5]]))
    free = master | {"eq_gain_db": torch.tensor([[2.0, 0.0, 0.0, -2.0]]), "width": torch.tensor([1.2])}
    assert (
        optimizer.pinned(
            FullRender.of(None, free, torch.zeros(1), measured, targets, settings, BUDGET_DB), targets
        )
        is None
    )


BUDGET_DB = 6.0  # the limiting budget of the hand-made renders


def limiting(max_db) -> dict:
    """A `gain_reduction` whose limiter reduced peaks by `max_db` `[B]` at most."""
    deepest = torch.tensor(max_db)
    stats = {"max_db": deepest, "mean_db": deepest / 4, "over_1db": torch.full_like(deepest, 0.1)}
    return {"limiter": stats, "bus_compressor": stats}


def test_of_two_full_renders_the_one_keeping_more_promises_is_the_closer():
    """Item by item: a render that keeps more of the promises (0.5 LU, 100 Hz, 0.05) beats one that
    keeps fewer, whatever their largest errors; between two alike, the smaller miss wins; the audio and
    the settings follow."""
    targets = targets_of((-10.0, 2000.0, 0.5), (-10.0, 2000.0, 0.5), (-10.0, 2000.0, 0.5))
    settings = OptimizeSettings()

    def render(lufs, centroid, fill, limiter_db=(2.0, 2.0, 2.0)):
        measured = {
            "lufs": torch.tensor(lufs),
            "spectral_centroid": torch.tensor(centroid),
            "stereo_ms_ratio": torch.tensor([0.5, 0.5, 0.5]),
            "gain_reduction": limiting(limiter_db),
        }
        mix = torch.full((3, 2, 8), fill)
        params = {"width": torch.full((3,), fill)}
        return FullRender.of(mix, params, torch.full((3,), fill), measured, targets, settings, BUDGET_DB)

    # Item 0: the old render breaks one promise (the centroid, far off), the new one two (by a little).
    # Item 1: both break two; the new one misses less.
    # Item 2: the old render keeps every promise with its limiter past the budget; the new one, within
    # it, falls short of the loudness: a render past the budget ranks after any within it.
    old = render([-10.1, -11.0, -10.0], [2900.0, 2300.0, 2000.0], fill=0.0, limiter_db=(2.0, 2.0, 8.0))
    new = render([-10.6, -11.2, -11.0], [2110.0, 2120.0, 2000.0], fill=1.0)
    assert old.broken.tolist() == [1, 2, 4] and new.broken.tolist() == [2, 2, 1]
    assert float(old.miss[2]) == pytest.approx(1 + 8.0 - BUDGET_DB)
    best = closer_render(old, new)
    assert best.trim_db.tolist() == [0.0, 1.0, 1.0]
    assert best.mix[:, 0, 0].tolist() == [0.0, 1.0, 1.0]
    assert best.master_params["width"].tolist() == [0.0, 1.0, 1.0]
    assert best.measured["lufs"].tolist() == pytest.approx([-10.1, -11.2, -11.0])


KEPT_TARGETS = targets_of((-10.0, 2000.0, 0.5), (-10.0, 2000.0, 0.5), (-10.0, 2000.0, 0.5))


def kept_render_case(centroid, fill, lufs=(-10.0, -10.0, -10.0)) -> FullRender:
    """A hand-made render of three songs for `KEPT_TARGETS`: the M/S on target, 2 dB of limiting, the
    centroids `centroid` and loudness `lufs` `[3]`, a trim (and width) `fill` telling it apart."""
    measured = {
        "lufs": torch.tensor(lufs),
        "spectral_centroid": torch.tensor(centroid),
        "stereo_ms_ratio": torch.tensor([0.5, 0.5, 0.5]),
        "gain_reduction": limiting((2.0, 2.0, 2.0)),
    }
    params = {"width": torch.full((3,), fill)}
    trim_db = torch.full((3,), fill)
    return FullRender.of(None, params, trim_db, measured, KEPT_TARGETS, OptimizeSettings(), BUDGET_DB)


def three_song_state(chain) -> SongState:
    stem_unit, master_unit = chain.space.neutral_unit(4, torch.float32)
    return SongState(Console(stem_unit.expand(3, -1, -1), master_unit.expand(3, -1)), torch.zeros(3))


def test_strips_adam_moved_replace_the_starts_only_by_keeping_more_promises(chain):
    """Item 0: Adam's strips bring the centroid closer but still miss it: the start's render stays. Item
    1: they reach it: taken; a second attempt's strips that also reach it but miss more do not replace
    them (between Adam's renders, the usual rule). Item 2: the second attempt reaches it: taken. The
    start misses by under `strip_tone_octaves`: the strips may carry the tone that far."""
    targets, render = KEPT_TARGETS, kept_render_case
    optimizer, state = SongOptimizer(chain, OptimizeSettings()), three_song_state(chain)
    state.best = optimizer.kept_render(state, render([2400.0, 2400.0, 2400.0], fill=0.0), targets)
    assert state.best_from_start.tolist() == [True, True, True]
    state.best = optimizer.kept_render(state, render([2300.0, 2050.0, 2600.0], fill=1.0), targets)
    assert state.best.trim_db.tolist() == [0.0, 1.0, 0.0]
    assert state.best_from_start.tolist() == [True, False, True]
    state.best = optimizer.kept_render(state, render([2300.0, 2080.0, 2100.0], fill=2.0), targets)
    assert state.best.trim_db.tolist() == [0.0, 1.0, 2.0]
    assert state.best_from_start.tolist() == [True, False, False]
    # a start whose refinement gave up after one render is not the master's best: the smaller miss wins
    state.best = None
    state.best = optimizer.kept_render(state, render([3000.0, 3000.0, 3000.0], fill=0.0), targets, True)
    assert state.best_from_start.tolist() == [False, False, False]
    state.best = optimizer.kept_render(state, render([2300.0, 2050.0, 2600.0], fill=1.0), targets)
    assert state.best.trim_db.tolist() == [1.0, 1.0, 1.0]


def test_a_tone_past_the_strips_reach_is_reported_missed_not_reached_by_them(chain):
    """Targets 2000 Hz; the start's refined render reads 3000 Hz (0.58 octave off, past
    `strip_tone_octaves`). Item 0: Adam's strips reach the centroid, the other promises as kept as the
    start's: the start stays. Item 1: they also bring the loudness within its promise: taken. Item 2:
    the stems are of one tone (no balance between them to reshape): taken, as for a near tone."""
    optimizer, state = SongOptimizer(chain, OptimizeSettings()), three_song_state(chain)
    assert math.log2(3000 / 2000) > optimizer.settings.strip_tone_octaves
    state.one_tone = torch.tensor([False, False, True])
    start = kept_render_case([3000.0, 3000.0, 3000.0], fill=0.0, lufs=(-10.0, -11.0, -10.0))
    state.best = optimizer.kept_render(state, start, KEPT_TARGETS)
    adam = kept_render_case([2050.0, 2050.0, 2050.0], fill=1.0)
    state.best = optimizer.kept_render(state, adam, KEPT_TARGETS)
    assert state.best.trim_db.tolist() == [0.0, 1.0, 1.0]
    assert state.best_from_start.tolist() == [True, False, False]


def test_stems_of_one_noise_colour_are_of_one_tone_and_a_songs_are_not(chain):
    """`one_tone`: four draws of pink noise have one centroid; a synthetic song's drums, bass, chords and
    lead span octaves; a song whose only other stem is masked out has one tone."""
    noise = pink_noise(4, 6.0, SAMPLE_RATE, seed=1)
    song, _ = synth_stems(6.0, SAMPLE_RATE, seed=3)
    optimizer = SongOptimizer(chain)
    assert optimizer.one_tone(torch.stack([noise, song])).tolist() == [True, False]
    assert optimizer.one_tone(song[None], torch.tensor([[1.0, 0.0, 0.0, 0.0]])).tolist() == [True]


# ---------------------------------------------------------------- the balance the optimiser keeps

SCRAMBLE_DB = (7.0, -8.0, 4.0, -5.0)  # each stem's level moved from the synthetic song's balance


def scrambled_song(seed: int = 3, seconds: float = 6.0) -> torch.Tensor:
    stems, _ = synth_stems(seconds, SAMPLE_RATE, seed=seed)
    return (stems * torch.pow(10.0, torch.tensor(SCRAMBLE_DB) / 20)[:, None, None])[None]


def start_only(**changes) -> OptimizeSettings:
    """Settings that stop after the start's first render: no Adam, no correction rounds."""
    return OptimizeSettings(steps=0, refine_steps=0, attempts=1, **changes)


def test_without_a_checkpoint_every_stem_starts_at_the_same_loudness(chain):
    stems = scrambled_song()
    targets = resolve_targets("rock_punk", chain.style_targets, 1)
    equal = SongOptimizer(chain, start_only(balance_checkpoint=None))
    equal(stems, targets)
    # four audible stems at one loudness: each is a quarter of their loudness power, -6.02 dB
    torch.testing.assert_close(equal.state.start_balance_db, torch.full((1, 4), -6.0206), atol=0.02, rtol=0)
    predicted = SongOptimizer(chain, start_only(balance_start="predicted"))
    predicted(stems, targets)
    spread = predicted.state.start_balance_db.amax() - predicted.state.start_balance_db.amin()
    assert spread > 6.0  # the scrambled balance, kept by the neutral strips


def own_numbers(stems: torch.Tensor, lufs: float) -> Targets:
    """The targets `lufs` with the tone and width of stems `[1, N, 2, T]` summed at one loudness, each
    stem's loudness by pyloudnorm."""
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    loudness = torch.tensor([meter.integrated_loudness(stem.T.double().numpy()) for stem in stems[0]])
    gains = torch.pow(10.0, (loudness.mean() - loudness) / 20).float()
    mix = (stems[0] * gains[:, None, None]).sum(0)
    return Targets(
        torch.tensor([lufs]),
        spectral_centroid(mix, SAMPLE_RATE)[None],
        stereo_ms_ratio(mix)[None],
        band_energy(mix, SAMPLE_RATE)[None],
    )


def test_a_checkpoints_predicted_balance_is_the_start_on_the_neutral_strips(chain, tmp_path):
    """balance_start "auto" with a balance_checkpoint: the stems start at the balance that checkpoint's
    predictor gives them at the song's loudness target with the stems' own tone and width (measured at
    equal loudness), by its own predict-mode render; a style's tone and width do not move it."""
    path = DEFAULT_CHECKPOINT
    trained = AutoMixChain.from_checkpoint(path, sample_rate=SAMPLE_RATE)
    stems = scrambled_song()
    targets = resolve_targets("rock_punk", chain.style_targets, 1)
    with torch.no_grad():
        own = own_numbers(stems, targets.lufs.item())
        expected = stem_balance_db(trained.predict(stems, own, loudness_steps=0).stem_lufs)
        styled = stem_balance_db(trained.predict(stems, targets, loudness_steps=0).stem_lufs)
    assert expected.amax() - expected.amin() > 1.0  # a balance of its own, not equal loudness
    assert (expected - styled).abs().amax() > 2.0  # the style's tone and width would have moved it
    optimizer = SongOptimizer(chain, start_only(balance_checkpoint=str(path), balance_checkpoint_share=1.0))
    assert optimizer.start.balance_source(targets) == "checkpoint"
    optimizer(stems, targets)
    torch.testing.assert_close(optimizer.state.start_balance_db, expected, atol=0.05, rtol=0)
    # another style of the same loudness: the same start
    bright = targets.replace(centroid_hz=targets.centroid_hz + 1500, ms_ratio=targets.ms_ratio / 2)
    other = SongOptimizer(chain, start_only(balance_checkpoint=str(path), balance_checkpoint_share=1.0))
    other(stems, bright)
    torch.testing.assert_close(other.state.start_balance_db, expected, atol=0.05, rtol=0)
    # a share of it: each stem's loudness that share of its way from the stems' mean to the checkpoint's
    halfway = SongOptimizer(chain, start_only(balance_checkpoint=str(path), balance_checkpoint_share=0.5))
    halfway(stems, targets)
    start = halfway.state.start_balance_db
    centred = expected - expected.mean(-1, keepdim=True)
    torch.testing.assert_close(start - start.mean(-1, keepdim=True), 0.5 * centred, atol=0.05, rtol=0)
    missing = SongOptimizer(chain, start_only(balance_checkpoint=str(tmp_path / "missing.ckpt")))
    with pytest.raises(AutomixError, match="missing.ckpt: no such checkpoint"):
        missing(stems, targets)


def test_the_stems_own_balance_is_the_start_through_neutral_or_predicted_strips(chain):
    """balance_start "stems": the stems start at the balance they were handed over at (each one's
    loudness by pyloudnorm against the others'), on the neutral strips and on the shipped checkpoint's
    predicted strips, which would move it by several dB."""
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    stems = scrambled_song()
    lufs = torch.tensor([meter.integrated_loudness(stem.T.double().numpy()) for stem in stems[0]])
    handed = stem_balance_db(lufs.float())[None]
    targets = resolve_targets("rock_punk", chain.style_targets, 1)
    trained = AutoMixChain.from_checkpoint(
        DEFAULT_CHECKPOINT, style_targets=chain.style_targets, sample_rate=SAMPLE_RATE
    )
    with torch.no_grad():
        own = stem_balance_db(trained.predict(stems, targets, loudness_steps=0).stem_lufs)
    assert (own - handed).abs().amax() > 3.0  # the predictor's strips would move the balance
    for mixer in (chain, trained):
        optimizer = SongOptimizer(mixer, start_only(balance_start="stems"))
        assert optimizer.start.balance_source(targets) == "stems"
        optimizer(stems, targets)
        torch.testing.assert_close(optimizer.state.start_balance_db, handed, atol=0.1, rtol=0)


def test_a_share_of_the_stems_own_balance_moves_a_blind_start_that_far_toward_it(chain):
    """balance_stems_share w: from equal loudness each stem starts w of its way to the balance it was
    handed over at (pyloudnorm's loudness against the others'); w = 1 is the "stems" start. With a
    reference, the reference's fit is the start and the share does not apply."""
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    stems = scrambled_song()
    lufs = torch.tensor([meter.integrated_loudness(stem.T.double().numpy()) for stem in stems[0]])
    handed = lufs.float() - lufs.float().mean()
    targets = resolve_targets("rock_punk", chain.style_targets, 1)
    for share in (0.3, 1.0):
        optimizer = SongOptimizer(chain, start_only(balance_checkpoint=None, balance_stems_share=share))
        optimizer(stems, targets)
        start = optimizer.state.start_balance_db[0]
        torch.testing.assert_close(start - start.mean(), share * handed, atol=0.1, rtol=0)
    reference = (stems[0] * torch.pow(10.0, -handed / 20)[:, None, None]).sum(0)  # at equal loudness
    referenced = resolve_targets(style_from_reference(reference, SAMPLE_RATE), chain.style_targets, 1)
    with_share = SongOptimizer(chain, start_only(balance_checkpoint=None, balance_stems_share=0.5))
    without = SongOptimizer(chain, start_only(balance_checkpoint=None))
    for optimizer in (with_share, without):
        optimizer(stems, referenced)
    torch.testing.assert_close(with_share.state.start_balance_db, without.state.start_balance_db)
    with pytest.raises(AutomixError, match=r"balance_stems_share must be within 0\.\.1"):
        OptimizeSettings(balance_stems_share=1.5)


def excerpt_balance(optimizer: SongOptimizer, stems, console: Console, trim_db, input_gain) -> torch.Tensor:
    """`[B, N]` the stems' balance in the mix (after the master's EQ and width) on the optimiser's
    excerpts under `console`."""
    settings = optimizer.settings
    excerpts = select_excerpts(
        stems, SAMPLE_RATE, settings.excerpt_s, settings.n_excerpts, settings.playing_db
    )
    n_excerpts = excerpts.shape[1]
    with torch.no_grad():
        _, analysis = optimizer.chain.render(
            excerpts.flatten(0, 1),
            console.stem_unit.repeat_interleave(n_excerpts, dim=0),
            console.master_unit.repeat_interleave(n_excerpts, dim=0),
            trim_db=trim_db.repeat_interleave(n_excerpts, dim=0),
            join=(excerpts.shape[0], n_excerpts),
            input_gain=input_gain.repeat_interleave(n_excerpts, dim=0),
            in_mix=True,
        )
    return stem_balance_db(analysis["stem_mix_lufs"])


@pytest.mark.parametrize("budget_db", [0.25, 1e6], ids=["budget_0.25_dB", "no_budget"])
def test_adam_moves_no_stem_past_the_balance_budget(chain, budget_db):
    """A centroid far above the song's: unheld, Adam reaches for it partly by turning stems up and down;
    held, each stem's balance on the excerpts ends within the budget of its start."""
    stems = scrambled_song()
    targets = targets_of((-12.0, 4500.0, 0.3))
    stem_unit, master_unit = chain.space.neutral_unit(4, stems.dtype)
    console = Console(stem_unit.expand(1, -1, -1), master_unit.expand(1, -1))
    trim_db, input_gain = torch.zeros(1), torch.zeros(1)
    settings = dataclasses.replace(chain.optimize_settings, steps=12, balance_budget_db=budget_db)
    optimizer = SongOptimizer(chain, settings)
    result = optimizer.on_excerpts(stems, targets, None, console, trim_db=trim_db, input_gain=input_gain)
    moved = excerpt_balance(optimizer, stems, result.console, trim_db, input_gain) - excerpt_balance(
        optimizer, stems, console, trim_db, input_gain
    )
    if budget_db < 100:
        assert moved.abs().max() <= budget_db + 0.2
    else:
        assert moved.abs().max() > 1.0  # what the budget prevents


@pytest.mark.parametrize("budget_db", [0.2, 1e6], ids=["eq_budget_0.2_dB", "no_eq_budget"])
def test_adam_moves_no_strip_eq_band_past_the_eq_budget(chain, budget_db):
    """A centroid far above the song's: Adam lifts the strips' highs; within the EQ budget, no band's gain
    ends more than the budget from its start, and the other settings still move."""
    stems = scrambled_song()
    targets = targets_of((-12.0, 4500.0, 0.3))
    stem_unit, master_unit = chain.space.neutral_unit(4, stems.dtype)
    console = Console(stem_unit.expand(1, -1, -1), master_unit.expand(1, -1))
    optimizer = SongOptimizer(chain, dataclasses.replace(chain.optimize_settings, steps=12))
    result = optimizer.on_excerpts(
        stems, targets, None, console, trim_db=torch.zeros(1), input_gain=torch.zeros(1),
        eq_budget=EqBudget(chain.space, console.stem_unit, budget_db),
    )  # fmt: skip
    before = chain.space.denormalize_stems(console.stem_unit)
    after = chain.space.denormalize_stems(result.console.stem_unit)
    eq_moved = (after["eq_gain_db"] - before["eq_gain_db"]).abs().max()
    if budget_db < 100:
        assert eq_moved <= budget_db + 1e-3
        assert (after["eq_freq_hz"] - before["eq_freq_hz"]).abs().max() > 1.0  # not held: the bands' Hz
    else:
        assert eq_moved > 0.4  # what the budget prevents


def test_a_songs_strips_eq_stays_at_the_start_and_stems_of_one_tone_may_move_theirs(chain):
    """A centroid far above two songs': a synthetic song's strips keep their EQ through Adam's steps
    (`eq_budget_db`, 0 dB: its stems keep their tone against one another); four draws of pink noise,
    of one tone, may move theirs by `one_tone_eq_budget_db` (6 dB), and Adam moves them."""
    stems = torch.cat([scrambled_song(seconds=4.0), pink_noise(4, 4.0, SAMPLE_RATE, seed=1)[None]])
    targets = targets_of((-12.0, 9000.0, 0.3), (-12.0, 9000.0, 0.3))
    optimizer = SongOptimizer(chain, OptimizeSettings(steps=4, refine_steps=0, attempts=2))
    optimizer(stems, targets)
    budget = optimizer.state.eq_budget
    assert budget.budget_db.tolist() == [0.0, 6.0]
    eq_db = chain.space.denormalize_stems(optimizer.state.console.stem_unit)["eq_gain_db"]
    torch.testing.assert_close(eq_db[0], budget.low[0], atol=1e-3, rtol=0)  # the start's, held
    assert (eq_db[1] - budget.low[1] - 6.0).abs().amax() > 0.1  # moved from the start's


def test_a_target_out_of_reach_within_the_budget_is_noted_and_the_closest_mix_kept(chain):
    stems = scrambled_song(seconds=4.0)
    settings = OptimizeSettings(steps=3, refine_steps=2, attempts=2, balance_budget_db=0.5)
    optimizer = SongOptimizer(chain, settings)
    mix, analysis = optimizer(stems, targets_of((-12.0, 9000.0, 0.3)))
    (notes,) = analysis["notes"]
    assert any(note.startswith("centroid") and "9000 Hz" in note and "0.5 dB" in note for note in notes)
    assert analysis["balance_budget_db"] == 0.5
    assert mix.shape == (1, 2, stems.shape[-1])


def test_a_start_that_gave_up_for_adam_is_refined_again_and_kept_where_adam_misses_as_much(chain):
    """A centroid and an M/S out of reach: the start's first render gives up for Adam (no width reaches
    the M/S), whose strips miss both too. The start's strips, refined to the end, break no more
    promises: they are the mix's, and the balance is the start's."""
    stems = scrambled_song(seconds=4.0)
    settings = OptimizeSettings(steps=3, refine_steps=2, attempts=2)
    optimizer = SongOptimizer(chain, settings)
    _, analysis = optimizer(stems, targets_of((-12.0, 9000.0, 3.0)))
    state = optimizer.state
    start, adam, revisited = state.renders
    assert revisited.strips.stem_unit is start.strips.stem_unit
    assert revisited.broken.item() <= adam.broken.item()
    assert state.best_from_start.tolist() == [True]
    torch.testing.assert_close(analysis["stem_params"]["level_db"], start.strips.stem_params["level_db"])
    assert any(note.startswith("centroid") for note in analysis["notes"][0])


def test_a_song_short_of_loudness_at_the_limiting_budget_is_driven_with_its_balance_kept(chain):
    """−8 LUFS for a song that clean strips bring to about −9.8 with the limiter at the budget: the
    strips' saturation is driven (harmonics only where the loudness needs them) and each stem's level
    takes back what the drive took, so the mix is within the loudness promise by pyloudnorm, within
    the limiting budget, at the start's balance. A target the clean strips reach keeps them clean."""
    stems = scrambled_song(seconds=4.0)
    settings = OptimizeSettings(steps=0, refine_steps=4, attempts=1)
    optimizer = SongOptimizer(chain, settings)
    mix, analysis = optimizer(stems, targets_of((-8.0, 3500.0, 0.2)))
    start = optimizer.state.renders[0]
    assert start.measured["lufs"].item() < -8.5 and start.strips.stem_params["drive"].max() < 1.01
    assert (analysis["stem_params"]["drive"] >= 2.0).all()
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    assert abs(meter.integrated_loudness(mix[0].T.double().numpy()) + 8.0) <= 0.5
    limiting_db = analysis["gain_reduction"]["limiter"]["max_db"].item()
    assert limiting_db <= chain.mastering_settings.max_limiting_db + 0.1
    kept = stem_balance_db(analysis["stem_lufs"])
    torch.testing.assert_close(kept, stem_balance_db(start.strips.stem_lufs), atol=0.1, rtol=0)

    clean = SongOptimizer(chain, settings)
    _, analysis = clean(stems, targets_of((-12.0, 3500.0, 0.2)))
    assert analysis["stem_params"]["drive"].max() < 1.01 and len(clean.state.renders) == 1


def test_predict_mode_drives_a_song_short_of_loudness_at_the_limiting_budget_with_its_balance_kept():
    """The song above in predict mode (an untrained predictor: the neutral console, clean strips, about
    −9.8 LUFS at the limiting budget): to −8.5 LUFS its strips are driven as the default mode drives
    them, within the loudness promise by pyloudnorm and the limiting budget, at the balance the same
    song has undriven (to −12 LUFS, where the clean strips reach it and stay clean)."""
    chain = AutoMixChain(n_stems=4, sample_rate=SAMPLE_RATE)
    stems = scrambled_song(seconds=4.0)
    with torch.inference_mode():
        mix, driven = chain(stems, targets_of((-8.5, 3500.0, 0.2)), mode="predict")
        _, clean = chain(stems, targets_of((-12.0, 3500.0, 0.2)), mode="predict")
    assert (driven["stem_params"]["drive"] >= 2.0).all()
    assert clean["stem_params"]["drive"].max() < 1.01
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    assert abs(meter.integrated_loudness(mix[0].T.double().numpy()) + 8.5) <= 0.5
    limiting_db = driven["gain_reduction"]["limiter"]["max_db"].item()
    assert limiting_db <= chain.mastering_settings.max_limiting_db + 0.1
    torch.testing.assert_close(
        stem_balance_db(driven["stem_lufs"]), stem_balance_db(clean["stem_lufs"]), atol=0.1, rtol=0
    )


def test_strips_driven_as_far_as_a_drive_step_goes_are_not_rendered_again(chain):
    """The song above to −6 LUFS, its strips already at the last drive step and refined: still short at
    the budget (`crest_bound`), but no drive step would raise a strip's drive, so `louder_by_drive`
    renders nothing and returns the render it was given."""
    stems = scrambled_song(seconds=4.0)
    targets = targets_of((-6.0, 3500.0, 0.2))
    optimizer = SongOptimizer(chain, OptimizeSettings(steps=0, refine_steps=4, attempts=1))
    optimizer(stems, targets)
    stem_unit = optimizer.state.renders[0].strips.stem_unit
    params = chain.space.denormalize_stems(stem_unit)
    params["drive"] = torch.full_like(params["drive"], max(DRIVE_STEPS))
    stem_unit = chain.space.normalize_stems(params)
    with torch.no_grad():
        bus, stem_params, stem_lufs, _ = chain.render_bus(stems, stem_unit)
        master_params = chain.space.denormalize_master(optimizer.state.console.master_unit)
        refined = optimizer.refinement.refine(bus, master_params, targets, optimizer.state.trim_db)
    render = dataclasses.replace(refined.render, strips=Strips(stem_unit, stem_params, stem_lufs))
    assert optimizer.crest_bound(render, targets).all()
    rendered = len(optimizer.state.renders)
    driven, driven_bus = optimizer.louder_by_drive(stems, targets, None, None, render, bus)
    assert driven is render and driven_bus is bus and len(optimizer.state.renders) == rendered
