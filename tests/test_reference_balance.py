"""The reference start: the stem balance whose summed spectrum is a reference's
(automix.reference_balance)."""

import numpy as np
import pytest
import scipy.signal
import torch

from automix import AutoMixChain
from automix.dsp.console import MASTER_PARAMETERS, STEM_PARAMETERS
from automix.loudness import integrated_loudness
from automix.optimize import SongOptimizer
from automix.reference_balance import SPECTRUM_BANDS, fit_reference_balance, long_term_spectrum_db
from automix.settings import OptimizeSettings, PredictSettings
from automix.styles import get_style, style_from_reference
from automix.targets import resolve_targets

SR = 44100
SECONDS = 4.0
# Stems in bands apart (low, mid, high) and the gains (dB from equal loudness) the reference mixes them at.
BANDS = ((40, 150), (800, 2000), (5000, 12000))
REFERENCE_GAINS_DB = torch.tensor([4.0, 0.0, -5.0])


def band_noise(seed: int) -> torch.Tensor:
    """`[3, 2, T]` stereo band-limited noise, one stem per band of `BANDS`, each at -23 LUFS."""
    rng = np.random.default_rng(seed)
    stems = []
    for low, high in BANDS:
        sos = scipy.signal.butter(6, (low, high), "bandpass", fs=SR, output="sos")
        stems.append(scipy.signal.sosfilt(sos, rng.standard_normal((2, int(SECONDS * SR)))))
    stems = torch.from_numpy(np.stack(stems)).float()
    lufs = integrated_loudness(stems, SR)
    return stems * torch.pow(10.0, (-23.0 - lufs) / 20)[:, None, None]


def reference_mix() -> torch.Tensor:
    """Another draw of the same kinds of stems, mixed at `REFERENCE_GAINS_DB`."""
    return (band_noise(seed=1) * torch.pow(10.0, REFERENCE_GAINS_DB / 20)[:, None, None]).sum(0)


def centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-1, keepdim=True)


def test_the_spectrum_has_the_bands_from_25_hz_to_16_khz_and_follows_the_level():
    noise = band_noise(seed=0)
    spectrum = long_term_spectrum_db(noise, SR)
    assert spectrum.shape == (3, SPECTRUM_BANDS)
    torch.testing.assert_close(
        long_term_spectrum_db(noise * 2, SR), spectrum + 20 * np.log10(2), atol=1e-3, rtol=0
    )
    assert long_term_spectrum_db(noise, 22050).shape[-1] < SPECTRUM_BANDS  # no 16 kHz band under 11 kHz


def test_the_fit_finds_the_gains_the_reference_was_mixed_at():
    stems_db = long_term_spectrum_db(band_noise(seed=0), SR)[None]
    reference_db = long_term_spectrum_db(reference_mix(), SR)[None]
    audible = torch.ones(1, 3, dtype=torch.bool)
    # stems that share no band, a reference of the same kinds of stems: the fit leaves little, so the
    # default spread follows the reference's gains (up to the overall level) within noise
    moves = fit_reference_balance(stems_db, reference_db, 5.0, audible)[0]
    torch.testing.assert_close(centred(moves), centred(REFERENCE_GAINS_DB), atol=0.3, rtol=0)
    held = fit_reference_balance(stems_db, reference_db, 0.1, audible)[0]
    assert (centred(held).abs() < centred(moves).abs()).all()  # a smaller spread stays nearer the start
    assert held[0] > held[1] > held[2]  # in the reference's order


def other_music() -> torch.Tensor:
    """`[2, T]` a reference the stems cannot make: noise in two bands between the stems' bands."""
    rng = np.random.default_rng(2)
    mix = 0.0
    for low, high in ((250, 500), (2500, 4000)):
        sos = scipy.signal.butter(6, (low, high), "bandpass", fs=SR, output="sos")
        mix = mix + scipy.signal.sosfilt(sos, rng.standard_normal((2, int(SECONDS * SR))))
    return torch.from_numpy(mix).float()


