"""Balance error and MR-STFT distance against closed forms and independent scipy/numpy computations."""

import functools

import numpy as np
import pytest
import scipy.optimize
import scipy.signal
import torch

from automix.balance import (
    BALANCE_HOP,
    BALANCE_N_FFT,
    TrackBalance,
    balance_error_db,
    band_energies,
    coherent_groups,
    energy_similarity,
    estimate_track_gains,
    measurable_groups,
    mr_stft_distance,
    stem_balance_db,
    third_octave_bands,
    track_coherence,
)
from automix.errors import AutomixError
from automix.metrics import integrated_loudness
from automix.renders import lost_stems

SAMPLE_RATE = 44100
DURATION_S = 2.0
N_SAMPLES = round(DURATION_S * SAMPLE_RATE)
GAIN_TOLERANCE_DB = 0.3
OWN_MIX_TOLERANCE_DB = 0.1
FILTER_ORDER = 4
# IEC 61260-1 nominal 1/3-octave midband frequencies, 25 Hz to 20 kHz.
IEC_NOMINAL_HZ = [
    25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250, 1600, 2000,
    2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000,
]  # fmt: skip
NOMINAL_ROUNDING = 0.03  # nominal values are the exact ones rounded (31.62 -> 31.5, 12589 -> 12500)


# ---------------------------------------------------------------- test signals, [C, T] float64 numpy


def _time_s():
    return np.arange(N_SAMPLES) / SAMPLE_RATE


def _noise(seed):
    return np.random.default_rng(seed).standard_normal((2, N_SAMPLES))


