"""Dynamics: a feed-forward, stereo-linked RMS compressor with a soft knee and attack/release ballistics
(the look-ahead limiter is `automix.dsp.limiter`).

Pure, batched and differentiable functions on `[..., C, T]` tensors. The recursive parts (the detector's
averager, the gain's attack/release ballistics) run in `torchcomp.core.compressor_core`: a one-pole
smoother that uses its attack coefficient while its input is below its state and its release coefficient
otherwise, with a numba CPU / CUDA forward and an exact custom backward. On a GPU, torchcomp's CUDA
kernels run one GPU thread a row, serially in time: they pay off for many rows (a training batch), while
a song's few rows run sooner in the CPU kernels with copies to and from the GPU (`_on_cpu`), as does
everything where numba's CUDA kernels cannot be compiled (`cuda_kernels_work`).

Time constants follow torchcomp's `ms2coef`: a time in ms is the 10-90 % rise time of the one-pole's
step response (coefficient 1 - exp(-2200 / (ms · sample_rate)), since ln 9 ≈ 2.2).
"""

import functools
import math
import warnings
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torchcomp import ms2coef
from torchcomp.core import CompressorFunction, compressor_kernel
from torchlpc import sample_wise_lpc

from automix.dsp import recursive
from automix.dsp.filters import fft_length, quadrature_multiplier, spectral_filter
from automix.units import AMP_FLOOR_DB, db_to_amp, power_to_db

# Rise time (10-90 %) of the detector's mean-square averager. The quadrature detector below has no
# ripple on steady tones, so this only has to tame the envelope fluctuations of broadband signals; it
# is short so that the gain's rise and fall times stay those of the attack and release settings.
DETECTOR_MS = 0.5
# Zero padding of the detector's FFT Hilbert transform. The circular wrap-around couples the signal's
# end to its start only through the transform kernel 1/(pi·n) beyond this distance, i.e. through
# content below ~1000 / HILBERT_PAD_MS Hz: infrasonic, and a negligible share of the power.
HILBERT_PAD_MS = 100.0
# Signal the detector hears on either side of a block rendered on its own (`compressor_block`): the
# quadrature transform's kernel 1/(pi·n) beyond it only carries content below ~1000 / this many Hz.
DETECTOR_CONTEXT_MS = 500.0
# Fewest rows `[B, T]` that a recursion on GPU tensors runs in numba's CUDA kernels rather than in the
# CPU kernels with copies: the CUDA kernels run a row a thread, serially in time, and pay off only for
# many rows (`benchmarks/bench_gpu.py` times both routes; docs/benchmarks.md).
CUDA_KERNEL_MIN_ROWS = 64
# Below this much knee width (dB) the knee is hard; only keeps the quadratic knee's division finite.
MIN_KNEE_DB = 1e-6
DEFAULT_KNEE_DB = 6.0


