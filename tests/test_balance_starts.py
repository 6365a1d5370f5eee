"""benchmarks/balance_starts.py: its partial-loudness model on band noise written here (no LMMS)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from automix.balance import band_energies
from automix.loudness import integrated_loudness
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "balance_starts.py"
SR = 44100
SECONDS = 3.0


@pytest.fixture(scope="module")
def bs():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports human_mixes beside it
    return load_script("benchmarks/balance_starts.py")


def band_noise(low_hz: float, high_hz: float, seed: int) -> torch.Tensor:
    """`[2, T]` stereo noise band-passed to `low_hz`–`high_hz`, at −23 LUFS, float64."""
    rng = np.random.default_rng(seed)
    sos = scipy.signal.butter(8, (low_hz, high_hz), "bandpass", fs=SR, output="sos")
    noise = torch.from_numpy(scipy.signal.sosfilt(sos, rng.standard_normal((2, int(SECONDS * SR)))))
    return noise * 10.0 ** ((-23.0 - integrated_loudness(noise, SR)) / 20)


def moves(bs, tracks: torch.Tensor) -> torch.Tensor:
    """The script's moves from equal loudness to equal partial loudness of `tracks [N, 2, T]`."""
    lufs = integrated_loudness(tracks, SR)
    return bs.equal_partial_loudness_db(tracks, torch.ones(len(tracks), dtype=torch.bool), lufs.mean() - lufs)


def test_loudness_grows_as_power_to_the_exponent(bs):
    power = band_energies(band_noise(200, 2000, seed=0)[None], SR)
    quiet, loud = (bs.partial_loudness(power, torch.tensor([gain])) for gain in (0.0, 10.0))
    # Stevens's law with α = 0.3: 10 dB more power is 10^0.3 (about twice) the loudness
    torch.testing.assert_close(loud / quiet, torch.tensor([10.0**bs.EXPONENT], dtype=loud.dtype))


def test_tracks_in_separate_bands_meet_the_closed_form(bs):
    # No overlap, no masking: a track's loudness is Σ_b E_b^α, and equal loudness needs
    # g_a − g_b = 10/α · log10(L_b / L_a).
    tracks = torch.stack([band_noise(80, 120, seed=1), band_noise(1500, 8000, seed=2)])
    lufs = integrated_loudness(tracks, SR)
    power = band_energies(tracks * 10.0 ** ((lufs.mean() - lufs) / 20)[:, None, None], SR)
    alone = torch.stack([power[i].pow(bs.EXPONENT).sum(0).mean() for i in range(2)])
    wanted = 10.0 / bs.EXPONENT * torch.log10(alone[1] / alone[0])
    got = moves(bs, tracks)
    assert abs(float(got[0] - got[1]) - float(wanted)) < 0.3
    assert float(got[0] - got[1]) > 1.0  # the narrow low band is quieter at one LUFS: it comes up


def test_alike_tracks_stay_at_equal_loudness_and_a_masker_lowers_partial_loudness(bs):
    alike = torch.stack([band_noise(200, 4000, seed=3), band_noise(200, 4000, seed=4)])
    assert float(moves(bs, alike).abs().max()) < 0.2
    # a narrow band heard under a broad one is quieter than alone
    narrow = band_energies(band_noise(900, 1100, seed=5)[None], SR)
    together = torch.cat([narrow, band_energies(band_noise(200, 4000, seed=6)[None], SR)])
    alone = bs.partial_loudness(narrow, torch.zeros(1))[0]
    heard = bs.partial_loudness(together, torch.zeros(2))[0]
    assert float(heard) < 0.8 * float(alone)


def test_a_silent_track_keeps_its_place_and_the_starts_are_named(bs):
    tracks = torch.stack([band_noise(200, 4000, seed=7), torch.zeros(2, int(SECONDS * SR)).double()])
    starts = bs.starts(tracks)
    assert list(starts) == ["equal loudness", "partial", "partial, half the move", "partial, within ±3 dB"]
    for gains in starts.values():
        assert float(gains[1]) == -200.0 and float(gains[0]) == 0.0  # one audible track: nothing to move


