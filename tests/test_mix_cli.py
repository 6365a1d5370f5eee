"""`python mix.py` against bad and odd input: one clear line and exit 2, or a valid master.

Bad input must give exit status 2, one line on stderr naming what was wrong (no traceback), leave every
input byte-for-byte untouched (same mtime too) and leave no output, not even a folder. Odd but valid
input must give a finite WAV as long as the longest stem that peaks at or below -1 dBTP, measured
independently: 4x oversampling with scipy's `resample_poly`; loudness with pyloudnorm.

Most cases call `automix.cli.run_cli(main, argv)` in-process (what `mix.py` runs, minus ~4 s of
imports); a few representative ones run the real `mix.py` in a subprocess.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import soundfile as sf
import torch

from automix import AutoMixChain
from automix.cli import run_cli
from automix.cli.mix import main
from automix.styles import DEFAULT_STYLES
from automix.synth import synth_song

MIX_PY = Path(__file__).resolve().parents[1] / "mix.py"
SAMPLE_RATE = 44100
STEM_SECONDS = 1.5
CEILING_DBTP = -1.0
TRUE_PEAK_OVERSAMPLING = 4  # BS.1770-4 Annex 2
LUFS_TOLERANCE_LU = 0.5
SUBPROCESS_TIMEOUT_S = 300
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANALYSIS_KEYS = (
    "lufs",
    "spectral_centroid",
    "stereo_ms_ratio",
    "true_peak_dbtp",
    "targets",
    "errors",
    "passed",
    "quality_score",
    "parameters",
)


# ------------------------------------------------------------------------------------------ helpers


def write_stems(
    folder: Path,
    seconds: float = STEM_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    *,
    seed: int = 0,
    stems: tuple[str, ...] = ("drums", "bass"),
    prefix: str = "",
    subtype: str | None = None,
    suffix: str = ".wav",
) -> list[Path]:
    """Synthetic stems written with soundfile (numpy `(T, C)`); returns their paths."""
    song = synth_song(seconds, sample_rate, seed=seed, stems=stems)
    paths = []
    for name, audio in song.items():
        path = folder / f"{prefix}{name}{suffix}"
        sf.write(path, audio.T.numpy(), sample_rate, subtype=subtype)
        paths.append(path)
    return paths


def snapshot(folder: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every entry under `folder`: a file's bytes and mtime (ns); None for a folder or a link."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            entries[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mtime_ns)
        else:
            entries[str(path.relative_to(folder))] = None
    return entries


def true_peak_dbtp(data: np.ndarray) -> float:
    """Independent true peak of `(T, C)` samples: 4x `resample_poly`, dBTP."""
    peak = np.abs(scipy.signal.resample_poly(data, TRUE_PEAK_OVERSAMPLING, 1, axis=0)).max()
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def check_master(path: Path, n_frames: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The output is a finite stereo 24-bit file of `n_frames`, at or below the ceiling; its samples."""
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (sample_rate, 2, n_frames)
    assert info.subtype == "PCM_24"
    data, _ = sf.read(path, dtype="float64")
    assert np.isfinite(data).all()
    assert true_peak_dbtp(data) <= CEILING_DBTP
    return data


def run_in_process(capsys, argv: list[str]) -> tuple[int, str]:
    """`mix.py argv` as the entry point runs it (`run_cli(main)`): exit status and stderr."""
    status = run_cli(main, argv)
    return status, capsys.readouterr().err


def run_script(script: Path, cwd: Path, *args: str, timeout_s: float = SUBPROCESS_TIMEOUT_S):
    """The real `python script args` in `cwd`: its `CompletedProcess` (text output, not checked)."""
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s
    )


