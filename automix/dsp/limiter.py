"""A look-ahead, true-peak brick-wall limiter, linked over channels (`limiter`).

Pure, batched and differentiable on `[..., C, T]` tensors. Its peak detector oversamples 4x with two
interpolators (BS.1770-4 Annex 2); a last pass checks the band-limited reconstruction sampled 16x and
limits what still exceeds the ceiling there (`reconstruction_limit`). Its gain's release runs in the
compressor's ballistics (`automix.dsp.dynamics.ballistics`).
"""

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torchcomp import ms2coef

from automix.dsp.dynamics import ballistics, per_item
from automix.dsp.filters import check_blockwise, is_long
from automix.dsp.oversample import (
    TRUE_PEAK_OVERSAMPLING,
    interpolation_filter,
    polyphase_fir,
    reconstruction_envelope,
)
from automix.units import AMP_FLOOR_DB, amp_to_db, db_to_amp

# The output ceiling every mix honours (EBU R128 s1 / streaming practice).
DEFAULT_CEILING_DBTP = -1.0
DEFAULT_LOOKAHEAD_MS = 5.0
# Upper end of the usual 50-100 ms of mastering limiters (and pedalboard's default): the gain recovers
# between drum hits but changes little within one cycle of a bass note, which limits the modulation
# distortion of low frequencies.
DEFAULT_LIMITER_RELEASE_MS = 100.0
# Detection ceiling sits this far below the requested one: it absorbs what the second pass leaves of
# the inter-sample peak changes caused by the gain varying under a meter's reconstruction filter, and
# float32 rounding.
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
# The reconstruction check (`reconstruction_limit`) limits again while the 16x reconstruction exceeds the
# ceiling, at most this many times; what a last pass leaves over it (none on the material tried) is
# scaled down whole.
RECONSTRUCTION_PASSES = 3
# Samples per row whose oversampled phases the peak detector holds at once.
PEAK_CHUNK_SAMPLES = 2**18
# The limiter gain of a long signal limited block-wise (`limiter(..., blockwise=True)`) is computed this
# many samples at a time.
LIMITER_BLOCK_SAMPLES = 2**18
# Amplitude floor of the limiter's peak detector (silence), as in `amp_to_db`: the gain divides by it.
PEAK_FLOOR = 10.0 ** (AMP_FLOOR_DB / 20.0)


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
    maxima of strided halves, which run faster than `amax` over a short last dimension."""
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
    blockwise: bool = False,
    reconstruct: bool = True,
    return_gain: bool = False,
):
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
    6. With `reconstruct`, the band-limited reconstruction of the result sampled 16x
       (`reconstruction_limit`): where it still exceeds the ceiling (content near Nyquist, which the 4x
       detector under-reads), steps 2-4 again on that envelope.
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
        blockwise: the gain of a long signal (`automix.dsp.filters.is_long`) is computed
            `LIMITER_BLOCK_SAMPLES` at a time (`_limiter_gain_by_block`), in memory for one block; the
            same output, without gradients.
        reconstruct: step 6, so that the reconstruction, not only the 4x meter, stays under the
            ceiling; renders whose peaks nobody hears (a search's) leave it out.
        return_gain: also return the gain applied.

    Returns:
        `[..., C, T]` limited signal, true peak ≤ `ceiling_dbtp` (with `reconstruct`, by the 16x
        reconstruction too); with `return_gain`, `(signal, gain [..., T])`, the gain linear, ≤ 1.

    Raises:
        ValueError: `blockwise` while a gradient is being recorded for x or the settings.
    """
    check_blockwise(blockwise, x, ceiling_dbtp, release_ms)
    n_samples = x.shape[-1]
    lead = x.shape[:-2]
    window, ceiling, release_coef = _gain_law(x, sample_rate, ceiling_dbtp, lookahead_ms, release_ms)
    limiter_gain = _limiter_gain_by_block if blockwise and is_long(n_samples, sample_rate) else _limiter_gain
    y, total = x, None
    for _ in range(LIMITER_PASSES):
        gain = limiter_gain(y, ceiling, release_coef, window).reshape(*lead, 1, n_samples)
        # Without gradients the second pass scales the first's output in place, and the first x itself
        # where it is the caller's temporary (`overwrite`): signal-sized copies less.
        in_place = not torch.is_grad_enabled() and (y is not x or overwrite)
        y = y.mul_(gain) if in_place else y * gain
        total = gain if total is None else total * gain
        if not (gain < 1).any():
            break  # y is unchanged (gain exactly 1), so a further pass would find the same
    if reconstruct:
        y, fix, _ = _reconstruction_passes(y, ceiling, release_coef, window, in_place=y is not x or overwrite)
        total = total if fix is None else total * fix
    return (y, total[..., 0, :]) if return_gain else y


