"""benchmarks/human_mixes.py on a tiny multitrack written here (no LMMS, no real songs)."""

import re
import shutil

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import soundfile as sf
import torch

import automix.styles
from automix.balance import balance_error_db
from automix.errors import AutomixError
from automix.synth import synth_stems, white_noise
from tests.scripts import load_script

SR = 44100
SONG_S = 25.0
SONG = "Fake-Song"
DEMOS = ["A-One", "B-Two", "C-Three", SONG, "G-Five"]  # sorted, every 4th is validation: SONG


@pytest.fixture(scope="module")
def hm():
    return load_script("benchmarks/human_mixes.py")


def envelope(n: int) -> np.ndarray:
    """Louder from 10 to 20 s (the loudest window), then 0-5 s, quietest 5-10 s and 20-25 s."""
    t = np.arange(n) / SR
    return np.select([t < 5, t < 10, t < 20], [0.5, 0.2, 1.0], 0.2)


def fake_tracks(seed: int = 0) -> np.ndarray:
    """`[4, 2, T]`: low noise (< 150 Hz), a 1 kHz tone, band noise 2-4 kHz, high noise (> 8 kHz)."""
    rng = np.random.default_rng(seed)
    n = int(SONG_S * SR)
    noise = rng.standard_normal((3, 2, n))
    low = scipy.signal.sosfilt(scipy.signal.butter(6, 150, "low", fs=SR, output="sos"), noise[0])
    band = scipy.signal.sosfilt(scipy.signal.butter(4, [2000, 4000], "band", fs=SR, output="sos"), noise[1])
    high = scipy.signal.sosfilt(scipy.signal.butter(6, 8000, "high", fs=SR, output="sos"), noise[2])
    tone = np.broadcast_to(np.sin(2 * np.pi * 1000 * np.arange(n) / SR), (2, n))
    tracks = np.stack([2.0 * low, 0.1 * tone, 1.0 * band, 0.1 * high]) * envelope(n)
    return tracks.astype(np.float32)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms")
    folder = root / SONG
    folder.mkdir()
    tracks = fake_tracks()
    for index, (name, track) in enumerate(zip(["low", "tone", "band", "high"], tracks, strict=True)):
        sf.write(folder / f"{index + 1:03d}_{name}.wav", track.T, SR, subtype="FLOAT")
    sf.write(folder / "mixture.wav", tracks.sum(0).T, SR, subtype="FLOAT")
    return root


@pytest.fixture
def reference_names(monkeypatch):
    """The names `style_from_reference` is called with, in order."""
    names, original = [], automix.styles.style_from_reference

    def noted(audio, sample_rate, name=None):
        names.append(name)
        return original(audio, sample_rate, name=name)

    monkeypatch.setattr(automix.styles, "style_from_reference", noted)
    return names


def test_the_excerpts_are_the_loudest_windows_that_do_not_overlap(hm):
    mix = torch.from_numpy(fake_tracks().sum(0))
    starts = hm.pick_excerpts(mix, SR, 2)
    assert starts == [0, 10 * SR]  # 10-20 s is loudest; 0-10 s is the only window overlapping none
    assert starts[1] - starts[0] >= 10 * SR
    meter = pyloudnorm.Meter(SR)
    windows = {
        s: meter.integrated_loudness(mix[:, s : s + 10 * SR].numpy().T) for s in range(0, 16 * SR, 5 * SR)
    }
    assert max(windows, key=windows.get) == 10 * SR
    assert hm.pick_excerpts(mix, SR, 1) == [10 * SR]
    assert hm.pick_excerpts(mix[:, : 9 * SR], SR, 2) == []  # shorter than one excerpt


def test_the_scramble_is_seeded_and_within_9_db(hm):
    gains = hm.scramble_gains_db(200, 0, SONG, 0)
    assert torch.equal(gains, hm.scramble_gains_db(200, 0, SONG, 0))
    assert not torch.equal(gains, hm.scramble_gains_db(200, 1, SONG, 0))
    assert not torch.equal(gains, hm.scramble_gains_db(200, 0, SONG, 1))
    assert gains.abs().max() <= 9.0 and gains.abs().max() > 8.0 and gains.std() > 4.0


@pytest.fixture(scope="module")
def excerpt():
    return torch.from_numpy(fake_tracks()[..., 10 * SR : 20 * SR].copy())


