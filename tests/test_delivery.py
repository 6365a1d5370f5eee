"""What goes in and out around a mix: processed stems with the master's settings, settings files rendered
again, formats and bit depths, and catalogues of songs on Lightning's predict loop (one bad song among
them), as `mix.py` users run them."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from automix import AutoMixChain
from automix.cli import run_cli
from automix.cli.mix import main
from automix.console_settings import read_settings, settings_from_analysis
from automix.dsp.limiter import reconstruction_limit
from automix.errors import AutomixError
from automix.io import dithered_pcm
from automix.styles import DEFAULT_STYLES
from tests.test_mix_cli import (
    SAMPLE_RATE,
    assert_one_line_error,
    run_in_process,
    run_mix_py,
    run_script,
    snapshot,
    write_stems,
)

CATALOGUE_PY = Path(__file__).resolve().parents[1] / "catalogue.py"
SECONDS = 2.0
LEVEL_EDIT_DB = 2.0


@pytest.fixture
def song(tmp_path, monkeypatch):
    """A folder (the working directory) with three 2 s stems; their file names."""
    stems = write_stems(tmp_path, SECONDS, seed=4, stems=("drums", "bass", "lead"))
    monkeypatch.chdir(tmp_path)
    return [path.name for path in stems]


def _mix(capsys, *args: str) -> None:
    status, stderr = run_in_process(capsys, ["--quiet", *args])
    assert status == 0, stderr


def _read(path) -> np.ndarray:
    return sf.read(path, dtype="float64", always_2d=True)[0]


# --------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("mode", ["predict", "optimize"])
def test_saved_settings_render_the_same_mix(song, tmp_path, capsys, mode):
    """`--save-settings` then `--settings` on the same stems: the same mix, to the last bit (the issue asks
    for -120 dBFS), with no optimisation."""
    first = ["--output", "mix.wav", "--save-settings", "mix.json", "--analysis-output", "mix_report.json"]
    _mix(capsys, "--stems", *song, "--mode", mode, *first)
    again = ["--output", "again.wav", "--analysis-output", "again_report.json"]
    _mix(capsys, "--stems", *song, "--settings", "mix.json", *again)
    difference = np.abs(_read("again.wav") - _read("mix.wav")).max()
    assert difference == 0.0 or 20 * math.log10(difference) <= -120
    # the compressors read the same from the settings as from the mix (predict mode's: 6 dB, its budget)
    for name in ("drums", "bass", "lead"):
        mixed, rendered = (
            json.loads(Path(f).read_text())["balance"][name] for f in ("mix_report.json", "again_report.json")
        )
        assert rendered["compression_db"] == pytest.approx(mixed["compression_db"], abs=0.01)
    settings = json.loads((tmp_path / "mix.json").read_text())
    assert settings["schema_version"] == 1 and settings["sample_rate"] == SAMPLE_RATE
    assert list(settings["stems"]) == ["drums", "bass", "lead"] and "automix_version" in settings
    assert settings["targets"]["style"] == "rock_punk"


def test_an_edited_settings_file_gives_the_edited_mix(song, tmp_path, capsys):
    """One stem +2 dB in the file: that stem after its strip is 2 dB louder (the level is the strip's last
    gain before the pan, both linear), the others are unchanged, and the mix follows."""
    _mix(capsys, "--stems", *song, "--mode", "predict", "--output", "mix.wav", "--save-settings", "s.json")
    _mix(capsys, "--stems", *song, "--settings", "s.json", "--output", "a.wav", "--stems-output", "before")
    settings = json.loads((tmp_path / "s.json").read_text())
    settings["stems"]["bass"]["level_db"] += LEVEL_EDIT_DB
    (tmp_path / "edited.json").write_text(json.dumps(settings))
    _mix(
        capsys, "--stems", *song, "--settings", "edited.json", "--output", "b.wav", "--stems-output", "after"
    )
    gain = 10 ** (LEVEL_EDIT_DB / 20)
    np.testing.assert_allclose(_read("after/bass.wav"), gain * _read("before/bass.wav"), atol=2e-6)
    for name in ("drums", "lead"):
        np.testing.assert_array_equal(_read(f"after/{name}.wav"), _read(f"before/{name}.wav"))
    assert np.abs(_read("b.wav") - _read("a.wav")).max() > 1e-3


def _bad_settings(tmp_path) -> dict:
    base = json.loads((tmp_path / "good.json").read_text())

    def edited(change) -> dict:
        copy = json.loads(json.dumps(base))
        change(copy)
        return copy

    return {
        "unknown stem": (edited(lambda s: s["stems"].update(vocals=s["stems"]["bass"])), ["stems.vocals"]),
        "stem without settings": (edited(lambda s: s["stems"].pop("lead")), ["'lead'"]),
        "missing field": (edited(lambda s: s["master"].pop("width")), ["master.width"]),
        "unknown field": (edited(lambda s: s["stems"]["drums"].update(reverb=0.3)), ["stems.drums.reverb"]),
        "out of range": (
            edited(lambda s: s["stems"]["drums"].update(level_db=30.0)),
            ["stems.drums.level_db", "30", "-24 to 6"],
        ),
        "a band out of range": (
            edited(lambda s: s["master"]["eq_gain_db"].__setitem__(2, -9.0)),
            ["master.eq_gain_db[2]", "-9"],
        ),
        "not a number": (edited(lambda s: s.update(master_trim_db="loud")), ["master_trim_db", "'loud'"]),
        "newer schema": (edited(lambda s: s.update(schema_version=7)), ["schema_version 7"]),
    }


def test_bad_settings_files_are_refused_in_one_line_naming_the_field(song, tmp_path, capsys):
    _mix(capsys, "--stems", *song, "--mode", "predict", "--output", "mix.wav", "--save-settings", "good.json")
    (tmp_path / "broken.json").write_text('{"stems": {')
    cases = _bad_settings(tmp_path)
    for name, (settings, _) in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(settings))
    cases["not JSON"] = (None, ["broken.json", "not valid JSON", "line 1"])
    before = snapshot(tmp_path)
    for name, (_, mentions) in cases.items():
        file = "broken.json" if name == "not JSON" else f"{name}.json"
        status, stderr = run_in_process(capsys, ["--stems", *song, "--settings", file, "--output", "x.wav"])
        assert_one_line_error(status, stderr, file, *mentions)
    assert snapshot(tmp_path) == before


def test_settings_exclude_what_they_would_ignore(song, capsys):
    for flag in (["--mode", "optimize"], ["--max-limiting-db", "3"], ["--loudness-target", "streaming"]):
        status, stderr = run_in_process(
            capsys, ["--stems", *song, "--settings", "s.json", "--output", "x.wav", *flag]
        )
        assert_one_line_error(status, stderr, "--settings", flag[0])


def test_render_settings_takes_stems_by_name():
    """The API: stems as a mapping name -> [C, T], in any order, give the mix of the settings' order."""
    stems = torch.stack([torch.randn(2, SAMPLE_RATE) * scale for scale in (0.2, 0.05)])
    chain = AutoMixChain()
    with torch.no_grad():
        mix, analysis = chain(stems, style="rnb_ballad", mode="predict")
    settings = settings_from_analysis(analysis, ["keys", "pad"], SAMPLE_RATE, DEFAULT_STYLES["rnb_ballad"])
    again, report = chain.render_settings({"pad": stems[1], "keys": stems[0]}, settings)
    torch.testing.assert_close(again, mix, rtol=0, atol=0)
    assert report["targets"]["lufs"] == pytest.approx(-12.0)


