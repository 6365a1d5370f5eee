"""Synthetic songs and noise: determinism, shapes, levels, spectra and stereo width, against numpy/scipy."""

import math

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import torch

from automix.dsp.filters import high_pass, peaking
from automix.errors import AutomixError
from automix.synth import STEM_NAMES, _filter, pink_noise, synth_song, synth_stems, white_noise
from automix.utils import create_white_noise_stems

PEAK_CEILING = 10 ** (-1.0 / 20)  # stems peak at -1 dBFS at most
PEAK_FLOOR = 10 ** (-6.0 / 20)
NOISE_RMS = 10 ** (-20.0 / 20)


def ms_ratio(stem: torch.Tensor) -> float:
    """RMS(S) / RMS(M), M = (L + R) / 2, S = (L - R) / 2."""
    left, right = stem.double().numpy()
    return float(np.sqrt(np.mean(((left - right) / 2) ** 2) / np.mean(((left + right) / 2) ** 2)))


def centroid_hz(stem: torch.Tensor, sample_rate: int) -> float:
    mid = stem.double().numpy().mean(axis=0)
    magnitude = np.abs(np.fft.rfft(mid))
    return float(np.sum(np.fft.rfftfreq(mid.size, 1 / sample_rate) * magnitude) / np.sum(magnitude))


