"""RBJ-cookbook biquads, applied exactly by frequency sampling on the FFT grid.

Coefficients follow R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad filter coefficients"
(W3C Audio EQ Cookbook). A cascade of biquads is applied by sampling its exact IIR frequency response
on the grid of an FFT whose zero-padded length exceeds the signal plus the impulse response's decay,
so the circular convolution equals the causal (zero initial state) IIR output, batched over any
leading dimensions and differentiable with respect to the signal and every coefficient.
"""

import math

import torch

# The impulse-response tail left out of the padding decays below this level (re. its start): far under
# the -60 dB error bound the tests hold the filter to, and under 24-bit resolution.
IR_DECAY_DB = -140.0
# Longest tail padded for, in seconds: only a pole within ~1e-6 of the unit circle needs more.
MAX_IR_SECONDS = 10.0


def _cookbook_terms(freq_hz, q, sample_rate):
    w0 = 2.0 * math.pi * freq_hz / sample_rate
    return torch.cos(w0), torch.sin(w0) / (2.0 * q)


def _normalise(b0, b1, b2, a0, a1, a2) -> tuple[torch.Tensor, torch.Tensor]:
    b = torch.stack([b0, b1, b2], dim=-1) / a0.unsqueeze(-1)
    a = torch.stack([a0, a1, a2], dim=-1) / a0.unsqueeze(-1)
    return b, a


def _as_tensors(*values):
    tensors = [torch.as_tensor(v) for v in values]
    dtype = torch.promote_types(torch.get_default_dtype(), tensors[0].dtype)
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.broadcast_tensors(*[t.to(dtype) for t in tensors])