def test_a_reference_the_stems_cannot_make_keeps_them_near_the_start():
    stems_db = long_term_spectrum_db(band_noise(seed=0), SR)[None]
    audible = torch.ones(1, 3, dtype=torch.bool)
    same = fit_reference_balance(stems_db, long_term_spectrum_db(reference_mix(), SR)[None], 5.0, audible)
    other = fit_reference_balance(stems_db, long_term_spectrum_db(other_music(), SR)[None], 5.0, audible)
    assert centred(other).abs().max() < 0.5 * centred(same).abs().max()


def test_the_moves_minimise_the_misfit_with_the_penalty_the_misfit_gives():
    # the fixed point, checked from its definition: at the moves g, the gradient of
    # mean_b (M(b) − R(b) − c)² + λ · mean_i gᵢ² is zero for λ = (that first term at g) / spread²
    spread = 5.0
    stems_db = long_term_spectrum_db(band_noise(seed=0), SR).double()
    reference_db = long_term_spectrum_db(other_music(), SR).double()
    moves = fit_reference_balance(stems_db[None], reference_db[None], spread, torch.ones(1, 3, dtype=bool))
    bands = reference_db.isfinite() & stems_db.isfinite().any(dim=0)  # bands with energy on both sides
    stems_db, reference_db = stems_db[:, bands], reference_db[bands]
    stems_db = torch.maximum(stems_db, stems_db.max() - 120.0)
    gain = moves[0].double().requires_grad_()
    summed = 10 * torch.log10(torch.pow(10.0, (stems_db + gain[:, None]) / 10).sum(0))

    def floored(db):
        return torch.maximum(db, db.max() - 60.0)

    difference = floored(summed) - floored(reference_db)
    misfit = (difference - difference.mean()).square().mean()
    strength = float(misfit.detach()) / spread**2
    penalty_grad = 2 * strength * gain.detach().abs().max() / len(gain)  # the penalty's pull alone
    (misfit + strength * gain.square().mean()).backward()
    assert float(gain.grad.abs().max()) < 0.01 * float(penalty_grad)


def test_a_silent_or_masked_stem_is_not_moved():
    stems_db = long_term_spectrum_db(band_noise(seed=0), SR)[None]
    reference_db = long_term_spectrum_db(reference_mix(), SR)[None]
    moves = fit_reference_balance(stems_db, reference_db, 5.0, torch.tensor([[True, False, True]]))
    assert moves[0, 1] == 0 and moves[0, 0] > moves[0, 2]


@pytest.mark.parametrize("grad_mode", [torch.enable_grad, torch.no_grad, torch.inference_mode])
def test_a_reference_song_starts_from_the_reference_balance(grad_mode):
    chain = AutoMixChain(n_stems=3, sample_rate=SR)
    reference = style_from_reference(reference_mix(), SR)
    assert len(reference.spectrum_db) == SPECTRUM_BANDS
    targets = resolve_targets(reference, chain.style_targets, 1)
    optimizer = SongOptimizer(chain, OptimizeSettings(steps=0, refine_steps=0, attempts=1))
    assert optimizer.start.balance_source(targets) == "reference"
    with grad_mode():
        optimizer(band_noise(seed=0)[None], targets)
    assert optimizer.start.song_balance_sources(targets) == ["reference"]
    start = optimizer.state.start_balance_db[0]
    # the low stem up, the high one down, as the reference has them; within what the penalty keeps
    assert start[0] > start[1] > start[2]
    assert float(start[0] - start[2]) > 0.5 * float(REFERENCE_GAINS_DB[0] - REFERENCE_GAINS_DB[2])
    # a style has no spectrum: the balance checkpoint's start, or equal loudness without one
    style = resolve_targets(get_style(chain.style_targets, "rock_punk"), chain.style_targets, 1)
    assert style.spectrum_db is None and optimizer.start.balance_source(style) == "checkpoint"
    both = resolve_targets([reference, "rock_punk"], chain.style_targets, 2)
    assert optimizer.start.song_balance_sources(both) == ["reference", "checkpoint"]
    blind = SongOptimizer(chain, OptimizeSettings(balance_checkpoint=None))
    assert blind.start.balance_source(style) == "equal_loudness"
    assert blind.start.song_balance_sources(both) == ["reference", "equal_loudness"]


