"""Stem features: shapes, batching, silence, gain, spectra in the right direction, closed forms, speed."""

import math

import pytest
import torch

from automix.dsp.filters import apply_biquads, high_pass
from automix.errors import AutomixError
from automix.features import (
    BUS_FEATURE_NAMES,
    CREST_REF_DB,
    CREST_SCALE_DB,
    FEATURE_NAMES,
    LEVEL_REF_DB,
    LEVEL_SCALE_DB,
    MS_RATIO_MAX,
    N_FEATURES,
    PLR_REF_DB,
    PLR_SCALE_DB,
    bus_features,
    stem_features,
)
from automix.metrics import integrated_loudness, spectral_centroid, stereo_ms_ratio
from automix.synth import synth_song, white_noise
from automix.targets import Targets

SAMPLE_RATE = 44100
INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
LEVELS = [INDEX["rms_db"], INDEX["loudness_lufs"]]
# The excerpts' 5 ms fades lower the RMS by < 0.03 dB: 0.0015 in scaled units.
FADE_TOLERANCE = 0.002


@pytest.fixture(scope="module")
def song() -> dict[str, torch.Tensor]:
    return synth_song(8.0, SAMPLE_RATE, seed=3)


def _sine(freq_hz: float, amplitude: float, seconds: float) -> torch.Tensor:
    n = torch.arange(round(seconds * SAMPLE_RATE), dtype=torch.float64)
    return (amplitude * torch.sin(2 * math.pi * freq_hz * n / SAMPLE_RATE)).float().expand(2, -1)


def test_names_and_shapes(song):
    stems = torch.stack(list(song.values()))[..., : 2 * SAMPLE_RATE]
    assert N_FEATURES == len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
    assert stem_features(stems, SAMPLE_RATE).shape == (4, N_FEATURES)
    batch = torch.stack([stems, stems.flip(0), stems])
    assert stem_features(batch, SAMPLE_RATE).shape == (3, 4, N_FEATURES)
    assert stem_features(stems[:, :1], SAMPLE_RATE)[:, INDEX["stereo_ms_ratio"]].eq(0).all()


def test_batch_equals_per_item(song):
    stems = torch.stack([song["drums"], song["chords"]])
    batch = torch.stack([stems, 0.5 * stems.flip(0)])
    features = stem_features(batch, SAMPLE_RATE)
    for item in range(2):
        torch.testing.assert_close(features[item], stem_features(batch[item], SAMPLE_RATE))


def test_silent_and_masked_stems_are_zero_and_inactive(song):
    stems = torch.stack([song["bass"], torch.zeros_like(song["bass"]), song["lead"]])
    features = stem_features(stems, SAMPLE_RATE, mask=torch.tensor([True, True, False]))
    assert torch.isfinite(features).all()
    assert features[0, INDEX["active"]] == 1
    assert features[1:].eq(0).all()
    tiny = stem_features(torch.zeros(2, 2, 100), SAMPLE_RATE)
    assert tiny.eq(0).all()


def test_a_gain_moves_only_the_levels_by_exactly_the_gain(song):
    gain_db = 6.0
    stems = torch.stack([song["chords"], song["drums"]]).double()
    quiet = stem_features(stems, SAMPLE_RATE)
    loud = stem_features(stems * 10 ** (gain_db / 20), SAMPLE_RATE)
    torch.testing.assert_close(
        loud[:, LEVELS] - quiet[:, LEVELS], torch.full((2, 2), gain_db / LEVEL_SCALE_DB, dtype=torch.float64)
    )
    others = [i for i in range(N_FEATURES) if i not in LEVELS]
    torch.testing.assert_close(loud[:, others], quiet[:, others])


def test_features_after_an_input_gain_are_those_of_the_stems_at_that_gain(song):
    stems = torch.stack([song["chords"], song["drums"]]).double()
    gain_db = torch.tensor(-24.0, dtype=torch.float64)
    torch.testing.assert_close(
        stem_features(stems * 10 ** (-gain_db / 20), SAMPLE_RATE, gain_db=gain_db),
        stem_features(stems, SAMPLE_RATE),
    )


def test_bass_is_darker_than_lead_and_hi_hat(song):
    hat_b, hat_a = high_pass(torch.tensor(7000.0), torch.tensor(0.7071), SAMPLE_RATE)
    hat = apply_biquads(white_noise(1, 8.0, SAMPLE_RATE)[0], hat_b[None], hat_a[None], SAMPLE_RATE)
    bass, lead, hat = stem_features(torch.stack([song["bass"], song["lead"], hat]), SAMPLE_RATE)
    centroid, low, high = INDEX["centroid_octaves"], INDEX["band_low"], INDEX["band_high"]
    assert bass[centroid] < lead[centroid] < hat[centroid]
    assert bass[low] > lead[low] and bass[low] > hat[low]
    assert hat[high] > bass[high] and hat[high] > lead[high]
    assert bass[centroid] < -1.0 and hat[centroid] > 2.5  # below 500 Hz; above 5.6 kHz