def peaking(gain_db, freq_hz, q, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Peaking EQ biquad. Returns `(b, a)`, each `[..., 3]`, normalised so a[0] = 1.

    Args:
        gain_db: gain at the centre frequency, dB; any shape, broadcast with the others.
        freq_hz: centre frequency, Hz.
        q: quality factor.
        sample_rate: Hz.
    """
    gain_db, freq_hz, q = _as_tensors(gain_db, freq_hz, q)
    amp = torch.pow(10.0, gain_db / 40.0)
    cos_w0, alpha = _cookbook_terms(freq_hz, q, sample_rate)
    return _normalise(
        1 + alpha * amp, -2 * cos_w0, 1 - alpha * amp, 1 + alpha / amp, -2 * cos_w0, 1 - alpha / amp
    )


def low_shelf(gain_db, freq_hz, q, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-shelf biquad (cookbook form with Q; Q = 1/sqrt(2) is the steepest without overshoot)."""
    gain_db, freq_hz, q = _as_tensors(gain_db, freq_hz, q)
    amp = torch.pow(10.0, gain_db / 40.0)
    cos_w0, alpha = _cookbook_terms(freq_hz, q, sample_rate)
    two_sqrt_a_alpha = 2 * torch.sqrt(amp) * alpha
    return _normalise(
        amp * ((amp + 1) - (amp - 1) * cos_w0 + two_sqrt_a_alpha),
        2 * amp * ((amp - 1) - (amp + 1) * cos_w0),
        amp * ((amp + 1) - (amp - 1) * cos_w0 - two_sqrt_a_alpha),
        (amp + 1) + (amp - 1) * cos_w0 + two_sqrt_a_alpha,
        -2 * ((amp - 1) + (amp + 1) * cos_w0),
        (amp + 1) + (amp - 1) * cos_w0 - two_sqrt_a_alpha,
    )


def high_shelf(gain_db, freq_hz, q, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High-shelf biquad (cookbook form with Q)."""
    gain_db, freq_hz, q = _as_tensors(gain_db, freq_hz, q)
    amp = torch.pow(10.0, gain_db / 40.0)
    cos_w0, alpha = _cookbook_terms(freq_hz, q, sample_rate)
    two_sqrt_a_alpha = 2 * torch.sqrt(amp) * alpha
    return _normalise(
        amp * ((amp + 1) + (amp - 1) * cos_w0 + two_sqrt_a_alpha),
        -2 * amp * ((amp - 1) + (amp + 1) * cos_w0),
        amp * ((amp + 1) + (amp - 1) * cos_w0 - two_sqrt_a_alpha),
        (amp + 1) - (amp - 1) * cos_w0 + two_sqrt_a_alpha,
        2 * ((amp - 1) - (amp + 1) * cos_w0),
        (amp + 1) - (amp - 1) * cos_w0 - two_sqrt_a_alpha,
    )


def low_pass(freq_hz, q, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Second-order low-pass biquad."""
    freq_hz, q = _as_tensors(freq_hz, q)
    cos_w0, alpha = _cookbook_terms(freq_hz, q, sample_rate)
    return _normalise((1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2, 1 + alpha, -2 * cos_w0, 1 - alpha)


def high_pass(freq_hz, q, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Second-order high-pass biquad."""
    freq_hz, q = _as_tensors(freq_hz, q)
    cos_w0, alpha = _cookbook_terms(freq_hz, q, sample_rate)
    return _normalise((1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2, 1 + alpha, -2 * cos_w0, 1 - alpha)


def _cascade_polynomial(coefficients: torch.Tensor) -> torch.Tensor:
    """Coefficients `[..., 2 * n_sections + 1]` (powers of z^-1) of the product of the sections'
    quadratics `[..., n_sections, 3]`."""
    product = coefficients[..., 0, :]
    for section in coefficients.unbind(dim=-2)[1:]:
        product = (
            torch.nn.functional.pad(product, (0, 2)) * section[..., 0:1]
            + torch.nn.functional.pad(product, (1, 1)) * section[..., 1:2]
            + torch.nn.functional.pad(product, (2, 0)) * section[..., 2:3]
        )
    return product


def frequency_response(b: torch.Tensor, a: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Complex response of a biquad cascade on the rfft grid of length `n_fft`.

    The cascade's numerator and denominator polynomials are evaluated on the whole grid by one real
    FFT each (in float64, which keeps the poles of low, narrow bands exact), a few times cheaper than
    evaluating every section at every bin.

    Args:
        b, a: `[..., n_sections, 3]` numerator / denominator coefficients.
        n_fft: FFT length; the grid has `n_fft // 2 + 1` bins from 0 to the Nyquist frequency.

    Returns:
        `[..., n_fft // 2 + 1]` complex, in the complex dtype matching b's real dtype.
    """
    numerator = torch.fft.rfft(_cascade_polynomial(b.double()), n=n_fft)
    denominator = torch.fft.rfft(_cascade_polynomial(a.double()), n=n_fft)
    complex_dtype = torch.complex128 if b.dtype == torch.float64 else torch.complex64
    return (numerator / denominator).to(complex_dtype)


def impulse_response_length(a: torch.Tensor, sample_rate: int) -> int:
    """Samples until a biquad cascade's impulse response decays below `IR_DECAY_DB` (an upper bound).

    Uses the largest pole radius of each section (detached: the padding is structure, not a parameter)
    and adds the sections' lengths, which bounds the cascade's.
    """
    a = a.detach().double().reshape(-1, a.shape[-2], 3)
    a1, a2 = a[..., 1], a[..., 2]
    disc = a1**2 - 4 * a2
    sqrt_disc = torch.sqrt(disc.clamp_min(0))
    real_radius = torch.maximum((-a1 + sqrt_disc).abs(), (-a1 - sqrt_disc).abs()) / 2
    complex_radius = torch.sqrt(a2.abs())
    radius = torch.where(disc >= 0, real_radius, complex_radius).clamp(1e-12, 1 - 1e-12)
    decay = math.log(10.0 ** (IR_DECAY_DB / 20.0))
    per_section = torch.ceil(decay / torch.log(radius)).amax(dim=0)
    return int(min(per_section.sum().item() + 3 * a.shape[-2], MAX_IR_SECONDS * sample_rate))


def fft_length(n_samples: int) -> int:
    """Smallest 2^i·3^j·5^k >= `n_samples`: lengths the FFT handles fast."""
    best = 1 << max(n_samples - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            n = p35
            while n < n_samples:
                n *= 2
            best = min(best, n)
            p35 *= 3
        p5 *= 5
    return best


def apply_biquads(x: torch.Tensor, b: torch.Tensor, a: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Filter `x` through a cascade of biquads, exactly (causal, zero initial state).

    Args:
        x: `[..., C, T]` signal.
        b, a: `[..., n_sections, 3]` coefficients; their leading dimensions broadcast against x's leading
            dimensions (without C), so each item of a batch can have its own filters.
        sample_rate: Hz; bounds the padding.

    Returns:
        `[..., C, T]`, the same as `scipy.signal.sosfilt` on each channel, to within the IR_DECAY_DB tail.
    """
    n_samples = x.shape[-1]
    n_fft = fft_length(n_samples + impulse_response_length(a, sample_rate))
    response = frequency_response(b, a, n_fft).unsqueeze(-2)  # [..., 1, bins], broadcast over channels
    spectrum = torch.fft.rfft(x, n=n_fft)
    return torch.fft.irfft(spectrum * response, n=n_fft)[..., :n_samples]