# ----------------------------------------------------------------------------------------- stems out


def test_stems_output_adds_up_to_the_bus_the_master_settings_finish(song, tmp_path, capsys):
    """The processed stems: one 24-bit file per input stem, named after it, the mix's length; their sum
    through the master at `master.json`'s settings and trim is the mix (a DAW session reproduces it)."""
    _mix(capsys, "--stems", *song, "--mode", "predict", "--output", "mix.wav", "--stems-output", "stems")
    mix = _read("mix.wav")
    files = sorted((tmp_path / "stems").glob("*.wav"))
    assert [path.stem for path in files] == sorted(["drums", "bass", "lead"])
    for path in files:
        info = sf.info(path)
        assert (info.subtype, info.frames, info.samplerate) == ("PCM_24", mix.shape[0], SAMPLE_RATE)
    master = json.loads((tmp_path / "stems" / "master.json").read_text())
    assert sorted(master["stem_files"]) == [path.name for path in files]
    bus = torch.from_numpy(sum(_read(path) for path in files).T).float()[None]
    chain = AutoMixChain()
    params = {key: torch.tensor(value)[None] for key, value in master["master"].items()}
    with torch.no_grad():
        rendered = chain.render_master(
            bus, params, torch.tensor([master["master_trim_db"]]), reconstruct=False
        )
        rendered, _ = reconstruction_limit(rendered, SAMPLE_RATE, ceiling_dbtp=master["ceiling_dbtp"])
    assert 20 * math.log10(np.abs(rendered[0].numpy().T - mix).max()) <= -90


