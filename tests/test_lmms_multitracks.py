"""data/make_lmms_multitracks.py: the split (and that data/README.md lists it), track names, the checks on
rendered tracks, the mixture as their sum, atomic placement, resume and the held-out rule, on fake
renders the tests write; one test renders a two-track project with LMMS itself."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from automix.errors import AutomixError
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100
RENDER_TRIES = 3  # renders of the two-drum project before its result is judged


lmms = load_script("data/make_lmms_multitracks.py", "make_lmms_multitracks")


def _track(n_frames: int = 4410, n_channels: int = 2, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, level, (n_frames, n_channels)).astype(np.float32)


def _fake_render(tracks: dict[str, np.ndarray]):
    """A `Render` that writes `tracks` (LMMS file name -> `(T, C)` samples) as float WAVs."""
    calls = []

    def render(project: Path, out_dir: Path, timeout_s: float) -> None:
        calls.append(project)
        for name, data in tracks.items():
            sf.write(out_dir / name, data, SAMPLE_RATE, subtype="FLOAT")

    render.calls = calls
    return render


def _failing_render(project: Path, out_dir: Path, timeout_s: float) -> None:
    sf.write(out_dir / "1_half.wav", _track(), SAMPLE_RATE, subtype="FLOAT")
    raise AutomixError("lmms ran past --timeout-s 1")


def _projects(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return [folder / name for name in names]


# ---- the split


def test_split_is_every_fourth_song_by_name_disjoint_and_complete():
    songs = [f"Song{index:02d}" for index in range(14)]
    valid = lmms.validation_songs(reversed(songs))
    assert valid == {"Song03", "Song07", "Song11"}
    assert valid == lmms.validation_songs(songs)  # the order given does not matter
    projects = [Path(f"/demos/{song}.mmpz") for song in songs]
    train = lmms.select_split(projects, "train", songs)
    valid_projects = lmms.select_split(projects, "valid", songs)
    assert not set(train) & set(valid_projects)
    assert set(train) | set(valid_projects) == set(projects)
    assert lmms.select_split(projects, "all", songs) == valid_projects + train  # validation songs first
    for n_songs in range(1, 40):
        assert len(lmms.validation_songs(f"s{i:02d}" for i in range(n_songs))) == n_songs // 4


def test_a_project_outside_the_demos_is_in_no_split():
    demo = Path("/demos/A.mmpz")
    own = Path("/elsewhere/Mine.mmp")
    assert lmms.select_split([demo, own], "train", ["A"]) == [demo]
    assert lmms.select_split([demo, own], "all", ["A"]) == [demo, own]


def _readme_split() -> dict[str, list[str]]:
    """The song names data/README.md lists under "Validation songs (n):" and "Training songs (n):"."""
    text = (ROOT / "data" / "README.md").read_text()
    section = text[text.index("## LMMS demo multitracks") :]
    lists = {}
    for split, heading in (("valid", "Validation songs"), ("train", "Training songs")):
        match = re.search(rf"^{heading} \((\d+)\): (.+?)\n\n", section, re.MULTILINE | re.DOTALL)
        lists[split] = re.findall(r"`([^`]+)`", match.group(2))
        assert len(lists[split]) == int(match.group(1))
    return lists


def test_readme_lists_the_split_the_rule_gives():
    lists = _readme_split()
    songs = lists["valid"] + lists["train"]
    assert len(set(songs)) == len(songs)
    assert set(lists["valid"]) == lmms.validation_songs(songs)


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
def test_readme_lists_every_installed_demo():
    try:
        demos = lmms.parse_demos_folder(lmms.dpkg_listing())
    except AutomixError:
        pytest.skip("lmms-common is not installed")
    lists = _readme_split()
    assert sorted(lists["valid"] + lists["train"]) == sorted(
        map(lmms.song_name, lmms.discover_projects(demos))
    )


# ---- sources and the held-out rule


def _lmms_tree(tmp_path: Path) -> Path:
    """A fake LMMS projects folder: two demos, a demos subfolder and another folder (both held out)."""
    projects = tmp_path / "share" / "lmms" / "projects"
    _projects(projects / "demos", ["B-Two.mmp", "A-One.mmpz", "notes.txt"])
    _projects(projects / "demos" / "Sub", ["Sub-Held.mmpz"])
    _projects(projects / "other", ["Other-Held.mmp"])
    return projects / "demos"


def test_demos_folder_comes_from_the_dpkg_listing(tmp_path):
    listing = "\n".join(
        ["/.", "/usr/share/lmms/projects", "/usr/share/lmms/projects/demos", "/usr/share/x.mmpz"]
    )
    assert lmms.parse_demos_folder(listing) == Path("/usr/share/lmms/projects/demos")
    with pytest.raises(AutomixError, match="apt-get install lmms-common"):
        lmms.parse_demos_folder("/usr/share/doc/lmms-common\n")


def test_only_project_files_directly_in_the_demos_folder_are_found(tmp_path):
    demos = _lmms_tree(tmp_path)
    assert [p.name for p in lmms.discover_projects(demos)] == ["A-One.mmpz", "B-Two.mmp"]
    assert lmms.held_out_names(demos) == {"Sub-Held.mmpz", "Other-Held.mmp"}


def test_held_out_projects_are_refused(tmp_path):
    demos = _lmms_tree(tmp_path)
    listing = f"{demos.parent}\n{demos}\n"
    for held_out in (demos / "Sub" / "Sub-Held.mmpz", demos.parent / "other" / "Other-Held.mmp"):
        with pytest.raises(AutomixError, match="held out"):
            lmms.sources([held_out], "all", listing=lambda: listing)
    copy = _projects(tmp_path / "copies", ["Sub-Held.mmpz"])[0]
    with pytest.raises(AutomixError, match="held out"):
        lmms.sources([copy], "all", listing=lambda: listing)
    own = _projects(tmp_path / "mine", ["Mine.mmpz"])
    assert lmms.sources([demos / "A-One.mmpz", *own], "all", listing=lambda: listing) == [
        demos / "A-One.mmpz",
        *own,
    ]
    with pytest.raises(AutomixError, match="not an LMMS project"):
        lmms.sources([demos / "notes.txt"], "all", listing=lambda: listing)
    with pytest.raises(AutomixError, match="no such file"):
        lmms.sources([demos / "Missing.mmpz"], "all", listing=lambda: listing)


def test_missing_lmms_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "")
    from automix.cli import run_cli

    assert run_cli(lmms.main, ["--split", "valid"]) == 2
    assert "apt-get install lmms" in capsys.readouterr().err


def test_default_out_is_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert lmms.default_out() == tmp_path / "automix" / "lmms"


# ---- names


@pytest.mark.parametrize(
    ("lmms_file", "expected"),
    [
        ("8_snare_acoustic01.ogg.wav", "008_snare_acoustic01"),
        ("12_Default preset.wav", "012_Default_preset"),
        ("3_alien_curiousity.ds.wav", "003_alien_curiousity"),
        ("4_Bass (Sub) / 2!.wav", "004_Bass_Sub_2"),
        ("5_..wav", "005"),
        ("???.wav", "track"),
    ],
)
def test_track_names_are_safe(lmms_file, expected):
    assert lmms.track_name(lmms_file) == expected


def test_names_are_unique_and_never_the_mixture():
    taken = set()
    assert [lmms.unique_name(n, taken) for n in ("kick", "Kick", "kick", "mixture")] == [
        "kick",
        "Kick_2",
        "kick_3",
        "mixture_2",
    ]


# ---- rendered tracks -> the song


def test_nan_garbage_and_silent_tracks_are_skipped_and_the_mixture_is_the_sum_of_the_others(tmp_path):
    nan = _track(seed=1)
    nan[100, 0] = np.nan
    inf = _track(seed=2)
    inf[5, 1] = np.inf
    glitch = _track(seed=6)
    glitch[100:107, 0] = 1e26  # finite, but no audio
    tracks = {
        "1_Lead.wav": _track(seed=3, level=0.6),  # peaks above 0 dBFS: kept as it is (float)
        "2_mono bass.wav": _track(n_channels=1, seed=4),
        "3_short.wav": _track(n_frames=1000, seed=5),
        "4_nan.wav": nan,
        "5_inf.wav": inf,
        "6_silent.wav": np.zeros((4410, 2), np.float32),
        "7_glitch.wav": glitch,
    }
    render = _fake_render(tracks)
    project = _projects(tmp_path / "demos", ["Song-One.mmpz"])[0]
    report = lmms.make_song(project, tmp_path / "out", render, timeout_s=10)

    song = tmp_path / "out" / "Song-One"
    assert report.status == "rendered"
    assert report.tracks == {
        "001_Lead": "1_Lead.wav",
        "002_mono_bass": "2_mono bass.wav",
        "003_short": "3_short.wav",
    }
    assert [note.split(":")[0] for note in report.skipped] == [
        "4_nan.wav",
        "5_inf.wav",
        "6_silent.wav",
        "7_glitch.wav",
    ]
    assert sorted(p.name for p in song.iterdir()) == [
        "001_Lead.wav",
        "002_mono_bass.wav",
        "003_short.wav",
        "lmms_render.json",
        "mixture.wav",
    ]
    expected = {
        "001_Lead": tracks["1_Lead.wav"],
        "002_mono_bass": np.repeat(tracks["2_mono bass.wav"], 2, axis=1),
        "003_short": np.pad(tracks["3_short.wav"], ((0, 3410), (0, 0))),
    }
    for name, data in expected.items():
        written, rate = sf.read(song / f"{name}.wav", dtype="float32")
        assert rate == SAMPLE_RATE and sf.info(song / f"{name}.wav").subtype == "FLOAT"
        np.testing.assert_array_equal(written, data)
    mixture, _ = sf.read(song / "mixture.wav", dtype="float32")
    total = sum(data.astype(np.float64) for data in expected.values())
    np.testing.assert_array_equal(mixture, total.astype(np.float32))  # summed exactly, rounded once
    assert report.duration_s == pytest.approx(4410 / SAMPLE_RATE)
    assert not (tmp_path / "out" / ".staging").exists()


@pytest.mark.parametrize(
    "render",
    [
        _failing_render,
        _fake_render({"1_nan.wav": np.full((100, 2), np.nan, np.float32)}),  # no audible track
        _fake_render({}),  # nothing rendered
    ],
)
def test_a_failed_song_leaves_no_folder(tmp_path, render):
    project = _projects(tmp_path / "demos", ["Song-One.mmpz"])[0]
    with pytest.raises(AutomixError):
        lmms.make_song(project, tmp_path / "out", render, timeout_s=10)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failed_project_does_not_stop_the_run_and_a_finished_song_is_not_rendered_again(tmp_path):
    good, bad = _projects(tmp_path / "demos", ["Good.mmpz", "Bad.mmpz"])
    render = _fake_render({"1_a.wav": _track()})

    def render_or_fail(project: Path, out_dir: Path, timeout_s: float) -> None:
        (_failing_render if project == bad else render)(project, out_dir, timeout_s)

    first = lmms.make_songs([bad, good], tmp_path / "out", render_or_fail, timeout_s=10, progress=False)
    assert [(r.song, r.status) for r in first] == [("Bad", "failed"), ("Good", "rendered")]
    assert "timeout" in first[0].note
    written = (tmp_path / "out" / "Good" / "mixture.wav").stat().st_mtime_ns
    second = lmms.make_songs([good], tmp_path / "out", render, timeout_s=10, progress=False)
    assert [(r.song, r.status) for r in second] == [("Good", "present")]
    assert render.calls == [good]
    assert (tmp_path / "out" / "Good" / "mixture.wav").stat().st_mtime_ns == written
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Good"]


def test_the_budget_stops_starting_projects(tmp_path):
    projects = _projects(tmp_path / "demos", ["A.mmpz", "B.mmpz"])
    render = _fake_render({"1_a.wav": _track()})
    reports = lmms.make_songs(projects, tmp_path / "out", render, timeout_s=10, budget_s=-1, progress=False)
    assert [r.status for r in reports] == ["not started", "not started"]
    assert render.calls == []


# ---- LMMS itself

SAMPLE_TRACK = """<track muted="0" name="{name}" solo="0" type="0">
 <instrumenttrack pitch="0" fxch="0" basenote="57" usemasterpitch="1" pitchrange="1" vol="100" pan="{pan}">
  <instrument name="audiofileprocessor"><audiofileprocessor stutter="0" interp="1" reversed="0" looped="0"
   sframe="0" lframe="0" src="drums/{sample}" eframe="1" amp="100"/></instrument>
  <eldata ftype="0" fres="0.5" fcut="14000" fwet="0">{envelopes}</eldata>
  <chordcreator chord="0" chordrange="1" chord-enabled="0"/>
  <arpeggiator arp="0" arptime_numerator="4" arptime_denominator="4" arprange="1" arpmode="0" arptime="100"
   arpdir="0" arpgate="100" syncmode="0" arp-enabled="0"/>
  <midiport outputchannel="1" outputcontroller="0" basevelocity="127" outputprogram="1"
   fixedinputvelocity="-1" fixedoutputvelocity="-1" fixedoutputnote="-1" inputchannel="0" inputcontroller="0"
   readable="0" writable="0"/>
  <fxchain enabled="0" numofeffects="0"/>
 </instrumenttrack>
 {pattern}