def reconstruction_limit(
    x: torch.Tensor,
    sample_rate: int,
    *,
    ceiling_dbtp=DEFAULT_CEILING_DBTP,
    lookahead_ms: float = DEFAULT_LOOKAHEAD_MS,
    release_ms=DEFAULT_LIMITER_RELEASE_MS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The limiter's last step on its own: `x` `[..., C, T]` with its band-limited reconstruction
    (`automix.dsp.oversample.reconstruction_envelope`, 16x) brought to `ceiling_dbtp` less
    `TRUE_PEAK_MARGIN_DB`, by the limiter's gain law (look-ahead ramp, release) on that envelope. For a
    signal already limited without `reconstruct` (a search's renders), so that the one kept honours the
    ceiling as a DAC reconstructs it. The gain comes from the envelope without a gradient: to autograd
    it is a constant.

    Returns:
        `(y, peak)`: y (x itself where nothing exceeds the ceiling) and its reconstructed peak `[...]`
        dBTP (`automix.metrics.reconstructed_peak`).
    """
    window, ceiling, release_coef = _gain_law(x, sample_rate, ceiling_dbtp, lookahead_ms, release_ms)
    y, _, peak = _reconstruction_passes(x, ceiling, release_coef, window, in_place=False)
    return y, amp_to_db(peak.reshape(x.shape[:-2]))


def _gain_law(x, sample_rate: int, ceiling_dbtp, lookahead_ms: float, release_ms):
    """`(window, ceiling [B, 1], release_coef [B])` of the limiter's gain law for x `[..., C, T]`: the
    look-ahead in samples (at least 1), the linear ceiling less `TRUE_PEAK_MARGIN_DB`, the release's
    one-pole coefficient."""
    lead = x.shape[:-2]
    window = max(1, round(lookahead_ms * sample_rate / 1000.0))
    ceiling = db_to_amp(per_item(ceiling_dbtp, lead, x) - TRUE_PEAK_MARGIN_DB)[:, None]
    return window, ceiling, ms2coef(per_item(release_ms, lead, x), sample_rate)


def _reconstruction_passes(y, ceiling, release_coef, window, *, in_place: bool):
    """`(y, gain [..., 1, T] or None, peak [B])`: y limited on its 16x reconstruction
    (`RECONSTRUCTION_PASSES`), the gain applied (None: none was needed) and the result's reconstructed
    peak, linear. In place on y where `in_place` and no gradient is recorded."""
    lead, n_samples = y.shape[:-2], y.shape[-1]
    total = None
    for attempt in range(RECONSTRUCTION_PASSES + 1):
        with torch.no_grad():
            envelope = reconstruction_envelope(y)  # [B, T]
            result_peak = envelope.amax(dim=-1)
            peak = _sliding_max(F.pad(envelope, (DETECTION_SPREAD_SAMPLES, 0)), DETECTION_SPREAD_SAMPLES + 1)
            over = peak > ceiling
            if not over.any():
                break
            if attempt < RECONSTRUCTION_PASSES:
                gain = limiter_gain_of_peaks(peak, ceiling.detach(), release_coef.detach(), window)
            else:  # what the passes left over the ceiling: the whole item scaled under it
                scale = (ceiling / peak.amax(dim=-1, keepdim=True)).clamp_max(1.0)
                gain = scale.expand(-1, n_samples)
                result_peak = result_peak * scale[:, 0]  # a whole-item gain scales the peak exactly
        gain = gain.reshape(*lead, 1, n_samples)
        keep_graph = torch.is_grad_enabled() and y.requires_grad
        y = y.mul_(gain) if in_place and not keep_graph else y * gain
        in_place = True  # y is now this function's own
        total = gain if total is None else total * gain
    return y, total, result_peak