def test_the_untouched_mix_reads_the_scramble_gains_spread(hm, excerpt):
    gains_db = hm.scramble_gains_db(4, 3, SONG, 0)
    scrambled = hm.scramble(excerpt, gains_db)
    # Closed form: each track's applied gain is exactly its scramble gain, so the balance error is the
    # power-weighted RMS of the gains about their weighted mean.
    power = (excerpt.double() ** 2).sum((1, 2)).numpy()
    applied_db = 10 * np.log10((scrambled.double() ** 2).sum((1, 2)).numpy() / power)
    np.testing.assert_allclose(applied_db, gains_db.numpy(), atol=1e-4)
    weights = power / power.sum()
    mean = (weights * gains_db.numpy()).sum()
    expected = np.sqrt((weights * (gains_db.numpy() - mean) ** 2).sum())
    judged = hm.judge(excerpt, excerpt.sum(0), scrambled.sum(0), SR, ["low", "tone", "band", "high"])
    assert abs(judged.error_db - expected) < 0.3
    assert hm.scramble_spread_db(excerpt, gains_db) == pytest.approx(expected, abs=1e-9)
    assert judged.lost == []


def test_the_producers_own_mix_reads_no_error(hm, excerpt):
    judged = hm.judge(excerpt, excerpt.sum(0), excerpt.sum(0), SR, ["low", "tone", "band", "high"])
    assert judged.error_db < 0.1
    assert judged.mr_stft == pytest.approx(0.0, abs=1e-9)
    assert balance_error_db(excerpt, excerpt.sum(0), SR).error_db < 0.1


def numpy_centroid(mix: np.ndarray) -> float:
    """The contract's spectral centroid by scipy: the mid signal's mean STFT magnitude (Hann 2048, hop
    512)."""
    freqs, _, spectrum = scipy.signal.stft(mix.mean(axis=0), SR, "hann", nperseg=2048, noverlap=1536)
    magnitude = np.abs(spectrum).mean(axis=1)
    return float((freqs * magnitude).sum() / magnitude.sum())


def test_the_tilted_producer_mix_reaches_the_centroid_from_the_top(hm, excerpt):
    """The producer's mix tilted a fifth darker, as the refinement tilts the master EQ, reads that centroid
    (scipy's), its top cut and its bass (< 100 Hz) as it was: the high shelf alone moves."""
    mix = excerpt.sum(0).double()
    target_hz = 0.8 * numpy_centroid(mix.numpy())
    tilted = hm.tilted_to_centroid(mix, target_hz, SR)
    assert numpy_centroid(tilted.numpy()) == pytest.approx(target_hz, rel=0.01)

    def band_db(x, low_hz, high_hz):
        power = np.abs(np.fft.rfft(x.numpy(), axis=-1)) ** 2
        freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
        return 10 * np.log10(power[:, (freqs >= low_hz) & (freqs < high_hz)].sum())

    assert band_db(tilted, 20, 100) == pytest.approx(band_db(mix, 20, 100), abs=0.1)
    assert band_db(tilted, 10000, SR / 2) < band_db(mix, 10000, SR / 2) - 1.0


def test_a_faint_noise_track_is_still_found_in_a_mix_tilted_a_fifth_darker(hm):
    """A synthetic song and a white-noise track 15 dB under it, tilted to 0.8 of its centroid: from the top
    (the high shelf alone) the estimate still finds the noise; the old tilt's shelves at -t/2 and +t/2
    lifted the bass and lost it (docs/benchmarks.md, *The master's tilt from the top first*)."""
    stems = synth_stems(10.0, SR, seed=0)[0].double()
    noise = white_noise(1, 10.0, SR, seed=0)[0].double()
    noise = noise * 10 ** (-15 / 20) * stems.square().mean().sqrt() / noise.square().mean().sqrt()
    tracks = torch.cat([stems, noise[None]])
    mix = tracks.sum(0)
    tilted = hm.tilted_to_centroid(mix, 0.8 * numpy_centroid(mix.numpy()), SR)
    report = balance_error_db(tracks, tilted, SR)
    assert not report.lost.any()
    assert report.error_db < 1.0


def test_equal_loudness_gives_each_track_the_same_loudness(hm, excerpt):
    tracks = torch.cat(
        [hm.scramble(excerpt, hm.scramble_gains_db(4, 0, SONG, 0)), torch.zeros(1, 2, 10 * SR)]
    )
    gains = hm.equal_loudness_gains(tracks, SR)
    assert gains[-1] == 0  # the silent track is left out
    meter = pyloudnorm.Meter(SR)
    loudness = [
        meter.integrated_loudness((track * gain).numpy().T)
        for track, gain in zip(tracks[:4], gains[:4], strict=True)
    ]
    assert max(loudness) - min(loudness) < 0.1
    torch.testing.assert_close(hm.equal_loudness(tracks, SR), (tracks * gains[:, None, None].float()).sum(0))
    with pytest.raises(AutomixError):
        hm.equal_loudness_gains(torch.zeros(2, 2, SR), SR)