def _band_noise(low_hz, high_hz, seed):
    sos = scipy.signal.butter(FILTER_ORDER, [low_hz, high_hz], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return scipy.signal.sosfilt(sos, _noise(seed))


@functools.cache
def _distinct_tracks():
    """Four tracks apart in spectrum: a 55 Hz sine, two band-passed noises, a high noise burst."""
    t = _time_s()
    sine = np.tile(0.5 * np.sin(2 * np.pi * 55.0 * t), (2, 1))
    burst = 0.5 * _band_noise(9000.0, 15000.0, seed=3) * ((t > 0.6) & (t < 1.4))
    return np.stack(
        [sine, 0.5 * _band_noise(300.0, 900.0, seed=1), _band_noise(2500.0, 6000.0, seed=2), burst]
    )


@functools.cache
def _tracks_apart_in_time():
    """Two white noises (the same spectrum), one in each half, and a 55 Hz sine throughout."""
    t = _time_s()
    first, second = t < DURATION_S / 2, t >= DURATION_S / 2
    sine = np.tile(0.3 * np.sin(2 * np.pi * 55.0 * t), (2, 1))
    return np.stack([0.2 * _noise(4) * first, 0.1 * _noise(5) * second, sine])


def _mixed(tracks, gains_db, overall_db=0.0):
    return ((10.0 ** ((np.asarray(gains_db) + overall_db) / 20.0))[:, None, None] * tracks).sum(axis=0)


def _power_shares(tracks):
    power = (tracks**2).sum(axis=(1, 2))
    return power / power.sum()


def _weighted_rms_about_mean(values_db, weights):
    relative = values_db - (weights * values_db).sum()
    return relative, np.sqrt((weights * relative**2).sum())


def _balance(tracks, mix):
    return balance_error_db(torch.from_numpy(tracks), torch.from_numpy(mix), SAMPLE_RATE)


# ---------------------------------------------------------------- bands


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_third_octave_bands_tile_25_hz_to_nyquist_a_third_of_an_octave_apart(sample_rate):
    n_fft = 4096
    bands = third_octave_bands(sample_rate, n_fft)
    centre, lower, upper = bands.centre_hz.numpy(), bands.lower_hz.numpy(), bands.upper_hz.numpy()
    assert lower[0] <= 25.0 < upper[0]
    np.testing.assert_allclose(upper[:-1], lower[1:], rtol=1e-12)  # no gap, no overlap
    assert upper[-1] == sample_rate / 2 and lower[-1] < sample_rate / 2
    np.testing.assert_allclose(centre[1:] / centre[:-1], 10.0**0.1, rtol=1e-12)
    np.testing.assert_allclose(centre[1:] / centre[:-1], 2.0 ** (1.0 / 3.0), rtol=1e-3)
    np.testing.assert_allclose(np.sqrt(lower * upper)[:-1], centre[:-1], rtol=1e-12)  # geometric centres
    np.testing.assert_allclose(centre[: len(IEC_NOMINAL_HZ)], IEC_NOMINAL_HZ, rtol=NOMINAL_ROUNDING)
    # Every bin from the lowest edge to Nyquist in exactly the band its frequency falls in.
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    matrix = bands.matrix.numpy()
    assert set(np.unique(matrix)) <= {0.0, 1.0}
    np.testing.assert_array_equal(matrix.sum(axis=0), (bin_hz >= lower[0]).astype(float))
    for band, (low, high) in enumerate(zip(lower, upper, strict=True)):
        at_top = (bin_hz == sample_rate / 2) & (band == len(lower) - 1)  # the last band holds Nyquist
        expected = (bin_hz >= low) & ((bin_hz < high) | at_top)
        np.testing.assert_array_equal(matrix[band] == 1.0, expected)


def test_third_octave_bands_reject_a_low_edge_outside_the_spectrum():
    with pytest.raises(AutomixError, match="low_hz must be between 0 and Nyquist"):
        third_octave_bands(SAMPLE_RATE, 4096, low_hz=30000.0)


# ---------------------------------------------------------------- independent band energies and NNLS


def _reference_band_energies(x):
    """[C, T] numpy -> [bands, frames]: scipy's STFT (Hann 4096, hop 2048, frames inside the signal)
    rescaled to the unnormalised rfft, summed over channels and over IEC base-ten band edges."""
    window_sum = scipy.signal.get_window("hann", 4096).sum()
    freqs_hz, _, spectrum = scipy.signal.stft(
        x, SAMPLE_RATE, window="hann", nperseg=4096, noverlap=2048, boundary=None, padded=False
    )
    power = (np.abs(spectrum * window_sum) ** 2).sum(axis=0)  # [bins, frames]
    nyquist_hz = SAMPLE_RATE / 2
    edges_hz = [1000.0 * 10.0 ** ((-16 - 0.5) / 10.0)]
    while edges_hz[-1] < nyquist_hz:
        edges_hz.append(edges_hz[-1] * 10.0**0.1)
    edges_hz[-1] = np.inf  # the last band holds Nyquist
    band = np.digitize(freqs_hz, edges_hz) - 1
    return np.stack([power[band == k].sum(axis=0) for k in range(len(edges_hz) - 1)])


def test_band_energies_match_scipy_stft():
    x = _distinct_tracks()[1] + _distinct_tracks()[0]
    energy = band_energies(torch.from_numpy(x), SAMPLE_RATE).numpy()
    expected = _reference_band_energies(x)
    assert energy.shape == expected.shape
    np.testing.assert_allclose(energy, expected, rtol=1e-9, atol=1e-9 * expected.max())


def test_band_energies_keep_leading_dimensions():
    tracks = torch.from_numpy(_distinct_tracks())
    batched = band_energies(tracks[None], SAMPLE_RATE)
    assert batched.shape[:2] == (1, 4)
    torch.testing.assert_close(batched[0, 2], band_energies(tracks[2], SAMPLE_RATE))


def test_estimate_track_gains_matches_a_direct_nnls():
    tracks = _distinct_tracks()
    mix = _mixed(tracks, [4.0, -2.0, 0.0, -7.0]) + 0.01 * _noise(
        7
    )  # noise: a residual the fit cannot explain
    design = np.stack([_reference_band_energies(track).ravel() for track in tracks], axis=1)
    squared, _ = scipy.optimize.nnls(design, _reference_band_energies(mix).ravel())
    gains = estimate_track_gains(torch.from_numpy(tracks), torch.from_numpy(mix), SAMPLE_RATE)
    np.testing.assert_allclose(gains.numpy(), np.sqrt(squared), rtol=1e-6)


# ---------------------------------------------------------------- coherent tracks

COHERENCE_S = 10.0  # long enough for independent tracks to read well under the 0.2 threshold


def _hits(seed, instants_s, length_s=COHERENCE_S):
    """A decaying noise burst (a drum hit, its own seeded sound) at each instant, stereo `[2, T]`."""
    n = round(length_s * SAMPLE_RATE)
    hit = np.random.default_rng(seed).standard_normal(4096) * np.exp(-np.arange(4096) / 600.0)
    out = np.zeros(n)
    for instant in instants_s:
        start = round(instant * SAMPLE_RATE)
        out[start : start + hit.size] += hit[: n - start]
    return np.tile(out, (2, 1))


def _reference_coherence(x, y):
    """Σ|Pxy| / Σ√(Pxx·Pyy) over channels and the bins from the lowest band edge up (scipy.signal)."""
    low_hz = float(third_octave_bands(SAMPLE_RATE, BALANCE_N_FFT).lower_hz[0])
    kwargs = dict(fs=SAMPLE_RATE, window="hann", nperseg=BALANCE_N_FFT, noverlap=BALANCE_N_FFT - BALANCE_HOP)
    numerator = denominator = 0.0
    for channel in range(x.shape[0]):
        f, pxy = scipy.signal.csd(x[channel], y[channel], detrend=False, **kwargs)
        _, pxx = scipy.signal.welch(x[channel], detrend=False, **kwargs)
        _, pyy = scipy.signal.welch(y[channel], detrend=False, **kwargs)
        # scipy's one-sided densities double every bin but DC and Nyquist: weigh Nyquist as the others.
        weight = np.where(f >= low_hz, 1.0, 0.0) * np.where(f == SAMPLE_RATE / 2, 2.0, 1.0)
        numerator += (weight * np.abs(pxy)).sum()
        denominator += (weight * np.sqrt(pxx * pyy)).sum()
    return numerator / denominator


def test_track_coherence_matches_scipy_csd_and_welch():
    beat = np.arange(0.0, COHERENCE_S - 0.2, 0.5)
    tracks = np.stack([_hits(1, beat), _hits(2, beat), _hits(3, beat + 0.25), _noise_s(4)])
    coherence = track_coherence(torch.from_numpy(tracks), SAMPLE_RATE).numpy()
    np.testing.assert_allclose(np.diag(coherence), 1.0)
    np.testing.assert_allclose(coherence, coherence.T)
    for i, j in [(0, 1), (0, 2), (0, 3), (1, 2)]:
        assert coherence[i, j] == pytest.approx(_reference_coherence(tracks[i], tracks[j]), rel=1e-6)


def _noise_s(seed, length_s=COHERENCE_S):
    return np.random.default_rng(seed).standard_normal((2, round(length_s * SAMPLE_RATE)))


def test_a_scaled_copy_is_fully_coherent_and_independent_noises_are_not():
    noise = _noise_s(5)
    tracks = torch.from_numpy(np.stack([noise, 0.3 * noise, _noise_s(6), np.zeros_like(noise)]))
    coherence = track_coherence(tracks, SAMPLE_RATE)
    assert coherence[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert coherence[0, 2] < 0.1  # independent: about 1/√frames (213 frames)
    assert coherence[3].tolist() == [0.0, 0.0, 0.0, 1.0]  # a silent track is coherent with nothing


def test_drum_pieces_hit_together_are_one_group_and_a_part_off_the_beat_is_not():
    beat = np.arange(0.0, COHERENCE_S - 0.2, 0.5)
    kick, snare, off_beat = _hits(1, beat), _hits(2, beat), _hits(3, beat + 0.25)
    tracks = torch.from_numpy(np.stack([off_beat, kick, _noise_s(7), snare]))
    assert coherent_groups(tracks, SAMPLE_RATE) == [[0], [1, 3], [2]]


def test_grouping_coherent_tracks_lets_the_persons_mix_read_zero():
    """Two tracks hit together add in amplitude: measured apart the person's own mix does not read 0 (the
    energy model's cross term); measured as one group it does."""
    beat = np.arange(0.0, COHERENCE_S - 0.2, 0.5)
    tracks = np.stack([_hits(1, beat), 0.8 * _hits(1, beat), 0.05 * _noise_s(8)])
    mix = tracks.sum(axis=0)
    apart = _balance(tracks, mix)
    groups = coherent_groups(torch.from_numpy(tracks), SAMPLE_RATE)
    grouped = _balance(np.stack([tracks[g].sum(axis=0) for g in groups]), mix)
    assert groups == [[0, 1], [2]]
    assert apart.error_db > 1.0
    assert grouped.error_db < OWN_MIX_TOLERANCE_DB


def test_a_part_doubled_left_and_right_is_one_column_to_the_estimate_and_one_group():
    """The same noise panned hard left in one track and hard right in another: no coherence (no channel
    holds both) but the same band energies, which the least squares cannot split."""
    part = _band_noise(300.0, 900.0, seed=9)[0]
    left, right = np.stack([part, 0 * part]), np.stack([0 * part, part])
    tracks = np.stack([left, right, _distinct_tracks()[2], _distinct_tracks()[0]])
    similarity = energy_similarity(torch.from_numpy(tracks), SAMPLE_RATE)
    assert similarity[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert track_coherence(torch.from_numpy(tracks), SAMPLE_RATE)[0, 1] < 0.01
    assert coherent_groups(torch.from_numpy(tracks), SAMPLE_RATE) == [[0, 1], [2], [3]]


def test_at_most_max_groups_remain_the_faintest_joined_to_its_most_related():
    beat = np.arange(0.0, COHERENCE_S - 0.2, 0.5)
    kick, snare, off_beat = _hits(1, beat), 0.5 * _hits(2, beat), _hits(3, beat + 0.1)
    tracks = torch.from_numpy(np.stack([kick, _noise_s(4), snare, off_beat]))
    assert coherent_groups(tracks, SAMPLE_RATE, coherence_threshold=1.1, similarity_threshold=1.1) == [
        [0],
        [1],
        [2],
        [3],
    ]
    assert coherent_groups(tracks, SAMPLE_RATE, 3, coherence_threshold=1.1, similarity_threshold=1.1) == [
        [0, 2],
        [1],
        [3],
    ]


def test_measurable_groups_join_a_faint_track_the_estimate_cannot_find_and_keep_the_others_apart():
    tracks = _distinct_tracks()
    assert measurable_groups(torch.from_numpy(tracks), SAMPLE_RATE) == [[0], [1], [2], [3]]
    # a noise 45 dB under the 300-900 Hz track, in its band: lost in its bands' fluctuations
    faint = 10 ** (-45 / 20) * _band_noise(300.0, 900.0, seed=11) * 0.5
    with_faint = torch.from_numpy(np.concatenate([tracks, faint[None]]))
    own = balance_error_db(with_faint, with_faint.sum(0), SAMPLE_RATE)
    assert abs(20 * np.log10(max(float(own.gains[4]), 1e-9))) > 1.0  # the estimate misreads it
    groups = measurable_groups(with_faint, SAMPLE_RATE)
    assert groups == [[0], [1, 4], [2], [3]]
    sums = torch.stack([with_faint[g].sum(0) for g in groups])
    assert balance_error_db(sums, sums.sum(0), SAMPLE_RATE).worst_db < OWN_MIX_TOLERANCE_DB


# ---------------------------------------------------------------- the balance the optimiser keeps


def test_stem_balance_is_each_stems_share_of_the_summed_loudness_power():
    lufs = torch.tensor([[-20.0, -20.0, -80.0], [-10.0, -20.0, -30.0]], requires_grad=True)
    balance = stem_balance_db(lufs, mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    power = 10 ** (np.array([-10.0, -20.0]) / 10)
    expected_second = np.array([-10.0, -20.0]) - 10 * np.log10(power.sum())
    np.testing.assert_allclose(balance[0, :2].detach().numpy(), -10 * np.log10(2), atol=1e-5)
    np.testing.assert_allclose(balance[1, :2].detach().numpy(), expected_second, atol=1e-5)
    assert torch.isnan(balance[0, 2]) and torch.isnan(balance[1, 2])  # silent; masked
    shifted = stem_balance_db(lufs.detach() + 7.0, mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    torch.testing.assert_close(shifted[:, :2], balance[:, :2].detach())
    balance[1, 0].backward()
    assert torch.isfinite(lufs.grad).all() and lufs.grad[1, 0] > 0


# ---------------------------------------------------------------- balance error


def test_the_persons_own_mix_reads_zero():
    tracks = _distinct_tracks()
    report = _balance(tracks, tracks.sum(axis=0))
    assert report.error_db < OWN_MIX_TOLERANCE_DB
    assert report.worst_db < OWN_MIX_TOLERANCE_DB
    np.testing.assert_allclose(report.gains.numpy(), 1.0, atol=0.01)
    assert not report.lost.any()
    np.testing.assert_allclose(report.weights.numpy(), _power_shares(tracks), rtol=1e-12)


@pytest.mark.parametrize(
    "tracks_of", [_distinct_tracks, _tracks_apart_in_time], ids=["apart_in_spectrum", "apart_in_time"]
)
def test_known_gains_and_an_overall_gain_give_the_closed_form_error(tracks_of):
    tracks = tracks_of()
    gains_db = np.array([6.0, -3.0, 0.0, -9.0])[: len(tracks)]
    report = _balance(tracks, _mixed(tracks, gains_db, overall_db=-4.0))
    relative_db, error_db = _weighted_rms_about_mean(gains_db, _power_shares(tracks))
    np.testing.assert_allclose(report.relative_db.numpy(), relative_db, atol=GAIN_TOLERANCE_DB)
    assert report.error_db == pytest.approx(error_db, abs=GAIN_TOLERANCE_DB)
    assert report.worst_db == pytest.approx(np.abs(relative_db).max(), abs=GAIN_TOLERANCE_DB)
    assert not report.lost.any()


def test_a_track_left_out_of_the_mix_is_lost_and_counts_minus_60_db():
    tracks = _distinct_tracks()
    report = _balance(tracks, tracks[[0, 1, 3]].sum(axis=0))
    assert report.lost.tolist() == [False, False, True, False]
    relative_db, error_db = _weighted_rms_about_mean(np.array([0.0, 0.0, -60.0, 0.0]), _power_shares(tracks))
    np.testing.assert_allclose(report.relative_db.numpy(), relative_db, atol=GAIN_TOLERANCE_DB)
    assert report.error_db == pytest.approx(error_db, abs=GAIN_TOLERANCE_DB)


def test_a_track_more_than_20_db_down_is_lost_and_one_15_db_down_is_not():
    tracks = _distinct_tracks()
    report = _balance(tracks, _mixed(tracks, [0.0, -15.0, -30.0, 0.0]))
    assert report.lost.tolist() == [False, False, True, False]
    weights = _power_shares(tracks)
    kept_db = (weights[[0, 1, 3]] * [0.0, -15.0, 0.0]).sum() / weights[[0, 1, 3]].sum()
    relative_db, _ = _weighted_rms_about_mean(np.array([0.0, -15.0, kept_db - 60.0, 0.0]), weights)
    np.testing.assert_allclose(report.relative_db.numpy(), relative_db, atol=GAIN_TOLERANCE_DB)


def test_tracks_measured_at_levels_read_as_the_tracks_scaled_to_them_for_every_mix():
    """`TrackBalance` with levels, its energies measured once, against `balance_error_db` of the scaled
    tracks, mix by mix; its lost tracks at two thresholds from one estimate as well."""
    tracks = torch.from_numpy(_distinct_tracks())
    levels = torch.tensor([0.5, 2.0, 1.0, 0.1], dtype=torch.float64)
    scaled = tracks * levels[:, None, None]
    balance = TrackBalance(tracks, SAMPLE_RATE, levels)
    for gains_db in ([0.0, 0.0, 0.0, 0.0], [3.0, -6.0, 0.0, -30.0]):
        mix = torch.from_numpy(_mixed(scaled.numpy(), gains_db))
        report, expected = balance.report(mix), balance_error_db(scaled, mix, SAMPLE_RATE)
        torch.testing.assert_close(report.gains, expected.gains)
        torch.testing.assert_close(report.relative_db, expected.relative_db)
        assert report.lost.tolist() == expected.lost.tolist() == [False, False, False, gains_db[3] < -20]
        thresholds = (-20.0, -40.0)
        at_each = [balance_error_db(scaled, mix, SAMPLE_RATE, lost_threshold_db=t).lost for t in thresholds]
        assert balance.lost(mix, thresholds).tolist() == torch.stack(at_each).tolist()


def test_lost_stems_are_read_at_the_level_their_strips_set():
    """A stem 25 dB under the others in the mix is lost where its strip's level says it sits level with them
    (the mix lost it), found where the level says it sits 25 dB down; a padding stem is never lost."""
    tracks = torch.from_numpy(_distinct_tracks()).float()
    stems = torch.cat([tracks, torch.zeros_like(tracks[:1])])[None]  # [1, 5, C, T], the last one padding
    levels_db = torch.tensor([[3.0, -2.0, 0.0, 6.0, 0.0]])
    mix = (stems[0] * 10 ** (levels_db[0, :, None, None] / 20))[:4].sum(0)
    mix = (mix + stems[0, 2] * (10 ** (-25 / 20) - 1))[None]  # stem 3 turned 25 dB down in the mix
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    params = {"input_gain_db": torch.full_like(levels_db, -4.0), "level_db": levels_db + 4.0}
    assert lost_stems(stems, params, mix, SAMPLE_RATE, mask).tolist() == [[0, 0, 1, 0, 0]]
    params["level_db"][0, 2] -= 25.0
    assert lost_stems(stems, params, mix, SAMPLE_RATE, mask).tolist() == [[0] * 5]


def test_a_lost_track_counts_relative_to_the_mix_level_so_the_overall_gain_does_not_matter():
    tracks = _distinct_tracks()
    mix = _mixed(tracks, [0.0, 0.0, -np.inf, 0.0])
    quiet, loud = _balance(tracks, mix * 0.01), _balance(tracks, mix * 10.0)
    assert quiet.error_db == pytest.approx(loud.error_db, abs=1e-6)


def test_a_silent_track_has_zero_weight_and_changes_nothing():
    tracks = _distinct_tracks()
    mix = _mixed(tracks, [6.0, -3.0, 0.0, -9.0])
    with_silence = np.concatenate([tracks, np.zeros((1, 2, N_SAMPLES))])
    report, reference = _balance(with_silence, mix), _balance(tracks, mix)
    assert report.weights[-1] == 0.0 and not report.lost[-1] and torch.isnan(report.relative_db[-1])
    assert report.error_db == pytest.approx(reference.error_db, abs=1e-9)
    assert report.worst_db == pytest.approx(reference.worst_db, abs=1e-9)


def test_float32_input_reads_as_float64():
    tracks = _distinct_tracks()
    mix = _mixed(tracks, [6.0, -3.0, 0.0, -9.0])
    single = balance_error_db(torch.from_numpy(tracks).float(), torch.from_numpy(mix).float(), SAMPLE_RATE)
    assert single.error_db == pytest.approx(_balance(tracks, mix).error_db, abs=1e-3)


def _tracks_and_mix():
    tracks = torch.from_numpy(_distinct_tracks())
    return tracks, tracks.sum(dim=0)


def _with_nan(x):
    x = x.clone()
    x[..., 0, 100] = torch.nan
    return x


def _only_in_the_last_samples(tracks):
    """Sound only after the last full STFT frame, which the frames leave out."""
    out = torch.zeros_like(tracks)
    out[..., -10:] = tracks[..., -10:]
    return out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (lambda t, m: (t, m[:, :-1]), "the tracks have 88200 samples and the mix 88199"),
        (lambda t, m: (t, m[:1]), "the tracks have 2 channels and the mix 1"),
        (lambda t, m: (t, _with_nan(m)), "NaN or infinite samples in the mix"),
        (lambda t, m: (_with_nan(t), m), "NaN or infinite samples in the tracks"),
        (lambda t, m: (t[0], m), r"expected tracks shaped \[N, channels, samples\]"),
        (lambda t, m: (t, t), r"expected a mix shaped \[channels, samples\]"),
        (lambda t, m: (t, torch.zeros_like(m)), "none of the tracks was found in the mix"),
        (lambda t, m: (torch.zeros_like(t), m), "every track is silent"),
        (lambda t, m: (_only_in_the_last_samples(t), m), "no track has energy in the bands"),
    ],
)
def test_balance_rejects_bad_input_with_a_useful_message(case, message):
    tracks, mix = case(*_tracks_and_mix())
    with pytest.raises(AutomixError, match=message):
        balance_error_db(tracks, mix, SAMPLE_RATE)


# ---------------------------------------------------------------- MR-STFT distance


def _reference_mr_stft(x, y):
    """numpy/scipy: each [2, T] mix scaled to -16 LUFS, mid, unnormalised |STFT| (Hann, hop n/4, frames
    inside the signal), mean |log10(|X| + 1e-7) - log10(|Y| + 1e-7)|, mean over 512/2048/8192."""

    def mid_at_minus_16(z):
        lufs = float(integrated_loudness(torch.from_numpy(z), SAMPLE_RATE))
        return (z * 10.0 ** ((-16.0 - lufs) / 20.0)).mean(axis=0)

    def log_magnitude(mid, n_fft):
        window_sum = scipy.signal.get_window("hann", n_fft).sum()
        _, _, spectrum = scipy.signal.stft(
            mid, window="hann", nperseg=n_fft, noverlap=n_fft - n_fft // 4, boundary=None, padded=False
        )
        return np.log10(np.abs(spectrum * window_sum) + 1e-7)

    x_mid, y_mid = mid_at_minus_16(x), mid_at_minus_16(y)
    terms = [np.abs(log_magnitude(x_mid, n) - log_magnitude(y_mid, n)).mean() for n in (512, 2048, 8192)]
    return np.mean(terms)


def _music():
    return _distinct_tracks().sum(axis=0) + 0.05 * _noise(11)


def _without_top_octave(x):
    sos = scipy.signal.butter(8, SAMPLE_RATE / 4, fs=SAMPLE_RATE, output="sos")
    return scipy.signal.sosfilt(sos, x)


def _distance(x, y):
    return float(mr_stft_distance(torch.from_numpy(x), torch.from_numpy(y), SAMPLE_RATE))


def test_mr_stft_distance_of_identical_mixes_is_zero():
    assert _distance(_music(), _music()) == 0.0


def test_mr_stft_distance_ignores_level():
    assert _distance(_music(), 0.2 * _music()) == pytest.approx(0.0, abs=1e-9)


def test_mr_stft_distance_sees_a_lost_top_octave_and_is_symmetric():
    x, y = _music(), _without_top_octave(_music())
    forward, backward = _distance(x, y), _distance(y, x)
    assert forward > 0.5  # a quarter of the bins at least several decades down
    assert forward == pytest.approx(backward, rel=1e-12)


def test_mr_stft_distance_matches_a_numpy_reference():
    x, y = _music(), _without_top_octave(_music()) + 0.05 * _noise(12)
    assert _distance(x, y) == pytest.approx(_reference_mr_stft(x, y), rel=1e-9)


def test_mr_stft_distance_keeps_the_batch_dimensions():
    x = torch.from_numpy(np.stack([_music(), _without_top_octave(_music())]))
    distance = mr_stft_distance(x, x.flip(0), SAMPLE_RATE)
    assert distance.shape == (2,)
    assert float(distance[0]) == pytest.approx(_distance(_music(), _without_top_octave(_music())), rel=1e-9)


@pytest.mark.parametrize(
    ("y_of", "message"),
    [
        (lambda x: x[..., :-1], "the mixes differ in shape"),
        (lambda x: x[:1], "the mixes differ in shape"),
        (_with_nan, "NaN or infinite samples in y"),
        (torch.zeros_like, "y is silent"),
    ],
)
def test_mr_stft_distance_rejects_bad_input_with_a_useful_message(y_of, message):
    x = torch.from_numpy(_music())
    with pytest.raises(AutomixError, match=message):
        mr_stft_distance(x, y_of(x), SAMPLE_RATE)