def psd_slope_db_per_octave(x: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> float:
    freqs, psd = scipy.signal.welch(x, sample_rate, nperseg=8192, axis=-1)
    band = (freqs >= low_hz) & (freqs <= high_hz)
    psd = psd.reshape(-1, psd.shape[-1]).mean(axis=0)
    return float(np.polyfit(np.log2(freqs[band]), 10 * np.log10(psd[band]), 1)[0])


def test_same_seed_same_song_other_seed_other_song():
    first, names = synth_stems(2.0, seed=3)
    again, _ = synth_stems(2.0, seed=3)
    other, _ = synth_stems(2.0, seed=4)
    assert names == list(STEM_NAMES)
    assert torch.equal(first, again)
    for index in range(len(names)):
        assert not torch.allclose(first[index], other[index])


def test_a_stem_does_not_depend_on_which_others_are_asked_for():
    full = synth_song(3.0, seed=5)
    only = synth_song(3.0, seed=5, stems=("lead", "bass"))
    assert list(only) == ["lead", "bass"]
    assert torch.equal(only["lead"], full["lead"]) and torch.equal(only["bass"], full["bass"])


@pytest.mark.parametrize("sample_rate", [22050, 44100, 48000])
@pytest.mark.parametrize("duration_s", [0.5, 10.0])
def test_shapes_levels_and_no_clipping(duration_s, sample_rate):
    stems, names = synth_stems(duration_s, sample_rate, seed=1)
    assert stems.shape == (len(STEM_NAMES), 2, round(duration_s * sample_rate))
    assert stems.dtype == torch.float32 and torch.isfinite(stems).all()
    peaks = stems.abs().amax(dim=(-2, -1))
    assert (peaks <= PEAK_CEILING + 1e-6).all() and (peaks >= PEAK_FLOOR - 1e-6).all(), peaks
    rms_dbfs = 10 * torch.log10(stems.square().mean(dim=(-2, -1)))
    assert (rms_dbfs > -40).all(), dict(zip(names, rms_dbfs.tolist(), strict=True))


def test_stems_differ_in_stereo_spread():
    song = synth_song(10.0, seed=2)
    width = {name: ms_ratio(stem) for name, stem in song.items()}
    assert width["bass"] < 1e-6  # mono-centred
    assert 0.4 < width["chords"] < 0.9  # wide: decorrelated detuned voices
    assert 0.0 < width["drums"] < 0.3  # panned snare and hats around a centred kick
    assert 0.0 < width["lead"] < 0.4  # centred voice, short stereo echo
    assert width["chords"] > 2 * max(width["drums"], width["lead"], width["bass"])


def test_stems_differ_in_spectrum():
    sample_rate = 44100
    song = synth_song(10.0, sample_rate, seed=3)
    centroid = {name: centroid_hz(stem, sample_rate) for name, stem in song.items()}
    assert centroid["bass"] < 500 < centroid["chords"] * 2
    assert centroid["bass"] < centroid["chords"] < centroid["lead"]
    assert 1000 < centroid["lead"] < 4000  # formant emphasis at 1-3 kHz
    assert centroid["drums"] > 2000  # hats


def test_lead_has_silent_gaps():
    sample_rate = 44100
    lead = synth_song(10.0, sample_rate, tempo_bpm=120, seed=4, stems=("lead",))["lead"]
    window = int(0.05 * sample_rate)
    frames = lead[:, : lead.shape[-1] // window * window].reshape(2, -1, window)
    frame_rms = frames.square().mean(dim=(0, 2)).sqrt()
    silent = frame_rms < lead.abs().max() * 10 ** (-60 / 20)
    assert silent.sum() >= 4 and (~silent).sum() >= 0.5 * silent.numel()


@pytest.mark.parametrize("seed", [0, 1])
def test_stems_drop_out_in_later_sections(seed):
    """Everything plays in the first section (4 bars); some stem is out for whole bars later on."""
    sample_rate, tempo_bpm = 22050, 160
    bar = round(4 * 60 / tempo_bpm * sample_rate)
    stems, _ = synth_stems(30.0, sample_rate, tempo_bpm=tempo_bpm, seed=seed)
    n_bars = stems.shape[-1] // bar
    bar_peaks = stems[..., : n_bars * bar].reshape(len(STEM_NAMES), 2, n_bars, bar).abs().amax(dim=(1, 3))
    assert (bar_peaks[:, :4] > 0.01).all()
    assert (bar_peaks[:, 5:] < 1e-4).any()


def note_onsets(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Sample indices where a `[T]` signal's 2 ms peak envelope rises above -30 dB re. its peak."""
    frame = round(0.002 * sample_rate)
    n_frames = signal.size // frame
    envelope = np.abs(signal[: n_frames * frame]).reshape(n_frames, frame).max(axis=1)
    sounding = envelope > envelope.max() * 10 ** (-30 / 20)
    rises = np.flatnonzero(sounding[1:] & ~sounding[:-1]) + 1
    return np.r_[0, rises] * frame if sounding[0] else rises * frame


def test_given_tempo_changes_the_timing_only():
    """The same seed at 90 and 150 BPM, two bars each: the bass's notes start at times scaled by
    90 / 150 and are the same notes (their first 100 ms have the same spectrum, pitch and level
    included); every stem keeps its peak and spectral centroid, and the sustained ones their loudness."""
    sample_rate, bars, slow_bpm, fast_bpm = 44100, 2, 90.0, 150.0
    slow, fast = (
        {
            name: stem.double().numpy()
            for name, stem in synth_song(bars * 4 * 60 / bpm, sample_rate, tempo_bpm=bpm, seed=3).items()
        }
        for bpm in (slow_bpm, fast_bpm)
    )
    slow_onsets, fast_onsets = (note_onsets(song["bass"][0], sample_rate) for song in (slow, fast))
    assert len(slow_onsets) >= 4 and len(fast_onsets) == len(slow_onsets)
    np.testing.assert_allclose(fast_onsets, slow_onsets * slow_bpm / fast_bpm, atol=0.004 * sample_rate)

    note = round(0.1 * sample_rate)
    window = np.hanning(note)
    for slow_start, fast_start in zip(slow_onsets, fast_onsets, strict=True):
        slow_note = np.abs(np.fft.rfft(slow["bass"][0, slow_start : slow_start + note] * window))
        fast_note = np.abs(np.fft.rfft(fast["bass"][0, fast_start : fast_start + note] * window))
        assert np.linalg.norm(fast_note - slow_note) / np.linalg.norm(slow_note) < 0.02

    meter = pyloudnorm.Meter(sample_rate)
    for name in STEM_NAMES:
        assert np.abs(fast[name]).max() == pytest.approx(np.abs(slow[name]).max(), rel=1e-6)
        assert centroid_hz(torch.from_numpy(fast[name]), sample_rate) == pytest.approx(
            centroid_hz(torch.from_numpy(slow[name]), sample_rate), rel=0.02
        )
    for name in ("bass", "chords", "lead"):  # drum hits decay in fixed times: more per second is louder
        slow_lufs, fast_lufs = (meter.integrated_loudness(song[name].T) for song in (slow, fast))
        assert fast_lufs == pytest.approx(slow_lufs, abs=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stems": ("drums", "vocals")},
        {"stems": ("bass", "bass")},
        {"stems": ()},
        {"duration_s": 0.0},
        {"duration_s": math.nan},
        {"sample_rate": 0},
        {"tempo_bpm": -10.0},
    ],
)
def test_bad_arguments_raise_automix_error(kwargs):
    with pytest.raises(AutomixError):
        synth_song(**{"duration_s": 0.5, **kwargs})


def test_blocked_filter_matches_scipy_on_a_long_signal():
    sample_rate = 44100
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sections = [high_pass(150.0, 0.7071, sample_rate), peaking(9.0, 1200.0, 2.0, sample_rate)]
    sections = [(b.double(), a.double()) for b, a in sections]
    sos = np.concatenate([np.concatenate([b.numpy(), a.numpy()]) for b, a in sections]).reshape(-1, 6)
    expected = scipy.signal.sosfilt(sos, x.numpy())
    np.testing.assert_allclose(_filter(x, sections, sample_rate).numpy(), expected, atol=1e-6)  # -120 dB


@pytest.mark.slow
def test_four_minute_song():
    stems, _ = synth_stems(240.0, 22050, seed=8)
    assert stems.shape == (len(STEM_NAMES), 2, 240 * 22050)
    assert torch.isfinite(stems).all() and (stems.abs().amax(dim=(-2, -1)) <= PEAK_CEILING + 1e-6).all()


@pytest.mark.parametrize("make", [white_noise, pink_noise])
def test_noise_shape_level_seed_and_independent_channels(make):
    noise = make(3, 2.0, 48000, seed=1)
    assert noise.shape == (3, 2, 96000) and noise.dtype == torch.float32
    np.testing.assert_allclose(noise.square().mean(dim=-1).sqrt().numpy(), NOISE_RMS, rtol=1e-4)
    assert torch.equal(noise, make(3, 2.0, 48000, seed=1))
    assert not torch.allclose(noise, make(3, 2.0, 48000, seed=2))
    # Differences whiten pink noise, whose few slow cycles would make the estimate noisy.
    flat = np.diff(noise.double().numpy().reshape(6, -1), axis=-1)
    correlation = np.corrcoef(flat)[~np.eye(6, dtype=bool)]
    assert np.abs(correlation).max() < 0.05  # channels and stems independent


def test_pink_noise_falls_3_db_per_octave():
    sample_rate = 44100
    noise = pink_noise(2, 20.0, sample_rate, seed=0).double().numpy()
    slope = psd_slope_db_per_octave(noise, sample_rate, 40.0, 16000.0)
    assert slope == pytest.approx(-10 * math.log10(2), abs=0.2)


def test_white_noise_is_flat():
    sample_rate = 44100
    noise = white_noise(2, 20.0, sample_rate, seed=0).double().numpy()
    assert abs(psd_slope_db_per_octave(noise, sample_rate, 40.0, 20000.0)) < 0.2


def test_create_white_noise_stems():
    stems = create_white_noise_stems(4, 1.5, 22050, seed=7)
    assert stems.shape == (4, 2, round(1.5 * 22050))
    assert torch.equal(stems, create_white_noise_stems(4, 1.5, 22050, seed=7))
    assert not torch.equal(stems, create_white_noise_stems(4, 1.5, 22050, seed=8))
    assert torch.equal(create_white_noise_stems(2, 1.0), white_noise(2, 1.0, 44100, seed=0))