</track>"""
ENVELOPE = (
    '<{0} latt="0" dec="0.5" lamt="0" lspd_numerator="4" att="0" sustain="0.5" amt="0" userwavefile="" '
    'ctlenvamt="0" lshp="0" lspd_denominator="4" x100="0" lpdel="0" lspd="0.1" pdel="0" hold="0.5" '
    'syncmode="0" rel="0.1"/>'
)


def _sample_track(name: str, sample: str, pan: int, note_positions: list[int]) -> str:
    notes = "".join(f'<note len="48" key="57" vol="100" pos="{pos}" pan="0"/>' for pos in note_positions)
    pattern = f'<pattern len="192" muted="0" name="p" steps="16" pos="0" type="1">{notes}</pattern>'
    envelopes = "".join(ENVELOPE.format(tag) for tag in ("elvol", "elcut", "elres"))
    return SAMPLE_TRACK.format(
        name=name, pan=pan, sample=sample, envelopes=envelopes, pattern=pattern if notes else ""
    )


def _fake_lmms(tmp_path, monkeypatch, crashes: int) -> Path:
    """An `lmms` on PATH that dies by SIGSEGV on its first `crashes` runs, then exits 0; it counts its
    runs in the returned file."""
    bin_dir, runs = tmp_path / "bin", tmp_path / "runs"
    bin_dir.mkdir()
    script = bin_dir / "lmms"
    script.write_text(
        f"#!/bin/sh\nn=$(cat {runs} 2>/dev/null || echo 0)\necho $((n + 1)) > {runs}\n"
        f'[ "$n" -lt {crashes} ] && kill -SEGV $$\nexit 0\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return runs


def test_a_render_lmms_crashes_in_is_run_again(tmp_path, monkeypatch):
    runs = _fake_lmms(tmp_path, monkeypatch, crashes=1)
    lmms.render_with_lmms(tmp_path / "song.mmpz", tmp_path, timeout_s=30)
    assert runs.read_text().strip() == "2"


def test_a_project_lmms_always_crashes_in_fails_after_its_attempts(tmp_path, monkeypatch):
    runs = _fake_lmms(tmp_path, monkeypatch, crashes=99)
    with pytest.raises(AutomixError, match="lmms exited with status -11"):
        lmms.render_with_lmms(tmp_path / "song.mmpz", tmp_path, timeout_s=30)
    assert runs.read_text().strip() == str(lmms.LMMS_ATTEMPTS)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lmms") is None, reason="needs lmms: apt-get install lmms lmms-common")
def test_lmms_renders_a_project_into_tracks_and_their_sum(tmp_path):
    """Two sample tracks at full velocity (peaks under full scale) and a track without notes."""
    tracks = [
        _sample_track("Kick drum", "bassdrum01.ogg", -50, [0, 96]),
        _sample_track("Clap", "clap01.ogg", 50, [48, 144]),
        _sample_track("No notes", "clap01.ogg", 0, []),
    ]
    project = tmp_path / "Two-Drums.mmp"
    project.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE lmms-project>\n'
        '<lmms-project version="1.0" creator="LMMS" creatorversion="1.2.2" type="song">\n'
        '<head timesig_numerator="4" bpm="240" timesig_denominator="4" mastervol="100" masterpitch="0"/>\n'
        f'<song><trackcontainer type="song">{"".join(tracks)}</trackcontainer></song></lmms-project>\n'
    )
    # LMMS on a busy machine at times writes a track NaN or out of scale (its mixer thread misses its
    # deadlines): such a render of these two samples is made again, up to RENDER_TRIES times.
    for attempt in range(RENDER_TRIES):
        out = tmp_path / f"out{attempt}"
        report = lmms.make_song(project, out, lmms.render_with_lmms, timeout_s=120)
        song = out / "Two-Drums"
        clean = list(report.tracks) == ["001_Kick_drum", "002_Clap"] and all(
            np.abs(sf.read(song / f"{name}.wav")[0]).max() <= 1.0 for name in report.tracks
        )
        if clean:
            break

    assert list(report.tracks) == ["001_Kick_drum", "002_Clap"]
    assert [note.split(":")[0] for note in report.skipped] == ["3_No notes.wav"]
    kick, rate = sf.read(song / "001_Kick_drum.wav", dtype="float32")
    clap, _ = sf.read(song / "002_Clap.wav", dtype="float32")
    mixture, _ = sf.read(song / "mixture.wav", dtype="float32")
    assert rate == SAMPLE_RATE and kick.shape == clap.shape == mixture.shape and kick.shape[1] == 2
    np.testing.assert_array_equal(mixture, (kick.astype(np.float64) + clap).astype(np.float32))
    # the producer's pan is in the track: kick panned left, clap right
    assert np.abs(kick[:, 0]).max() > 1.5 * np.abs(kick[:, 1]).max()
    assert np.abs(clap[:, 1]).max() > 1.5 * np.abs(clap[:, 0]).max()
