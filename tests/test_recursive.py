"""The K-weighting's sample-by-sample recursion against scipy, and its gradient."""

import numpy as np
import pytest
import scipy.signal
import torch

from automix.dsp import filters
from automix.dsp.recursive import two_biquads
from automix.loudness import k_weighting, k_weighting_coefficients, k_weighting_impulse_response

SECTIONS = np.concatenate([c.numpy() for c in k_weighting_coefficients(44100)], axis=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_biquads_match_sosfilt(dtype):
    audio = np.random.default_rng(0).standard_normal((3, 2, 20000))
    ours = two_biquads(torch.from_numpy(audio).to(dtype), SECTIONS)
    assert ours.dtype == dtype and ours.shape == audio.shape
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(ours.double().numpy(), scipy.signal.sosfilt(SECTIONS, audio), atol=tolerance)


def test_two_biquads_gradient_matches_finite_differences():
    x = torch.randn(2, 64, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: two_biquads(x, SECTIONS), (x,))


def test_two_biquads_take_non_contiguous_rows():
    audio = torch.randn(2, 3000, 2, dtype=torch.float64).transpose(1, 2)  # [2, 2, 3000], strided
    np.testing.assert_allclose(
        two_biquads(audio, SECTIONS).numpy(), scipy.signal.sosfilt(SECTIONS, audio.numpy()), atol=1e-12
    )


def test_two_biquads_refuse_what_the_kernel_cannot_run():
    with pytest.raises(ValueError, match="float32/float64 CPU"):
        two_biquads(torch.zeros(2, 10, dtype=torch.float16), SECTIONS)


def test_k_weighting_recursion_equals_the_fft_convolution_used_off_the_cpu():
    """The CPU recursion and the overlap-save convolution with the impulse response to -140 dB (the
    GPU path, run here on the CPU) give the same signal (to 1e-6, as `scipy.signal.lfilter` does)."""
    sample_rate = 44100
    audio = torch.randn(2, 2, 3 * sample_rate, dtype=torch.float64)
    taps = k_weighting_impulse_response(sample_rate)
    n_fft = filters.segment_fft_length(audio.shape[-1], taps.shape[-1])
    convolved = filters.overlap_save(audio, torch.fft.rfft(taps, n=n_fft), n_fft, taps.shape[-1])
    np.testing.assert_allclose(k_weighting(audio, sample_rate).numpy(), convolved.numpy(), atol=1e-6)
