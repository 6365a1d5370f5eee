"""Measurements against independent references: pyloudnorm, scipy/numpy re-implementations, closed forms."""

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import torch

from automix import loudness, metrics
from automix.dsp import filters
from automix.dsp.oversample import polyphase_fir
from automix.errors import AutomixError
from automix.metrics import (
    band_energy,
    crest_factor_db,
    dynamic_range_db,
    integrated_loudness,
    k_weighting,
    loudness_range,
    momentary_loudness,
    rms_db,
    sample_peak,
    short_term_loudness,
    spectral_centroid,
    spectral_shape,
    stereo_ms_ratio,
    true_peak,
)

SAMPLE_RATES = [44100, 48000]
DURATION_S = 10.0
# pyloudnorm's default K-weighting is a textbook approximation of ITU's filters (~0.04 LU low).
PYLOUDNORM_TOLERANCE_LU = 0.1
REFERENCE_TOLERANCE_LU = 0.01  # the scipy reference below uses the same filter definition
TRUE_PEAK_REFERENCE_TOLERANCE_DB = 0.2

# Reference K-weighting: libebur128's analogue prototype of BS.1770-4's filters, bilinear-transformed.
PREFILTER = {"f0": 1681.974450955533, "gain_db": 3.999843853973347, "q": 0.7071752369554196}
PREFILTER_VB_EXPONENT = 0.4996667741545416
RLB = {"f0": 38.13547087602444, "q": 0.5003270373238773}


# ---------------------------------------------------------------- test signals, (C, T) float64 numpy


def _white(sample_rate, n_channels, rng):
    return 0.1 * rng.standard_normal((n_channels, round(DURATION_S * sample_rate)))


def _pink(sample_rate, n_channels, rng):
    white = rng.standard_normal((n_channels, round(DURATION_S * sample_rate)))
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(white.shape[-1], 1.0 / sample_rate)
    spectrum[..., 1:] /= np.sqrt(freqs[1:])
    spectrum[..., 0] = 0.0
    pink = np.fft.irfft(spectrum, n=white.shape[-1])
    return 0.1 * pink / pink.std()


def _sine(sample_rate, n_channels, rng, freq_hz=440.0, amplitude=0.5):
    n = np.arange(round(DURATION_S * sample_rate))
    return np.tile(amplitude * np.sin(2 * np.pi * freq_hz * n / sample_rate), (n_channels, 1))


def _tone_bursts(sample_rate, n_channels, rng):
    """0.5 s decaying bursts every second, each 3 dB quieter: the gates drop the quiet tails."""
    n_samples = round(DURATION_S * sample_rate)
    t = np.arange(n_samples) / sample_rate
    since_onset = t % 1.0
    level = 10.0 ** (-3.0 * np.floor(t) / 20.0)
    envelope = np.where(since_onset < 0.5, np.exp(-since_onset / 0.1), 0.0) * level
    return np.tile(0.8 * envelope * np.sin(2 * np.pi * 660.0 * t), (n_channels, 1))


def _music_like(sample_rate, n_channels, rng):
    """Notes of 8 decaying harmonics every 250 ms, panned at random."""
    n_samples = round(DURATION_S * sample_rate)
    out = np.zeros((n_channels, n_samples))
    note_len = round(1.0 * sample_rate)
    t = np.arange(note_len) / sample_rate
    for start in range(0, n_samples - note_len, round(0.25 * sample_rate)):
        f0 = rng.uniform(110.0, 880.0)
        note = sum(np.sin(2 * np.pi * k * f0 * t) * np.exp(-t * k / 0.4) / k for k in range(1, 9))
        pan = rng.uniform(0.2, 0.8, size=(n_channels, 1)) if n_channels == 2 else np.ones((1, 1))
        out[:, start : start + note_len] += 0.2 * pan * note * rng.uniform(0.3, 1.0)
    return out


def _quiet_passages(sample_rate, n_channels, rng):
    """4 s at -20 dB, 3 s at -50 dB (relatively gated), 2 s of silence, 1 s at -30 dB (kept)."""
    noise = rng.standard_normal((n_channels, round(DURATION_S * sample_rate)))
    t = np.arange(noise.shape[-1]) / sample_rate
    level_db = np.select([t < 4.0, t < 7.0, t < 9.0], [-20.0, -50.0, -300.0], -30.0)
    return noise * 10.0 ** (level_db / 20.0)


SIGNALS = {
    "white": _white,
    "pink": _pink,
    "sine": _sine,
    "tone_bursts": _tone_bursts,
    "music_like": _music_like,
    "quiet_passages": _quiet_passages,
}