def test_the_start_without_a_balance_checkpoint_is_the_equal_loudness_mix(hm, excerpt, tmp_path):
    # The style modes' first step alone, with no checkpoint to take a balance from, sets the stems to one
    # loudness: the benchmark's own equal-loudness mix (BS.1770 gains, checked against pyloudnorm above).
    config = tmp_path / "mix.yaml"
    config.write_text("optimize:\n  balance_checkpoint: null\n")
    scrambled = hm.scramble(excerpt, hm.scramble_gains_db(4, 0, SONG, 0))
    start = hm.Mixers(["start"], SR, 0, config).start(scrambled)
    assert start.shape == (2, 10 * SR)
    from_start = balance_error_db(excerpt, start, SR)
    at_equal_loudness = balance_error_db(excerpt, hm.equal_loudness(scrambled, SR), SR)
    assert at_equal_loudness.error_db > 1.0  # far from the producer's: the comparison can fail
    torch.testing.assert_close(from_start.relative_db, at_equal_loudness.relative_db, atol=0.05, rtol=0)
    # The default start moves the stems from one loudness by half the shipped checkpoint's balance.
    default = hm.Mixers(["start"], SR, 0).start(scrambled)
    moved = balance_error_db(excerpt, default, SR).relative_db - at_equal_loudness.relative_db
    assert moved.abs().max() > 0.5


def test_the_reference_excerpt_is_another_stretch_of_the_song(hm):
    length, n = 10 * SR, 60 * SR
    starts = [5 * SR, 30 * SR]
    assert hm.reference_span(starts, 0, n, length) == (30 * SR, 40 * SR)
    assert hm.reference_span(starts, 1, n, length) == (5 * SR, 15 * SR)
    assert hm.reference_span([5 * SR], 0, n, length) == (30 * SR, 60 * SR)
    assert hm.reference_span([40 * SR], 0, n, length) == (0, 30 * SR)


def test_every_reference_is_each_other_excerpt_the_next_first(hm):
    length, n = 10 * SR, 60 * SR
    starts = [0, 20 * SR, 40 * SR]
    assert hm.same_song_references(starts, 1, n, length, every=False) == [(40 * SR, 50 * SR)]
    assert hm.same_song_references(starts, 1, n, length, every=True) == [(40 * SR, 50 * SR), (0, 10 * SR)]
    # One excerpt has no other: the half of the song its middle is not in, as without `every`.
    assert hm.same_song_references([5 * SR], 0, n, length, every=True) == [(30 * SR, 60 * SR)]


def test_an_other_song_reference_is_the_next_songs_first_excerpt(hm, tmp_path):
    songs = [hm.Song(name, tmp_path / name, []) for name in ("A", "B", "C", "D")]
    excerpts = {"A": [5 * SR, 30 * SR], "B": [], "C": [10 * SR], "D": [0]}  # B is too short: left out
    assert hm.other_song_references(songs, excerpts) == {
        "A": (tmp_path / "C" / "mixture.wav", 10 * SR),
        "C": (tmp_path / "D" / "mixture.wav", 0),
        "D": (tmp_path / "A" / "mixture.wav", 5 * SR),
    }


def test_the_reference_is_scaled_to_minus_1_dbtp(hm):
    audio = 0.1 * torch.randn(2, SR, generator=torch.Generator().manual_seed(0))
    peak = 20 * np.log10(
        np.abs(scipy.signal.resample_poly(hm.at_peak(audio, SR).numpy(), 4, 1, axis=-1)).max()
    )
    assert peak == pytest.approx(-1.0, abs=0.1)


def test_the_summary_takes_medians_and_worsts(hm):
    def row(method, error_db, lost, mr_stft, lufs_error=float("nan")):
        judged = hm.Judgement(error_db, 2 * error_db, ["x"] * lost, ("x", 0.0), mr_stft, lufs_error)
        return hm.Row("song/0s", method, judged, 1.0)

    rows = [row("a", 1.0, 0, 0.1), row("a", 5.0, 2, 0.5), row("a", 2.0, 1, 0.2)]
    rows += [row("b", 3.0, 0, 0.4, -1.0), row("b", 4.0, 0, 0.6, 0.5)]
    table = hm.summarize(rows)
    assert list(table) == ["a", "b"]
    assert table["a"].n == 3 and table["a"].median_db == 2.0 and table["a"].worst_db == 5.0
    assert table["a"].lost == 3 and table["a"].median_mr_stft == 0.2
    assert np.isnan(table["a"].median_abs_lufs_error)
    assert table["b"].median_db == 3.5 and table["b"].median_abs_lufs_error == 0.75
    assert "median dB" in hm.format_summary(table)


