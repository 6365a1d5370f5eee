"""Mastering: the band-limited reconstruction meter and limiter against scipy's FFT interpolation on
adversarial material, the gain-reduction report, the limiting budget, the last loudness step (pyloudnorm)
and the loudness presets."""

import math

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import torch

from automix import AutoMixChain, metrics
from automix.dsp.dynamics import compressor, compressor_gain, detector_mean_square
from automix.dsp.limiter import limiter, reconstruction_limit
from automix.errors import AutomixError
from automix.mastering import gain_reduction, reduction_stats
from automix.styles import DEFAULT_STYLES, LOUDNESS_PRESETS, with_loudness
from automix.synth import synth_stems

CEILING_DBTP = -1.0
# Zeros each side of the reference's whole-signal FFT: its wrap-around stays that far from the signal.
REFERENCE_PAD = 2**14
# How closely the block-wise meter follows the whole-signal reference (its block context, float32).
METER_TOLERANCE_DB = 0.01
# Optimiser settings small enough for a test: one attempt of the corrections, a few Adam steps.
QUICK = {"steps": 5, "attempts": 2, "refine_steps": 4, "excerpt_s": 1.0, "n_excerpts": 2}


def fft_peak_dbtp(x: np.ndarray, factor: int = 16) -> float:
    """The reference: the whole signal zero-padded and FFT-interpolated by `scipy.signal.resample`."""
    padded = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (REFERENCE_PAD, REFERENCE_PAD)))
    return 20 * math.log10(np.abs(scipy.signal.resample(padded, padded.shape[-1] * factor, axis=-1)).max())


def faded(signal: np.ndarray, sample_rate: int, fade_s: float = 0.01) -> np.ndarray:
    """10-ms linear fades at both ends, as EBU's true-peak test signals (an abrupt start overshoots)."""
    n = signal.shape[-1]
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (fade_s * sample_rate))
    return signal * ramp


def adversarial(kind: str, sample_rate: int, seconds: float = 1.0) -> np.ndarray:
    """`[2, T]` material whose inter-sample peaks a 4x meter under-reads, about 0 dBFS or hotter."""
    rng = np.random.default_rng(abs(hash((kind, sample_rate))) % 2**32)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    if kind.startswith("tone"):
        _, where, phase = kind.split()
        freq = sample_rate / 2 - 30 if where == "fs/2" else sample_rate / 4 + 1
        left = np.sin(2 * np.pi * freq * t + float(phase))
        right = np.sin(2 * np.pi * freq * t + float(phase) + 0.5)
    elif kind == "noise above 10 kHz":
        sos = scipy.signal.butter(8, 10000, "highpass", fs=sample_rate, output="sos")
        left, right = scipy.signal.sosfilt(sos, rng.standard_normal((2, t.size))) * 0.4
    elif kind == "square":
        left = right = np.sign(np.sin(2 * np.pi * 997 * t))
    else:  # a bright synth loop: detuned saws, eighth-note gates, a hat of noise above 8 kHz
        saw = sum(2 * ((t * f) % 1) - 1 for f in (220.0, 220.0 * 1.006, 330.0))
        gate = ((t * 8) % 1 < 0.6).astype(float)
        sos = scipy.signal.butter(6, 8000, "highpass", fs=sample_rate, output="sos")
        hats = scipy.signal.sosfilt(sos, rng.standard_normal(t.size)) * ((t * 16) % 1 < 0.1)
        left, right = 0.5 * saw * gate + hats, 0.5 * np.roll(saw, 11) * gate + hats
    return faded(np.stack([left, right]), sample_rate)


KINDS = [
    *(f"tone {where} {phase}" for where in ("fs/2", "fs/4") for phase in ("0.0", "0.4", "1.1")),
    "noise above 10 kHz",
    "square",
    "synth loop",
]


@pytest.mark.parametrize("kind", ["tone fs/2 0.4", "noise above 10 kHz", "square", "synth loop"])
def test_reconstructed_peak_matches_scipy_fft_interpolation(kind):
    """3 s at 44.1 kHz spans three of the meter's blocks; it reads the whole-signal interpolation."""
    x = adversarial(kind, 44100, seconds=3.0)
    ours = float(metrics.reconstructed_peak(torch.from_numpy(x), 44100))
    assert ours == pytest.approx(fft_peak_dbtp(x), abs=METER_TOLERANCE_DB)