def _signal(name, sample_rate, n_channels, seed=0):
    return SIGNALS[name](sample_rate, n_channels, np.random.default_rng(seed))


# ---------------------------------------------------------------- straightforward reference meter


def _reference_k_weighting(audio, sample_rate):
    k = np.tan(np.pi * PREFILTER["f0"] / sample_rate)
    vh = 10.0 ** (PREFILTER["gain_db"] / 20.0)
    vb = vh**PREFILTER_VB_EXPONENT
    q = PREFILTER["q"]
    a0 = 1.0 + k / q + k**2
    b_shelf = np.array([vh + vb * k / q + k**2, 2.0 * (k**2 - vh), vh - vb * k / q + k**2]) / a0
    a_shelf = np.array([a0, 2.0 * (k**2 - 1.0), 1.0 - k / q + k**2]) / a0
    k = np.tan(np.pi * RLB["f0"] / sample_rate)
    q = RLB["q"]
    a0 = 1.0 + k / q + k**2
    a_rlb = np.array([a0, 2.0 * (k**2 - 1.0), 1.0 - k / q + k**2]) / a0
    shelved = scipy.signal.lfilter(b_shelf, a_shelf, audio, axis=-1)
    return scipy.signal.lfilter([1.0, -2.0, 1.0], a_rlb, shelved, axis=-1)


def _reference_block_powers(audio, sample_rate, window_s):
    weighted = _reference_k_weighting(audio, sample_rate)
    hop = round(sample_rate / 10)
    window = round(window_s * 10) * hop
    starts = range(0, audio.shape[-1] - window + 1, hop)
    return np.array([np.sum(np.mean(weighted[:, s : s + window] ** 2, axis=-1)) for s in starts])


def _reference_integrated_loudness(audio, sample_rate):
    powers = _reference_block_powers(audio, sample_rate, 0.4)
    levels = -0.691 + 10 * np.log10(powers)
    above_absolute = powers[levels > -70.0]
    relative_gate = -0.691 + 10 * np.log10(above_absolute.mean()) - 10.0
    return -0.691 + 10 * np.log10(powers[(levels > -70.0) & (levels > relative_gate)].mean())


def _reference_loudness_range(audio, sample_rate):
    levels = -0.691 + 10 * np.log10(_reference_block_powers(audio, sample_rate, 3.0))
    levels = levels[levels > -70.0]
    relative_gate = 10 * np.log10(np.mean(10 ** (levels / 10))) - 20.0
    levels = levels[levels > relative_gate]
    return np.percentile(levels, 95) - np.percentile(levels, 10)


def _reference_centroid(mid, sample_rate):
    window = scipy.signal.get_window("hann", 2048)
    starts = range(0, mid.size - 2048 + 1, 512)
    frames = np.stack([mid[s : s + 2048] * window for s in starts])
    magnitude = np.abs(np.fft.rfft(frames, axis=-1)).mean(axis=0)
    freqs = np.fft.rfftfreq(2048, 1.0 / sample_rate)
    return np.sum(freqs * magnitude) / np.sum(magnitude)


# ---------------------------------------------------------------- integrated loudness


@pytest.mark.parametrize("n_channels", [1, 2])
@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_integrated_loudness_matches_pyloudnorm_and_reference(name, sample_rate, n_channels):
    audio = _signal(name, sample_rate, n_channels)
    ours = integrated_loudness(torch.from_numpy(audio).float(), sample_rate).item()
    theirs = pyloudnorm.Meter(sample_rate).integrated_loudness(audio.T if n_channels == 2 else audio[0])
    assert ours == pytest.approx(theirs, abs=PYLOUDNORM_TOLERANCE_LU)
    assert ours == pytest.approx(
        _reference_integrated_loudness(audio, sample_rate), abs=REFERENCE_TOLERANCE_LU
    )