def test_a_broken_promise_is_told_from_a_noted_one(hm):
    from automix.settings import OptimizeSettings

    promise = OptimizeSettings().promise  # 0.5 LU, 100 Hz, 0.05
    errors = {"lufs": torch.tensor(-0.8), "spectral_centroid": torch.tensor(99.0)}
    analysis = {
        "errors": errors | {"stereo_ms_ratio": torch.tensor(float("nan"))},  # undefined: missed
        "notes": ["loudness -14.8 LUFS for a target of -14.0 LUFS: not reached with ..."],
    }
    assert hm.broken_promises(analysis, promise) == (("loudness", "M/S ratio"), ("M/S ratio",))
    kept = {"errors": errors | {"lufs": torch.tensor(0.5), "stereo_ms_ratio": torch.tensor(-0.04)}}
    assert hm.broken_promises(kept, promise) == ((), ())

    def row(missed, unnoted):
        judged = hm.Judgement(1.0, 1.0, [], ("x", 0.0), 0.1, 0.1, missed=missed, unnoted=unnoted)
        return hm.Row("song/0s", "rock_punk", judged, 1.0)

    rows = [row((), ()), row(("loudness",), ()), row(("centroid", "M/S ratio"), ("M/S ratio",))]
    summary = hm.summarize(rows)["rock_punk"]
    assert (summary.kept, summary.unnoted) == (1, 1)
    assert "missed: centroid, M/S ratio (no note)" in hm.format_row(rows[2])


