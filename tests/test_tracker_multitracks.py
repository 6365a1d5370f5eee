"""data/make_tracker_multitracks.py on a ProTracker module the test writes: one track per sample that plays,
each the module as it sounds without the others (the same module with the other notes taken out, rendered
whole, is the reference), the mixture their sum, and bad input refused with one line."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from automix.cli import run_cli
from automix.errors import AutomixError
from tests.scripts import load_script

SAMPLE_RATE = 44100
PERIOD_C2 = 428  # ProTracker's period of C-2


tracker = load_script("data/make_tracker_multitracks.py", "make_tracker_multitracks")


@pytest.fixture(scope="module")
def lib():
    try:
        return tracker.libopenmpt()
    except AutomixError:
        pytest.skip("libopenmpt is not installed (apt-get install libopenmpt0)")


def _cell(sample: int, period: int, effect: int = 0, parameter: int = 0) -> bytes:
    """One ProTracker pattern cell: sample number, note period, effect and its parameter."""
    return bytes([(sample & 0xF0) | (period >> 8), period & 0xFF, ((sample & 0x0F) << 4) | effect, parameter])


def _write_mod(path: Path, notes: dict[int, int]) -> None:
    """A 4-channel ProTracker module ("M.K."), one pattern at speed 2: a looped square wave ("square",
    sample 1), a burst of noise ("noise", sample 2) and a sample no note plays ("unused", 3). `notes`:
    channel -> the sample it plays on the first row (C-2)."""
    square = np.tile(np.repeat(np.int8([60, -60]), 16), 4)
    noise = np.random.default_rng(0).integers(-90, 90, 4000).astype(np.int8)
    unused = np.full(64, 50, np.int8)
    samples = [("square", square, True), ("noise", noise, False), ("unused", unused, False)]
    header = b"automix test".ljust(20, b"\0")
    for index in range(31):
        if index < len(samples):
            name, data, loop = samples[index]
            words = len(data) // 2
            header += name.encode().ljust(22, b"\0") + struct.pack(
                ">HBBHH", words, 0, 64, 0, words if loop else 1
            )
        else:
            header += b"\0" * 22 + struct.pack(">HBBHH", 0, 0, 0, 0, 1)
    header += bytes([1, 127]) + bytes(128) + b"M.K."
    rows = []
    for row in range(64):
        cells = [_cell(0, 0)] * 4
        if row == 0:
            cells = [_cell(notes[c], PERIOD_C2) if c in notes else _cell(0, 0) for c in range(4)]
            cells[3] = _cell(0, 0, 0xF, 2)  # speed 2: the pattern lasts 64 × 2 ticks of 20 ms
        rows.append(b"".join(cells))
    body = b"".join(rows) + b"".join(data.tobytes() for _, data, _ in samples)
    path.write_bytes(header + body)


def _read(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float64")
    assert rate == SAMPLE_RATE
    return audio


def test_each_playing_sample_is_a_track_as_it_sounds_alone_and_the_mixture_is_their_sum(lib, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    _write_mod(modules / "song.mod", {0: 1, 1: 2})
    _write_mod(tmp_path / "square_only.mod", {0: 1})
    _write_mod(tmp_path / "noise_only.mod", {1: 2})
    out = tmp_path / "out"

    assert tracker.main(["--modules", str(modules), "--out", str(out)]) == 0

    song = out / "song"
    assert sorted(p.name for p in song.iterdir()) == [
        "001_square.wav",
        "002_noise.wav",
        "mixture.wav",
        "tracker_render.json",
    ]  # the unused sample is no track; no LMMS report, so no LMMS split rule applies
    for name, alone in (("001_square", "square_only.mod"), ("002_noise", "noise_only.mod")):
        with tracker.Module(lib, (tmp_path / alone).read_bytes()) as module:
            reference = module.render(SAMPLE_RATE).astype(np.float64)
        track = _read(song / f"{name}.wav")
        assert np.sqrt(np.mean(track**2)) > 1e-3
        np.testing.assert_allclose(track, reference, atol=1e-6)
    mixture = _read(song / "mixture.wav")
    np.testing.assert_allclose(
        mixture, _read(song / "001_square.wav") + _read(song / "002_noise.wav"), atol=1e-6
    )
    report = json.loads((song / "tracker_render.json").read_text())
    assert report["status"] == "rendered" and sorted(report["tracks"]) == ["001_square", "002_noise"]


def test_instruments_that_do_not_sum_to_the_module_fail_the_song(lib, tmp_path, monkeypatch):
    _write_mod(tmp_path / "song.mod", {0: 1, 1: 2})
    render = tracker.Module.render

    def louder_when_whole(self, sample_rate, solo=None, deadline=float("inf")):
        audio = render(self, sample_rate, solo, deadline)
        return audio if solo is not None else audio * 1.01

    monkeypatch.setattr(tracker.Module, "render", louder_when_whole)
    assert tracker.main(["--modules", str(tmp_path / "song.mod"), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / "song").exists()


def test_bad_input_is_one_line_and_leaves_no_song(lib, tmp_path, capsys):
    (tmp_path / "broken.xm").write_bytes(b"not a module at all")
    assert (
        run_cli(tracker.main, ["--modules", str(tmp_path / "broken.xm"), "--out", str(tmp_path / "out")]) == 1
    )
    assert "broken: failed (libopenmpt cannot load it" in capsys.readouterr().err
    assert not (tmp_path / "out" / "broken").exists()
    assert (
        run_cli(tracker.main, ["--modules", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    )
    assert capsys.readouterr().err.strip().endswith("no such file or folder")
    (tmp_path / "empty").mkdir()
    assert run_cli(tracker.main, ["--modules", str(tmp_path / "empty")]) == 2
    assert "no tracker module" in capsys.readouterr().err


def test_songs_are_named_by_their_path_under_the_folders_given(tmp_path):
    modules = [tmp_path / "pingus" / "music" / "menu.it", tmp_path / "heroes" / "mod" / "menu.xm"]
    name = tracker.song_namer(modules)
    assert [name(module) for module in modules] == ["pingus_music_menu", "heroes_mod_menu"]
    assert tracker.song_namer(modules[:1])(modules[0]) == "menu"