def test_k_weighting_matches_lfilter():
    sample_rate = 44100
    audio = _signal("music_like", sample_rate, 2)
    ours = k_weighting(torch.from_numpy(audio), sample_rate).numpy()
    np.testing.assert_allclose(ours, _reference_k_weighting(audio, sample_rate), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
def test_momentary_and_short_term_match_reference(sample_rate):
    audio = _signal("music_like", sample_rate, 2)
    x = torch.from_numpy(audio)
    for measure, window_s in [(momentary_loudness, 0.4), (short_term_loudness, 3.0)]:
        expected = -0.691 + 10 * np.log10(_reference_block_powers(audio, sample_rate, window_s))
        np.testing.assert_allclose(measure(x, sample_rate).numpy(), expected, rtol=0, atol=1e-3)


def test_loudness_range_matches_reference():
    sample_rate = 44100
    audio = _signal("quiet_passages", sample_rate, 2) + 0.3 * _signal("music_like", sample_rate, 2)
    expected = _reference_loudness_range(audio, sample_rate)
    assert loudness_range(torch.from_numpy(audio), sample_rate).item() == pytest.approx(expected, abs=1e-3)


def test_loudness_gradient_with_respect_to_gain_is_one():
    x = torch.from_numpy(_signal("quiet_passages", 44100, 2))
    gain_db = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    integrated_loudness(x * 10.0 ** (gain_db / 20.0), 44100).backward()
    assert gain_db.grad.item() == pytest.approx(1.0, abs=1e-4)


def test_meter_does_not_clip():
    rng = np.random.default_rng(1)
    noise = rng.uniform(-1.0, 1.0, size=(2, 44100 * 3))
    hot = torch.from_numpy(10.0 ** (12.0 / 20.0) * noise / np.abs(noise).max())  # +12 dBFS peak
    quiet = hot * 10.0 ** (-20.0 / 20.0)
    difference = integrated_loudness(hot, 44100) - integrated_loudness(quiet, 44100)
    assert difference.item() == pytest.approx(20.0, abs=1e-6)
    assert true_peak(hot, 44100).item() >= 12.0


def test_short_signal_is_one_block():
    sample_rate = 48000
    audio = _signal("white", sample_rate, 2)[:, : sample_rate // 5]  # 200 ms
    weighted = _reference_k_weighting(audio, sample_rate)
    expected = -0.691 + 10 * np.log10(np.sum(np.mean(weighted**2, axis=-1)))
    assert integrated_loudness(torch.from_numpy(audio), sample_rate).item() == pytest.approx(
        expected, abs=1e-6
    )


def test_float32_and_float64_agree():
    x = torch.from_numpy(_signal("music_like", 48000, 2))
    assert integrated_loudness(x.float(), 48000).dtype == torch.float32
    assert integrated_loudness(x.float(), 48000).item() == pytest.approx(
        integrated_loudness(x, 48000).item(), abs=1e-4
    )


def test_more_than_two_channels_is_a_user_error():
    with pytest.raises(AutomixError, match="channels"):
        integrated_loudness(torch.zeros(3, 48000), 48000)
    with pytest.raises(AutomixError, match="channels"):
        stereo_ms_ratio(torch.zeros(48000, 2))


# ---------------------------------------------------------------- peaks


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("name", ["white", "pink", "music_like", "sine"])
def test_true_peak_matches_resample_poly(name, sample_rate):
    audio = _signal(name, sample_rate, 2)[:, : sample_rate * 2]
    if name == "sine":
        audio = _sine(sample_rate, 2, None, freq_hz=sample_rate / 4.1)[:, : sample_rate * 2]
    expected_db = 20 * np.log10(np.abs(scipy.signal.resample_poly(audio, 4, 1, axis=-1)).max())
    ours = true_peak(torch.from_numpy(audio).float(), sample_rate).item()
    assert ours == pytest.approx(expected_db, abs=TRUE_PEAK_REFERENCE_TOLERANCE_DB)
    assert ours >= sample_peak(torch.from_numpy(audio)).item() - 1e-6


def test_rms_and_crest_factor_of_a_sine():
    x = torch.from_numpy(_sine(48000, 2, None, freq_hz=1000.0, amplitude=1.0))
    assert rms_db(x).item() == pytest.approx(10 * np.log10(0.5), abs=1e-6)
    assert crest_factor_db(x).item() == pytest.approx(10 * np.log10(2.0), abs=1e-4)


# ---------------------------------------------------------------- spectrum and stereo


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
def test_centroid_of_sine_and_white_noise(sample_rate):
    sine = torch.from_numpy(_sine(sample_rate, 2, None, freq_hz=1000.0))
    assert spectral_centroid(sine, sample_rate).item() == pytest.approx(1000.0, abs=10.0)
    noise = torch.from_numpy(_white(sample_rate, 2, np.random.default_rng(2)))
    assert spectral_centroid(noise, sample_rate).item() == pytest.approx(sample_rate / 4, rel=0.02)


@pytest.mark.parametrize("name", ["music_like", "pink", "tone_bursts"])
def test_centroid_matches_numpy_reference(name):
    audio = _signal(name, 44100, 2)
    expected = _reference_centroid(audio.mean(axis=0), 44100)
    assert spectral_centroid(torch.from_numpy(audio).float(), 44100).item() == pytest.approx(
        expected, rel=0.01
    )


def test_centroid_and_bands_do_not_depend_on_the_frame_blocks(monkeypatch):
    """Frames are transformed a block at a time; blocks of 7 frames (a ragged last block) give what one
    block of all frames gives, and the numpy reference."""
    audio = torch.from_numpy(_signal("music_like", 44100, 2))
    whole = metrics.spectral_shape(audio, 44100)
    monkeypatch.setattr(metrics, "STFT_BLOCK_FRAMES", 7)
    blocked = metrics.spectral_shape(audio, 44100)
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=0.0)
    expected = _reference_centroid(audio.numpy().mean(axis=0), 44100)
    assert blocked[0].item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("block_hops", [5, 12])
def test_a_meter_fed_block_by_block_reads_what_the_whole_signal_reads(monkeypatch, block_hops):
    """Asked to (`blockwise=True`), a long signal is metered a block at a time (`HopEnergyMeter`): the same
    integrated loudness and loudness range as the whole signal's K-weighting and windows (a last,
    partial hop belongs to no window)."""
    audio = torch.from_numpy(_signal("tone_bursts", 48000, 2))[..., :-1234]
    expected = (integrated_loudness(audio, 48000).item(), loudness_range(audio, 48000).item())
    monkeypatch.setattr(filters, "BLOCKWISE_MIN_SECONDS", 1.0)
    monkeypatch.setattr(loudness, "METER_BLOCK_HOPS", block_hops)
    with torch.no_grad():
        measured = (
            integrated_loudness(audio, 48000, blockwise=True).item(),
            loudness_range(audio, 48000, blockwise=True).item(),
        )
    assert measured == pytest.approx(expected, abs=1e-9)


def test_ms_ratio():
    rng = np.random.default_rng(3)
    noise = torch.from_numpy(rng.standard_normal((2, 48000)))
    assert stereo_ms_ratio(torch.stack([noise[0], noise[0]])).item() == pytest.approx(0.0, abs=1e-12)
    assert stereo_ms_ratio(noise).item() == pytest.approx(1.0, abs=0.05)
    assert stereo_ms_ratio(torch.stack([noise[0], torch.zeros(48000, dtype=noise.dtype)])).item() == (
        pytest.approx(1.0, abs=1e-12)
    )
    assert stereo_ms_ratio(noise[:1]).item() == 0.0


@pytest.mark.parametrize(("freq_hz", "band"), [(100.0, 0), (1000.0, 1), (8000.0, 2)])
def test_band_energy_of_sines(freq_hz, band):
    fractions = band_energy(torch.from_numpy(_sine(44100, 2, None, freq_hz=freq_hz)), 44100)
    assert fractions.shape == (3,)
    assert fractions.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert fractions[band].item() == pytest.approx(1.0, abs=0.01)


def test_band_energy_of_music_sums_to_one():
    fractions = band_energy(torch.from_numpy(_signal("music_like", 44100, 2)), 44100)
    assert fractions.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert (fractions > 0).all()


# ---------------------------------------------------------------- dynamics


def test_dynamic_range_of_two_levels_and_of_steady_noise():
    sample_rate = 44100
    noise = np.random.default_rng(4).standard_normal((2, 20 * sample_rate))
    steps = np.where(np.arange(noise.shape[-1]) < 10 * sample_rate, 0.3, 0.03)  # 20 dB apart
    assert dynamic_range_db(torch.from_numpy(noise * steps), sample_rate).item() == pytest.approx(
        20.0, abs=0.5
    )
    assert dynamic_range_db(torch.from_numpy(0.3 * noise), sample_rate).item() < 0.5


# ---------------------------------------------------------------- silence, batches


def _all_measures(sample_rate):
    return {
        "integrated_loudness": lambda x: integrated_loudness(x, sample_rate),
        "momentary_loudness": lambda x: momentary_loudness(x, sample_rate),
        "short_term_loudness": lambda x: short_term_loudness(x, sample_rate),
        "true_peak": lambda x: true_peak(x, sample_rate),
        "sample_peak": sample_peak,
        "rms_db": rms_db,
        "crest_factor_db": crest_factor_db,
        "dynamic_range_db": lambda x: dynamic_range_db(x, sample_rate),
        "spectral_centroid": lambda x: spectral_centroid(x, sample_rate),
        "stereo_ms_ratio": stereo_ms_ratio,
        "band_energy": lambda x: band_energy(x, sample_rate),
    }


@pytest.mark.parametrize("name", sorted(_all_measures(48000)))
def test_silence_is_finite_with_finite_gradients(name):
    silence = torch.zeros(2, 2, 48000, requires_grad=True)
    value = _all_measures(48000)[name](silence)
    assert torch.isfinite(value).all()
    value.sum().backward()
    assert torch.isfinite(silence.grad).all()


def test_silence_readings():
    silence = torch.zeros(2, 48000)
    assert integrated_loudness(silence, 48000).item() == -70.0
    assert loudness_range(silence, 48000).item() == 0.0
    assert spectral_centroid(silence, 48000).item() == 0.0
    assert stereo_ms_ratio(silence).item() == 0.0
    assert crest_factor_db(silence).item() == 0.0


@pytest.fixture(scope="module")
def batch_items():
    """Four 5 s stereo items at 44.1 kHz, one of them silent, each gated differently."""
    n_samples = 5 * 44100
    return [
        _signal("quiet_passages", 44100, 2, seed=5)[:, :n_samples],
        _signal("music_like", 44100, 2, seed=6)[:, :n_samples],
        np.zeros((2, n_samples)),
        _signal("tone_bursts", 44100, 2)[:, :n_samples],
    ]


@pytest.mark.parametrize("name", sorted(_all_measures(44100)) + ["loudness_range"])
def test_batched_equals_per_item(name, batch_items):
    sample_rate = 44100
    measure = _all_measures(sample_rate).get(name, lambda x: loudness_range(x, sample_rate))
    batch = torch.from_numpy(np.stack(batch_items).reshape(2, 2, 2, -1))  # [B, N, C, T]
    batched = measure(batch)
    for index, item in enumerate(batch_items):
        expected = measure(torch.from_numpy(item))
        torch.testing.assert_close(batched[index // 2, index % 2], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n_samples", [1, 17, 1000])
def test_polyphase_fir_matches_conv1d(n_samples):
    """The block matrix product behind `upsample` and the limiter's detector, against a direct FIR."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 2, n_samples, dtype=torch.float64, generator=gen)
    branches = torch.randn(5, 21, dtype=torch.float64, generator=gen)
    for left in (0, 7, 20):
        padded = torch.nn.functional.pad(x.reshape(-1, 1, n_samples), (left, 20 - left))
        expected = torch.nn.functional.conv1d(padded, branches.unsqueeze(1)).transpose(-1, -2)
        ours = polyphase_fir(x, branches, left)
        torch.testing.assert_close(ours, expected.reshape(3, 2, n_samples, 5))


def test_spectral_shape_is_centroid_and_band_energy_from_one_stft():
    x = torch.from_numpy(_signal("music_like", 44100, 2)).float()
    centroid_hz, bands = spectral_shape(x, 44100)
    assert torch.equal(centroid_hz, spectral_centroid(x, 44100))
    assert torch.equal(bands, band_energy(x, 44100))


def test_true_peak_without_gradients_reads_in_chunks_exactly():
    """Chunked (no gradients) and whole-signal (with gradients) readings agree, a peak on a chunk edge
    included."""
    from automix.metrics import TRUE_PEAK_CHUNK_SAMPLES

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 2 * TRUE_PEAK_CHUNK_SAMPLES + 999, generator=gen) * 0.1
    x[1, 0, TRUE_PEAK_CHUNK_SAMPLES - 2 : TRUE_PEAK_CHUNK_SAMPLES + 2] = torch.tensor([0.9, -0.9, 0.9, -0.9])
    with torch.no_grad():
        chunked = true_peak(x, 44100)
    whole = true_peak(x.clone().requires_grad_(True), 44100)
    torch.testing.assert_close(chunked, whole.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_all_finite_finds_one_bad_sample_anywhere(bad):
    x = torch.randn(3, 2, 1000, dtype=torch.float64)
    if bad is not None:
        x[1, 0, 517] = bad
    assert loudness.all_finite(x) is (bad is None)
    assert loudness.all_finite(x[..., :0]) is True


def test_channel_balance_is_the_left_to_right_power_ratio_in_db():
    gen = torch.Generator().manual_seed(3)
    right = torch.randn(2, 44100, generator=gen, dtype=torch.float64)
    left = 2 * torch.randn(2, 44100, generator=gen, dtype=torch.float64)
    x = torch.stack([left, right], dim=-2)  # [2, 2, T]
    expected = 10 * np.log10((left.numpy() ** 2).mean(-1) / (right.numpy() ** 2).mean(-1))
    np.testing.assert_allclose(metrics.channel_balance_db(x).numpy(), expected, rtol=1e-9)
    assert metrics.channel_balance_db(left[:1, None]).item() == 0.0  # mono
    assert metrics.channel_balance_db(torch.zeros(2, 100)).item() == 0.0  # silence
