"""AutoMixChain end to end, judged by independent meters: pyloudnorm (LUFS), scipy's 4x resampler
(true peak) and numpy (centroid, M/S) written here from docs/design.md, *Contracts*."""

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import torch

from automix import AutoMixChain, create_training_loss, load_style_targets
from automix import chain as chain_module
from automix.analysis import report
from automix.dsp import filters
from automix.dsp.eq import four_band_sections
from automix.errors import AutomixError
from automix.synth import synth_stems, white_noise
from automix.targets import Targets, resolve_targets

SAMPLE_RATE = 44100
PYLOUDNORM_BIAS_LU = 0.05  # its textbook K-weighting reads ~0.04 LU below ITU's exact filter


def reference_centroid(mix: np.ndarray, sample_rate: int) -> float:
    """docs/design.md, *Spectral centroid*: mean |STFT| of the mid signal (Hann 2048, hop 512), then
    the magnitude-weighted mean."""
    mid = mix.mean(axis=0)
    _, _, frames = scipy.signal.stft(mid, sample_rate, window="hann", nperseg=2048, noverlap=1536,
                                     boundary=None, padded=False)  # fmt: skip
    magnitude = np.abs(frames).mean(axis=-1)
    freqs = np.fft.rfftfreq(2048, 1 / sample_rate)
    return float((freqs * magnitude).sum() / magnitude.sum())


def reference_ms_ratio(mix: np.ndarray) -> float:
    mid, side = (mix[0] + mix[1]) / 2, (mix[0] - mix[1]) / 2
    return float(np.sqrt(np.mean(side**2) / np.mean(mid**2)))


def reference_true_peak_dbtp(mix: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(scipy.signal.resample_poly(mix, 4, 1, axis=-1)).max()))


@pytest.fixture(scope="module")
def chain():
    return AutoMixChain(n_stems=4, style_targets=load_style_targets(), sample_rate=SAMPLE_RATE)


@pytest.mark.slow
@pytest.mark.parametrize("style", ["rock_punk", "rnb_ballad", "country_pop"])
def test_optimize_reaches_every_style_within_the_promised_tolerances(chain, style):
    stems, _ = synth_stems(8.0, SAMPLE_RATE, seed=11)
    mix, analysis = chain(stems, style=style)
    target = load_style_targets()[style]
    audio = mix.numpy().astype(np.float64)
    assert audio.shape == (2, stems.shape[-1])
    lufs = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(audio.T) + PYLOUDNORM_BIAS_LU
    assert abs(lufs - target.lufs) <= 0.5
    assert abs(reference_centroid(audio, SAMPLE_RATE) - target.spectral_centroid_hz) <= 100
    assert abs(reference_ms_ratio(audio) - target.stereo_ms_ratio) <= 0.05
    assert reference_true_peak_dbtp(audio) <= -1.0
    assert bool(analysis["passed"]["lufs"]) and 0.0 <= float(analysis["quality_score"]) <= 1.0


def test_styles_give_measurably_different_mixes(chain):
    stems, _ = synth_stems(4.0, SAMPLE_RATE, seed=2)
    measured = {}
    for style in ("rock_punk", "rnb_ballad"):
        mix, _ = chain(stems, style=style)
        audio = mix.numpy().astype(np.float64)
        measured[style] = (
            pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(audio.T),
            reference_centroid(audio, SAMPLE_RATE),
            reference_ms_ratio(audio),
        )
    rock, ballad = measured["rock_punk"], measured["rnb_ballad"]
    assert rock[0] - ballad[0] > 1.5  # -9.5 vs -12 LUFS
    assert rock[1] - ballad[1] > 600  # 2800 vs 1800 Hz
    assert ballad[2] - rock[2] > 0.1  # 0.8 vs 0.6


@pytest.mark.parametrize("n_stems", [1, 2, 5, 12])
def test_any_stem_count_mixes_in_predict_mode(chain, n_stems):
    stems = white_noise(n_stems, 1.0, SAMPLE_RATE, seed=n_stems)
    with torch.no_grad():
        mix, analysis = chain(stems, style="country_pop", mode="predict")
    assert mix.shape == (2, stems.shape[-1]) and torch.isfinite(mix).all()
    assert analysis["stem_lufs"].shape == (n_stems,)
    assert reference_true_peak_dbtp(mix.numpy().astype(np.float64)) <= -1.0