def test_reconstructed_peak_reads_above_the_4x_meter_near_nyquist():
    """A tone 30 Hz under Nyquist: the 4x meter of BS.1770 reads its samples' envelope low, the
    reconstruction its true peak (the reference's)."""
    x = adversarial("tone fs/2 0.4", 44100)
    four_times = float(metrics.true_peak(torch.from_numpy(x), 44100))
    sixteen_times = float(metrics.reconstructed_peak(torch.from_numpy(x), 44100))
    assert sixteen_times - four_times > 0.1
    assert sixteen_times == pytest.approx(fft_peak_dbtp(x), abs=METER_TOLERANCE_DB)


@pytest.mark.parametrize("sample_rate", [44100, 48000])
@pytest.mark.parametrize("kind", KINDS)
def test_limiter_output_reconstructs_under_the_ceiling(kind, sample_rate):
    """Driven 6 dB into the limiter, every kind reconstructs (scipy, 16x) at or under the ceiling."""
    x = torch.from_numpy(adversarial(kind, sample_rate) * 2.0).float()
    y = limiter(x, sample_rate, ceiling_dbtp=CEILING_DBTP)
    assert fft_peak_dbtp(y.double().numpy()) <= CEILING_DBTP


def test_the_4x_detector_alone_lets_high_noise_through():
    """Why the reconstruction check exists: noise above 10 kHz limited on the 4x detection alone
    reconstructs over the ceiling."""
    x = torch.from_numpy(adversarial("noise above 10 kHz", 44100) * 2.0).float()
    y = limiter(x, 44100, ceiling_dbtp=CEILING_DBTP, reconstruct=False)
    assert fft_peak_dbtp(y.double().numpy()) > CEILING_DBTP + 0.1


def test_reconstruction_limit_passes_a_compliant_signal_and_reports_its_peak():
    x = torch.from_numpy(adversarial("synth loop", 44100) * 0.1).float()
    y, peak = reconstruction_limit(x, 44100, ceiling_dbtp=CEILING_DBTP)
    assert y is x
    assert float(peak) == pytest.approx(fft_peak_dbtp(x.double().numpy()), abs=METER_TOLERANCE_DB)


def test_reconstruction_limit_keeps_the_gradient_to_its_input():
    """The check's gain is a constant to autograd: d(sum y)/dx is that gain, finite, at most 1."""
    x = torch.from_numpy(adversarial("noise above 10 kHz", 44100)).float().requires_grad_()
    y, _ = reconstruction_limit(x, 44100)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.max() <= 1.0 and x.grad.min() < 1.0
    assert fft_peak_dbtp(y.detach().double().numpy()) <= CEILING_DBTP


def test_limiter_returns_the_gain_it_applied():
    x = torch.from_numpy(adversarial("synth loop", 48000) * 2.0).float()
    y, gain = limiter(x, 48000, return_gain=True)
    assert gain.shape == (x.shape[-1],) and gain.max() <= 1.0
    torch.testing.assert_close(y, x * gain, rtol=1e-5, atol=1e-6)


def test_compressor_gain_is_the_compressors_own():
    """The bus compressor's reported gain: its output over its input, less the makeup."""
    x = torch.from_numpy(adversarial("synth loop", 44100)).float()[None]
    settings = (-20.0, 4.0, 10.0, 100.0, 3.0, 6.0)
    y = compressor(x, 44100, **dict(zip(("threshold_db", "ratio", "attack_ms", "release_ms", "makeup_db",
                                         "knee_db"), settings, strict=True)))  # fmt: skip
    gain = compressor_gain(detector_mean_square(x, 44100), 44100, settings)
    torch.testing.assert_close(y, x * gain[:, None] * 10 ** (3.0 / 20), rtol=1e-4, atol=1e-6)


def test_reduction_stats_closed_form():
    """Half the time at a gain of 1/2 (6.02 dB), a quarter at 0.9 (0.92 dB), the rest unity."""
    gain = torch.tensor([[0.5, 0.5, 0.9, 1.0]])
    stats = reduction_stats(gain)
    assert float(stats["max_db"]) == pytest.approx(20 * math.log10(2), abs=1e-4)
    expected_mean = (2 * 20 * math.log10(2) - 20 * math.log10(0.9)) / 4
    assert float(stats["mean_db"]) == pytest.approx(expected_mean, abs=1e-4)
    assert float(stats["over_1db"]) == pytest.approx(0.5)


def test_gain_reduction_of_an_idle_master_is_zero():
    power = torch.full((1, 100), 1e-6)  # −60 dB, far under any bus threshold
    params = {f"bus_{k}": torch.tensor([v]) for k, v in
              zip(("threshold_db", "ratio", "attack_ms", "release_ms", "makeup_db", "knee_db"),
                  (-20.0, 2.0, 10.0, 100.0, 0.0, 6.0), strict=True)}  # fmt: skip
    reduction = gain_reduction(torch.ones(1, 100), power, params, 44100)
    for stats in reduction.values():
        assert all(float(value) == 0.0 for value in stats.values())