def test_in_one_batch_a_reference_song_and_a_style_song_start_as_each_would_alone():
    """balance_start "auto" with a balance checkpoint (the default): in one batch, the song mixed to a
    reference starts where it would alone, at the reference's balance, and the style song at the
    checkpoint's, as it would alone."""
    chain = AutoMixChain(n_stems=3, sample_rate=SR)
    reference = style_from_reference(reference_mix(), SR)
    stems = band_noise(seed=0)[None]
    settings = OptimizeSettings(steps=0, refine_steps=0, attempts=1)
    alone = []
    for target in (reference, "rock_punk"):
        optimizer = SongOptimizer(chain, settings)
        optimizer(stems, resolve_targets(target, chain.style_targets, 1))
        alone.append(optimizer.state.start_balance_db[0])
    optimizer = SongOptimizer(chain, settings)
    both = resolve_targets([reference, "rock_punk"], chain.style_targets, 2)
    optimizer(stems.repeat(2, 1, 1, 1), both)
    torch.testing.assert_close(optimizer.state.start_balance_db, torch.stack(alone), atol=0.02, rtol=0)
    assert (alone[0] - alone[1]).abs().amax() > 1.0  # two starts that differ


def test_the_spread_must_be_positive():
    from automix.errors import AutomixError

    with pytest.raises(AutomixError, match="reference_balance_spread_db"):
        OptimizeSettings(reference_balance_spread_db=0.0)


@pytest.mark.parametrize("grad_mode", [torch.enable_grad, torch.inference_mode])
def test_predict_mode_takes_a_references_balance_and_keeps_the_predictors_elsewhere(grad_mode):
    chain = AutoMixChain(n_stems=3, sample_rate=SR)
    with torch.no_grad():  # strips and master off the neutral console, as a trained predictor's are
        chain.predictor.stem_out.bias.add_(0.5)
        chain.predictor.master_out.bias.add_(0.5)
    targets = resolve_targets(
        [style_from_reference(reference_mix(), SR), "rock_punk"], chain.style_targets, 2
    )
    stems = band_noise(seed=0)[None].repeat(2, 1, 1, 1)
    with grad_mode():
        _, analysis = chain(stems, targets, mode="predict")
    assert analysis["balance_start"] == ["reference", "predicted"]
    # the reference song plays at the default mode's reference start (the strips' last gain is exact)
    with torch.no_grad():
        prediction = chain.predict(stems, targets, blockwise=True)
        optimizer = SongOptimizer(chain)
        wanted = optimizer.start.reference_balance_db(stems, targets.spectrum_db, None)[0]
    balance = analysis["stem_balance_db"].detach()
    torch.testing.assert_close(centred(balance[0]), centred(wanted), atol=0.05, rtol=0)
    assert balance[0, 0] > balance[0, 1] > balance[0, 2]  # the reference's order (low up, high down)
    # the style song keeps the predictor's strips: the balance of predict mode without the reference step
    torch.testing.assert_close(analysis["stem_params"]["level_db"][1], prediction.stem_params["level_db"][1])
    # the reference song's strips are neutral but for their level; the style song's all as predicted
    neutral = chain.space.neutral(3)[0]
    for name in set(STEM_PARAMETERS) - {"level_db"}:
        torch.testing.assert_close(analysis["stem_params"][name][0], neutral[name], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            analysis["stem_params"][name][1], prediction.stem_params[name][1], atol=1e-3, rtol=1e-4
        )
    for name, moved in (("eq_gain_db", 0.5), ("pan", 0.1)):  # the predictor had moved them
        assert (prediction.stem_params[name][0] - neutral[name]).abs().max() > moved
    # its master is the neutral one but for what the correction moves (the EQ's gains, the width)
    master, neutral_master = analysis["master_params"], chain.space.neutral(1)[1]
    for name in set(MASTER_PARAMETERS) - {"eq_gain_db", "width"}:
        torch.testing.assert_close(master[name][0], neutral_master[name], atol=1e-4, rtol=1e-4)
    assert (master["bus_threshold_db"][1] - neutral_master["bus_threshold_db"]).abs() > 1  # the style song's
    predicted = AutoMixChain(n_stems=3, sample_rate=SR, predict=PredictSettings(balance="predicted"))
    predicted.load_state_dict(chain.state_dict())
    with torch.no_grad():
        _, kept = predicted(stems, targets, mode="predict")
    assert kept["balance_start"] == ["predicted", "predicted"]
    torch.testing.assert_close(kept["stem_params"]["level_db"], prediction.stem_params["level_db"])