def test_main_mixes_the_validation_songs_and_prints_the_summary(hm, fake_root, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(hm, "demo_songs", lambda: DEMOS)
    plot = tmp_path / "balance.png"
    argv = ["--root", str(fake_root), "--methods", "untouched", "equal_loudness", "--plot", str(plot)]
    assert hm.main(argv) == 0
    out = capsys.readouterr().out
    assert "note: validation songs not rendered" not in out  # G-Five is a training song
    assert out.count("  worst ") == 4  # 2 excerpts x 2 methods
    assert out.count("by construction") == 2  # a scramble line per excerpt
    summary = out.split("summary over 2 excerpts")[1]
    assert "untouched" in summary and "equal_loudness" in summary
    assert plot.stat().st_size > 0


def test_the_tilted_producer_mixes_print_their_centroid(hm, fake_root, monkeypatch, capsys):
    monkeypatch.setattr(hm, "demo_songs", lambda: DEMOS)
    assert hm.main(["--root", str(fake_root), "--excerpts", "1", "--methods", "producer_rnb_ballad"]) == 0
    line = next(
        line for line in capsys.readouterr().out.splitlines() if "producer_rnb_ballad  balance" in line
    )
    assert re.search(r"centroid +[+-]\d+ Hz", line)


def test_the_split_picks_the_songs(hm, fake_root, monkeypatch, capsys):
    monkeypatch.setattr(hm, "demo_songs", lambda: DEMOS)
    assert [song.name for song in hm.rendered_songs(fake_root, "valid")] == [SONG]
    assert hm.rendered_songs(fake_root, "train") == []  # the training songs are A-One, B-Two, C-Three, G-Five
    assert "no train song rendered" in capsys.readouterr().out


def test_the_other_split_is_every_song_under_the_root_but_lmms_renders(hm, fake_root, tmp_path, capsys):
    root = tmp_path / "songs"
    shutil.copytree(fake_root / SONG, root / "tracker_song")
    shutil.copytree(fake_root / SONG, root / "lmms_song")
    (root / "lmms_song" / hm.lmms_data().REPORT).write_text("{}")
    (root / ".staging").mkdir()
    assert [song.name for song in hm.rendered_songs(root, "other")] == ["tracker_song"]
    assert hm.rendered_songs(tmp_path / "missing", "other") == []
    assert "make_tracker_multitracks.py" in capsys.readouterr().out
    # A song shorter than one excerpt is left out with a note, and the others are mixed.
    jingle = root / "jingle"
    jingle.mkdir()
    for name in ("001_beep.wav", "mixture.wav"):
        sf.write(jingle / name, np.full((SR // 2, 2), 0.1, np.float32), SR, subtype="FLOAT")
    assert hm.main(["--root", str(root), "--split", "other", "--methods", "untouched"]) == 0
    out = capsys.readouterr().out
    assert "jingle is shorter than one excerpt" in out and "summary over 2 excerpts" in out


def test_a_missing_root_or_split_skips(hm, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hm, "demo_songs", lambda: DEMOS)
    assert hm.main(["--root", str(tmp_path / "missing")]) == 0
    assert "skipped" in capsys.readouterr().out
    assert hm.main(["--root", str(tmp_path)]) == 0
    assert "make_lmms_multitracks.py --split valid" in capsys.readouterr().out
    assert hm.main(["--root", str(tmp_path), "--split", "train"]) == 0
    assert "make_lmms_multitracks.py --split train" in capsys.readouterr().out

    def no_lmms():
        raise AutomixError("lmms-common is not installed")

    monkeypatch.setattr(hm, "demo_songs", no_lmms)
    assert hm.main(["--root", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_automix_modes_mix_a_short_excerpt(hm, fake_root, monkeypatch, capsys):
    monkeypatch.setattr(hm, "demo_songs", lambda: DEMOS)
    argv = [
        "--root",
        str(fake_root),
        "--excerpts",
        "1",
        "--excerpt-s",
        "3",
        "--methods",
        "start",
        "rock_punk",
        "kept_country_pop",
        "predict",
        "predict_rnb_ballad",
    ]
    assert hm.main(argv) == 0
    out = capsys.readouterr().out
    summary = out.split("summary")[1]
    assert out.count("errors") == 4
    assert all(
        method in summary for method in ("start", "rock_punk", "kept_country_pop", "predict_rnb_ballad")
    )


@pytest.mark.slow
def test_float64_mixes_the_reference_mode_in_float64(hm, fake_root, monkeypatch, capsys):
    monkeypatch.setattr(hm, "demo_songs", lambda: DEMOS)
    dtypes = []
    judge = hm.judge

    def judge_and_note(tracks, producer_mix, mix, *args):
        dtypes.append(mix.dtype)
        return judge(tracks, producer_mix, mix, *args)

    monkeypatch.setattr(hm, "judge", judge_and_note)
    argv = ["--root", str(fake_root), "--excerpts", "1", "--excerpt-s", "3", "--methods", "reference"]
    assert hm.main([*argv, "--float64"]) == 0
    assert dtypes == [torch.float64] and "reference" in capsys.readouterr().out.split("summary")[1]


@pytest.mark.slow
def test_an_other_song_reference_sets_the_targets(hm, fake_root, monkeypatch, capsys, reference_names):
    monkeypatch.setattr(hm, "demo_songs", lambda: DEMOS)
    argv = ["--root", str(fake_root), "--excerpts", "1", "--excerpt-s", "3", "--methods", "reference"]
    assert hm.main([*argv, "--reference-from", "other"]) == 0
    # One validation song: the next song is itself, the reference its own (loudest) excerpt, not another
    # stretch of it as with `same`.
    mixture = hm.read_wav(fake_root / SONG / "mixture.wav")
    (start,) = hm.pick_excerpts(mixture, SR, 1, 3.0)
    assert 10 * SR <= start <= 17 * SR
    assert (
        reference_names == [f"{SONG}@{start}"] and "reference" in capsys.readouterr().out.split("summary")[1]
    )


@pytest.mark.slow
def test_every_reference_mixes_each_excerpt_to_each_other(
    hm, fake_root, monkeypatch, capsys, reference_names
):
    monkeypatch.setattr(hm, "demo_songs", lambda: DEMOS)
    argv = ["--root", str(fake_root), "--excerpts", "3", "--excerpt-s", "3", "--reference-from", "every"]
    assert hm.main([*argv, "--methods", "untouched", "reference"]) == 0
    mixture = hm.read_wav(fake_root / SONG / "mixture.wav")
    starts = hm.pick_excerpts(mixture, SR, 3, 3.0)
    assert len(starts) == 3
    # Each excerpt to the two others, the next one first; the untouched mix once per excerpt.
    assert reference_names == [f"{SONG}@{starts[(i + step) % 3]}" for i in range(3) for step in (1, 2)]
    out = capsys.readouterr().out
    assert len(re.findall(r"/\d+s to \d+s +reference ", out)) == 6
    assert len(re.findall(r"/\d+s +untouched ", out)) == 3
    summary = out.split("summary over 3 excerpts")[1]
    assert re.search(r"^untouched\s+3\s", summary, re.M) and re.search(r"^reference\s+6\s", summary, re.M)