def run_mix_py(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The real `python mix.py args` in `cwd`."""
    return run_script(MIX_PY, cwd, *args)


def assert_one_line_error(status: int, stderr: str, *mentions: str) -> None:
    assert status == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for mention in mentions:
        assert mention in lines[0], (mention, lines[0])


# ----------------------------------------------------------------------------------- the bad input


@pytest.fixture(scope="module")
def short_song() -> dict[str, np.ndarray]:
    """Two 0.5 s stems as soundfile `(T, C)` arrays, synthesised once for the module."""
    return {name: x.T.numpy() for name, x in synth_song(0.5, SAMPLE_RATE, stems=("drums", "bass")).items()}


@pytest.fixture
def song_dir(tmp_path, monkeypatch, short_song):
    """A folder (the working directory) with two short stems, a.wav and b.wav."""
    sf.write(tmp_path / "a.wav", short_song["drums"], SAMPLE_RATE)
    sf.write(tmp_path / "b.wav", short_song["bass"], SAMPLE_RATE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _make_bad_inputs(folder: Path) -> None:
    """Every bad file the battery below names, next to the good stems a.wav and b.wav."""
    good, _ = sf.read(folder / "a.wav", dtype="float32")
    sf.write(folder / "three.wav", np.stack([good[:, 0]] * 3, axis=1), SAMPLE_RATE)
    for name, bad_value in (("nan.wav", math.nan), ("inf.wav", math.inf)):
        broken = good.copy()
        broken[100, 1] = bad_value
        sf.write(folder / name, broken, SAMPLE_RATE, subtype="FLOAT")
    sf.write(folder / "noframes.wav", good[:0], SAMPLE_RATE)
    (folder / "zero_bytes.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio at all\n")
    (folder / "stemdir").mkdir()
    sf.write(folder / "silent_ref.wav", np.zeros_like(good), SAMPLE_RATE)
    sf.write(folder / "click_ref.wav", good[: SAMPLE_RATE // 10], SAMPLE_RATE)  # 100 ms of music
    (folder / "broken.yaml").write_text("style_targets:\n  mine: {lufs: -11.0, [\n")
    (folder / "typed.yaml").write_text(
        "style_targets:\n  mine: {lufs: loud, spectral_centroid_hz: 2400, stereo_ms_ratio: 0.7}\n"
    )
    (folder / "partial.yaml").write_text("style_targets:\n  mine: {lufs: -11.0, stereo_ms_ratio: 0.7}\n")
    (folder / "list.yaml").write_text("- lufs: -11.0\n")
    (folder / "text.ckpt").write_text("weights\n")
    (folder / "settings.yaml").write_text("optimize:\n  steps: many\n")
    torch.save({"weights": torch.zeros(3)}, folder / "dict.ckpt")
    torch.save({"weights": np.zeros(3)}, folder / "numpy.ckpt")  # not loadable with weights_only
    checkpoint = AutoMixChain().checkpoint()
    first = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][first] = torch.zeros(3, 3)
    torch.save(checkpoint, folder / "shape.ckpt")
    seconds = np.arange(good.shape[0]) / SAMPLE_RATE
    tone = 0.5 * np.sin(2 * np.pi * 50.0 * seconds)  # a test tone: centroid ~50 Hz
    sf.write(folder / "tone_ref.wav", np.stack([tone, tone], axis=1), SAMPLE_RATE)
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * seconds)  # left and right in antiphase: M/S ~2000
    sf.write(folder / "antiphase_ref.wav", np.stack([tone, -0.999 * tone], axis=1), SAMPLE_RATE)
    for name in ("silent1.wav", "silent2.wav"):
        sf.write(folder / name, np.zeros_like(good), SAMPLE_RATE)
    (folder / "plain_file").write_text("")
    (folder / "out_dir.wav").mkdir()
    (folder / "link.wav").symlink_to(folder / "a.wav")
    os.link(folder / "a.wav", folder / "hard.wav")


STYLE_NAMES = tuple(DEFAULT_STYLES)
BAD_INPUT = {
    # id: (arguments after the defaults, text the error line must contain)
    "missing stem": (["--stems", "a.wav", "missing.wav"], ["missing.wav", "no such file"]),
    "text file as stem": (["--stems", "text.wav"], ["text.wav", "not a readable audio file"]),
    "zero-byte stem": (["--stems", "zero_bytes.wav"], ["zero_bytes.wav", "empty"]),
    "folder as stem": (["--stems", "stemdir"], ["stemdir", "folder"]),
    "three channels": (["--stems", "a.wav", "three.wav"], ["three.wav", "3 channels"]),
    "NaN samples": (["--stems", "a.wav", "nan.wav"], ["nan.wav", "NaN"]),
    "Inf samples": (["--stems", "inf.wav"], ["inf.wav", "infinite"]),
    "no frames": (["--stems", "a.wav", "noframes.wav"], ["noframes.wav", "no samples"]),
    "unknown style": (["--stems", "a.wav", "--style", "polka"], ["'polka'", *STYLE_NAMES]),
    "missing targets": (["--stems", "a.wav", "--targets", "nope.yaml"], ["nope.yaml"]),
    "broken YAML": (["--stems", "a.wav", "--targets", "broken.yaml"], ["broken.yaml", "YAML", "line"]),
    "ill-typed YAML": (
        ["--stems", "a.wav", "--targets", "typed.yaml", "--style", "mine"],
        ["typed.yaml", "mine", "lufs", "'loud'"],
    ),
    "YAML missing a field": (
        ["--stems", "a.wav", "--targets", "partial.yaml"],
        ["partial.yaml", "spectral_centroid_hz"],
    ),
    "YAML not a mapping": (["--stems", "a.wav", "--targets", "list.yaml"], ["list.yaml", "mapping"]),
    "missing reference": (["--stems", "a.wav", "--reference", "ref.wav"], ["ref.wav"]),
    "silent reference": (
        ["--stems", "a.wav", "--reference", "silent_ref.wav"],
        ["silent_ref.wav", "silent"],
    ),
    "reference shorter than a loudness block": (
        ["--stems", "a.wav", "--reference", "click_ref.wav"],
        ["click_ref.wav", "100 ms", "400-ms"],
    ),
    "output is an input": (["--stems", "a.wav", "b.wav", "--output", "b.wav"], ["b.wav", "input"]),
    "output via a symlink": (["--stems", "a.wav", "--output", "link.wav"], ["link.wav", "a.wav"]),
    "output via x/..": (["--stems", "a.wav", "--output", "./x/../a.wav"], ["a.wav", "input"]),
    "output via a hard link": (["--stems", "a.wav", "--output", "hard.wav"], ["hard.wav", "input"]),
    "analysis onto a stem": (["--stems", "a.wav", "--analysis-output", "a.wav"], ["a.wav", "input"]),
    "plot onto the targets": (
        ["--stems", "a.wav", "--targets", "typed.yaml", "--plot", "typed.yaml"],
        ["typed.yaml", "input"],
    ),
    "analysis onto the checkpoint": (
        ["--stems", "a.wav", "--checkpoint", "text.ckpt", "--analysis-output", "text.ckpt"],
        ["text.ckpt", "input"],
    ),
    "output under a regular file": (
        ["--stems", "a.wav", "--output", "plain_file/sub/mix.wav"],
        ["plain_file", "not a folder"],
    ),
    "analysis under a regular file": (
        ["--stems", "a.wav", "--analysis-output", "plain_file/a.json"],
        ["plain_file/a.json", "not a folder"],
    ),
    "output is a folder": (["--stems", "a.wav", "--output", "out_dir.wav"], ["out_dir.wav", "folder"]),
    "output not audio": (["--stems", "a.wav", "--output", "mix.mp3"], ["mix.mp3", ".wav"]),
    "one file for two outputs": (
        ["--stems", "a.wav", "--output", "mix.wav", "--plot", "./mix.wav"],
        ["mix.wav", "two outputs"],
    ),
    "unknown device": (["--stems", "a.wav", "--device", "tpu"], ["'tpu'"]),
    "unsupported device": (["--stems", "a.wav", "--device", "meta"], ["'meta'"]),
    "CUDA without a GPU": (["--stems", "a.wav", "--device", "cuda:99"], ["cuda"]),
    "missing checkpoint": (["--stems", "a.wav", "--checkpoint", "no.ckpt"], ["no.ckpt", "no such"]),
    "text as checkpoint": (["--stems", "a.wav", "--checkpoint", "text.ckpt"], ["text.ckpt", "checkpoint"]),
    "audio as checkpoint": (["--stems", "a.wav", "--checkpoint", "b.wav"], ["b.wav", "checkpoint"]),
    "folder as checkpoint": (["--stems", "a.wav", "--checkpoint", "stemdir"], ["stemdir", "folder"]),
    "foreign checkpoint": (
        ["--stems", "a.wav", "--checkpoint", "dict.ckpt"],
        ["dict.ckpt", "not an automix checkpoint"],
    ),
    "negative limiting budget": (
        ["--stems", "a.wav", "--max-limiting-db", "-1"],
        ["--max-limiting-db", "-1"],
    ),
    "unknown loudness preset": (["--stems", "a.wav", "--loudness-target", "loud"], ["'loud'", "streaming"]),
    "loudness out of range": (["--stems", "a.wav", "--loudness-target", "-80"], ["-80", "LUFS"]),
    "wrong-shape checkpoint": (["--stems", "a.wav", "--checkpoint", "shape.ckpt"], ["shape.ckpt", "fit"]),
    "numpy-pickled checkpoint": (
        ["--stems", "a.wav", "--checkpoint", "numpy.ckpt"],
        ["numpy.ckpt", "not loaded for safety"],
    ),
    "test tone as reference": (
        ["--stems", "a.wav", "--reference", "tone_ref.wav"],
        ["tone_ref.wav", "spectral_centroid_hz", "100 to 10000 Hz"],
    ),
    "antiphase reference": (
        ["--stems", "a.wav", "--reference", "antiphase_ref.wav"],
        ["antiphase_ref.wav", "stereo_ms_ratio"],
    ),
    "reference and style": (
        ["--stems", "a.wav", "--reference", "b.wav", "--style", "polka"],
        ["--reference", "--style"],
    ),
    "reference and targets": (
        ["--stems", "a.wav", "--reference", "b.wav", "--targets", "typed.yaml"],
        ["--reference", "--targets"],
    ),
    "all stems silent": (["--stems", "silent1.wav", "silent2.wav"], ["silent", "nothing to mix"]),
    "seed too large": (["--stems", "a.wav", "--seed", "99999999999999999999"], ["--seed", "4294967295"]),
    "negative seed": (["--stems", "a.wav", "--seed", "-1"], ["--seed", "-1"]),
    "sample rate too low": (["--stems", "a.wav", "--sample-rate", "5"], ["--sample-rate", "5"]),
    "plot format unknown": (["--stems", "a.wav", "--plot", "mix.gif"], ["mix.gif", ".svg"]),
    "--test-stems 0": (["--test-stems", "0"], ["--test-stems", "0"]),
    "--test-stems 17": (["--test-stems", "17"], ["--test-stems", "17"]),
}


@pytest.mark.parametrize(("args", "mentions"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_gives_one_line_exit_2_and_changes_nothing(song_dir, capsys, args, mentions):
    _make_bad_inputs(song_dir)
    argv = ["--mode", "predict", "--quiet", "--output", "mix.wav", *args]  # a later --output wins
    before = snapshot(song_dir)
    status, stderr = run_in_process(capsys, argv)
    assert_one_line_error(status, stderr, *mentions)
    assert snapshot(song_dir) == before  # inputs untouched, no output, no new folder


def test_more_than_16_stems_is_refused(song_dir, capsys):
    for i in range(17):
        os.link(song_dir / "a.wav", song_dir / f"s{i}.wav")
    before = snapshot(song_dir)
    stems = [f"s{i}.wav" for i in range(17)]
    status, stderr = run_in_process(capsys, ["--mode", "predict", "--output", "mix.wav", "--stems", *stems])
    assert_one_line_error(status, stderr, "--stems", "16", "17")
    assert snapshot(song_dir) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["--stems", "--output", "mix.wav"],  # --stems with nothing
        ["--output", "mix.wav"],  # neither --stems nor --test-stems
        ["--stems", "a.wav"],  # no --output
        ["--stems", "a.wav", "--output", "mix.wav", "--mode", "fast"],
        ["--test-stems", "four", "--output", "mix.wav"],
        ["--stems", "a.wav", "--test-stems", "2", "--output", "mix.wav"],
    ],
    ids=["no stems", "no source", "no output", "unknown mode", "non-integer count", "two sources"],
)
def test_usage_errors_exit_2_without_traceback(song_dir, capsys, argv):
    before = snapshot(song_dir)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("mix.py: error:")
    assert snapshot(song_dir) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--stems", "a.wav", "missing.wav"], ["missing.wav"]),
        (["--stems", "a.wav", "nan.wav"], ["nan.wav", "NaN"]),
        (["--stems", "a.wav", "--style", "polka"], ["'polka'", *STYLE_NAMES]),
        (["--stems", "a.wav", "--targets", "typed.yaml", "--style", "mine"], ["typed.yaml", "lufs"]),
        (["--stems", "a.wav", "--output", "link.wav"], ["link.wav", "a.wav"]),
        (["--stems", "a.wav", "--checkpoint", "text.ckpt"], ["text.ckpt", "checkpoint"]),
        (["--stems", "a.wav", "--output", "plain_file/sub/mix.wav"], ["plain_file"]),
        (["--stems", "a.wav", "--config", "settings.yaml"], ["settings.yaml", "optimize.steps"]),
        (["--stems", "a.wav", "--config", "none.yaml"], ["none.yaml"]),
    ],
    ids=[
        "missing",
        "NaN",
        "style",
        "YAML",
        "symlink output",
        "checkpoint",
        "under a file",
        "config",
        "no config",
    ],
)
def test_mix_py_subprocess_bad_input(song_dir, args, mentions):
    _make_bad_inputs(song_dir)
    before = snapshot(song_dir)
    result = run_mix_py(song_dir, "--mode", "predict", "--output", "mix.wav", *args)
    assert_one_line_error(result.returncode, result.stderr, *mentions)
    assert result.stdout == ""
    assert snapshot(song_dir) == before


@pytest.mark.slow
def test_mix_py_subprocess_usage_error(song_dir):
    result = run_mix_py(song_dir, "--stems", "--output", "mix.wav")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--stems" in result.stderr.strip().splitlines()[-1]
    assert not (song_dir / "mix.wav").exists()


# ------------------------------------------------------------------------------ odd but valid input


def _mono_next_to_stereo(folder: Path) -> tuple[list[Path], int, str]:
    drums, bass = write_stems(folder)
    data, _ = sf.read(drums)
    sf.write(drums, data.mean(axis=1), SAMPLE_RATE)
    return [drums, bass], round(STEM_SECONDS * SAMPLE_RATE), "mono"


def _eight_bit(folder: Path) -> tuple[list[Path], int, str]:
    return write_stems(folder, subtype="PCM_U8"), round(STEM_SECONDS * SAMPLE_RATE), ""


def _dc_offset(folder: Path) -> tuple[list[Path], int, str]:
    drums, bass = write_stems(folder)
    data, _ = sf.read(bass)
    sf.write(bass, 0.5 * data + 0.4, SAMPLE_RATE)
    return [drums, bass], round(STEM_SECONDS * SAMPLE_RATE), ""


def _very_short(folder: Path) -> tuple[list[Path], int, str]:
    stems = write_stems(folder, 0.3, stems=("drums", "bass", "lead"))
    return stems, round(0.3 * SAMPLE_RATE), "integrated loudness is undefined for 0.300 s"


def _one_silent(folder: Path) -> tuple[list[Path], int, str]:
    paths = write_stems(folder, stems=("drums", "bass", "chords"))
    data, _ = sf.read(paths[1])
    sf.write(paths[1], np.zeros_like(data), SAMPLE_RATE)
    return paths, round(STEM_SECONDS * SAMPLE_RATE), ""


def _different_lengths(folder: Path) -> tuple[list[Path], int, str]:
    (drums,) = write_stems(folder, 1.0, stems=("drums",))
    (bass,) = write_stems(folder, 2.0, stems=("bass",))
    return [drums, bass], 2 * SAMPLE_RATE, "padded"


def _flac(folder: Path) -> tuple[list[Path], int, str]:
    return write_stems(folder, suffix=".flac"), round(STEM_SECONDS * SAMPLE_RATE), ""


ODD_INPUT = {
    "mono next to stereo": _mono_next_to_stereo,
    "8-bit PCM": _eight_bit,
    "DC offset": _dc_offset,
    "0.3 s stems": _very_short,
    "one silent stem": _one_silent,
    "different lengths": _different_lengths,
    "FLAC": _flac,
}


@pytest.mark.slow
@pytest.mark.parametrize("make", ODD_INPUT.values(), ids=ODD_INPUT.keys())
def test_odd_but_valid_input_is_mixed(tmp_path, monkeypatch, capsys, make):
    stems, n_frames, note = make(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    names = [path.name for path in stems]
    argv = ["--stems", *names, "--mode", "predict", "--quiet"]
    argv += ["--output", "out/new/mix.wav", "--analysis-output", "out/new/mix.json"]
    status, stderr = run_in_process(capsys, argv)
    assert status == 0, stderr
    assert note in stderr and "Traceback" not in stderr
    after = snapshot(tmp_path)
    assert {name: after[name] for name in before} == before
    check_master(tmp_path / "out" / "new" / "mix.wav", n_frames)

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON report")

    report = json.loads((tmp_path / "out" / "new" / "mix.json").read_text(), parse_constant=refuse)
    assert all(key in report for key in ANALYSIS_KEYS)
    if make is _very_short:  # BS.1770 measures no loudness under one 400 ms block: undefined, a miss
        assert report["lufs"] is None and report["passed"]["lufs"] is False
    else:
        assert math.isfinite(report["lufs"])
    assert math.isfinite(report["quality_score"])
    assert len(report["balance"]) == len(set(names))  # a silent stem's balance reads null


@pytest.mark.slow
def test_mix_py_subprocess_mixes_at_the_highest_rate_of_its_stems(tmp_path):
    """44.1 and 48 kHz stems mix at 48 kHz, the 44.1 kHz stem resampled, each change noted."""
    (drums,) = write_stems(tmp_path, stems=("drums",))
    (bass,) = write_stems(tmp_path, sample_rate=48000, stems=("bass",), prefix="hi_")
    before = snapshot(tmp_path)
    result = run_mix_py(
        tmp_path, "--stems", drums.name, bass.name, "--mode", "predict", "--output", "new/dir/mix.wav"
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert any(drums.name in line and "44100 Hz to 48000 Hz" in line for line in notes), result.stderr
    assert any("mixed at 48000 Hz, the highest" in line for line in notes), result.stderr
    after = snapshot(tmp_path)
    assert {name: after[name] for name in before} == before
    check_master(tmp_path / "new" / "dir" / "mix.wav", round(STEM_SECONDS * 48000), sample_rate=48000)


@pytest.mark.parametrize(("rate", "expected"), [(None, SAMPLE_RATE), (48000, 48000)])
def test_an_8k_first_stem_does_not_set_the_rate(tmp_path, monkeypatch, capsys, rate, expected):
    """The mix's rate is the highest of the stems' (an 8 kHz stem first would have cut the whole mix at
    4 kHz), or the one `--sample-rate` gives; the analysis is measured at that rate."""
    (low,) = write_stems(tmp_path, 0.5, 8000, stems=("bass",), prefix="phone_")
    (drums,) = write_stems(tmp_path, 0.5, stems=("drums",))
    monkeypatch.chdir(tmp_path)
    argv = ["--stems", low.name, drums.name, "--mode", "predict", "--quiet", "--output", "mix.wav"]
    argv += ["--analysis-output", "mix.json"] + (["--sample-rate", str(rate)] if rate else [])
    status, stderr = run_in_process(capsys, argv)
    assert status == 0, stderr
    check_master(tmp_path / "mix.wav", round(0.5 * expected), sample_rate=expected)
    assert json.loads((tmp_path / "mix.json").read_text())["sample_rate"] == expected
    assert f"{low.name}: resampled from 8000 Hz to {expected} Hz" in stderr


def test_stems_of_the_same_name_keep_their_own_settings(tmp_path, monkeypatch, capsys):
    """`a/drums.wav b/drums.wav`: the report names them apart (one entry was silently dropped)."""
    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        write_stems(tmp_path / folder, 0.5, seed=seed, stems=("drums",))
    monkeypatch.chdir(tmp_path)
    argv = ["--stems", "a/drums.wav", "b/drums.wav", "--mode", "predict", "--quiet", "--output", "mix.wav"]
    status, stderr = run_in_process(capsys, [*argv, "--analysis-output", "mix.json"])
    assert status == 0, stderr
    report = json.loads((tmp_path / "mix.json").read_text())
    assert report["stems"] == ["a/drums", "b/drums"]
    assert list(report["parameters"]["stems"]) == ["a/drums", "b/drums"]
    assert list(report["balance"]) == ["a/drums", "b/drums"]


@pytest.mark.parametrize(("suffix", "magic"), [(".svg", b"<?xml"), (".pdf", b"%PDF"), (".png", PNG_MAGIC)])
def test_a_mix_shorter_than_a_spectrum_frame_plots_in_the_format_its_name_says(
    tmp_path, monkeypatch, capsys, suffix, magic
):
    """A 30 ms mix (shorter than the plot's 4096-sample frame: a traceback after the WAV and JSON were
    written) plots; `--plot x.svg` writes SVG, not PNG bytes under an .svg name. Its loudness is
    undefined (under one 400 ms block): `--validate` says so and fails."""
    write_stems(tmp_path, 0.03)
    monkeypatch.chdir(tmp_path)
    argv = ["--stems", "drums.wav", "bass.wav", "--mode", "predict", "--quiet", "--validate"]
    status, stderr = run_in_process(capsys, [*argv, "--output", "mix.wav", "--plot", f"mix{suffix}"])
    assert status == 1, stderr  # the loudness cannot pass
    assert (tmp_path / f"mix{suffix}").read_bytes().startswith(magic)
    assert "Traceback" not in stderr and "integrated loudness is undefined for 0.030 s" in stderr


def test_validate_reports_undefined_loudness_not_a_pass(tmp_path, monkeypatch, capsys):
    """A 1-sample stem was reported "LUFS -9.50 PASS", a value no meter can measure."""
    sf.write(tmp_path / "click.wav", np.full((1, 2), 0.5), SAMPLE_RATE)
    monkeypatch.chdir(tmp_path)
    argv = ["--stems", "click.wav", "--mode", "predict", "--validate", "--output", "mix.wav"]
    status = run_cli(main, argv)
    out = capsys.readouterr().out
    assert status == 1
    (row,) = [line for line in out.splitlines() if line.startswith("LUFS")]
    assert row.split()[1:3] == ["undefined", "-9.50"] and row.endswith("FAIL")


@pytest.mark.slow
def test_mix_py_optimize_validate_analysis_and_plot(tmp_path):
    """The default mode end to end on a 4-stem, 6 s song: the style's loudness per pyloudnorm."""
    stems = write_stems(tmp_path, 6.0, seed=3, stems=("drums", "bass", "chords", "lead"))
    before = snapshot(tmp_path)
    result = run_mix_py(
        tmp_path,
        *("--stems", *[path.name for path in stems], "--style", "rock_punk", "--validate"),
        *("--output", "mix.wav", "--analysis-output", "mix.json", "--plot", "mix.png", "--quiet"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    after = snapshot(tmp_path)
    assert {name: after[name] for name in before} == before

    data = check_master(tmp_path / "mix.wav", 6 * SAMPLE_RATE)
    lufs = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(data)
    assert abs(lufs - DEFAULT_STYLES["rock_punk"].lufs) <= LUFS_TOLERANCE_LU
    report = json.loads((tmp_path / "mix.json").read_text())
    assert all(key in report for key in ANALYSIS_KEYS)
    assert set(report["parameters"]["stems"]) == {path.stem for path in stems}
    # the balance: each stem's share of the stems' loudness power at the start (the shipped checkpoint's
    # balance, part of the way from one loudness) and at the end (the shares add up to 1), the move between
    balance = report["balance"]
    assert set(balance) == {path.stem for path in stems}
    assert report["balance_start"] == "checkpoint"
    for key in ("start_db", "relative_db"):
        shares = [10 ** (entry[key] / 10) for entry in balance.values()]
        assert sum(shares) == pytest.approx(1.0, abs=2e-3)
    assert max(entry["start_db"] for entry in balance.values()) > 0.5 - 10 * math.log10(4)  # not equal
    for entry in balance.values():
        assert entry["moved_db"] == pytest.approx(entry["relative_db"] - entry["start_db"], abs=2e-3)
    assert (tmp_path / "mix.png").read_bytes().startswith(PNG_MAGIC)


def test_all_silent_stems_are_refused_before_the_optimiser_runs(tmp_path, monkeypatch, capsys):
    """Silence has no loudness to aim: the default mode refuses it at once (it optimised 2 s of silence
    for over a minute) and writes nothing."""
    paths = [tmp_path / "silent1.wav", tmp_path / "silent2.wav"]
    for path in paths:
        sf.write(path, np.zeros((SAMPLE_RATE, 2)), SAMPLE_RATE)

    def optimiser_ran(*args, **kwargs):
        raise AssertionError("the optimiser ran on silence")

    monkeypatch.setattr("automix.optimize.SongOptimizer.__call__", optimiser_ran)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    status, stderr = run_in_process(capsys, ["--stems", *[p.name for p in paths], "--output", "mix.wav"])
    assert_one_line_error(status, stderr, "silent", "nothing to mix")
    assert snapshot(tmp_path) == before


def test_a_reference_sets_the_start_balance_and_the_report_says_so(tmp_path, monkeypatch, capsys):
    """`--reference`: the optimiser starts from the balance whose summed spectrum is the reference's
    (here the same stems' sum with the bass 10 dB up: the same music, which the fit follows), and the
    JSON names that start."""
    drums, bass = write_stems(tmp_path, 2.0)
    ref = sf.read(drums)[0] + 10 ** (10 / 20) * sf.read(bass)[0]
    sf.write(tmp_path / "ref.wav", 0.5 * ref / np.abs(ref).max(), SAMPLE_RATE)
    monkeypatch.chdir(tmp_path)
    argv = ["--stems", drums.name, bass.name, "--reference", "ref.wav", "--quiet", "--output", "mix.wav"]
    status, stderr = run_in_process(capsys, [*argv, "--analysis-output", "mix.json"])
    assert status == 0, stderr
    report = json.loads((tmp_path / "mix.json").read_text())
    assert report["balance_start"] == "reference"
    start = {name: entry["start_db"] for name, entry in report["balance"].items()}
    # equal loudness starts them level; the reference's bass is 10 dB over what the stems' files have
    # (the fit matches energy by band, the balance reads gated loudness: the closed form is in
    # tests/test_reference_balance.py)
    assert start["bass"] - start["drums"] > 8.0
