"""RBJ-cookbook biquads, applied exactly by frequency sampling on the FFT grid.

Coefficients follow R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad filter coefficients"
(W3C Audio EQ Cookbook). A cascade of biquads is applied by sampling its exact IIR frequency response
on the grid of an FFT whose zero-padded length exceeds the signal plus the impulse response's decay,
so the circular convolution equals the causal (zero initial state) IIR output, batched over any
leading dimensions and differentiable with respect to the signal and every coefficient. The FFT steps
have written-out backward passes (`spectral_filter`, `rfft`, `frequency_response`): each costs about
what its forward does, where autograd's would run complex FFTs of the full length.
"""

import functools
import math
from collections.abc import Mapping

import torch
from torch.autograd.function import once_differentiable

# The impulse-response tail left out of the padding decays below this level (re. its start): far under
# the -60 dB error bound the tests hold the filter to, and under 24-bit resolution.
IR_DECAY_DB = -140.0
# Longest tail padded for, in seconds: only a pole within ~1e-6 of the unit circle needs more.
MAX_IR_SECONDS = 10.0
# Bins per block in which `frequency_response` evaluates its polynomials: the float64 temporaries of a
# block (~2 MB) stay in cache, where the whole grid's (tens of MB) would cost more than the arithmetic.
RESPONSE_BLOCK_BINS = 16384
# FFT lengths are multiples of this (`fft_length`): the smallest 5-smooth length can be odd or twice an
# odd number, lengths torch's CPU FFT is slow on.
FFT_LENGTH_MULTIPLE = 16
# Overlap-save FFT length per filter tap: FFT work per output sample is least for segments several
# times the filter's length (less overlap wasted) yet small enough to stay in cache.
OVERLAP_SAVE_FFT_PER_TAP = 8
# Signals longer than this (`is_long`) go through the console and the meters a block of time at a time
# where the caller asks for it (`blockwise=True`): a minute of 8 stereo stems is 170 MB of float32 a copy,
# and a whole-signal pass holds several copies; shorter ones take the whole-signal path, which is faster.
BLOCKWISE_MIN_SECONDS = 60.0


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


@functools.lru_cache(maxsize=16)
@torch.inference_mode(False)  # the cached tensor also serves calls that record gradients
def _unit_circle_table(n_fft: int, device) -> torch.Tensor:
    """`e^{-2·pi·i·t / n_fft}` for t < n_fft, `[n_fft]` complex128. Cached per length and device: read
    it, never write to it."""
    angle = torch.arange(n_fft, device=device, dtype=torch.float64) * (-2.0 * math.pi / n_fft)
    return torch.polar(torch.ones_like(angle), angle)