def test_without_rendered_songs_it_skips(bs, tmp_path, capsys):
    assert bs.main(["--root", str(tmp_path / "none")]) == 0
    assert "skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("014_kick", "kick"),
        ("008_bassdrum_acoustic01", "kick"),  # a bass drum is a kick, not a bass
        ("012_clap04", "snare"),
        ("005_hihat_closed05+3", "cymbal"),
        ("016_wood2", "percussion"),
        ("002_bass3_analog", "bass"),
        ("007_synth_pad2", "keys"),
        ("Noise_left", "fx"),
        ("001_Default_preset+1", "other"),
        ("Bass_Pad", "bass"),  # the first role in `ROLES` whose words it holds decides
    ],
)
def test_a_track_name_gives_the_role_of_the_first_instrument_word_it_holds(bs, name, role):
    assert bs.role_of(name) == role


def test_learned_role_moves_leave_the_song_out_and_shrink_toward_zero(bs):
    examples = [("a", "kick", 4.0), ("b", "kick", 2.0), ("b", "cymbal", -10.0), ("c", "other", 9.0)]
    learned = bs.role_moves_db(examples, "a")
    assert set(learned) == {"kick", "cymbal"}  # "other" stays at equal loudness
    assert learned["kick"] == pytest.approx(2.0 / (1 + bs.ROLE_SHRINK))  # song a's own 4 dB left out
    assert learned["cymbal"] == pytest.approx(-10.0 / (1 + bs.ROLE_SHRINK))


def test_producer_moves_are_the_levels_against_equal_loudness_about_their_power_weighted_mean(bs):
    tracks = torch.stack([band_noise(100, 400, 0), band_noise(2000, 6000, 1) * 10 ** (-12 / 20)])
    equal = bs.equal_loudness_db(tracks)
    assert equal[0] - equal[1] == pytest.approx(-12.0, abs=0.01)  # the quieter track is raised 12 dB
    power = tracks.square().sum(dim=(1, 2))
    moves = bs.producer_moves_db(tracks, equal)
    assert (power * moves).sum() == pytest.approx(0.0, abs=1e-9)
    assert moves[0] - moves[1] == pytest.approx(12.0, abs=0.01)


def test_the_stems_features_do_not_depend_on_their_levels_and_read_their_bands(bs):
    tracks = torch.stack([band_noise(60, 110, 2), band_noise(7000, 12000, 3)])
    zeros = torch.zeros(2, dtype=torch.float64)
    features = bs.stem_features(tracks, bs.equal_loudness_db(tracks), zeros)
    assert features.shape == (2, len(bs.FEATURES))
    gains_db = torch.tensor([-14.0, 9.0], dtype=torch.float64)
    louder = tracks * torch.pow(10.0, gains_db / 20.0)[:, None, None]
    moved = bs.stem_features(louder, bs.equal_loudness_db(louder), zeros)
    # level-free up to one constant per excerpt (the loudness less RMS, read through equal loudness),
    # which the fit within each excerpt removes
    torch.testing.assert_close(moved - moved.mean(dim=0), features - features.mean(dim=0))
    low, high = bs.FEATURES.index("share < 120 Hz"), bs.FEATURES.index("share > 6 kHz")
    assert features[0, low] > -0.5 and features[1, high] > -0.5  # nearly all their power in their band
    assert features[0, 0] < -3 and features[1, 0] > 3  # centroids under 125 Hz and over 8 kHz


def test_the_sounding_fit_follows_a_linear_rule_within_excerpts_and_leaves_the_song_out(bs):
    generator = torch.Generator().manual_seed(0)
    truth = torch.linspace(-2.0, 2.0, len(bs.FEATURES), dtype=torch.float64)
    examples, offset = [], []
    for song in range(40):
        x = torch.randn(6, len(bs.FEATURES), generator=generator, dtype=torch.float64)
        weights = torch.rand(6, generator=generator, dtype=torch.float64) + 0.1
        examples.append((f"song{song}", x, x @ truth, weights / weights.sum()))
        # a common level per excerpt: a balance is relative, so the fit does not see it
        offset.append((f"song{song}", x, x @ truth + 5.0 * song, weights / weights.sum()))
    fitted = bs.fit_sounding_moves(examples, "none")
    torch.testing.assert_close(bs.fit_sounding_moves(offset, "none"), fitted)
    # the ridge penalty on standardised features shrinks the rule, and keeps its direction
    assert torch.nn.functional.cosine_similarity(fitted, truth, dim=0) > 0.99
    assert 0.3 < float(fitted.norm() / truth.norm()) < 1.0
    held_out = ("held out", examples[0][1], examples[0][1] @ -truth, examples[0][3])  # the opposite rule
    torch.testing.assert_close(bs.fit_sounding_moves([*examples, held_out], "held out"), fitted)