def test_batch_results_equal_per_item_results(chain):
    songs = torch.stack([synth_stems(1.5, SAMPLE_RATE, seed=s)[0] for s in (3, 4)])
    styles = ["rock_punk", "rnb_ballad"]
    with torch.no_grad():
        batched, batch_analysis = chain(songs, style=styles, mode="predict")
        for item, style in enumerate(styles):
            single, analysis = chain(songs[item], style=style, mode="predict")
            torch.testing.assert_close(batched[item], single, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(batch_analysis["lufs"][item], analysis["lufs"], rtol=0, atol=1e-3)


def test_list_of_mono_and_stereo_stems_of_different_lengths(chain):
    """A mono stem becomes dual-mono and shorter stems are zero-padded at their end: the same mix as the
    stems given already so, as one stereo tensor."""
    song, _ = synth_stems(1.0, SAMPLE_RATE, seed=5)
    half, third = SAMPLE_RATE // 2, SAMPLE_RATE // 3
    stems = [song[0], song[1, :1, :half], song[2, :, :third]]
    explicit = torch.zeros(3, 2, SAMPLE_RATE)
    explicit[0] = song[0]
    explicit[1, :, :half] = song[1, 0, :half]  # the mono channel on both sides
    explicit[2, :, :third] = song[2, :, :third]
    with torch.no_grad():
        mix, _ = chain(stems, style="rock_punk", mode="predict")
        expected, _ = chain(explicit, style="rock_punk", mode="predict")
    assert mix.shape == (2, SAMPLE_RATE)
    torch.testing.assert_close(mix, expected, rtol=0, atol=1e-6)


def test_silent_stems_render_finite_output_and_analysis(chain):
    """`forward` refuses a silent song (tests/test_grad_modes.py); training renders one (a silent excerpt)
    through the same predictor and master, and nothing may turn NaN."""
    targets = resolve_targets("rnb_ballad", chain.style_targets, 1)
    with torch.no_grad():
        prediction = chain.predict(torch.zeros(1, 3, 2, SAMPLE_RATE), targets)
        mix, analysis = chain.finish_prediction(prediction, kept=False)
        analysis |= report(analysis, targets, chain.ceiling_dbtp)
    assert torch.isfinite(mix).all()
    for key in ("lufs", "spectral_centroid", "stereo_ms_ratio", "true_peak_dbtp", "quality_score"):
        assert torch.isfinite(torch.as_tensor(analysis[key])).all(), key


@pytest.mark.parametrize(
    ("stems", "message"),
    [
        (torch.zeros(2, 3, 100), "channels"),
        (torch.full((2, 2, 100), float("nan")), "NaN"),
        ([], "no stems"),
        (torch.zeros(2, 2, 0), "empty"),
    ],
)
def test_bad_stems_raise_the_project_error(chain, stems, message):
    with pytest.raises(AutomixError, match=message):
        chain(stems, style="rock_punk", mode="predict")


def test_unknown_style_lists_the_valid_ones(chain):
    with pytest.raises(AutomixError, match="rock_punk"):
        chain(torch.zeros(1, 2, 100), style="polka", mode="predict")


def test_training_loss_is_differentiable_and_zero_at_the_targets(chain):
    stems, _ = synth_stems(1.0, SAMPLE_RATE, seed=6)
    mix, analysis = chain(stems, style="rock_punk", mode="predict")
    loss = create_training_loss(load_style_targets())(analysis, "rock_punk")
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in chain.predictor.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    target = load_style_targets()["rock_punk"]
    perfect = {
        "lufs": torch.tensor(target.lufs),
        "spectral_centroid": torch.tensor(target.spectral_centroid_hz),
        "stereo_ms_ratio": torch.tensor(target.stereo_ms_ratio),
        "true_peak_dbtp": torch.tensor(-1.0),
        "band_energy": torch.tensor([0.3, 0.5, 0.2]),
    }
    assert create_training_loss(load_style_targets())(perfect, "rock_punk").item() == pytest.approx(0.0)


def test_buried_stem_term_counts_audible_stems_only():
    """A stem at the silence floor (a part resting through an excerpt) costs nothing; an audible stem 30 LU
    under the mix costs its (30 - 20 LU)^2 over the stems counted."""
    from automix.loss import loss_terms
    from automix.loudness import SILENCE_LUFS

    analysis = {
        "lufs": torch.tensor([-10.0]),
        "spectral_centroid": torch.tensor([2000.0]),
        "stereo_ms_ratio": torch.tensor([0.5]),
        "true_peak_dbtp": torch.tensor([-1.0]),
        "band_energy": torch.tensor([[0.3, 0.5, 0.2]]),
        "stem_lufs": torch.tensor([[SILENCE_LUFS, -40.0, -15.0]]),
    }
    target = Targets.from_tensor(
        torch.tensor([[-10.0, 2000.0, 0.5, float("nan"), float("nan"), float("nan")]])
    )
    assert loss_terms(analysis, target)["buried_stems"].item() == pytest.approx((30.0 - 20.0) ** 2 / 2)


def test_a_silent_stem_is_reported_silent_after_the_trim(chain):
    """The trim moves every stem's loudness but a silent stem's: it stays at the silence floor."""
    from automix.loudness import SILENCE_LUFS

    song, _ = synth_stems(2.0, SAMPLE_RATE, seed=9)
    song[1] = 0.0
    with torch.no_grad():
        _, analysis = chain(song, style="rnb_ballad", mode="predict")
    assert analysis["stem_lufs"][1].item() == SILENCE_LUFS
    assert (analysis["stem_lufs"][[0, 2, 3]] > SILENCE_LUFS).all()


def test_checkpoint_round_trip_rebuilds_the_same_predictor(tmp_path):
    chain = AutoMixChain(hidden_dim=32, n_layers=1)
    for parameter in chain.predictor.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    path = tmp_path / "chain.ckpt"
    torch.save(chain.checkpoint(), path)
    rebuilt = AutoMixChain.from_checkpoint(path)
    stems, _ = synth_stems(1.0, SAMPLE_RATE, seed=7)
    with torch.no_grad():
        expected, _ = chain(stems, style="rock_punk", mode="predict")
        got, _ = rebuilt(stems, style="rock_punk", mode="predict")
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("target_lufs", [-16.0, -12.0])
def test_predict_mode_reaches_the_target_loudness_by_its_trim_search(target_lufs):
    """Untrained (neutral console), predict mode's trim search alone (no refinement) brings a song to the
    target loudness while the limiter works moderately: pyloudnorm reads it within 0.5 LU."""
    from automix.styles import StyleTarget

    chain = AutoMixChain(sample_rate=SAMPLE_RATE, predict={"refine": False})
    style = StyleTarget(name="level", lufs=target_lufs, spectral_centroid_hz=2000.0, stereo_ms_ratio=0.5)
    song, _ = synth_stems(6.0, SAMPLE_RATE, seed=21)
    with torch.no_grad():
        mix, _ = chain(song, style=style, mode="predict")
    measured = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(mix.T.double().numpy())
    assert measured == pytest.approx(target_lufs, abs=0.5)


def test_predict_mode_reaches_the_target_loudness_behind_a_boosting_master_eq():
    """A master EQ boosting the mids by up to +12 dB lifts the limiter's input far above the bus's
    closed-form level: the search's model is built on the master's own drive, so its first render is
    within its 0.25 LU stop (from the bus's level it was 0.9 LU over) and is the mix (pyloudnorm)."""
    from automix.params import logit

    chain = AutoMixChain(sample_rate=SAMPLE_RATE)
    boosted = chain.space.neutral(1)[1] | {
        "eq_gain_db": torch.tensor([0.0, 6.0, 6.0, 0.0]),
        "eq_q": torch.tensor([0.7071, 0.5, 0.5, 0.7071]),
    }
    # The master head's output layer starts at zero weight: its bias alone sets what it predicts.
    with torch.no_grad():
        chain.predictor.master_out.bias.copy_(logit(chain.space.normalize_master(boosted)))
    song, _ = synth_stems(6.0, SAMPLE_RATE, seed=21)
    targets = Targets.from_tensor(torch.tensor([[-12.0, 2000.0, 0.5] + [float("nan")] * 3]))
    with torch.no_grad():
        prediction = chain.predict(song[None], targets, loudness_steps=1)
    predicted = chain.space.denormalize_master(prediction.master_unit)["eq_gain_db"][0]
    torch.testing.assert_close(predicted, boosted["eq_gain_db"], atol=0.05, rtol=0)
    assert prediction.mix is not None  # the first render was within the search's stop
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    assert meter.integrated_loudness(prediction.mix[0].T.double().numpy()) == pytest.approx(-12.0, abs=0.3)


def test_predict_mode_corrects_its_master_toward_the_targets_and_notes_what_it_misses():
    """Untrained, predict mode's master leaves country_pop's centroid (2200 Hz) 360 Hz away and the M/S
    far under 0.7, each noted; the refinement's tilt brings the centroid within the promised 100 Hz
    (numpy's centroid of the mix) and the loudness within 0.5 LU (pyloudnorm). The width's range cannot
    reach 0.7 on these narrow stems from the predictor's centred pans: the pans are spread until the M/S
    is within its promise too, and nothing is noted."""
    song, _ = synth_stems(6.0, SAMPLE_RATE, seed=21)
    target = load_style_targets()["country_pop"]
    readings = {}
    for refine in (False, True):
        chain = AutoMixChain(sample_rate=SAMPLE_RATE, predict={"refine": refine})
        with torch.no_grad():
            mix, analysis = chain(song, style="country_pop", mode="predict")
        audio = mix.numpy()
        loudness = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(mix.T.double().numpy())
        readings[refine] = (reference_centroid(audio, SAMPLE_RATE), reference_ms_ratio(audio), loudness)
        assert any(note.startswith("M/S ratio") for note in analysis["notes"]) == (not refine)
        spread = analysis["stem_params"]["pan"].abs().max() > 0.1  # the untrained predictor centres them
        assert spread == refine
    centroid, ms_ratio, loudness = readings[True]
    assert abs(readings[False][0] - target.spectral_centroid_hz) > 200
    assert readings[False][1] < target.stereo_ms_ratio - 0.3
    assert abs(centroid - target.spectral_centroid_hz) <= 100
    assert loudness == pytest.approx(target.lufs, abs=0.5)
    assert ms_ratio == pytest.approx(target.stereo_ms_ratio, abs=0.05)


def test_predict_modes_refinement_is_the_same_mix_in_any_grad_mode_and_passes_gradients(chain):
    """The master's correction is a constant to the gradient (as the loudness search is): the mix with
    gradients recorded equals the one without, and the predictor's master head still gets a gradient."""
    song, _ = synth_stems(2.0, SAMPLE_RATE, seed=8)
    with torch.no_grad():
        expected, _ = chain(song, style="country_pop", mode="predict")
    mix, _ = chain(song, style="country_pop", mode="predict")
    torch.testing.assert_close(mix.detach(), expected, rtol=0, atol=1e-5)
    mix.square().mean().backward()
    assert chain.predictor.master_out.weight.grad.abs().sum() > 0
    chain.predictor.zero_grad()


def test_predict_without_gradients_returns_the_searchs_render_unchanged(chain):
    """Training without gradients reuses the loudness search's last render as the mix: it equals a fresh
    render."""
    song, _ = synth_stems(2.0, SAMPLE_RATE, seed=8)
    stems = song[None]
    target = Targets.from_tensor(
        torch.tensor([[-12.0, 2000.0, 0.5, float("nan"), float("nan"), float("nan")]])
    )
    with torch.no_grad():
        prediction = chain.predict(stems, target)
        reused, _ = chain.finish_prediction(prediction, kept=False)
    assert prediction.mix is not None
    rendered, _ = chain.finish_prediction(prediction._replace(mix=None), kept=False)
    torch.testing.assert_close(reused, rendered.detach(), rtol=0, atol=1e-6)


def test_a_render_without_gradients_goes_block_by_block_to_the_same_bus(monkeypatch):
    """A long song (over 1 s here) rendered block-wise goes through the strips a block (2 s here)
    at a time and meters each stem from its hop energies: the bus and the stem loudness match the
    whole-signal render (with gradients), a masked stem stays silent."""
    monkeypatch.setattr(filters, "BLOCKWISE_MIN_SECONDS", 1.0)
    monkeypatch.setattr(chain_module, "STRIP_BLOCK_HOPS", 20)
    stems = synth_stems(7.0, SAMPLE_RATE, seed=5)[0][None]
    chain = AutoMixChain(n_stems=4, sample_rate=SAMPLE_RATE)
    unit = torch.rand(1, 4, chain.space.n_stem, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    with torch.no_grad():
        bus, _, stem_lufs, _ = chain.render_bus(stems, unit, mask, blockwise=True)
    whole_bus, _, whole_lufs, _ = chain.render_bus(stems, unit, mask)
    error_db = 10 * torch.log10((bus - whole_bus.detach()).square().sum() / whole_bus.detach().square().sum())
    assert error_db < -60
    torch.testing.assert_close(stem_lufs, whole_lufs.detach(), atol=0.01, rtol=0)
    assert stem_lufs[0, 2] == -70.0


def test_the_loudness_of_joined_excerpts_leaves_out_the_silent_ones():
    """Equal-length excerpts, one silent: their joined loudness is that of the audible ones joined
    (pyloudnorm), not an average with the silence floor; all silent is silence."""
    from automix.loudness import SILENCE_LUFS, joined_loudness

    gen = torch.Generator().manual_seed(1)
    excerpts = torch.randn(3, 2, 3 * SAMPLE_RATE, generator=gen, dtype=torch.float64)
    excerpts = excerpts * torch.tensor([0.1, 0.0, 0.05], dtype=torch.float64)[:, None, None]
    each = chain_module.metrics.integrated_loudness(excerpts, SAMPLE_RATE)
    joined = joined_loudness(each[None], dim=1)[0]
    audible = excerpts[[0, 2]].permute(0, 2, 1).reshape(-1, 2).numpy()
    whole = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(audible)
    assert abs(float(joined) - (whole + PYLOUDNORM_BIAS_LU)) < 0.1
    silent = torch.full((1, 3), SILENCE_LUFS)
    assert joined_loudness(silent, dim=1).item() == SILENCE_LUFS


def test_the_input_gain_brings_each_songs_stem_sum_to_the_nominal_loudness():
    """Against pyloudnorm on the sum of the real stems: a quiet song is raised, a hot one lowered, a
    padded (masked) slot is not counted, a silent song is left alone, and a song long enough to be
    metered a block at a time reads as it does whole."""
    from automix.staging import INPUT_LUFS, input_gain_db

    meter = pyloudnorm.Meter(SAMPLE_RATE)
    stems = synth_stems(6.0, SAMPLE_RATE, seed=5)[0]
    loud_stem = stems[:1] * 4.0  # a padded slot: its level must not count
    batch = torch.stack([stems * 0.01, torch.cat([stems[:3], loud_stem]), torch.zeros_like(stems)])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    gain_db = input_gain_db(batch, SAMPLE_RATE, mask)
    for item, real in ((0, slice(None)), (1, slice(0, 3))):
        reference = meter.integrated_loudness(batch[item, real].sum(0).double().T.numpy())
        assert float(gain_db[item]) == pytest.approx(INPUT_LUFS - reference - PYLOUDNORM_BIAS_LU, abs=0.1)
    assert float(gain_db[0]) > 30 and float(gain_db[2]) == 0.0
    long = stems.repeat(1, 1, 11)  # 66 s: past `BLOCKWISE_MIN_SECONDS`
    with torch.no_grad():
        by_blocks = input_gain_db(long[None], SAMPLE_RATE, blockwise=True)
    reference = meter.integrated_loudness(long.sum(0).double().T.numpy())
    assert float(by_blocks) == pytest.approx(INPUT_LUFS - reference - PYLOUDNORM_BIAS_LU, abs=0.1)


def test_a_mix_does_not_depend_on_the_level_of_its_stems(chain):
    """The same stems 40 dB quieter (a quiet export) mix to the same master: gain staging. Without it,
    the compressors, with thresholds in dBFS, would hardly act on the quiet ones. Predict mode is one
    chain of continuous steps: the same audio to float rounding."""
    stems, _ = synth_stems(8.0, SAMPLE_RATE, seed=6)
    mix, analysis = chain(stems, style="country_pop", mode="predict")
    quiet_mix, quiet = chain(stems * 0.01, style="country_pop", mode="predict")
    assert float(quiet["stem_params"]["input_gain_db"][0] - analysis["stem_params"]["input_gain_db"][0]) == (
        pytest.approx(40.0, abs=1e-3)
    )
    torch.testing.assert_close(quiet_mix, mix, rtol=0, atol=1e-4)


def test_the_default_mode_does_not_depend_on_the_level_of_its_stems(chain):
    """The default mode on a quiet export: the same start and first full render (to float rounding);
    Adam's steps and the refinement's stops then carry the rounding on to different points, each
    settled (`SongOptimizer.settled`)."""
    from automix.optimize import SongOptimizer

    stems, _ = synth_stems(8.0, SAMPLE_RATE, seed=6)
    targets = resolve_targets("country_pop", chain.style_targets, 1)
    loud, quiet = SongOptimizer(chain), SongOptimizer(chain)
    torch.manual_seed(0)
    _, loud_analysis = loud(stems[None], targets)
    torch.manual_seed(0)
    _, quiet_analysis = quiet(stems[None] * 0.01, targets)
    torch.testing.assert_close(quiet.state.start_balance_db, loud.state.start_balance_db, atol=1e-3, rtol=0)
    first_loud, first_quiet = loud.state.renders[0].measured, quiet.state.renders[0].measured
    for name, tolerance in (("lufs", 0.01), ("spectral_centroid", 1.0), ("stereo_ms_ratio", 1e-3)):
        assert float(first_quiet[name]) == pytest.approx(float(first_loud[name]), abs=tolerance)
    for optimizer in (loud, quiet):  # within the stop tolerances, or short of loudness at the limiting budget
        assert bool(optimizer.settled(optimizer.state.best, targets))


def test_a_mix_leaning_to_one_side_costs_its_balance_squared():
    """The channel-balance term: (dB / `CHANNEL_BALANCE_SCALE_DB`)², from the mix's own L/R powers."""
    from automix.analysis import measure
    from automix.loss import CHANNEL_BALANCE_SCALE_DB, loss_terms

    gen = torch.Generator().manual_seed(2)
    mix = torch.randn(1, 2, SAMPLE_RATE, generator=gen) * torch.tensor([[1.0], [0.5]])  # left 6 dB up
    analysis = measure(mix, SAMPLE_RATE)
    target = Targets.from_tensor(
        torch.tensor([[-10.0, 2000.0, 0.5, float("nan"), float("nan"), float("nan")]])
    )
    balance_db = 10 * np.log10((mix[0, 0] ** 2).mean().item() / (mix[0, 1] ** 2).mean().item())
    expected = (balance_db / CHANNEL_BALANCE_SCALE_DB) ** 2
    assert loss_terms(analysis, target)["channel_balance"].item() == pytest.approx(expected, rel=1e-4)


def test_the_ms_term_reads_an_out_of_phase_mix_at_its_cap_with_a_finite_gradient():
    """Side against a floored mid reads an M/S of 1e9 (float32): the term costs what the cap does, its
    gradient is 0, not inf; a ratio under the cap costs ((M/S − target) / `MS_SCALE`)², as before."""
    from automix.analysis import measure
    from automix.loss import MS_LOSS_CAP, MS_SCALE, loss_terms

    tone = torch.sin(torch.linspace(0, 2000 * torch.pi, SAMPLE_RATE))
    target = Targets.from_tensor(
        torch.tensor([[-10.0, 2000.0, 0.5, float("nan"), float("nan"), float("nan")]])
    )
    for right, ms_ratio in ((-tone, None), (0.5 * tone, 1 / 3)):  # out of phase; in phase, M/S 0.25 / 0.75
        mix = torch.stack([tone, right])[None].requires_grad_(True)
        analysis = measure(mix, SAMPLE_RATE)
        term = loss_terms(analysis, target)["stereo_ms_ratio"]
        (grad,) = torch.autograd.grad(term.sum(), mix)
        assert torch.isfinite(grad).all()
        if ms_ratio is None:
            assert analysis["stereo_ms_ratio"].item() > 1e6
            assert term.item() == pytest.approx(((MS_LOSS_CAP - 0.5) / MS_SCALE) ** 2)
            assert grad.abs().max() == 0
        else:
            assert term.item() == pytest.approx(((ms_ratio - 0.5) / MS_SCALE) ** 2, rel=1e-4)


# ---------------------------------------------------------------- each stem's loudness in the mix


def neutral_master(chain, dtype=torch.float64) -> dict:
    _, master_unit = chain.space.neutral_unit(1, dtype)
    return chain.space.denormalize_master(master_unit[None])


def test_a_neutral_master_leaves_each_stems_loudness_in_the_mix_as_it_left_its_strip(chain):
    stems = white_noise(3, 2.0, SAMPLE_RATE, seed=1).double() * torch.tensor([1.0, 0.5, 0.1])[:, None, None]
    in_mix = chain.stem_loudness_in_mix(stems[None], neutral_master(chain))
    torch.testing.assert_close(in_mix, chain_module.metrics.integrated_loudness(stems[None], SAMPLE_RATE))


def test_the_master_width_and_eq_move_each_stem_by_its_own_closed_form(chain):
    """A side-only stem (L = −R) comes up by 20·log10(width), a mono one not at all; a 10 kHz tone by the
    high shelf's gain at 10 kHz (scipy's response of the same RBJ section), a 60 Hz tone by its own."""
    t = torch.arange(2 * SAMPLE_RATE, dtype=torch.float64) / SAMPLE_RATE
    noise = white_noise(1, 2.0, SAMPLE_RATE, seed=3).double()[0, 0]
    tone_hi, tone_lo = (0.1 * torch.sin(2 * torch.pi * f * t) for f in (10_000.0, 60.0))
    stems = torch.stack(
        [torch.stack([noise, -noise]), torch.stack([tone_hi, tone_hi]), torch.stack([tone_lo, tone_lo])]
    )[None]
    before = chain.stem_loudness_in_mix(stems, neutral_master(chain))
    params = neutral_master(chain)
    params["width"] = torch.tensor([1.4], dtype=torch.float64)
    params["eq_gain_db"] = torch.tensor([[0.0, 0.0, 0.0, 5.0]], dtype=torch.float64)
    moved = chain.stem_loudness_in_mix(stems, params) - before
    b, a = four_band_sections(
        SAMPLE_RATE, gain_db=params["eq_gain_db"][0], freq_hz=params["eq_freq_hz"][0], q=params["eq_q"][0]
    )
    expected = []
    for f in (10_000.0, 60.0):
        response = np.prod(
            [scipy.signal.freqz(b[k].numpy(), a[k].numpy(), worN=[f], fs=SAMPLE_RATE)[1][0] for k in range(4)]
        )
        expected.append(20 * np.log10(abs(response)))
    # The side stem's noise is white: the shelf lifts its top octaves too, so it is checked with the EQ flat.
    params["eq_gain_db"] = torch.zeros(1, 4, dtype=torch.float64)
    width_only = chain.stem_loudness_in_mix(stems, params) - before
    assert float(width_only[0, 0]) == pytest.approx(20 * np.log10(1.4), abs=0.01)
    assert float(width_only[0, 1]) == pytest.approx(0.0, abs=0.01)
    assert float(moved[0, 1]) == pytest.approx(expected[0], abs=0.05)
    assert float(moved[0, 2]) == pytest.approx(expected[1], abs=0.05)
    assert expected[0] > 3.0  # the shelf (at 8 kHz) does act at 10 kHz


@pytest.mark.parametrize("mode", ["optimize", "predict"])
def test_a_mix_that_cancels_in_mono_is_noted_as_such(mode):
    """Every stem with its right channel inverted: side with next to no mid, an M/S ratio (numpy's, of the
    mix) still over 2 after the width and two Adam steps, far from country_pop's 0.7. The note says why,
    in both modes; the same stems in phase get no such note."""
    song, _ = synth_stems(4.0, SAMPLE_RATE, seed=21)
    inverted = torch.stack([song[:, 0], -song[:, 0]], dim=1)
    chain = AutoMixChain(sample_rate=SAMPLE_RATE, optimize={"steps": 2, "refine_steps": 2, "attempts": 2})
    for stems, cancels in ((inverted, True), (song, False)):
        with torch.no_grad():
            mix, analysis = chain(stems, style="country_pop", mode=mode)
        noted = any("cancels in mono" in note for note in analysis["notes"])
        assert noted == cancels
        with np.errstate(divide="ignore"):  # an exactly cancelling mix has no mid at all
            assert (reference_ms_ratio(mix.numpy()) > 2) == cancels
    (note,) = [note for note in analysis["notes"] if note.startswith("M/S ratio")] or [""]
    assert "cancels" not in note