def _wrapped_stride(table: torch.Tensor, start: int, step: int, count: int) -> torch.Tensor:
    """`table[(start + step·m) mod len(table)]` for m < count: strided slices, wrapped at the end."""
    if step == 0:
        return table[start : start + 1].expand(count)
    pieces = []
    while count > 0:
        taken = min(count, -(-(table.shape[0] - start) // step))  # entries before the wrap
        pieces.append(table[start : start + step * (taken - 1) + 1 : step])
        start, count = (start + step * taken) % table.shape[0], count - taken
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _unit_circle_powers(table: torch.Tensor, n_powers: int, bins: slice) -> torch.Tensor:
    """`e^{-i·j·w_k}` for j < n_powers at the rfft bins k in `bins`, w_k = 2·pi·k / n_fft:
    `[n_powers, n_bins · 2]` float64, real pairs. Row j reads `table` (`_unit_circle_table`) at
    j·k mod n_fft: every value is a correctly rounded e^{-i·angle}, with no arithmetic per bin."""
    n_fft, n_bins = table.shape[0], bins.stop - bins.start
    rows = [_wrapped_stride(table, j * bins.start % n_fft, j, n_bins) for j in range(n_powers)]
    return torch.view_as_real(torch.stack(rows)).flatten(1)


def _polynomial_values(polynomials: torch.Tensor, powers: torch.Tensor) -> torch.Tensor:
    """`[..., K]` real coefficients of z^-j times `[K, bins · 2]` powers: complex values `[..., bins]`."""
    return torch.view_as_complex((polynomials @ powers).unflatten(-1, (-1, 2)))


class _CascadeResponse(torch.autograd.Function):
    """`prod_s B_s(e^{iw}) / A_s(e^{iw})` on the rfft grid of `table` (`_unit_circle_table`) for the
    sections' polynomials b, a `[M, S, K]` (powers of z^-1; biquad sections' quadratics), float64.

    Each polynomial is a sum of its coefficients times powers of e^{-iw}: a small float64 matrix product
    (a zero-padded float64 FFT of the coefficients costs several times more, forward and backward),
    done in blocks of `RESPONSE_BLOCK_BINS` so that the temporaries stay small; its values are rounded
    to the result's dtype (the gradient's, backward) before they are divided and multiplied. Numerator and
    denominator take separate, identical products, so equal polynomials (a 0 dB band) give exactly 1.
    One node that keeps only the coefficients: autograd's product of the sections kept two responses a
    section. The backward is written out, recomputing the sections a block at a time: with g the
    gradient with respect to the cascade and g_s = g·conj(the other sections' product) the one with
    respect to section s's R_s = B_s / A_s (torch's convention), dL/db_sj = Re sum_k conj(w_k)·e^{-ijw_k}
    for w = g_s·conj(1 / A_s), and dL/da_sj the same for w = -g_s·conj(R_s / A_s).
    """

    @staticmethod
    def forward(
        ctx, b: torch.Tensor, a: torch.Tensor, table: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        # Equal cascades (one song's strips in each of its excerpts, stems at the same settings) are
        # evaluated once: `index` maps each row to its distinct cascade.
        distinct, index = torch.unique(torch.cat([b, a], dim=-1), dim=0, return_inverse=True)
        b_distinct, a_distinct = distinct.split(b.shape[-1], dim=-1)
        n_bins = table.shape[0] // 2 + 1
        response = torch.empty(distinct.shape[0], n_bins, dtype=dtype, device=b.device)
        for start in range(0, n_bins, RESPONSE_BLOCK_BINS):
            block = slice(start, min(start + RESPONSE_BLOCK_BINS, n_bins))
            powers = _unit_circle_powers(table, b.shape[-1], block)
            numerator = _polynomial_values(b_distinct, powers).to(dtype)
            sections = numerator / _polynomial_values(a_distinct, powers).to(dtype)
            response[:, block] = sections[:, 0]
            for s in range(1, sections.shape[1]):
                response[:, block] *= sections[:, s]
        ctx.save_for_backward(b_distinct, a_distinct, index, table)
        return response[index]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        b, a, index, table = ctx.saved_tensors  # the distinct cascades; every row has its own gradient
        grad_b = torch.zeros(grad.shape[0], *b.shape[1:], dtype=b.dtype, device=b.device)
        grad_a = torch.zeros_like(grad_b)
        for start in range(0, grad.shape[-1], RESPONSE_BLOCK_BINS):
            block = slice(start, min(start + RESPONSE_BLOCK_BINS, grad.shape[-1]))
            powers = _unit_circle_powers(table, b.shape[-1], block)
            # In the gradient's precision from here: float64 only where the signal is.
            inverse = 1.0 / _polynomial_values(a, powers).to(grad.dtype)  # [distinct, S, bins]
            sections = _polynomial_values(b, powers).to(grad.dtype) * inverse
            w = grad[:, None, block] * (_others_product(sections) * inverse).conj()[index]
            # Re(conj(w)·e) = w_re·e_re + w_im·e_im: a product with the same real pairs.
            powers = powers.T.to(w.real.dtype)
            grad_b += torch.view_as_real(w).flatten(-2) @ powers
            w *= sections.conj()[index]
            grad_a -= torch.view_as_real(w).flatten(-2) @ powers
        return grad_b, grad_a, None, None


def _others_product(factors: torch.Tensor) -> torch.Tensor:
    """`[..., S, n]`: for each s the product of the other factors along dim −2, without dividing (a
    section's response can be exactly 0, a high-pass's at DC)."""
    others = torch.empty_like(factors)
    running = torch.ones_like(factors[..., 0, :])
    for s in range(factors.shape[-2]):  # the factors before each
        others[..., s, :] = running
        running = running * factors[..., s, :]
    running = torch.ones_like(running)
    for s in reversed(range(factors.shape[-2])):  # times the factors after it
        others[..., s, :] *= running
        running = running * factors[..., s, :]
    return others


def frequency_response(
    b: torch.Tensor, a: torch.Tensor, n_fft: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Complex response of a biquad cascade on the rfft grid of length `n_fft`.

    Each section's quadratics are evaluated at every bin in float64 and the sections' responses
    multiplied (`_CascadeResponse`): the expanded polynomial of the whole cascade (one evaluation
    instead of one per section) loses nearly all its digits where several roots crowd z = 1, as those
    of a low shelf and a high-pass at low frequencies do.

    Args:
        b, a: `[..., n_sections, 3]` numerator / denominator coefficients.
        n_fft: FFT length; the grid has `n_fft // 2 + 1` bins from 0 to the Nyquist frequency.
        dtype: the complex dtype of the result; None: the one matching b's real dtype.

    Returns:
        `[..., n_fft // 2 + 1]` complex.
    """
    complex_dtype = b.dtype.to_complex() if dtype is None else dtype
    table = _unit_circle_table(n_fft, b.device)
    sections = b.shape[-2:]
    response = _CascadeResponse.apply(
        b.double().reshape(-1, *sections), a.double().reshape(-1, *sections), table, complex_dtype
    )
    return response.reshape(*b.shape[:-2], -1)


class _Rfft(torch.autograd.Function):
    """`torch.fft.rfft(x, n)` along the last axis, with a real inverse FFT as its backward (`rfft`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:
        ctx.n, ctx.n_samples = n, x.shape[-1]
        return torch.fft.rfft(x, n=n)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        # d/dx_t of a real loss is Re(sum_k grad_k e^{+2 pi i k t / n}) over the one-sided bins: n times an
        # irfft, which counts the bins strictly between DC and Nyquist twice, so those are halved.
        weight = torch.full((grad.shape[-1],), 0.5 * ctx.n, dtype=grad.real.dtype, device=grad.device)
        weight[0] = ctx.n
        if ctx.n % 2 == 0:
            weight[-1] = ctx.n
        grad_x = torch.fft.irfft(grad * weight, n=ctx.n)
        if ctx.n_samples <= ctx.n:
            return grad_x[..., : ctx.n_samples], None
        return torch.nn.functional.pad(grad_x, (0, ctx.n_samples - ctx.n)), None


def rfft(x: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """`torch.fft.rfft(x, n)` along the last axis (zero-padded or cropped to n). Differentiable.

    Its backward is one real inverse FFT, where torch's runs a complex FFT of the full length.
    """
    return _Rfft.apply(x, x.shape[-1] if n is None else n)


def precise_dtype(dtype: torch.dtype, recorded: bool) -> torch.dtype:
    """The dtype a filter computes a `dtype` signal's spectra and response in: float64 for float32 where
    no gradient is `recorded` (the full renders a user hears), else `dtype`. A float32 FFT's rounding,
    and its response's, is an error in every bin at ~1e-7 of the whole signal's level: it spreads over
    the whole FFT, into the quiet bins of a dark signal and the quiet passages of a sparse one, where a
    sum of stems has none."""
    return torch.float64 if dtype == torch.float32 and not recorded else dtype


def _recorded(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class _SpectralFilter(torch.autograd.Function):
    """`irfft(rfft(x, n_fft) · response, n_fft)[..., :T]`: x zero-padded, filtered, cropped to its length.

    The adjoint in x is the same filter with the conjugate response (a correlation), one real FFT pair
    like the forward; autograd's would run a complex FFT of the full length for the rfft. The response's
    gradient reuses the forward's spectrum of x.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, response: torch.Tensor, n_fft: int) -> torch.Tensor:
        precise = precise_dtype(x.dtype, any(ctx.needs_input_grad))
        spectrum = torch.fft.rfft(x.to(precise), n=n_fft)
        response = response.to(precise.to_complex())
        ctx.n_fft, ctx.x_shape = n_fft, x.shape
        ctx.save_for_backward(spectrum if ctx.needs_input_grad[1] else None, response)
        if (
            ctx.needs_input_grad[1]
            or torch.broadcast_shapes(spectrum.shape, response.shape) != spectrum.shape
        ):
            filtered = spectrum * response
        else:
            filtered = spectrum.mul_(response)  # x's spectrum is not needed again: no second buffer
        return torch.fft.irfft(filtered, n=n_fft)[..., : x.shape[-1]].to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        spectrum, response = ctx.saved_tensors
        return _filter_gradients(ctx, torch.fft.rfft(grad, n=ctx.n_fft), spectrum, response) + (None,)


def _filter_gradients(ctx, grad_spectrum, spectrum, response) -> tuple:
    """`(grad_x, grad_response)` of `irfft(rfft(x, n) · response, n)[..., :T]` from the gradient's rfft
    `grad_spectrum` (consumed), x's `spectrum` (None when the response needs no gradient) and the
    response; `ctx` holds `n_fft`, `x_shape` and `needs_input_grad`."""
    grad_x = grad_response = None
    if ctx.needs_input_grad[1]:
        # The output is Re(sum over bins of spectrum · response · e^{2 pi i k t / n}) / n, bins strictly
        # between DC and Nyquist counted twice.
        weight = torch.full(
            (grad_spectrum.shape[-1],), 2.0 / ctx.n_fft, dtype=spectrum.real.dtype, device=spectrum.device
        )
        weight[0] = 1.0 / ctx.n_fft
        if ctx.n_fft % 2 == 0:
            weight[-1] = 1.0 / ctx.n_fft
        grad_response = (grad_spectrum * spectrum.conj()).sum_to_size(response.shape) * weight
    if ctx.needs_input_grad[0]:
        # Broadcast dimensions are summed before the inverse FFT (it is linear): one per item of x.
        grad_spectrum = grad_spectrum.mul_(response.conj()).sum_to_size(
            *ctx.x_shape[:-1], grad_spectrum.shape[-1]
        )
        grad_x = torch.fft.irfft(grad_spectrum, n=ctx.n_fft)[..., : ctx.x_shape[-1]]
    return grad_x, grad_response


def spectral_filter(x: torch.Tensor, response: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Filter `x` by a response sampled on the rfft grid of length `n_fft`, zero-padded (linear, not
    circular, where the kernel fits the padding) and cropped to x's length. Differentiable in both.

    Args:
        x: `[..., T]` real signal, T <= n_fft.
        response: `[..., n_fft // 2 + 1]` complex, broadcast against x's rfft.
        n_fft: FFT length.

    Returns:
        `[..., T]`, the first T samples of `irfft(rfft(x, n_fft) · response, n_fft)`.
    """
    return _SpectralFilter.apply(x, response, n_fft)


@functools.lru_cache(maxsize=8)
@torch.inference_mode(False)  # the cached tensor also serves calls that record gradients
def quadrature_multiplier(n_fft: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The Hilbert transform on the rfft grid of length `n_fft`: −j on the positive frequencies, 0 at DC
    and Nyquist (they have no quadrature component); `[n_fft // 2 + 1]` in the complex dtype of `dtype`.
    Cached: read it, never write to it."""
    multiplier = torch.zeros(n_fft // 2 + 1, dtype=dtype.to_complex(), device=device)
    multiplier[1 : (n_fft + 1) // 2] = -1j
    return multiplier


class _FilterWithQuadrature(torch.autograd.Function):
    """`(y, H{y})`: y = `irfft(rfft(x, n) · response, n)`, as `_SpectralFilter`, and its Hilbert
    transform H (`quadrature_multiplier`), both cropped to x's length, from one rfft of x. The backward
    joins both outputs' gradients in the frequency domain: two rffts and one inverse FFT."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, response: torch.Tensor, n_fft: int):
        precise = precise_dtype(x.dtype, any(ctx.needs_input_grad))
        spectrum = torch.fft.rfft(x.to(precise), n=n_fft)
        response = response.to(precise.to_complex())
        ctx.n_fft, ctx.x_shape = n_fft, x.shape
        ctx.save_for_backward(spectrum if ctx.needs_input_grad[1] else None, response)
        ctx.set_materialize_grads(False)  # an output without a gradient costs its rfft nothing
        filtered = spectrum * response
        n_samples = x.shape[-1]
        y = torch.fft.irfft(filtered, n=n_fft)[..., :n_samples].to(x.dtype)
        multiplier = quadrature_multiplier(n_fft, precise, x.device)
        return y, torch.fft.irfft(filtered.mul_(multiplier), n=n_fft)[..., :n_samples].to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor, grad_quadrature: torch.Tensor):
        spectrum, response = ctx.saved_tensors
        # The quadrature is the filter with response · multiplier: its gradient enters through the
        # conjugate multiplier (+j), on the same spectrum as the filtered signal's.
        grad_spectrum = None
        if grad_quadrature is not None:
            multiplier = quadrature_multiplier(ctx.n_fft, grad_quadrature.dtype, grad_quadrature.device)
            grad_spectrum = torch.fft.rfft(grad_quadrature, n=ctx.n_fft).mul_(multiplier.conj())
        if grad_y is not None:
            grad_y = torch.fft.rfft(grad_y, n=ctx.n_fft)
            grad_spectrum = grad_y if grad_spectrum is None else grad_spectrum.add_(grad_y)
        return _filter_gradients(ctx, grad_spectrum, spectrum, response) + (None,)


def filter_with_quadrature(
    x: torch.Tensor, response: torch.Tensor, n_fft: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A filter's output y and its Hilbert transform H{y}, from one FFT of x (`quadrature_response`'s
    response and length). Differentiable in x and the response.

    Args:
        x: `[..., T]` real signal, T short enough for the response's length.
        response: `[..., n_fft // 2 + 1]` complex, broadcast against x's rfft.
        n_fft: FFT length.

    Returns:
        `(y, quadrature)`, each `[..., T]`.
    """
    return _FilterWithQuadrature.apply(x, response, n_fft)


def quadrature_response(
    b: torch.Tensor, a: torch.Tensor, sample_rate: int, n_samples: int, pad_samples: int, dtype: torch.dtype
) -> tuple[torch.Tensor, int]:
    """What `biquads_with_quadrature` filters a signal of up to `n_samples` with, as
    `filter_with_quadrature`'s arguments after the signal: `(response [..., 1, bins], n_fft)`; computed
    once for a signal filtered a block at a time. Complex, in `precise_dtype` of `dtype`, broadcast over
    channels.

    The response is the FFT of the cascade's impulse response, which comes from its response sampled
    on the shortest grid it fits (`impulse_response_length`): evaluating the sections on the signal's
    whole grid, and their gradient, cost several times more."""
    n_taps = impulse_response_length(a, sample_rate)
    n_fft = fft_length(n_samples + n_taps + pad_samples)
    kernel_fft = fft_length(n_taps)
    dtype = precise_dtype(dtype, _recorded(b, a))
    kernel = torch.fft.irfft(frequency_response(b, a, kernel_fft, dtype.to_complex()), n=kernel_fft)
    return rfft(kernel[..., :n_taps], n_fft).unsqueeze(-2), n_fft


def biquads_with_quadrature(
    x: torch.Tensor, b: torch.Tensor, a: torch.Tensor, sample_rate: int, pad_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`apply_biquads`'s output y and its Hilbert transform H{y}, from one FFT of x: what a quadrature
    detector after the filter needs, for one forward FFT where the filter and a transform of its output
    took two (and the filter's overlap-save segments).

    x is filtered whole, on the grid of an FFT longer than x, the cascade's impulse response
    (`impulse_response_length`) and `pad_samples`: y is exact (causal, zero initial state), and H{y} is
    the transform of the filter's whole output, its decay past x's end included, whose circular
    wrap-around lies `pad_samples` beyond that decay.

    Args:
        x: `[..., C, T]` signal.
        b, a: `[..., n_sections, 3]` as `apply_biquads`.
        sample_rate: Hz.
        pad_samples: zeros after the filter's decay.

    Returns:
        `(y, quadrature)`, each `[..., C, T]` in x's dtype. Differentiable in x and the coefficients.
    """
    response = quadrature_response(b, a, sample_rate, x.shape[-1], pad_samples, x.dtype)
    return filter_with_quadrature(x, *response)


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


def is_long(n_samples: int, sample_rate: int) -> bool:
    """Whether a signal of `n_samples` is longer than `BLOCKWISE_MIN_SECONDS`: long enough for a function
    called with `blockwise=True` to go through it a block of time at a time."""
    return n_samples > BLOCKWISE_MIN_SECONDS * sample_rate


def check_blockwise(blockwise: bool, *inputs) -> None:
    """Refuse `blockwise=True` while a gradient is being recorded for one of a function's `inputs`
    (tensors, mappings of tensors, or None): the block paths record none.

    Raises:
        ValueError: a bug in the caller, which should pass `blockwise=False` where it needs gradients.
    """
    if not (blockwise and torch.is_grad_enabled()):
        return
    for value in inputs:
        tensors = value.values() if isinstance(value, Mapping) else (value,)
        if any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
            raise ValueError(
                "blockwise=True while a gradient is being recorded for the input: the block paths have "
                "no gradient; pass blockwise=False, or call under torch.no_grad()"
            )


def fft_length(n_samples: int) -> int:
    """Smallest 2^i·3^j·5^k >= `n_samples` with 2^i >= `FFT_LENGTH_MULTIPLE`: lengths the FFT handles
    fast."""
    best = max(FFT_LENGTH_MULTIPLE, 1 << max(n_samples - 1, 0).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            n = p35 * FFT_LENGTH_MULTIPLE
            while n < n_samples:
                n *= 2
            best = min(best, n)
            p35 *= 3
        p5 *= 5
    return best


def overlap_save(x: torch.Tensor, response: torch.Tensor, n_fft: int, n_taps: int) -> torch.Tensor:
    """Causal convolution of `x` with a kernel of at most `n_taps` samples, given by its `response` on
    the rfft grid of length `n_fft`, by overlap-save: the signal is cut into segments of `n_fft`
    overlapping by `n_taps - 1`, each is filtered circularly, and the wrapped-around start of each is
    dropped. First T samples. Differentiable in x and the response.

    Args:
        x: `[..., T]` real signal.
        response: `[..., n_fft // 2 + 1]` complex, broadcast against x's leading dimensions.
        n_fft: segment length, > n_taps.
        n_taps: the kernel's length; the kernel of a sampled IIR response is its impulse response up to
            where it has decayed (`impulse_response_length`).

    Returns:
        `[..., T]`.
    """
    n_samples = x.shape[-1]
    step = n_fft - n_taps + 1
    n_segments = -(-n_samples // step)
    padded = torch.nn.functional.pad(x, (n_taps - 1, n_segments * step - n_samples))
    segments = padded.unfold(-1, n_fft, step)  # [..., n_segments, n_fft], overlapping by n_taps - 1
    valid = spectral_filter(segments, response.unsqueeze(-2), n_fft)[..., n_taps - 1 :]
    return valid.flatten(-2)[..., :n_samples]


def segment_fft_length(n_samples: int, n_taps: int) -> int:
    """The FFT length `overlap_save` works fastest at for a kernel of `n_taps`: `OVERLAP_SAVE_FFT_PER_TAP`
    times the kernel (less overlap wasted, still cache-resident), or one segment for the whole signal
    where that is shorter."""
    return min(fft_length(OVERLAP_SAVE_FFT_PER_TAP * n_taps), fft_length(n_samples + n_taps - 1))


def apply_biquads(x: torch.Tensor, b: torch.Tensor, a: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Filter `x` through a cascade of biquads, exactly (causal, zero initial state).

    The cascade's response is sampled on the grid of `segment_fft_length` and applied by
    `overlap_save` with its impulse response's length (`impulse_response_length`): a long signal is
    filtered in short, cache-resident segments, whose response costs a fraction of the signal's.

    Args:
        x: `[..., C, T]` signal.
        b, a: `[..., n_sections, 3]` coefficients, best in float64 whatever x's dtype (poles near the
            unit circle, as in a low shelf, move when their coefficients are rounded to float32); their
            leading dimensions broadcast against x's leading dimensions (without C), so each item of a
            batch can have its own filters.
        sample_rate: Hz; bounds the padding.

    Returns:
        `[..., C, T]` in x's dtype, the same as `scipy.signal.sosfilt` on each channel, to within the
        IR_DECAY_DB tail.
    """
    return overlap_save(x, *biquad_response(b, a, sample_rate, x.shape[-1], x.dtype))


def biquad_response(
    b: torch.Tensor, a: torch.Tensor, sample_rate: int, n_samples: int, dtype: torch.dtype
) -> tuple[torch.Tensor, int, int]:
    """What `apply_biquads` filters a signal of up to `n_samples` with, as `overlap_save`'s arguments
    after the signal: `(response [..., 1, bins], n_fft, n_taps)`; computed once for a signal filtered
    a block at a time. The response is complex, in `precise_dtype` of `dtype`, broadcast over channels."""
    n_taps = impulse_response_length(a, sample_rate)
    n_fft = segment_fft_length(n_samples, n_taps)
    dtype = precise_dtype(dtype, _recorded(b, a))
    return frequency_response(b, a, n_fft, dtype.to_complex()).unsqueeze(-2), n_fft, n_taps