# ------------------------------------------------------------------------------------------- formats


def test_tpdf_dither_error_is_signal_independent_noise_of_the_closed_form_power():
    """16-bit with TPDF dither: error power LSB^2 / 4 (Lipshitz et al. 1992), zero mean, uncorrelated with
    the signal; a tone 110 dB down (under half a step) survives dither and vanishes without it."""
    lsb = 2.0**-15
    seconds = torch.arange(4 * SAMPLE_RATE, dtype=torch.float64) / SAMPLE_RATE
    tone = 0.5 * torch.sin(2 * math.pi * 997 * seconds)
    error = dithered_pcm(tone, 16, seed=1) / 2**15 - tone.numpy()
    assert np.mean(error**2) == pytest.approx(lsb**2 / 4, rel=0.03)
    assert abs(np.mean(error)) < 0.01 * lsb and abs(np.corrcoef(error, tone.numpy())[0, 1]) < 0.01
    faint = 10 ** (-110 / 20) * torch.sin(2 * math.pi * 997 * seconds)
    assert not np.round(faint.numpy() * 2**15).any()  # rounding alone: silence
    dithered = dithered_pcm(faint, 16, seed=2) / 2**15
    amplitude = 2 * np.mean(dithered * np.sin(2 * np.pi * 997 * seconds.numpy()))  # its 997 Hz component
    assert amplitude == pytest.approx(float(faint.abs().max()), rel=0.15)


@pytest.mark.parametrize(
    ("args", "output", "subtype"),
    [
        (["--bit-depth", "16"], "mix.wav", "PCM_16"),
        (["--bit-depth", "32f"], "mix.wav", "FLOAT"),
        (["--format", "flac"], "mix.flac", "PCM_24"),
        (["--format", "flac", "--bit-depth", "16"], "mix.flac", "PCM_16"),
    ],
)
def test_format_and_bit_depth(song, capsys, args, output, subtype):
    _mix(capsys, "--stems", *song, "--mode", "predict", "--output", output, *args)
    info = sf.info(output)
    assert (info.format, info.subtype) == (output.split(".")[-1].upper(), subtype)


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--format", "flac", "--bit-depth", "32f", "--output", "mix.flac"], ["32f", "FLAC"]),
        (["--format", "flac", "--output", "mix.wav"], ["mix.wav", "--format flac"]),
    ],
)
def test_formats_a_file_cannot_hold_are_refused(song, capsys, args, mentions):
    status, stderr = run_in_process(capsys, ["--stems", *song, "--mode", "predict", *args])
    assert_one_line_error(status, stderr, *mentions)


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".flac"])
def test_compressed_stems_are_read(tmp_path, monkeypatch, capsys, suffix):
    stems = write_stems(tmp_path, SECONDS, seed=5, stems=("drums", "bass"), suffix=suffix)
    monkeypatch.chdir(tmp_path)
    _mix(capsys, "--stems", *[path.name for path in stems], "--mode", "predict", "--output", "mix.wav")
    assert sf.info("mix.wav").frames >= round(SECONDS * SAMPLE_RATE)


# ---------------------------------------------------------------------------------------- catalogues


