"""The shipped checkpoint (checkpoints/default.ckpt): small, loads safely, is what mix.py uses by
default, and mixes held-out songs measurably better in predict mode than the untrained predictor."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from automix import AutoMixChain
from automix.cli.mix import DEFAULT_CHECKPOINT
from automix.loss import TOLERANCES
from automix.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
MAX_CHECKPOINT_BYTES = 5 * 2**20


def test_the_shipped_checkpoint_is_small_and_loads_with_weights_only():
    assert DEFAULT_CHECKPOINT == ROOT / "checkpoints" / "default.ckpt"
    assert DEFAULT_CHECKPOINT.stat().st_size < MAX_CHECKPOINT_BYTES
    state = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    assert {"state_dict", "config", "versions"} <= set(state)


def _normalised_error(report) -> float:
    """Mean over mixes and targets of |error| / tolerance."""
    results = report["results"]
    return sum(abs(r["errors"][name]) / tol for r in results for name, tol in TOLERANCES.items()) / (
        len(results) * len(TOLERANCES)
    )


def test_training_improves_predict_mode_on_held_out_songs():
    """Measured, not assumed: the same held-out songs and styles, the shipped predictor against the
    untrained one (which proposes the neutral console), each the predictor's pass alone."""
    alone = {"refine": False}
    trained = evaluate(
        AutoMixChain.from_checkpoint(DEFAULT_CHECKPOINT, predict=alone), n_songs=3, seconds=8.0
    )
    untrained = evaluate(AutoMixChain(predict=alone), n_songs=3, seconds=8.0)
    assert _normalised_error(trained) < 0.5 * _normalised_error(untrained)
    assert trained["summary"]["within_all"] > untrained["summary"]["within_all"]
    assert trained["summary"]["true_peak_ok"] == 1.0


@pytest.mark.slow
def test_mix_py_uses_the_shipped_checkpoint_without_flag(tmp_path):
    """Predict mode without --checkpoint gives the shipped predictor's mix, not the untrained one's."""
    outputs = {}
    for name, extra in (("default", []), ("explicit", ["--checkpoint", str(DEFAULT_CHECKPOINT)])):
        out = tmp_path / f"{name}.wav"
        command = [sys.executable, str(ROOT / "mix.py"), "--test-stems", "4", "--style", "rnb_ballad"]
        command += ["--mode", "predict", "--seed", "3", "--output", str(out), *extra]
        subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
        outputs[name] = out.read_bytes()
    assert outputs["default"] == outputs["explicit"]
