"""`python validate.py`: the report's schema, its exit status, bad input, and the judgement of a mix.

The judgement is checked against closed forms: a stereo sine on an FFT bin centre, with the right
channel a scaled copy of the left, has a centroid of exactly its frequency, an M/S ratio of
|1 - g| / (1 + g), a true peak of its amplitude and (BS.1770-4) a loudness of
-0.691 + 10 log10(|K(f)|^2 A^2 (1 + g^2) / 2) with K the ITU K-weighting filters.
"""

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from automix.chain import AutoMixChain
from automix.cli import run_cli
from automix.cli.validate import main, print_table
from automix.loss import TOLERANCES
from automix.metrics import STFT_N_FFT
from automix.styles import DEFAULT_STYLES, StyleTarget
from automix.synth import white_noise
from automix.validation import MixCase, judge, measure_mix, run_mix_case
from tests.test_mix_cli import assert_one_line_error, run_script

VALIDATE_PY = Path(__file__).resolve().parents[1] / "validate.py"
SUBPROCESS_TIMEOUT_S = 600
CEILING_DBTP = -1.0
STYLE_NAMES = sorted(DEFAULT_STYLES)
RESULT_KEYS = {"id", "name", "section", "style", "mode", "metrics", "passed", "quality_score", "time_s"}
METRIC_KEYS = {"measured", "target", "error", "tolerance", "passed", "unit", "meter"}
MIX_METRICS = {"lufs", "spectral_centroid", "stereo_ms_ratio", "true_peak_dbtp"}

# ITU-R BS.1770-4, Tables 1 and 2: the K-weighting pre-filter and RLB high-pass at 48 kHz.
ITU_SAMPLE_RATE = 48000
ITU_PREFILTER = (
    [1.53512485958697, -2.69169618940638, 1.19839281085285],
    [1.0, -1.69065929318241, 0.73248077421585],
)
ITU_RLB = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])
ITU_OFFSET_DB = -0.691
BIN_HZ = ITU_SAMPLE_RATE / STFT_N_FFT  # 23.4375 Hz
SINE_S = 3.0
# pyloudnorm's K-weighting is designed from analogue prototypes, not the table: it reads a few hundredths
# of an LU off the closed form; EBU Tech 3341 allows a meter +-0.1 LU.
METER_TOLERANCE_LU = 0.1
TRUE_PEAK_TOLERANCE_DB = 0.05


