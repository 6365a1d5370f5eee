"""The chain in a user's hands: any grad mode (a call without gradients caches nothing that breaks the
calls after it), any floating dtype, the stems' own sample rate, and input no mix can be made of (bad
target vectors, silence, audio too short to have a loudness) refused or reported, never mixed as if fine."""

import pytest
import torch

from automix import AutoMixChain, create_training_loss
from automix.dsp.limiter import limiter
from automix.errors import AutomixError
from automix.loudness import integrated_loudness
from automix.utils import create_white_noise_stems

SAMPLE_RATE = 44100


@pytest.fixture
def stems():
    return create_white_noise_stems(3, duration=1.5, sample_rate=SAMPLE_RATE, seed=3)


def _predictor_grads_after_training_step(chain: AutoMixChain, stems: torch.Tensor) -> list[torch.Tensor]:
    chain.zero_grad()
    _, analysis = chain(stems, style="rock_punk", mode="predict")
    create_training_loss(chain.style_targets)(analysis, "rock_punk").backward()
    return [p.grad for p in chain.predictor.parameters() if p.grad is not None]


@pytest.mark.parametrize("no_gradients", [torch.inference_mode, torch.no_grad])
def test_a_chain_used_without_gradients_still_trains_and_optimises(stems, no_gradients):
    torch.manual_seed(0)
    chain = AutoMixChain(sample_rate=SAMPLE_RATE, optimize={"steps": 2, "refine_steps": 1})
    with no_gradients():
        mix, _ = chain(stems, style="rock_punk", mode="predict")
    assert mix.shape == (2, stems.shape[-1])

    grads = _predictor_grads_after_training_step(chain, stems)
    assert grads, "no predictor parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    mix, analysis = chain(stems, style="rock_punk", mode="optimize")
    assert mix.shape == (2, stems.shape[-1])
    assert torch.isfinite(mix).all() and torch.isfinite(analysis["lufs"])


