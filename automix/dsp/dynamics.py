"""Dynamics: a feed-forward RMS compressor and a look-ahead true-peak brick-wall limiter.

Both are pure, batched and differentiable functions on `[..., C, T]` tensors. Their recursive parts
(attack/release ballistics) run in `torchcomp.core.compressor_core`: a one-pole smoother that uses its
attack coefficient while its input is below its state and its release coefficient otherwise, with a
numba CPU / CUDA forward and an exact custom backward.

Time constants follow torchcomp's `ms2coef`: a time in ms is the 10-90 % rise time of the one-pole's
step response (coefficient 1 - exp(-2200 / (ms · sample_rate)), since ln 9 ≈ 2.2).
"""

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torchcomp import ms2coef
from torchcomp.core import CompressorFunction, compressor_core, compressor_kernel

from automix.dsp.filters import by_block, fft_length, spectral_filter
from automix.dsp.oversample import TRUE_PEAK_OVERSAMPLING, interpolation_filter, polyphase_fir
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
# Below this much knee width (dB) the knee is hard; only keeps the quadratic knee's division finite.
MIN_KNEE_DB = 1e-6
DEFAULT_KNEE_DB = 6.0

DEFAULT_CEILING_DBTP = -1.0
DEFAULT_LOOKAHEAD_MS = 5.0
# Upper end of the usual 50-100 ms of mastering limiters (and pedalboard's default): the gain recovers
# between drum hits but changes little within one cycle of a bass note, which limits the modulation
# distortion of low frequencies.
DEFAULT_LIMITER_RELEASE_MS = 100.0
# Detection ceiling sits this far below the requested one: it absorbs what the second pass leaves of
# the inter-sample peak changes caused by the gain varying under a meter's reconstruction filter
# (≤ 0.012 dB in the tests, look-ahead down to 0.1 ms), and float32 rounding.
TRUE_PEAK_MARGIN_DB = 0.02
# Second detector interpolator: a short Kaiser-windowed sinc with a wide transition band (the design of
# scipy.signal.resample_poly's default: 10 zero crossings a side, beta 5). Meters of this kind read up to
# ~0.1 dB above a sharp interpolator on content near Nyquist (dense noise, hats), because part of the
# spectral image passes their transition band; detecting with the larger of the two keeps the output
# under the ceiling for both kinds of meter.
SHORT_METER_ZERO_CROSSINGS = 10
SHORT_METER_KAISER_BETA = 5.0
# Each sample's required gain also covers the inter-sample interval before it, so that the gain, which
# changes between samples, is low enough on both sides of every detected inter-sample peak.
DETECTION_SPREAD_SAMPLES = 1
# The gain computed on x is applied, then computed again on the result and applied: the first pass's
# gain changes move inter-sample peaks (most with a short look-ahead); the second pass's changes are
# tiny, and so are the peak movements they cause. Where the first pass already meets the ceiling, the
# second pass's gain is exactly 1; if the first pass's gain is exactly 1 everywhere (nothing over the
# ceiling), the second pass would see the same signal, so it is skipped.
LIMITER_PASSES = 2
# Samples per row whose oversampled phases the peak detector holds at once.
PEAK_CHUNK_SAMPLES = 2**18
# The limiter gain of a long signal without gradients (`automix.dsp.filters.by_block`) is computed this
# many samples at a time.
LIMITER_BLOCK_SAMPLES = 2**18
# Amplitude floor of the limiter's peak detector (silence), as in `amp_to_db`: the gain divides by it.
PEAK_FLOOR = 10.0 ** (AMP_FLOOR_DB / 20.0)


