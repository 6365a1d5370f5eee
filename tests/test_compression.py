"""How hard each strip's compressor works (`automix.compression`), against a hard-knee compressor's
static curve, and predict mode's budget for it."""

import math

import pytest
import torch

from automix import AutoMixChain
from automix.balance import stem_balance_db
from automix.cli.mix import DEFAULT_CHECKPOINT
from automix.compression import bypassed_loudness, compression_db, raised_thresholds
from automix.loss import COMPRESSION_BUDGET_DB, compression_cost
from automix.synth import synth_stems

SAMPLE_RATE = 44100
SINE_RMS_DB = 20 * math.log10(0.1) - 10 * math.log10(2)  # a 0.1-amplitude sine: −23.01 dB RMS


@pytest.fixture(scope="module")
def chain():
    return AutoMixChain(n_stems=1, sample_rate=SAMPLE_RATE)


def compressed_sine(chain, threshold_db: float, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A steady 1-kHz sine `[1, 1, 2, T]` and a neutral strip `[1, 1, n_stem]` whose hard-knee compressor
    has this threshold and ratio."""
    t = torch.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    stems = (0.1 * torch.sin(2 * math.pi * 1000 * t)).expand(1, 1, 2, -1).contiguous()
    params = chain.space.neutral(1)[0]
    params = {k: v[None] for k, v in params.items()}
    params |= {"comp_threshold_db": torch.tensor([[threshold_db]]), "comp_ratio": torch.tensor([[ratio]])}
    params |= {"comp_knee_db": torch.zeros(1, 1), "comp_attack_ms": torch.ones(1, 1)}
    return stems, chain.space.normalize_stems(params)


def rendered_compression_db(chain, stems, strips) -> float:
    _, params, lufs, _ = chain.render_bus(stems, strips)
    return float(compression_db(bypassed_loudness(chain, stems, params, lufs), lufs))


def test_a_strips_compression_is_the_static_curves_gain_reduction_on_a_steady_sine(chain):
    stems, strips = compressed_sine(chain, threshold_db=-40.0, ratio=4.0)
    expected = (SINE_RMS_DB + 40.0) * (1 - 1 / 4.0)  # 12.74 dB over a hard knee
    assert rendered_compression_db(chain, stems, strips) == pytest.approx(expected, abs=0.3)
    _, bypassed = compressed_sine(chain, threshold_db=-40.0, ratio=1.0)
    assert rendered_compression_db(chain, stems, bypassed) == pytest.approx(0.0, abs=0.05)


def test_the_training_cost_is_the_excess_over_the_budget_and_follows_the_compressor_not_the_level(chain):
    stems, strips = compressed_sine(chain, threshold_db=-40.0, ratio=4.0)
    params = chain.space.denormalize_stems(strips)
    moved = ("comp_threshold_db", "comp_ratio", "level_db")
    params |= {name: params[name].clone().requires_grad_(True) for name in moved}
    render = chain.render_strips(stems, params)
    bypassed = bypassed_loudness(chain, stems, render.stem_params, render.stem_lufs, differentiable=True)
    cost = compression_cost(compression_db(bypassed, render.stem_lufs, differentiable=True))
    excess = (SINE_RMS_DB + 40.0) * (1 - 1 / 4.0) - COMPRESSION_BUDGET_DB  # the closed form's 6.74 dB
    assert float(cost.detach()) == pytest.approx(excess**2, rel=0.1)
    threshold, ratio, level = (float(g) for g in torch.autograd.grad(cost.sum(), [params[n] for n in moved]))
    # d cost / d threshold = −2·excess·(1 − 1/ratio), d cost / d ratio = 2·excess·(threshold over) / ratio²
    assert threshold == pytest.approx(-2 * excess * (1 - 1 / 4.0), rel=0.1)
    assert ratio == pytest.approx(2 * excess * (SINE_RMS_DB + 40.0) / 16.0, rel=0.1)
    # the level comes after the compressor: both renders carry it, and the cost does not move with it
    assert abs(level) < 1e-3 * abs(threshold)
    assert float(compression_cost(torch.tensor([[5.0, 12.0]]), torch.tensor([[1.0, 0.0]]))) == 0.0


def test_a_raised_threshold_brings_the_compression_to_the_budget(chain):
    stems, strips = compressed_sine(chain, threshold_db=-40.0, ratio=4.0)
    taken = torch.tensor([[rendered_compression_db(chain, stems, strips)]])
    raised = raised_thresholds(chain.space, strips, taken, budget_db=6.0)
    threshold = float(chain.space.denormalize_stems(raised)["comp_threshold_db"])
    assert threshold == pytest.approx(SINE_RMS_DB - 6.0 / (1 - 1 / 4.0), abs=0.4)
    assert rendered_compression_db(chain, stems, raised) == pytest.approx(6.0, abs=0.3)
    # within the budget already: the strip as it was
    same = raised_thresholds(chain.space, strips, taken, budget_db=20.0)
    torch.testing.assert_close(same, strips.clamp(0, 1))


def test_predict_mode_holds_the_checkpoints_compressors_to_the_budget_and_keeps_its_balance():
    stems = synth_stems(6.0, SAMPLE_RATE, seed=5)[0]
    analyses = {}
    # A budget under what the shipped checkpoint's compressors take (5–8 dB), so that it has work to do.
    budget_db = 2.5
    for budget in (None, budget_db):
        chain = AutoMixChain.from_checkpoint(DEFAULT_CHECKPOINT, predict={"max_strip_compression_db": budget})
        with torch.no_grad():
            _, analyses[budget] = chain(stems, style="rock_punk", mode="predict")
    free, held = analyses[None]["strip_compression_db"], analyses[budget_db]["strip_compression_db"]
    assert free.max() > budget_db + 4.0  # the checkpoint's compressors as predicted
    assert held.max() <= budget_db + 0.5
    balance = {budget: stem_balance_db(analysis["stem_lufs"]) for budget, analysis in analyses.items()}
    torch.testing.assert_close(balance[budget_db], balance[None], atol=0.05, rtol=0)