def _catalogue(folder) -> list[str]:
    """Three song folders under `folder`: two of stems, one holding a text file named drums.wav."""
    for seed, name in enumerate(("alpha", "beta")):
        (folder / name).mkdir()
        write_stems(folder / name, 1.0, seed=seed, stems=("drums", "bass"))
    (folder / "broken").mkdir()
    (folder / "broken" / "drums.wav").write_text("not audio\n")
    return ["alpha", "beta", "broken"]


def _results(path) -> dict[str, dict]:
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len({record["song"] for record in records})  # one line per song
    return {record["song"]: record for record in records}


def test_a_catalogue_mixes_every_song_records_the_broken_one_and_resumes(tmp_path, monkeypatch, capsys):
    songs = _catalogue(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["--songs", *songs, "--output-dir", "out", "--mode", "predict", "--quiet"]
    assert run_cli(main, argv) == 1  # a song failed
    results = _results(tmp_path / "out" / "results.jsonl")
    assert results["broken"]["status"] == "error" and "drums.wav" in results["broken"]["error"]
    for name in ("alpha", "beta"):
        assert results[name]["status"] == "ok" and set(results[name]["passed"]) >= {"lufs", "true_peak"}
        report = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert report["lufs"] == pytest.approx(results[name]["lufs"])
        assert sf.info(tmp_path / "out" / f"{name}.wav").frames == SAMPLE_RATE
    done = {name: (tmp_path / "out" / f"{name}.wav").stat().st_mtime_ns for name in ("alpha", "beta")}

    (tmp_path / "broken" / "drums.wav").unlink()  # the broken song fixed
    write_stems(tmp_path / "broken", 1.0, seed=9, stems=("drums",))
    assert run_cli(main, argv) == 0
    assert {name: (tmp_path / "out" / f"{name}.wav").stat().st_mtime_ns for name in done} == done  # skipped
    assert all(record["status"] == "ok" for record in _results(tmp_path / "out" / "results.jsonl").values())


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--output", "x.wav"], ["--output", "--output-dir"]),
        (["--output-dir", "out", "--settings", "s.json"], ["--settings"]),
        (["--output-dir", "out", "--devices", "0"], ["--devices"]),
    ],
)
def test_catalogue_flags_that_name_one_songs_file_are_refused(tmp_path, monkeypatch, capsys, args, mentions):
    monkeypatch.chdir(tmp_path)
    status, stderr = run_in_process(capsys, ["--songs", "a", "b", *args])
    assert_one_line_error(status, stderr, *mentions)


@pytest.mark.slow
def test_a_catalogue_on_two_cpu_processes(tmp_path):
    """`--devices 2`: Lightning's DDP over two CPU processes, each mixing its own share; one results line
    per song, the broken one an error, every good song's files written once."""
    songs = _catalogue(tmp_path)
    result = run_mix_py(
        tmp_path, "--songs", *songs, "--output-dir", "out", "--mode", "predict", "--devices", "2"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "2 of 3 songs mixed" in result.stdout
    results = _results(tmp_path / "out" / "results.jsonl")
    assert [results[name]["status"] for name in songs] == ["ok", "ok", "error"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "alpha.json",
        "alpha.wav",
        "beta.json",
        "beta.wav",
        "results.jsonl",
    ]


def test_read_settings_checks_against_the_chains_ranges(tmp_path):
    (tmp_path / "s.json").write_text("[1, 2]")
    with pytest.raises(AutomixError, match="expected a JSON object"):
        read_settings(tmp_path / "s.json")


@pytest.mark.slow
def test_catalogue_py_runs_a_catalogue_through_hydra(tmp_path):
    """`catalogue.py` (Hydra, conf/catalogue.yaml, for its launchers): the song folders under `songs`."""
    (tmp_path / "songs").mkdir()
    _catalogue(tmp_path / "songs")
    result = run_script(
        CATALOGUE_PY,
        tmp_path,
        f"songs={tmp_path / 'songs'}",
        f"output_dir={tmp_path / 'out'}",
        "mode=predict",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    results = _results(tmp_path / "out" / "results.jsonl")
    assert {name: record["status"] for name, record in results.items()} == {
        "alpha": "ok",
        "beta": "ok",
        "broken": "error",
    }