def per_item(value, lead: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """A parameter broadcast to the leading dims `lead` and flattened to `[B]`."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).broadcast_to(lead).reshape(-1)


def _hilbert(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Hilbert transform along the last axis (signal taken as zero outside `[0, T)`), by FFT.

    Zero padding of `HILBERT_PAD_MS` keeps the circular wrap-around that far from the signal.
    """
    n_samples = x.shape[-1]
    n_fft = fft_length(n_samples + round(HILBERT_PAD_MS * sample_rate / 1000.0))
    # -j on positive frequencies; DC and Nyquist have no quadrature component.
    multiplier = torch.zeros(n_fft // 2 + 1, dtype=x.dtype.to_complex(), device=x.device)
    multiplier[1 : (n_fft + 1) // 2] = -1j
    return spectral_filter(x, multiplier, n_fft)


class _OnePole(torch.autograd.Function):
    """Linear one-pole low-pass `y[t] = (1 − c)·y[t − 1] + c·x[t]`, `y[−1] = 0`, along the rows of
    `[B, T]`, with a constant coefficient c `[B]` (not differentiated).

    Runs in `compressor_core` (equal attack and release coefficients make it linear). The adjoint of a
    causal linear recursion is the same recursion backwards in time, so the backward is one more pass
    on the time-reversed gradient; torchcomp's general backward also differentiates the coefficients
    and costs several times more.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(coef)
        return compressor_core(x, torch.zeros_like(coef), coef, coef)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (coef,) = ctx.saved_tensors
        return compressor_core(grad.flip(-1), torch.zeros_like(coef), coef, coef).flip(-1), None


class _Ballistics(CompressorFunction):
    """torchcomp's `compressor_core` with gradients, without its forward-mode saves: torchcomp's
    `setup_context` also calls `ctx.save_for_forward` with the function's own output, which ties the
    output and its graph node in a cycle that Python's collector cannot see, so every call kept its
    inputs and output alive for the life of the process (~130 MB a call on 8 x 2M samples, measured,
    with or without a backward pass). The reverse-mode gradients are torchcomp's own."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, zi, at, rt = inputs
        y, at_mask = output
        ctx.mark_non_differentiable(at_mask)
        ctx.save_for_backward(x, y, zi, at, rt, at_mask)


def cache_compiled_kernels() -> bool:
    """Keep torchcomp's numba kernel (`compressor_core` on CPU) compiled on disk, in numba's cache: it is
    compiled again in every process otherwise, ~0.6 s a dtype before the first compressor runs
    (measured). The command-line tools and training call it.

    Returns:
        True when caching is on; False where numba finds no folder it may write (it compiles as before).
    """
    try:
        compressor_kernel.enable_caching()
    except RuntimeError:
        return False
    return True


def ballistics(x: torch.Tensor, zi: torch.Tensor, at: torch.Tensor, rt: torch.Tensor) -> torch.Tensor:
    """`torchcomp.core.compressor_core` (a one-pole smoother of `[B, T]` from `zi` `[B]`, with the
    attack coefficient `at` `[B]` while its input is below its state, the release `rt` otherwise),
    differentiable w.r.t. all four, and freed with its output (`_Ballistics`)."""
    return _Ballistics.apply(x, zi, at, rt)[0]


def detector_mean_square(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
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

    Returns:
        `[B, T]` mean square (linear power), B the product of the leading dims.
    """
    n_ch, n_samples = x.shape[-2:]
    flat = x.reshape(-1, n_ch, n_samples)
    quadrature = _hilbert(flat, sample_rate)
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

    Written as (1/R − 1)·(q + max(0, x − T − W/2)), q = (clamp(x − T, ±W/2) + W/2)² / (2W): the three
    pieces without selecting among them (q is 0 below the knee and W/2 above it), in fewer passes over
    a signal.
    """
    over_db = level_db - threshold_db
    half_knee = knee_db.clamp_min(MIN_KNEE_DB) / 2
    into_knee = (torch.clamp(over_db, -half_knee, half_knee) + half_knee).square() / (4 * half_knee)
    return (1.0 / ratio - 1.0) * (into_knee + F.relu(over_db - half_knee))


class _GainComputer(torch.autograd.Function):
    """The compressor's target gain, linear, from its detector's power `[B, T]` and its threshold (dB),
    ratio and knee (dB) `[B, 1]`: `soft_knee_gain_db` of the power in dB, as an amplitude.

    One node that keeps only its inputs: autograd's chain of the elementwise steps kept seven
    signal-sized tensors (~90 MB of the graph of Adam's 9-s, 8-stem excerpt batch). The backward
    recomputes the level and differentiates the knee in closed form.
    """

    @staticmethod
    def forward(ctx, power, threshold_db, ratio, knee_db):
        ctx.save_for_backward(power, threshold_db, ratio, knee_db)
        return db_to_amp(soft_knee_gain_db(power_to_db(power), threshold_db, ratio, knee_db))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        power, threshold_db, ratio, knee_db = ctx.saved_tensors
        floor = 10.0 ** (AMP_FLOOR_DB / 10.0)
        level_db = power_to_db(power)
        gain_db = soft_knee_gain_db(level_db, threshold_db, ratio, knee_db)
        grad_db = grad * db_to_amp(gain_db) * (math.log(10.0) / 20.0)
        # The knee's regions as `soft_knee_gain_db` draws them, and its derivatives in each.
        over = level_db - threshold_db
        slope = 1.0 / ratio - 1.0
        knee = knee_db.clamp_min(MIN_KNEE_DB)
        above, below = 2 * over > knee_db, 2 * over < -knee_db
        inside = ~above & ~below
        u = over + knee / 2  # how far into the knee, dB
        zero = torch.zeros_like(over)
        by_over = grad_db * torch.where(above, slope, torch.where(inside, slope * u / knee, zero))
        by_slope = grad_db * torch.where(above, over, torch.where(inside, u.square() / (2 * knee), zero))
        by_knee = grad_db * torch.where(inside, slope * u * (knee - u) / (2 * knee.square()), zero)
        grad_power = torch.where(
            power >= floor, by_over * (10.0 / math.log(10.0)) / power.clamp_min(floor), zero
        )
        grad_threshold = -by_over.sum(-1, keepdim=True)
        grad_ratio = -by_slope.sum(-1, keepdim=True) / ratio.square()
        grad_knee = by_knee.sum(-1, keepdim=True) * (knee_db >= MIN_KNEE_DB)
        return grad_power, grad_threshold, grad_ratio, grad_knee


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
    threshold_db, ratio, attack_ms, release_ms, makeup_db, knee_db = (per_item(v, lead, x) for v in settings)
    if power is None:
        power = detector_mean_square(x, sample_rate)[:, left : left + n_samples]
    gain = ballistics(
        _GainComputer.apply(power, threshold_db[:, None], ratio[:, None], knee_db[:, None]),
        torch.ones_like(threshold_db) if gain_state is None else gain_state,
        ms2coef(attack_ms, sample_rate),
        ms2coef(release_ms, sample_rate),
    )
    block = x[..., left : left + n_samples]
    return block * (gain * db_to_amp(makeup_db)[:, None]).reshape(*lead, 1, n_samples), gain[:, -1]


def _short_kaiser_branches(device, dtype) -> tuple[torch.Tensor, int]:
    """The short Kaiser interpolator (`SHORT_METER_*`) as `(branches [factor, taps], left)` for
    `polyphase_fir`.

    Phase p of sample n estimates the signal at n + p/4 (zero outside `[0, T)`), as a polyphase
    form of zero-stuffing followed by the low-pass FIR h of 2·factor·zero_crossings + 1 taps.
    """
    factor, half = TRUE_PEAK_OVERSAMPLING, SHORT_METER_ZERO_CROSSINGS
    n_taps = 2 * factor * half + 1
    offset = torch.arange(n_taps, device=device, dtype=torch.float64) - factor * half
    window = torch.kaiser_window(
        n_taps, periodic=False, beta=SHORT_METER_KAISER_BETA, dtype=torch.float64, device=device
    )
    taps = torch.sinc(offset / factor) * window
    taps = F.pad(factor * taps / taps.sum(), (0, factor - 1))  # DC gain `factor`, as scipy's firwin · up
    # Phase p takes taps p + factor·q, q = 0..2·half, on x[n + half − q]; the FIR correlates.
    return taps.reshape(2 * half + 1, factor).T.flip(-1).to(dtype), half


def _detector_branches(device, dtype) -> tuple[torch.Tensor, int]:
    """Both detector interpolators (the project's `upsample` and the short Kaiser one) on one tap grid,
    `(branches [2 · factor, taps], left)`, so that a single `polyphase_fir` runs them together."""
    interpolators = (
        interpolation_filter(TRUE_PEAK_OVERSAMPLING, device=device, dtype=dtype),
        _short_kaiser_branches(device, dtype),
    )
    left = max(b_left for _, b_left in interpolators)
    n_taps = left + max(b.shape[-1] - b_left for b, b_left in interpolators)
    aligned = [F.pad(b, (left - b_left, n_taps - b.shape[-1] - left + b_left)) for b, b_left in interpolators]
    return torch.cat(aligned), left


def _sliding_max(x: torch.Tensor, window: int) -> torch.Tensor:
    """Maximum of every `window` consecutive samples, `[..., T] -> [..., T − window + 1]`.

    By doubling: after each step sample n holds the maximum over `[n, n + span)`, and two overlapping
    spans cover any window, so it costs O(T · log window) (max_pool1d costs O(T · window) and keeps
    indices for its backward). Ties go to the earlier span, so the gradient reaches the first maximum
    of each window, as max_pool1d's does.
    """
    span = 1
    while 2 * span <= window:
        x = _first_max(x[..., :-span], x[..., span:])
        span *= 2
    if span < window:
        x = _first_max(x[..., : span - window], x[..., window - span :])
    return x


def _first_max(earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum whose gradient goes to `earlier` on ties (torch.maximum splits it)."""
    if not (earlier.requires_grad or later.requires_grad):
        return torch.maximum(earlier, later)  # the same values, in one pass instead of two
    return torch.where(earlier >= later, earlier, later)


class _PeakOverPhases(torch.autograd.Function):
    """`[B, C, T] -> [B, T]`: max over channels and both detector interpolators' phases of |phase|,
    the larger of the two interpolators' estimates per phase (`_detector_branches`). Sparse backward.

    The limiter's gradient reaches the envelope only at the samples that set its gain (over the ceiling
    and the maximum of their look-ahead window), a few per cent of them. The backward recomputes the
    phases at those samples only, instead of keeping and differentiating all T · C · 8 of them. A tie
    shares the gradient as autograd would: half each between the interpolators (torch.maximum), evenly
    among channels and phases (amax).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, branches: torch.Tensor, left: int) -> torch.Tensor:
        ctx.save_for_backward(x, branches)
        ctx.left = left
        # In time chunks: the phases of a whole song (8 per sample and channel) would take gigabytes.
        n_samples, n_taps = x.shape[-1], branches.shape[-1]
        padded = F.pad(x, (left, n_taps - 1 - left))
        envelope = x.new_empty(x.shape[0], n_samples)
        for start in range(0, n_samples, PEAK_CHUNK_SAMPLES):
            stop = min(start + PEAK_CHUNK_SAMPLES, n_samples)
            phases = polyphase_fir(padded[..., start : stop + n_taps - 1], branches, 0)[
                ..., : stop - start, :
            ]
            envelope[:, start:stop] = _halving_max(phases.abs_()).amax(dim=1)
        return envelope

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, branches = ctx.saved_tensors
        _, n_ch, n_samples = x.shape
        n_taps = branches.shape[-1]
        item, time = grad.nonzero(as_tuple=True)  # [K] samples that receive a gradient
        padded = F.pad(x, (ctx.left, n_taps - 1 - ctx.left))
        windows = padded.unfold(-1, n_taps, 1)[item, :, time]  # [K, C, taps]: the inputs of their phases
        phases = windows @ branches.T  # [K, C, 2 · factor]
        sharp, short = phases.abs().unflatten(-1, (2, -1)).unbind(dim=-2)
        larger = torch.maximum(sharp, short)
        at_peak = larger == larger.amax(dim=(1, 2), keepdim=True)
        share = at_peak / at_peak.sum(dim=(1, 2), keepdim=True)
        to_sharp = (sharp > short) + 0.5 * (sharp == short)
        weights = torch.cat([share * to_sharp, share * (1 - to_sharp)], dim=-1)
        grad_windows = (grad[item, time][:, None, None] * weights * phases.sgn()) @ branches  # [K, C, taps]
        # Scatter-add every window's gradient back onto the padded signal.
        row = (item[:, None] * n_ch + torch.arange(n_ch, device=x.device)) * padded.shape[-1]  # [K, C]
        index = row[..., None] + time[:, None, None] + torch.arange(n_taps, device=x.device)
        grad_padded = (
            torch.zeros_like(padded).flatten().index_add_(0, index.flatten(), grad_windows.flatten())
        )
        return grad_padded.view_as(padded)[..., ctx.left : ctx.left + n_samples], None, None


def _halving_max(x: torch.Tensor) -> torch.Tensor:
    """Maximum over the last dimension (a power of two: the detector's phases) by halving it, elementwise
    maxima of strided halves: ~2x faster than `amax` over a short last dimension (measured)."""
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        x = torch.maximum(x[..., :half], x[..., half:])
    return x[..., 0]


def _true_peak_envelope(x: torch.Tensor) -> torch.Tensor:
    """Linked true-peak envelope `[B, T]`: max |.| over the 4x-oversampled phases and channels.

    Takes the larger of two interpolators' estimates (the project's `upsample` and a short Kaiser
    one), computed together by one `polyphase_fir` (`_PeakOverPhases`). Sample n covers the
    interpolated instants in [n − DETECTION_SPREAD_SAMPLES, n + 1).
    """
    n_ch, n_samples = x.shape[-2:]
    branches, left = _detector_branches(x.device, x.dtype)
    peak = _PeakOverPhases.apply(x.reshape(-1, n_ch, n_samples), branches, left)
    return _sliding_max(F.pad(peak, (DETECTION_SPREAD_SAMPLES, 0)), DETECTION_SPREAD_SAMPLES + 1)


def _required_reduction(peak: torch.Tensor, ceiling: torch.Tensor) -> torch.Tensor:
    """The gain reduction `1 − min(1, c / p)` each peak needs to meet the ceiling c."""
    return F.relu(peak - ceiling) / peak.clamp_min(PEAK_FLOOR)


def _limiter_gain(
    x: torch.Tensor, ceiling: torch.Tensor, release_coef: torch.Tensor, window: int
) -> torch.Tensor:
    """Gain `[B, T]` that keeps the detected true peak of `x · gain` at or below `ceiling` `[B, 1]`."""
    return limiter_gain_of_peaks(_true_peak_envelope(x), ceiling, release_coef, window)


def limiter_gain_of_peaks(
    peak: torch.Tensor, ceiling: torch.Tensor, release_coef: torch.Tensor, window: int
) -> torch.Tensor:
    """Steps 2-3 of `limiter`: the gain `[B, T]` from a peak envelope `[B, T]`, a linear ceiling `[B, 1]`,
    a release coefficient `[B]` per step and a look-ahead of `window` steps."""
    reduction = _required_reduction(peak, ceiling)
    # Padded on both sides: the W − 1 samples before the start also look ahead into the signal, so the
    # moving average at the first samples covers windows that see them.
    ahead = _sliding_max(F.pad(reduction, (window - 1, window - 1)), window)  # [B, T + W − 1], from −(W − 1)
    # Reduction rises instantly (coefficient 1) and falls with the release time.
    held = ballistics(ahead, torch.zeros_like(release_coef), release_coef, torch.ones_like(release_coef))
    return 1.0 - _moving_average(held, window)


def _limiter_gain_by_block(
    x: torch.Tensor, ceiling: torch.Tensor, release_coef: torch.Tensor, window: int
) -> torch.Tensor:
    """`_limiter_gain`, `LIMITER_BLOCK_SAMPLES` of its look-ahead sequence at a time, without gradients:
    the same gain, in memory for one block rather than several copies of the signal.

    Index i runs over the held reduction of `_limiter_gain` (i = n + W − 1 for sample n): the reduction
    it looks ahead over is detected on the block's samples plus the detector's reach on either side; the
    release smoother carries on from the block before, and the moving average over the past W values
    takes the last W − 1 of them along.
    """
    n_samples = x.shape[-1]
    branches, left = _detector_branches(x.device, x.dtype)
    reach = (left + DETECTION_SPREAD_SAMPLES, branches.shape[-1] - 1 - left)  # samples a peak reads
    gain = x.new_empty(x.shape[0], n_samples)
    state = torch.zeros_like(release_coef)
    earlier = x.new_zeros(x.shape[0], 0)  # the held reduction at the W − 1 indices before the block
    for start in range(0, n_samples + window - 1, LIMITER_BLOCK_SAMPLES):
        stop = min(start + LIMITER_BLOCK_SAMPLES, n_samples + window - 1)
        first, last = max(0, start - window + 1), min(n_samples, stop)  # the reduction looked over
        heard_from = max(0, first - reach[0])
        heard = x[..., heard_from : min(n_samples, last + reach[1])]
        peak = _true_peak_envelope(heard)[:, first - heard_from :][:, : last - first]
        reduction = _required_reduction(peak, ceiling)
        reduction = F.pad(reduction, (first - (start - window + 1), stop - last))  # zero outside [0, T)
        held = ballistics(_sliding_max(reduction, window), state, release_coef, torch.ones_like(state))
        state = held[:, -1]
        joined = torch.cat([earlier, held], dim=-1)
        averaged = 1.0 - _moving_average(joined, window)  # sample n = start − len(earlier) + j
        gain[:, start - earlier.shape[-1] : start - earlier.shape[-1] + averaged.shape[-1]] = averaged
        earlier = joined[:, joined.shape[-1] - (window - 1) :]
    return gain


def _moving_average(x: torch.Tensor, window: int) -> torch.Tensor:
    """Means of `window` consecutive samples, `[B, T + window − 1] -> [B, T]`, in O(T).

    By differences of a float64 running sum: exact zeros stay exactly zero (a gain of exactly 1), and
    the rounding error (~1e-16 · T) is far below the limiter's margin.
    """
    running = F.pad(torch.cumsum(x.double(), dim=-1), (1, 0))
    return ((running[:, window:] - running[:, :-window]) / window).to(x.dtype)


def limiter(
    x: torch.Tensor,
    sample_rate: int,
    *,
    ceiling_dbtp=DEFAULT_CEILING_DBTP,
    lookahead_ms: float = DEFAULT_LOOKAHEAD_MS,
    release_ms=DEFAULT_LIMITER_RELEASE_MS,
    overwrite: bool = False,
) -> torch.Tensor:
    """Look-ahead true-peak brick-wall limiter, linked over channels, time-aligned with its input.

    1. Detection: 4x band-limited oversampling (BS.1770-4 Annex 2), the larger of two interpolators,
       max over phases and channels → peak envelope p[n], also covering the interval before each
       sample (`DETECTION_SPREAD_SAMPLES`).
    2. Required reduction d[n] = 1 − min(1, c / p[n]), c the ceiling less `TRUE_PEAK_MARGIN_DB`.
    3. Sliding maximum of d over the next W samples (W = look-ahead), release smoothing with instant
       attack (torchcomp; never below its input), then a W-sample moving average over the past. Each
       averaged value comes from a window that contains n, so the reduction is ≥ d[n] everywhere: the
       gain never exceeds c / p[n], and it ramps down over W samples before a peak.
    4. The gain multiplies x itself: the look-ahead is the non-causal window of step 3, so the output
       has x's length and alignment (a real-time version would delay x and report W samples of latency).
    5. Steps 1-4 run again on the result (`LIMITER_PASSES`) to catch the small inter-sample peak
       changes that the first gain's variation causes; not when the first gain is exactly 1
       everywhere, as the result would be the same.
    Where no reduction is needed nearby (look-ahead and release) the gain is exactly 1: the signal
    passes unchanged.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.
        ceiling_dbtp: output true-peak ceiling, dBTP; tensor `[...]` or broadcastable; differentiable.
        lookahead_ms: look-ahead and gain-ramp length, ms. Structural, not differentiable: rounded to
            W ≥ 1 samples.
        release_ms: 10-90 % recovery time of the gain reduction, ms; differentiable.
        overwrite: x is the caller's temporary: without gradients, it is limited in place.

    Returns:
        `[..., C, T]` limited signal, true peak ≤ `ceiling_dbtp`.
    """
    n_samples = x.shape[-1]
    lead = x.shape[:-2]
    window = max(1, round(lookahead_ms * sample_rate / 1000.0))
    ceiling = db_to_amp(per_item(ceiling_dbtp, lead, x) - TRUE_PEAK_MARGIN_DB)[:, None]
    release_coef = ms2coef(per_item(release_ms, lead, x), sample_rate)
    limiter_gain = _limiter_gain_by_block if by_block(n_samples, sample_rate) else _limiter_gain
    y = x
    for _ in range(LIMITER_PASSES):
        gain = limiter_gain(y, ceiling, release_coef, window).reshape(*lead, 1, n_samples)
        # Without gradients the second pass scales the first's output in place, and the first x itself
        # where it is the caller's temporary (`overwrite`): signal-sized copies less.
        in_place = not torch.is_grad_enabled() and (y is not x or overwrite)
        y = y.mul_(gain) if in_place else y * gain
        if not (gain < 1).any():
            break  # y is unchanged (gain exactly 1), so a further pass would find the same
    return y
