"""A fixed cascade of two biquads run sample by sample on the CPU: the K-weighting filter
(`automix.loudness.k_weighting`), which every loudness measurement passes its signal through.

The recursion is exact (no truncated impulse response) and runs in float64 whatever the signal's dtype,
one row a numba thread, as torchcomp's recursions do: on a CPU it is several times cheaper per sample
than the FFT convolution `automix.dsp.filters.apply_biquads` uses, whose cost grows with the length of
the impulse response (thousands of samples for the K-weighting's 38 Hz high-pass). The coefficients are
constants, so the backward is the same filter run backwards in time: for a causal filter from rest, the
transpose of its (lower triangular Toeplitz) matrix is the time-reversed filter.
"""

import numba
import numpy as np
import torch
from torch.autograd.function import once_differentiable

DTYPES = (torch.float32, torch.float64)  # the kernel's signal dtypes


@numba.njit(parallel=True)
def two_biquads_kernel(x: np.ndarray, sos: np.ndarray, backwards: bool) -> np.ndarray:
    """`[rows, T]` filtered through the two sections `sos` `[2, 6]` (b0, b1, b2, 1, a1, a2), transposed
    direct form II with a float64 state, from rest at the start (`backwards`: at the end, in reversed
    time)."""
    n_rows, n_samples = x.shape
    y = np.empty_like(x)
    b00, b01, b02, a01, a02 = sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5]
    b10, b11, b12, a11, a12 = sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5]
    for row in numba.prange(n_rows):
        s01 = s02 = s11 = s12 = 0.0
        for step in range(n_samples):
            t = n_samples - 1 - step if backwards else step
            v = np.float64(x[row, t])
            u = b00 * v + s01
            s01 = b01 * v - a01 * u + s02
            s02 = b02 * v - a02 * u
            w = b10 * u + s11
            s11 = b11 * u - a11 * w + s12
            s12 = b12 * u - a12 * w
            y[row, t] = w
    return y


def _filter(x: torch.Tensor, sos: np.ndarray, backwards: bool = False) -> torch.Tensor:
    rows = x.detach().reshape(-1, x.shape[-1]).contiguous().numpy()
    return torch.from_numpy(two_biquads_kernel(rows, sos, backwards)).reshape(x.shape)


class _TwoBiquads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sos: np.ndarray) -> torch.Tensor:
        ctx.sos = sos
        return _filter(x, sos)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return _filter(grad, ctx.sos, backwards=True), None


def two_biquads(x: torch.Tensor, sos: np.ndarray) -> torch.Tensor:
    """Filter `x` through a cascade of two biquads with constant coefficients, as
    `scipy.signal.sosfilt(sos, x)` (causal, from rest). Differentiable in x.

    Args:
        x: `[..., T]` float32 or float64 CPU tensor.
        sos: `[2, 6]` float64 sections, scipy's layout (b0, b1, b2, 1, a1, a2).

    Returns:
        `[..., T]` in x's dtype.
    """
    if x.device.type != "cpu" or x.dtype not in DTYPES:
        raise ValueError(f"two_biquads runs float32/float64 CPU tensors, got {x.dtype} on {x.device}")
    return _TwoBiquads.apply(x, sos)