def test_a_steady_sine_reads_its_closed_forms():
    amplitude = 0.5
    features = stem_features(_sine(1000.0, amplitude, 5.0)[None], SAMPLE_RATE)[0]
    rms_dbfs = 20 * math.log10(amplitude / math.sqrt(2))
    crest_db = 20 * math.log10(math.sqrt(2))
    assert features[INDEX["rms_db"]] == pytest.approx(
        (rms_dbfs - LEVEL_REF_DB) / LEVEL_SCALE_DB, abs=FADE_TOLERANCE
    )
    assert features[INDEX["crest_factor_db"]] == pytest.approx(
        (crest_db - CREST_REF_DB) / CREST_SCALE_DB, abs=0.01
    )
    assert features[INDEX["centroid_octaves"]] == pytest.approx(0.0, abs=0.05)  # 1 kHz
    assert features[INDEX["dynamic_range_db"]] == pytest.approx(0.0, abs=0.01)
    assert features[INDEX["band_mid"]] == pytest.approx(1.0, abs=1e-3)
    assert features[INDEX["stereo_ms_ratio"]] == 0


def test_a_stem_that_plays_once_is_found_and_read_at_its_playing_level():
    seconds, start_s, length_s, amplitude = 30.0, 17.0, 2.0, 0.5
    stem = torch.zeros(2, round(seconds * SAMPLE_RATE))
    start = round(start_s * SAMPLE_RATE)
    burst = _sine(500.0, amplitude, length_s)
    stem[:, start : start + burst.shape[-1]] = burst
    features = stem_features(stem[None], SAMPLE_RATE)[0]
    assert features[INDEX["active"]] == 1
    playing_dbfs = 20 * math.log10(amplitude / math.sqrt(2))
    expected = (playing_dbfs - LEVEL_REF_DB) / LEVEL_SCALE_DB
    assert features[INDEX["rms_db"]] == pytest.approx(expected, abs=FADE_TOLERANCE)


def test_out_of_phase_stems_stay_finite():
    sine = _sine(440.0, 0.5, 2.0)
    features = stem_features(torch.stack([sine[0], -sine[1]])[None], SAMPLE_RATE)
    assert features[0, INDEX["stereo_ms_ratio"]] == MS_RATIO_MAX


def test_no_gradients_are_kept():
    stems = (0.1 * torch.randn(2, 2, SAMPLE_RATE)).requires_grad_()
    assert not stem_features(stems, SAMPLE_RATE).requires_grad


def test_bad_inputs_are_refused():
    with pytest.raises(AutomixError, match="stems"):
        stem_features(torch.zeros(2, 100), SAMPLE_RATE)
    with pytest.raises(AutomixError, match="channels"):
        stem_features(torch.zeros(2, 3, 100), SAMPLE_RATE)
    with pytest.raises(AutomixError, match="NaN"):
        stem_features(torch.full((2, 2, 100), math.nan), SAMPLE_RATE)
    with pytest.raises(AutomixError, match="mask shape"):
        stem_features(torch.zeros(2, 2, 100), SAMPLE_RATE, mask=torch.ones(3))


def test_bus_features_are_level_free_and_relative_to_the_targets():
    """Gain does not change them; the M/S and centroid gaps are log2(measured / target), closed form."""
    gen = torch.Generator().manual_seed(4)
    mid, side = torch.randn(2, 1, 44100, generator=gen)
    bus = torch.cat([mid + 0.5 * side, mid - 0.5 * side])[None]  # M/S ratio 0.5 (up to noise)
    target = Targets.from_tensor(torch.tensor([[-10.0, 2000.0, 1.0, 0.2, 0.6, 0.2]]))
    lufs = integrated_loudness(bus, 44100)
    features = bus_features(bus, lufs, target, 44100)
    louder = bus_features(4 * bus, integrated_loudness(4 * bus, 44100), target, 44100)
    torch.testing.assert_close(features, louder, atol=1e-5, rtol=0)
    ms_ratio = stereo_ms_ratio(bus)
    names = list(BUS_FEATURE_NAMES)
    assert features[0, names.index("ms_gap")] == pytest.approx(torch.log2(ms_ratio / 1.0).item(), abs=1e-6)
    centroid = spectral_centroid(bus, 44100)
    expected_gap = torch.log2(centroid / 2000.0).item()
    assert features[0, names.index("centroid_gap_octaves")] == pytest.approx(expected_gap, abs=1e-5)
    peak_db = 20 * torch.log10(bus.abs().max()).item()
    expected_plr = (peak_db - lufs.item() - PLR_REF_DB) / PLR_SCALE_DB
    assert features[0, names.index("peak_to_loudness")] == pytest.approx(expected_plr, abs=1e-4)