def run_validate_py(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script(VALIDATE_PY, cwd, *args, timeout_s=SUBPROCESS_TIMEOUT_S)


def check_result(result: dict) -> None:
    """One result's keys and types, and its pass flag the AND of its metrics'."""
    assert RESULT_KEYS <= set(result)
    assert result["section"] in ("mix", "conformance")
    assert isinstance(result["time_s"], float) and result["time_s"] >= 0
    for entry in result["metrics"].values():
        assert METRIC_KEYS <= set(entry)
        assert isinstance(entry["passed"], bool) and isinstance(entry["meter"], str)
    assert result["passed"] == all(entry["passed"] for entry in result["metrics"].values())
    if result["section"] == "mix":
        assert set(result["metrics"]) == MIX_METRICS
        assert result["style"] in STYLE_NAMES and result["mode"] in ("optimize", "predict")
        assert 0.0 <= result["quality_score"] <= 1.0
        assert "pyloudnorm" in result["metrics"]["lufs"]["meter"]
    else:
        assert result["quality_score"] is None


def _reject_constant(name: str):
    raise AssertionError(f"the report holds {name}, which is not JSON")


def read_report(path: Path) -> dict:
    """The report, parsed as strict JSON (no NaN or Infinity)."""
    return json.loads(path.read_text(), parse_constant=_reject_constant)


def check_report(report: dict, status: int) -> None:
    """The schema, the summary's counts against the results, and the exit status against both."""
    assert set(report) == {"summary", "results", "environment"}
    summary, results = report["summary"], report["results"]
    assert all(isinstance(summary[key], int) for key in ("total", "passed", "failed"))
    for result in results:
        check_result(result)
    failed = [r["id"] for r in results if not r["passed"]]
    assert summary["total"] == len(results) == summary["passed"] + summary["failed"]
    assert summary["failed"] == len(failed) and summary["failures"] == failed
    scores = [r["quality_score"] for r in results if r["section"] == "mix"]
    if scores:
        assert summary["quality_score_mean"] == pytest.approx(sum(scores) / len(scores))
    else:
        assert summary["quality_score_mean"] is None
    assert status == (1 if failed else 0)
    environment = report["environment"]
    assert {"python", "torch", "automix", "platform", "sample_rates"} <= set(environment)
    assert environment["torch"] == str(torch.__version__)


# ------------------------------------------------------------------------------------ the report


@pytest.mark.slow
def test_quick_white_noise_rock_punk_writes_the_schema(tmp_path):
    result = run_validate_py(
        tmp_path, "--quick", "--styles", "rock_punk", "--test-filter", "white_noise", "--output", "r.json"
    )
    assert result.returncode in (0, 1), result.stderr
    report = read_report(tmp_path / "r.json")
    check_report(report, result.returncode)
    assert [(r["section"], r["style"]) for r in report["results"]] == [("mix", "rock_punk")]
    assert "white_noise" in report["results"][0]["name"]
    assert report["results"][0]["name"] in result.stdout
    assert ("PASS" if report["summary"]["failed"] == 0 else "FAIL") in result.stdout


def test_conformance_only_report(tmp_path):
    result = run_validate_py(tmp_path, "--test-filter", "ebu3341_case1-48k", "--output", "out/r.json")
    report = read_report(tmp_path / "out" / "r.json")
    check_report(report, result.returncode)
    [check] = report["results"]
    assert check["section"] == "conformance" and check["metrics"]["integrated_loudness"]["target"] == -23.0
    assert report["summary"]["sections"]["mix"]["total"] == 0
    assert "ebu3341_case1-48k" in result.stdout


@pytest.fixture(scope="module")
def tiny_result() -> dict:
    """One tiny predict-mode mix through `run_mix_case`: the result a mix case gives."""
    case = MixCase("tiny", "white_noise", 1, 1.0, 44100, lambda seed: white_noise(1, 1.0, 44100, seed=seed))
    return run_mix_case(AutoMixChain(), case, DEFAULT_STYLES["rnb_ballad"], "predict", seed=0)


def test_mix_result_schema(tiny_result):
    check_result(tiny_result)
    assert tiny_result["id"] == "tiny rnb_ballad predict"
    assert all("chain_reading" in entry for entry in tiny_result["metrics"].values())
    assert set(tiny_result["detail"]["stage_s"]) == {"synthesis", "mixing", "measuring"}


def test_table_row_and_verbose_detail(tiny_result, capsys):
    print_table([tiny_result], verbose=True)
    header, row, *detail = capsys.readouterr().out.splitlines()
    assert "LUFS" in header and "centroid Hz" in header
    lufs = tiny_result["metrics"]["lufs"]
    assert row.split()[:3] == ["tiny", "rnb_ballad", "predict"]
    assert f"{lufs['measured']:.2f}" in row and f"/{lufs['target']:.2f}" in row
    assert row.endswith("PASS" if tiny_result["passed"] else "FAIL")
    assert any(line.strip().startswith("stages:") for line in detail)


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["--styles", "polka"], ["'polka'", *STYLE_NAMES]),
        (["--quick", "--test-filter", "no_such_signal"], ["no_such_signal"]),
        (["--output", "folder"], ["folder"]),
        (["--output", "plain_file/r.json"], ["plain_file"]),
        (["--checkpoint", "missing.ckpt"], ["missing.ckpt"]),
        (["--checkpoint", "plain_file", "--output", "plain_file"], ["plain_file", "input"]),
        (["--targets", "missing.yaml"], ["missing.yaml"]),
        (["--seed", "99999999999999999999"], ["--seed", "4294967295"]),
    ],
    ids=[
        "unknown style",
        "filter matches nothing",
        "output a folder",
        "output under a file",
        "checkpoint",
        "output over the checkpoint",
        "targets file",
        "seed overflow",
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, mentions):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain_file").write_text("not a checkpoint")
    status = run_cli(main, ["--test-filter", "ebu3341_case1-48k", *argv])
    captured = capsys.readouterr()
    assert_one_line_error(status, captured.err, *mentions)
    assert captured.out == ""
    assert (tmp_path / "plain_file").read_text() == "not a checkpoint"