def per_item(value, lead: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """A parameter broadcast to the leading dims `lead` and flattened to `[B]`."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).broadcast_to(lead).reshape(-1)


def _hilbert(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Hilbert transform along the last axis (signal taken as zero outside `[0, T)`), by FFT.

    Zero padding of `HILBERT_PAD_MS` keeps the circular wrap-around that far from the signal.
    """
    n_fft = fft_length(x.shape[-1] + hilbert_pad_samples(sample_rate))
    return spectral_filter(x, quadrature_multiplier(n_fft, x.dtype, x.device), n_fft)


def hilbert_pad_samples(sample_rate: int) -> int:
    """`HILBERT_PAD_MS` in samples."""
    return round(HILBERT_PAD_MS * sample_rate / 1000.0)


@functools.cache
def cuda_kernels_work() -> bool:
    """Whether torchcomp's and torchlpc's numba CUDA kernels compile and run here (tried once, on tiny
    tensors). They do not where numba-cuda is missing or older than the installed numpy (numba-cuda
    0.x with numpy 2.4+: `np.row_stack` is gone); the recursions then run on the CPU (`_core`)."""
    try:
        x = torch.ones(1, 4, device="cuda")
        CompressorFunction.forward(x, x[:, 0], x[:, 0] / 2, x[:, 0] / 2)
        sample_wise_lpc(x, x.unsqueeze(-1) / -2)
        torch.cuda.synchronize()
    except Exception as error:  # numba's import and compile errors have no common base class
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        warnings.warn(
            f"numba's CUDA kernels do not compile here ({reason}); the compressors' recursions run on the "
            "CPU and their results are copied back to the GPU",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def _on_cpu(x: torch.Tensor) -> bool:
    """Whether a recursion over the rows of `x` `[B, T]` runs in the CPU kernels: x on the CPU, too few
    rows for the CUDA kernels to pay off (`CUDA_KERNEL_MIN_ROWS`), or no CUDA kernels here."""
    return not x.is_cuda or x.shape[0] < CUDA_KERNEL_MIN_ROWS or not cuda_kernels_work()


def _core(x, zi, at, rt) -> tuple[torch.Tensor, torch.Tensor]:
    """`CompressorFunction.forward` (`(y, at_mask)`, untracked), on the CPU where `_on_cpu`."""
    if x.is_cuda and _on_cpu(x):
        y, at_mask = CompressorFunction.forward(*(value.cpu() for value in (x, zi, at, rt)))
        return y.to(x.device), at_mask.to(x.device)
    return CompressorFunction.forward(x, zi, at, rt)


class _OnePole(torch.autograd.Function):
    """Linear one-pole low-pass `y[t] = (1 − c)·y[t − 1] + c·x[t]`, `y[−1] = 0`, along the rows of
    `[B, T]`, with a constant coefficient c `[B]` (not differentiated).

    Runs in torchcomp's recursion (equal attack and release coefficients make it linear). The adjoint
    of a causal linear recursion is the same recursion backwards in time, so the backward is one more
    pass on the time-reversed gradient; torchcomp's general backward also differentiates the
    coefficients and costs several times more.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(coef)
        return _core(x, torch.zeros_like(coef), coef, coef)[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (coef,) = ctx.saved_tensors
        return _core(grad.flip(-1), torch.zeros_like(coef), coef, coef)[0].flip(-1), None


class _Ballistics(torch.autograd.Function):
    """torchcomp's `compressor_core` with its gradients, without its forward-mode saves: torchcomp's
    `setup_context` also calls `ctx.save_for_forward` with the function's own output, which ties the
    output and its graph node in a cycle that Python's collector cannot see, so every call kept its
    inputs and output alive for the life of the process, with or without a backward pass. The
    reverse-mode gradients are torchcomp's own, computed on the CPU where `_on_cpu`."""

    @staticmethod
    def forward(x, zi, at, rt):
        return _core(x, zi, at, rt)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, zi, at, rt = inputs
        y, at_mask = output
        ctx.mark_non_differentiable(at_mask)
        ctx.save_for_backward(x, y, zi, at, rt, at_mask)

    @staticmethod
    def backward(ctx, grad_y, _):
        if not (grad_y.is_cuda and _on_cpu(grad_y)):
            return CompressorFunction.backward(ctx, grad_y, None)
        saved = SimpleNamespace(
            saved_tensors=[value.cpu() for value in ctx.saved_tensors], needs_input_grad=ctx.needs_input_grad
        )
        grads = CompressorFunction.backward(saved, grad_y.cpu(), None)
        return tuple(None if grad is None else grad.to(grad_y.device) for grad in grads)


def cache_compiled_kernels() -> bool:
    """Keep the CPU's numba kernels (torchcomp's `compressor_core`, the K-weighting's
    `automix.dsp.recursive`) compiled on disk, in numba's cache: otherwise every process compiles them
    again before its first compressor and its first loudness measurement. The command-line tools and
    training call it.

    Returns:
        True when caching is on; False where numba finds no folder it may write (it compiles as before).
    """
    try:
        for kernel in (compressor_kernel, recursive.two_biquads_kernel):
            kernel.enable_caching()
    except RuntimeError:
        return False
    return True


def ballistics(x: torch.Tensor, zi: torch.Tensor, at: torch.Tensor, rt: torch.Tensor) -> torch.Tensor:
    """`torchcomp.core.compressor_core` (a one-pole smoother of `[B, T]` from `zi` `[B]`, with the
    attack coefficient `at` `[B]` while its input is below its state, the release `rt` otherwise),
    differentiable w.r.t. all four, and freed with its output (`_Ballistics`)."""
    return _Ballistics.apply(x, zi, at, rt)[0]


def detector_mean_square(
    x: torch.Tensor, sample_rate: int, quadrature: torch.Tensor | None = None
) -> torch.Tensor:
    """Linked short-term mean square of a multichannel signal (quadrature RMS detector).

    The instantaneous power is (x² + H{x}²) / 2, averaged over channels, where H is the Hilbert
    transform: its mean equals the mean square of x, but unlike x² it has no ripple at twice the
    frequency of a steady tone, so a short averager suffices and low notes are not distorted by a
    gain that follows the ripple. A linear one-pole averager with rise time `DETECTOR_MS` follows
    (`_OnePole`). The FFT Hilbert transform is non-causal: its kernel decays as 1/(π·n), so a tone's
    onset is seen about 26 dB down one cycle early, a negligible look-ahead for an offline renderer.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.
        quadrature: `[..., C, T]` x's Hilbert transform when already known (a filter's output with its
            transform, `automix.dsp.filters.biquads_with_quadrature`); without gradients it is
            overwritten. None: by FFT, the signal taken as zero outside `[0, T)`.

    Returns:
        `[B, T]` mean square (linear power), B the product of the leading dims.
    """
    n_ch, n_samples = x.shape[-2:]
    flat = x.reshape(-1, n_ch, n_samples)
    if quadrature is None:
        quadrature = _hilbert(flat, sample_rate)
    quadrature = quadrature.reshape(flat.shape)
    if torch.is_grad_enabled() and (flat.requires_grad or quadrature.requires_grad):
        both = flat.square() + quadrature.square()
    else:  # in place on the transform's own output: two passes over the signal instead of three
        both = quadrature.square_().addcmul_(flat, flat)
    power = both.mean(dim=-2) * 0.5
    coef = ms2coef(torch.full(power.shape[:1], DETECTOR_MS, dtype=x.dtype, device=x.device), sample_rate)
    return _OnePole.apply(power, coef)


def soft_knee_gain_db(
    level_db: torch.Tensor, threshold_db: torch.Tensor, ratio: torch.Tensor, knee_db: torch.Tensor
) -> torch.Tensor:
    """Static gain of a downward compressor with a quadratic soft knee.

    Giannoulis, Massberg & Reiss, "Digital Dynamic Range Compressor Design — A Tutorial and Analysis",
    JAES 60(6), 2012, eq. (4): output = input below the knee, T + (x − T)/R above it, and
    x + (1/R − 1)(x − T + W/2)² / (2W) inside the knee |x − T| ≤ W/2.

    Args:
        level_db: input level, dB; any shape broadcast with the others.
        threshold_db: T, dB.
        ratio: R ≥ 1 (1 gives 0 dB everywhere).
        knee_db: W ≥ 0, dB (0 is a hard knee).

    Returns:
        gain (output − input level), dB, ≤ 0.

    Written as (1/R − 1)·c (`_knee_curve`): the three pieces without selecting among them, in fewer
    passes over a signal.
    """
    return (1.0 / ratio - 1.0) * _knee_curve(level_db - threshold_db, knee_db)[1]


def _knee_curve(over_db: torch.Tensor, knee_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(q, c)` at levels `over_db` above the threshold: how far into the knee, q = clamp(over, ±W/2) + W/2
    (0 below the knee, W above it), and c = q² / (2W) + max(0, over − W/2), the gain in dB per unit of
    1/R − 1 (0 below the knee, q² / (2W) in it, over above it). W is `knee_db`, at least `MIN_KNEE_DB`."""
    width = knee_db.clamp_min(MIN_KNEE_DB)
    half = width / 2
    into = torch.clamp(over_db, -half, half).add_(half)
    return into, into.square().div_(2 * width).add_(F.relu(over_db - half))


class _GainComputer(torch.autograd.Function):
    """The compressor's target gain, linear, from its detector's power `[B, T]` and its threshold (dB),
    ratio and knee (dB) `[B, 1]`: `soft_knee_gain_db` of the power in dB, as an amplitude.

    One node that keeps only its inputs: autograd's chain of the elementwise steps kept seven
    signal-sized tensors. The backward
    recomputes the level and differentiates the knee in closed form.
    """

    @staticmethod
    def forward(ctx, power, threshold_db, ratio, knee_db):
        ctx.save_for_backward(power, threshold_db, ratio, knee_db)
        return db_to_amp(soft_knee_gain_db(power_to_db(power), threshold_db, ratio, knee_db))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """The gain in dB is s·c with s = 1/ratio − 1 and `_knee_curve`'s c and q, over = level −
        threshold: one expression for every region of the knee, and so are its derivatives,
        d/d over = s·q / W and d/dW = s·q·(W − q) / (2W²) (both 0 below the knee; above it, s and 0). In
        place on signal-sized temporaries of its own."""
        power, threshold_db, ratio, knee_db = ctx.saved_tensors
        floor = 10.0 ** (AMP_FLOOR_DB / 10.0)
        slope = 1.0 / ratio - 1.0
        knee = knee_db.clamp_min(MIN_KNEE_DB)
        into, curve = _knee_curve(power_to_db(power).sub_(threshold_db), knee_db)
        neper = math.log(10.0) / 20.0  # d ln(gain) / d gain_db
        grad_db = (curve * slope).mul_(neper).exp_().mul_(grad).mul_(neper)
        grad_ratio = -(grad_db * curve).sum(-1, keepdim=True) / ratio.square()
        by_into = grad_db.mul_(into)
        grad_knee = (by_into * (knee - into)).sum(-1, keepdim=True) * slope / (2 * knee.square())
        grad_knee = grad_knee * (knee_db >= MIN_KNEE_DB)
        by_over = by_into.mul_(slope / knee)
        grad_threshold = -by_over.sum(-1, keepdim=True)
        grad_power = by_over.mul_(10.0 / math.log(10.0)).div_(power.clamp_min(floor))
        return grad_power.masked_fill_(power < floor, 0.0), grad_threshold, grad_ratio, grad_knee


def compressor(
    x: torch.Tensor,
    sample_rate: int,
    *,
    threshold_db,
    ratio,
    attack_ms,
    release_ms,
    makeup_db,
    knee_db=DEFAULT_KNEE_DB,
) -> torch.Tensor:
    """Feed-forward, stereo-linked RMS compressor with soft knee and attack/release ballistics.

    Level: `detector_mean_square` (quadrature RMS detector, linked over channels) in dB RMS, so a full-scale
    sine reads −3.01 dB. Gain computer: `soft_knee_gain_db` (Giannoulis et al. 2012). The target gain
    is smoothed in the linear domain by a one-pole with the attack coefficient while the gain falls and
    the release coefficient while it rises (torchcomp), so the gain's 10-90 % rise and fall times are
    `attack_ms` and `release_ms`; it starts at 1 (no reduction). Makeup gain is applied last.
    Differentiable w.r.t. `x` and every parameter (the attack/release choice per sample is a mask, as
    in any compressor).

    Args:
        x: `[..., C, T]` signal, float32 or float64.
        sample_rate: Hz.
        threshold_db: dB RMS; tensor of shape `[...]` (the leading dims of x) or broadcastable to it.
        ratio: ≥ 1; 1 leaves the signal unchanged (apart from makeup).
        attack_ms: 10-90 % time of a falling gain, ms (> 0).
        release_ms: 10-90 % time of a rising gain, ms (> 0).
        makeup_db: gain applied after compression, dB.
        knee_db: width of the quadratic knee, dB (0 = hard knee).

    Returns:
        `[..., C, T]` compressed signal.
    """
    settings = (threshold_db, ratio, attack_ms, release_ms, makeup_db, knee_db)
    return compressor_block(x, sample_rate, settings)[0]


def compressor_gain(
    power: torch.Tensor, sample_rate: int, settings: tuple, *, gain_state: torch.Tensor | None = None
) -> torch.Tensor:
    """The compressor's gain `[B, T]`, linear and without makeup (≤ 1), from its detector's power `[B, T]`
    (`detector_mean_square`): the soft-knee gain computer, then the attack/release smoother from
    `gain_state` `[B]` (None: 1). `settings`: `compressor`'s `(threshold_db, ratio, attack_ms,
    release_ms, makeup_db, knee_db)`, each a float or `[B]`."""
    threshold_db, ratio, attack_ms, release_ms, _, knee_db = (
        per_item(v, power.shape[:1], power) for v in settings
    )
    return ballistics(
        _GainComputer.apply(power, threshold_db[:, None], ratio[:, None], knee_db[:, None]),
        torch.ones_like(threshold_db) if gain_state is None else gain_state,
        ms2coef(attack_ms, sample_rate),
        ms2coef(release_ms, sample_rate),
    )


def compressor_block(
    x: torch.Tensor,
    sample_rate: int,
    settings: tuple,
    *,
    gain_state: torch.Tensor | None = None,
    context: tuple[int, int] = (0, 0),
    power: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`compressor` on one block of a longer signal, for rendering it a block at a time.

    The detector's quadrature (Hilbert) transform looks both ways: `context` samples at each end of x
    are only heard by the detector (`DETECTOR_CONTEXT_MS` of them reproduce the whole signal's level to
    within the transform's far tail), and the block's output leaves them out. The gain smoother carries
    on from `gain_state`.

    Args:
        x, sample_rate: as `compressor`; x `[..., C, left + L + right]`.
        settings: `compressor`'s `(threshold_db, ratio, attack_ms, release_ms, makeup_db, knee_db)`.
        gain_state: `[B]` (B the product of the leading dims) the smoothed gain before the block's first
            output sample, without makeup; None: 1, no reduction (the start of a signal).
        context: `(left, right)` samples of x on either side of the block.
        power: `[B, L]` the detector's power (`detector_mean_square`) over the block, when it is already
            known (renders of one signal at different gains share it: it scales by the gain squared);
            None: from x.

    Returns:
        `([..., C, L] compressed block, [B] gain state after its last sample)`.
    """
    left, right = context
    n_samples = x.shape[-1] - left - right
    lead = x.shape[:-2]
    settings = tuple(per_item(v, lead, x) for v in settings)
    makeup_db = settings[4]
    if power is None:
        power = detector_mean_square(x, sample_rate)[:, left : left + n_samples]
    gain = compressor_gain(power, sample_rate, settings, gain_state=gain_state)
    block = x[..., left : left + n_samples]
    return block * (gain * db_to_amp(makeup_db)[:, None]).reshape(*lead, 1, n_samples), gain[:, -1]