def test_predict_mode_plays_a_style_songs_stems_at_equal_loudness_where_set():
    """`predict.style_balance: equal_loudness`: a song mixed to a style keeps the predicted strips but
    for their levels, which put every stem at the stems' mean loudness after the strips; the song mixed
    to a reference is as before; "predicted" keeps the predictor's levels, which are not level."""
    settings = PredictSettings(style_balance="equal_loudness", refine=False)  # the master's step aside
    chain = AutoMixChain(n_stems=3, sample_rate=SR, predict=settings)
    with torch.no_grad():  # strips and master off the neutral console, as a trained predictor's are
        chain.predictor.stem_out.bias.add_(0.5)
        chain.predictor.master_out.bias.add_(0.5)
    targets = resolve_targets(
        [style_from_reference(reference_mix(), SR), "rock_punk"], chain.style_targets, 2
    )
    stems = band_noise(seed=0) * torch.tensor([2.0, 1.0, 0.5])[:, None, None]  # +6, 0, -6 dB
    stems = stems[None].repeat(2, 1, 1, 1)
    with torch.inference_mode():
        _, analysis = chain(stems, targets, mode="predict")
    assert analysis["balance_start"] == ["reference", "equal_loudness"]
    balance = analysis["stem_balance_db"].detach()
    torch.testing.assert_close(centred(balance[1]), torch.zeros(3), atol=0.05, rtol=0)
    with torch.no_grad():
        prediction = chain.predict(stems, targets, blockwise=True)
    for name in set(STEM_PARAMETERS) - {"level_db", "comp_threshold_db"}:  # the budget may raise these
        torch.testing.assert_close(
            analysis["stem_params"][name][1], prediction.stem_params[name][1], atol=1e-3, rtol=1e-4
        )
    settings = PredictSettings(style_balance="predicted", refine=False)
    predicted = AutoMixChain(n_stems=3, sample_rate=SR, predict=settings)
    predicted.load_state_dict(chain.state_dict())
    with torch.no_grad():
        _, kept = predicted(stems, targets, mode="predict")
    assert kept["balance_start"] == ["reference", "predicted"]
    assert centred(kept["stem_balance_db"][1]).abs().max() > 1.0
    torch.testing.assert_close(kept["stem_balance_db"][0], balance[0], atol=0.01, rtol=0)


def test_a_balance_wider_than_the_levels_room_from_the_start_is_set_whole():
    """The stems' common level is the trim's: a balance that would push one stem's level past the top of
    its range from the start (+6 dB, the start at -6) moves every level down instead, and the strips play
    the stems at that balance exactly (their loudness after the strips, pyloudnorm-equivalent meter)."""
    chain = AutoMixChain(n_stems=3, sample_rate=SR)
    stems = band_noise(seed=0)[None]
    optimizer = SongOptimizer(chain)
    start, _ = chain.space.neutral_unit(3)
    with torch.no_grad():
        _, _, stem_lufs, _ = chain.render_bus(stems, start[None], blockwise=True)
        wanted = torch.tensor([[20.0, 0.0, -10.0]])
        moved = optimizer.start.balanced_strips(start[None], stem_lufs, wanted)
        _, params, moved_lufs, _ = chain.render_bus(stems, moved, blockwise=True)
    level_range = chain.space.stem["level_db"]
    assert float(params["level_db"].max()) <= level_range.high + 1e-4
    assert float(params["level_db"].min()) >= level_range.low - 1e-4
    torch.testing.assert_close(centred(moved_lufs), centred(wanted), atol=0.05, rtol=0)