def test_custom_targets_give_a_style(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(
        "style_targets:\n  mine: {lufs: -14, spectral_centroid_hz: 2000, stereo_ms_ratio: 0.5}\n"
    )
    argv = [
        "--targets",
        "mine.yaml",
        "--styles",
        "mine",
        "--test-filter",
        "ebu3341_case1-48k",
        "--output",
        "r.json",
    ]
    status = run_cli(main, argv)
    assert status == 0, capsys.readouterr().err
    assert read_report(tmp_path / "r.json")["summary"]["styles"] == ["mine"]


def test_validate_py_subprocess_bad_style(tmp_path):
    result = run_validate_py(tmp_path, "--quick", "--styles", "rock_punk", "polka", "--output", "r.json")
    assert_one_line_error(result.returncode, result.stderr, "'polka'", *STYLE_NAMES)
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------------------ the judgement


FADE_S = 0.01


def closed_form_sine(bins: int, amplitude_dbfs: float, ms_ratio: float) -> tuple[torch.Tensor, dict]:
    """A 48 kHz stereo sine `[2, T]` on FFT bin `bins`, the right channel the left times
    g = (1 - ms_ratio) / (1 + ms_ratio); and its closed-form centroid, M/S ratio, loudness and true peak."""
    freq_hz = bins * BIN_HZ
    amplitude = 10.0 ** (amplitude_dbfs / 20.0)
    right_gain = (1 - ms_ratio) / (1 + ms_ratio)
    time_s = np.arange(round(SINE_S * ITU_SAMPLE_RATE)) / ITU_SAMPLE_RATE
    # 10-ms fades, as EBU's true-peak test signals: a sine switched on at full level overshoots its
    # amplitude in the band-limited reconstruction (Gibbs); they lower the loudness by ~0.02 LU.
    fade = np.minimum(1.0, np.minimum(time_s, time_s[::-1]) / FADE_S)
    left = amplitude * np.sin(2 * np.pi * freq_hz * time_s) * fade
    mix = torch.from_numpy(np.stack([left, right_gain * left]))
    responses = [
        scipy.signal.freqz(b, a, [freq_hz], fs=ITU_SAMPLE_RATE)[1][0] for b, a in (ITU_PREFILTER, ITU_RLB)
    ]
    k_gain = abs(np.prod(responses))
    expected = {
        "lufs": ITU_OFFSET_DB + 10 * math.log10(k_gain**2 * amplitude**2 * (1 + right_gain**2) / 2),
        "spectral_centroid": freq_hz,
        "stereo_ms_ratio": abs(1 - right_gain) / (1 + right_gain),
        "true_peak_dbtp": amplitude_dbfs,
    }
    return mix, expected


def test_measure_mix_reads_the_closed_forms():
    mix, expected = closed_form_sine(bins=120, amplitude_dbfs=-9.0, ms_ratio=0.3)
    measured = measure_mix(mix, ITU_SAMPLE_RATE)
    assert measured["lufs"] == pytest.approx(expected["lufs"], abs=METER_TOLERANCE_LU)
    assert measured["spectral_centroid"] == pytest.approx(expected["spectral_centroid"], abs=0.5)
    assert measured["stereo_ms_ratio"] == pytest.approx(expected["stereo_ms_ratio"], abs=1e-6)
    assert measured["true_peak_dbtp"] == pytest.approx(expected["true_peak_dbtp"], abs=TRUE_PEAK_TOLERANCE_DB)


# The style's targets are the closed-form readings of REFERENCE; each case changes the signal (or the
# ceiling) from it by a known amount and names the one metric that must fail.
REFERENCE = {"bins": 120, "amplitude_dbfs": -9.0, "ms_ratio": 0.4}
OFF_TARGET = {
    "on target": ({}, CEILING_DBTP, None),
    "loud by 1.5 dB": ({"amplitude_dbfs": -7.5}, CEILING_DBTP, "lufs"),
    "quiet by 1.2 dB": ({"amplitude_dbfs": -10.2}, CEILING_DBTP, "lufs"),
    "bright by 12 bins (281 Hz)": ({"bins": 132}, CEILING_DBTP, "spectral_centroid"),
    "8 bins (188 Hz) bright, inside the tolerance": ({"bins": 128}, CEILING_DBTP, None),
    "wide by 0.3": ({"ms_ratio": 0.7}, CEILING_DBTP, "stereo_ms_ratio"),
    "3 dB over a -12 dBTP ceiling": ({}, -12.0, "true_peak_dbtp"),
}


@pytest.mark.parametrize("case", list(OFF_TARGET))
def test_an_off_target_mix_fails_the_right_metric(case):
    changes, ceiling_dbtp, failing = OFF_TARGET[case]
    _, targets = closed_form_sine(**REFERENCE)
    style = StyleTarget(
        name="closed_form",
        lufs=targets["lufs"],
        spectral_centroid_hz=targets["spectral_centroid"],
        stereo_ms_ratio=targets["stereo_ms_ratio"],
    )
    mix, expected = closed_form_sine(**(REFERENCE | changes))
    verdict = judge(measure_mix(mix, ITU_SAMPLE_RATE), style, ceiling_dbtp)

    errors = {name: expected[name] - targets[name] for name in TOLERANCES}
    allowed = {"lufs": METER_TOLERANCE_LU, "spectral_centroid": 0.5, "stereo_ms_ratio": 1e-6}
    for name, error in errors.items():
        assert verdict["metrics"][name]["error"] == pytest.approx(error, abs=allowed[name])
    assert verdict["metrics"]["true_peak_dbtp"]["error"] == pytest.approx(
        expected["true_peak_dbtp"] - ceiling_dbtp, abs=TRUE_PEAK_TOLERANCE_DB
    )
    assert {name for name, entry in verdict["metrics"].items() if not entry["passed"]} == (
        {failing} if failing else set()
    )
    assert verdict["passed"] == (failing is None)
    closeness = [max(0.0, 1 - abs(error) / (2 * TOLERANCES[name])) for name, error in errors.items()]
    expected_score = 0.0 if failing == "true_peak_dbtp" else sum(closeness) / len(closeness)
    score_tolerance = METER_TOLERANCE_LU / (2 * TOLERANCES["lufs"]) / len(TOLERANCES)
    assert verdict["quality_score"] == pytest.approx(expected_score, abs=score_tolerance)


def test_judge_rule_at_the_tolerances():
    """Errors just inside and just outside each tolerance, on numbers (no signal)."""
    style = DEFAULT_STYLES["rock_punk"]
    on_target = {
        "lufs": style.lufs,
        "spectral_centroid": style.spectral_centroid_hz,
        "stereo_ms_ratio": style.stereo_ms_ratio,
        "true_peak_dbtp": CEILING_DBTP,
    }
    assert judge(on_target, style, CEILING_DBTP)["quality_score"] == pytest.approx(1.0)
    for name, tolerance in TOLERANCES.items():
        for factor, passes in ((0.99, True), (1.01, False)):
            measured = on_target | {name: on_target[name] - factor * tolerance}
            verdict = judge(measured, style, CEILING_DBTP)
            assert verdict["metrics"][name]["passed"] is passes
            assert verdict["metrics"][name]["error"] == pytest.approx(-factor * tolerance)
            assert verdict["quality_score"] == pytest.approx((2 + 1 - factor / 2) / 3, abs=1e-6)
    over = judge(on_target | {"true_peak_dbtp": CEILING_DBTP + 0.1}, style, CEILING_DBTP)
    assert not over["passed"] and over["quality_score"] == 0.0