@pytest.fixture(scope="module")
def song():
    stems, _ = synth_stems(4.0, 44100, seed=2)
    return stems


def mix_with(stems, style, **mastering):
    chain = AutoMixChain(optimize=QUICK, mastering=mastering)
    torch.manual_seed(0)
    return chain(stems, style=style)


def test_the_trim_never_drives_the_limiter_past_the_budget(song):
    """A loud target on a 2-dB budget (on 3 dB the strips' drive makes up what the limiter may not
    take): the limiter stays within it, the loudness falls short and the note says why; the same song
    on a 20-dB budget reaches the target."""
    loud = DEFAULT_STYLES["rock_punk"]  # -9.5 LUFS
    _, tight = mix_with(song, loud, max_limiting_db=2.0)
    assert float(tight["gain_reduction"]["limiter"]["max_db"]) <= 2.0 + 0.01
    assert bool(tight["passed"]["limiting"])
    assert float(tight["lufs"]) < -10.0
    assert any("2 dB of limiting" in note for note in tight["notes"])
    _, free = mix_with(song, loud, max_limiting_db=20.0)
    assert float(free["lufs"]) == pytest.approx(-9.5, abs=0.2)
    assert float(free["gain_reduction"]["limiter"]["max_db"]) > 3.0


def test_the_last_trim_step_lands_within_a_tenth_of_a_lu_by_pyloudnorm(song):
    """At a target the budget allows, the kept mix reads within ±0.05 LU on automix's meter and within
    ±0.1 LU on pyloudnorm's (whose textbook K-weighting reads ~0.04 LU low), under the ceiling."""
    mix, analysis = mix_with(song, with_loudness(DEFAULT_STYLES["rnb_ballad"], "streaming"))
    assert float(analysis["lufs"]) == pytest.approx(-14.0, abs=0.05)
    data = mix.T.double().numpy()
    assert pyloudnorm.Meter(44100).integrated_loudness(data) == pytest.approx(-14.0, abs=0.1)
    assert fft_peak_dbtp(mix.double().numpy()) <= CEILING_DBTP
    assert float(analysis["reconstructed_peak_dbtp"]) <= CEILING_DBTP


@pytest.mark.parametrize("refine", [False, True])
def test_predict_mode_reports_the_reconstructed_peak_and_gain_reduction(song, refine):
    chain = AutoMixChain(mastering={"max_limiting_db": 3.0}, predict={"refine": refine})
    with torch.no_grad():
        mix, analysis = chain(song, style="rock_punk", mode="predict")
    assert float(analysis["reconstructed_peak_dbtp"]) == pytest.approx(
        fft_peak_dbtp(mix.double().numpy()), abs=METER_TOLERANCE_DB
    )
    assert float(analysis["reconstructed_peak_dbtp"]) <= CEILING_DBTP
    assert set(analysis["gain_reduction"]) == {"limiter", "bus_compressor"}
    assert float(analysis["gain_reduction"]["limiter"]["max_db"]) <= 3.0 + 0.01
    loudness_notes = [note for note in analysis["notes"] if note.startswith("loudness")]
    if refine:  # the trim stops at the budget; the strips driven into their saturation reach the loudness
        assert (analysis["stem_params"]["drive"] >= 2.0).all() and not loudness_notes
        loudness = pyloudnorm.Meter(44100).integrated_loudness(mix.T.double().numpy())
        assert loudness == pytest.approx(chain.style_targets["rock_punk"].lufs, abs=0.5)
    else:  # the untrained predictor's trim drives this song's limiter past a 3-dB budget: held lower
        assert float(analysis["limited_trim_db"]) > 0
        assert any("within 3 dB" in note for note in loudness_notes)


@pytest.mark.parametrize(("target", "lufs"), [*LOUDNESS_PRESETS.items(), ("-12.5", -12.5), (-20, -20.0)])
def test_loudness_presets_keep_the_styles_tone_and_width(target, lufs):
    style = with_loudness(DEFAULT_STYLES["country_pop"], target)
    assert style.lufs == lufs
    assert style.spectral_centroid_hz == DEFAULT_STYLES["country_pop"].spectral_centroid_hz
    assert style.stereo_ms_ratio == DEFAULT_STYLES["country_pop"].stereo_ms_ratio


@pytest.mark.parametrize("target", ["spotify", "nan", "5", -60.0])
def test_bad_loudness_targets_are_refused(target):
    with pytest.raises(AutomixError, match="loudness target"):
        with_loudness(DEFAULT_STYLES["country_pop"], target)