def test_a_block_path_asked_for_while_a_gradient_is_recorded_is_refused():
    """`blockwise=True` is a bug where a gradient is being recorded for the input (the block paths have
    none), whatever the signal's length; without gradients, or for an input that needs none, it is fine."""
    x = torch.randn(1, 2, 4410, requires_grad=True)
    params = {"ceiling_dbtp": torch.tensor(-1.0, requires_grad=True)}
    with pytest.raises(ValueError, match="blockwise"):
        integrated_loudness(x, SAMPLE_RATE, blockwise=True)
    with pytest.raises(ValueError, match="blockwise"):
        limiter(x.detach(), SAMPLE_RATE, ceiling_dbtp=params["ceiling_dbtp"], blockwise=True)
    integrated_loudness(x.detach(), SAMPLE_RATE, blockwise=True)
    with torch.no_grad():
        integrated_loudness(x, SAMPLE_RATE, blockwise=True)
        limiter(x, SAMPLE_RATE, ceiling_dbtp=params["ceiling_dbtp"], blockwise=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_stems_of_any_floating_dtype_mix_to_the_callers_dtype(stems, dtype):
    """float64 (soundfile's default) and half stems as one tensor: the chain computes in float32 and
    returns the mix in the caller's dtype, equal to the float32 mix within the dtype's rounding."""
    chain = AutoMixChain(n_stems=2)
    with torch.no_grad():
        reference, _ = chain(stems, style="rnb_ballad", mode="predict")
        mix, analysis = chain(stems.to(dtype), style="rnb_ballad", mode="predict")
    assert mix.dtype == dtype
    tolerance = 1e-6 if dtype == torch.float64 else 2e-2  # half stems are rounded on the way in
    torch.testing.assert_close(mix.float(), reference, rtol=0, atol=tolerance)
    assert torch.isfinite(analysis["lufs"])


QUICK_OPTIMIZE = {"steps": 3, "attempts": 2, "refine_steps": 2, "excerpt_s": 1.0, "n_excerpts": 1}


@pytest.mark.parametrize("no_gradients", [torch.inference_mode, torch.no_grad])
def test_the_default_mode_runs_in_any_grad_mode_to_the_same_mix(stems, no_gradients):
    """Adam switches its own gradients on: under no_grad or inference_mode the default mode gives the
    mix it gives with gradients enabled (the same seed)."""
    chain = AutoMixChain(n_stems=3, optimize=QUICK_OPTIMIZE)
    torch.manual_seed(0)
    expected, _ = chain(stems, style="rock_punk")
    torch.manual_seed(0)
    with no_gradients():
        mix, analysis = chain(stems, style="rock_punk")
    torch.testing.assert_close(mix, expected, rtol=0, atol=0)
    assert torch.isfinite(analysis["lufs"])


def test_the_default_mode_leaves_the_stems_grad_alone(stems):
    chain = AutoMixChain(n_stems=3, optimize=QUICK_OPTIMIZE)
    given = stems.clone().requires_grad_()
    chain(given, style="rock_punk")
    assert given.grad is None


def test_forward_takes_the_stems_sample_rate():
    """48 kHz stems through a 44.1 kHz chain with `sample_rate=48000` mix as through a 48 kHz chain (the
    untrained predictor is the same on both), and the chain keeps its own rate afterwards."""
    stems = create_white_noise_stems(2, duration=1.0, sample_rate=48000, seed=4)
    with torch.no_grad():
        expected, reference = AutoMixChain(sample_rate=48000)(stems, style="rnb_ballad", mode="predict")
        chain = AutoMixChain(sample_rate=44100)
        mix, analysis = chain(stems, style="rnb_ballad", mode="predict", sample_rate=48000)
    torch.testing.assert_close(mix, expected, rtol=0, atol=1e-6)
    assert float(analysis["spectral_centroid"]) == pytest.approx(float(reference["spectral_centroid"]))
    assert chain.sample_rate == 44100


@pytest.mark.parametrize("rate", [0, -44100, 44100.5, True, "48000"])
def test_a_sample_rate_that_is_not_a_positive_whole_number_is_refused(stems, rate):
    with pytest.raises(AutomixError, match="sample_rate"):
        AutoMixChain()(stems, mode="predict", sample_rate=rate)


# ------------------------------------------------------------------------ input no mix can be made of


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_target_vector_is_refused_before_any_work(stems, bad):
    """NaN in a target tensor reached the filters as a ValueError from deep inside."""
    vector = torch.tensor([bad, 2000.0, 0.5, float("nan"), float("nan"), float("nan")])
    with pytest.raises(AutomixError, match="target vectors need a finite lufs.*song 0"):
        AutoMixChain()(stems, style=vector, mode="predict")


@pytest.mark.parametrize("mode", ["optimize", "predict"])
def test_silent_songs_are_refused_naming_the_song(stems, mode, monkeypatch):
    def optimiser_ran(*args, **kwargs):
        raise AssertionError("the optimiser ran on silence")

    monkeypatch.setattr("automix.optimize.SongOptimizer.__call__", optimiser_ran)
    with pytest.raises(AutomixError, match="^the stems are silent"):
        AutoMixChain()(torch.zeros_like(stems), mode=mode)
    batch = torch.stack([stems, 1e-6 * stems])  # the second song is under the -70 LUFS gate
    with pytest.raises(AutomixError, match="^song 1's stems are silent"):
        AutoMixChain()(batch, mode=mode)


def test_loudness_under_one_gating_block_is_undefined_not_a_pass():
    """A 0.2 s mix: BS.1770 has no 400 ms block to measure, so its loudness is NaN, a miss, and noted;
    the other measurements stand."""
    stems = create_white_noise_stems(2, duration=0.2, sample_rate=SAMPLE_RATE, seed=5)
    with torch.no_grad():
        mix, analysis = AutoMixChain()(stems, style="rock_punk", mode="predict")
    assert mix.shape == (2, stems.shape[-1]) and torch.isfinite(mix).all()
    assert torch.isnan(analysis["lufs"]) and not bool(analysis["passed"]["lufs"])
    assert any("integrated loudness is undefined for 0.200 s" in note for note in analysis["notes"])
    assert torch.isfinite(analysis["spectral_centroid"]) and 0 <= float(analysis["quality_score"]) <= 1
