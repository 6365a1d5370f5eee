"""Loudness per ITU-R BS.1770-4, EBU Tech 3341 and EBU Tech 3342, as differentiable PyTorch ops.

Every function takes a `[..., C, T]` tensor (C = 1 or 2) and its sample rate, and reduces C and T.
K-weighting runs the filter's recursion exactly on a CPU (elsewhere an FFT convolution with its impulse
response to -140 dB), the signal is never clipped, and every block power comes from one float64
cumulative sum of the K-weighted power. Gates are chosen on detached values; the gated mean is then
taken with gradients, so d(LUFS)/d(gain dB) = 1 exactly.
"""

import functools
import math

import numpy as np
import torch

from automix.dsp import recursive
from automix.dsp.filters import (
    apply_biquads,
    check_blockwise,
    impulse_response_length,
    is_long,
    overlap_save,
    segment_fft_length,
)
from automix.errors import AutomixError
from automix.units import power_to_db

# K-weighting, BS.1770-4 Tables 1 and 2. ITU gives coefficients for 48 kHz only; these analogue
# prototype parameters are libebur128's (ebur128.c, ebur128_init_filter), which re-derive the table to
# 1e-15 at 48 kHz by the bilinear transform and give the same curve at any other rate.
PREFILTER_FREQ_HZ = 1681.974450955533
PREFILTER_GAIN_DB = 3.999843853973347
PREFILTER_Q = 0.7071752369554196
PREFILTER_VB_EXPONENT = 0.4996667741545416  # band-pass gain Vb = Vh^exponent
RLB_FREQ_HZ = 38.13547087602444
RLB_Q = 0.5003270373238773

LOUDNESS_OFFSET_DB = -0.691  # BS.1770-4 eq. (2): a 997 Hz full-scale sine in one channel reads -3.01 LUFS
# BS.1770-4 Table 3: G = 1.0 for left, right (and centre); only mono and stereo are supported here.
CHANNEL_WEIGHT = 1.0
BLOCK_S = 0.4  # BS.1770-4 gating block; also the EBU Tech 3341 momentary window
HOP_S = 0.1  # BS.1770-4: 75 % overlap of 400 ms blocks; EBU Tech 3341 meters update every 100 ms
SHORT_TERM_S = 3.0  # EBU Tech 3341 short-term window
ABSOLUTE_GATE_LUFS = -70.0  # BS.1770-4 eq. (5)
RELATIVE_GATE_LU = -10.0  # BS.1770-4 eq. (6)
# Reported when no block passes the absolute gate (silence, or a programme below -70 LUFS
# throughout): BS.1770 leaves the loudness undefined (-inf); the gate is the quietest level it measures.
SILENCE_LUFS = ABSOLUTE_GATE_LUFS
LRA_RELATIVE_GATE_LU = -20.0  # EBU Tech 3342 §2.2
LRA_LOW_QUANTILE = 0.10  # EBU Tech 3342: LRA = L95 - L10 of the gated short-term loudness
LRA_HIGH_QUANTILE = 0.95
SUPPORTED_CHANNELS = (1, 2)
# Hops (100 ms) per block of a long signal metered a block at a time (`blockwise=True`).
METER_BLOCK_HOPS = 60


def validate_audio(x: torch.Tensor) -> tuple[int, int]:
    """Check the `[..., C, T]` layout (C = 1 or 2, T > 0) and return `(C, T)`.

    Raises:
        AutomixError: the tensor is not channels-first mono/stereo audio.
    """
    if x.ndim < 2:
        raise AutomixError(f"expected audio shaped [..., channels, samples], got shape {tuple(x.shape)}")
    n_ch, n_samples = x.shape[-2:]
    if n_ch not in SUPPORTED_CHANNELS:
        raise AutomixError(
            f"expected 1 or 2 channels in dimension -2 of [..., channels, samples], got shape "
            f"{tuple(x.shape)}; transpose (samples, channels) audio, or downmix surround first"
        )
    if n_samples == 0:
        raise AutomixError(f"cannot measure an empty signal (shape {tuple(x.shape)})")
    return n_ch, n_samples


def all_finite(x: torch.Tensor) -> bool:
    """Whether every sample of x is finite: one min/max reduction (a NaN anywhere makes both NaN),
    without the boolean copy of x that `isfinite(x).all()` makes."""
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def k_weighting_coefficients(sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BS.1770-4 K-weighting biquads for `sample_rate`, derived as libebur128 does.

    Returns:
        `(b, a)`, each `[2, 3]` float64: section 0 is the pre-filter (high shelf, +4 dB),
        section 1 the RLB high-pass; a[:, 0] = 1.
    """
    k = math.tan(math.pi * PREFILTER_FREQ_HZ / sample_rate)
    vh = 10.0 ** (PREFILTER_GAIN_DB / 20.0)
    vb = vh**PREFILTER_VB_EXPONENT
    a0 = 1.0 + k / PREFILTER_Q + k * k
    shelf_b = [
        (vh + vb * k / PREFILTER_Q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / PREFILTER_Q + k * k) / a0,
    ]
    shelf_a = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / PREFILTER_Q + k * k) / a0]

    k = math.tan(math.pi * RLB_FREQ_HZ / sample_rate)
    a0 = 1.0 + k / RLB_Q + k * k
    rlb_b = [1.0, -2.0, 1.0]
    rlb_a = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / RLB_Q + k * k) / a0]
    b = torch.tensor([shelf_b, rlb_b], dtype=torch.float64)
    a = torch.tensor([shelf_a, rlb_a], dtype=torch.float64)
    return b, a


@functools.lru_cache(maxsize=8)
@torch.inference_mode(False)  # the cached tensor also serves calls that record gradients
def k_weighting_impulse_response(sample_rate: int) -> torch.Tensor:
    """`[n_taps]` float64 impulse response of the K-weighting cascade, computed by `apply_biquads`,
    up to where it has decayed below `automix.dsp.filters.IR_DECAY_DB` (-140 dB). Cached per rate:
    read it, never write to it."""
    b, a = k_weighting_coefficients(sample_rate)
    impulse = torch.zeros(1, impulse_response_length(a, sample_rate), dtype=torch.float64)
    impulse[0, 0] = 1.0
    return apply_biquads(impulse, b, a, sample_rate)[0]


def k_weighting(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Apply the BS.1770-4 K-weighting filter (pre-filter then RLB high-pass). Differentiable.

    On a CPU (float32/float64), the recursion itself (`automix.dsp.recursive.two_biquads`: float64
    state, exact). Elsewhere, convolution with the cascade's impulse response
    (`k_weighting_impulse_response`, exact to -140 dB) by `automix.dsp.filters.overlap_save`, which
    batches well on a GPU: a float64 impulse response rounded once to x's dtype instead of float32
    coefficients (the RLB high-pass's poles lie within 0.006 of the unit circle).

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.

    Returns:
        `[..., C, T]` in x's dtype: the causal IIR output with zero initial state (as
        `scipy.signal.lfilter`), to within the -140 dB tail of the impulse response.
    """
    if x.device.type == "cpu" and x.dtype in recursive.DTYPES:
        return recursive.two_biquads(x, _k_weighting_sos(sample_rate))
    n_taps = k_weighting_impulse_response(sample_rate).shape[-1]
    n_fft = segment_fft_length(x.shape[-1], n_taps)
    return overlap_save(x, _k_weighting_spectrum(sample_rate, n_fft, x.dtype, x.device), n_fft, n_taps)


@functools.lru_cache(maxsize=8)
def _k_weighting_sos(sample_rate: int) -> np.ndarray:
    """`k_weighting_coefficients` as `[2, 6]` float64 sections (scipy's layout). Cached: read it, never
    write to it."""
    return torch.cat(k_weighting_coefficients(sample_rate), dim=-1).numpy()


@functools.lru_cache(maxsize=16)
@torch.inference_mode(False)  # the cached tensor also serves calls that record gradients
def _k_weighting_spectrum(sample_rate: int, n_fft: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The K-weighting impulse response's rfft of length `n_fft`, in the complex dtype of `dtype`.
    Cached: read it, never write to it."""
    taps = k_weighting_impulse_response(sample_rate).to(device=device, dtype=dtype)
    return torch.fft.rfft(taps, n=n_fft)


def window_samples(sample_rate: int, window_s: float) -> tuple[int, int]:
    """`(window, hop)` in samples for a window of `window_s` seconds moved in 100 ms hops.

    The hop is rounded half-up as libebur128 does (`(rate + 5) / 10`) and the window is a whole number
    of hops, so 400 ms blocks overlap by exactly 75 % at every rate.
    """
    hop = math.floor(sample_rate * HOP_S + 0.5)
    return round(window_s / HOP_S) * hop, hop


def frame_powers(power: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """Mean of `power` over sliding windows of whole hops (`window_samples`), from its sum over each hop.

    Args:
        power: `[..., T]` non-negative (e.g. squared samples, summed over channels).
        window, hop: samples, the window a whole number of hops. A signal shorter than one window is
            measured as one window spanning the whole signal.

    Returns:
        `[..., n_frames]` float64 with `n_frames = (T - window) // hop + 1`; frame j covers
        samples `[j * hop, j * hop + window)`. Each hop is summed in the signal's dtype (as
        `HopEnergyMeter` does), the hops into windows in float64.
    """
    if window % hop:
        raise ValueError(f"a window of {window} samples is not a whole number of {hop}-sample hops")
    n_samples = power.shape[-1]
    if n_samples < window:
        return power.double().mean(dim=-1, keepdim=True)
    return _hop_window_means(_bin_sums(power, hop, n_samples // hop).double(), window, hop)


def _bin_sums(power: torch.Tensor, bin_samples: int, n_bins: int) -> torch.Tensor:
    """`[..., T] -> [..., n_bins]`: the sum over each of the first `n_bins` runs of `bin_samples`."""
    return power[..., : n_bins * bin_samples].unflatten(-1, (n_bins, bin_samples)).sum(dim=-1)


def _hop_window_means(hop_energy: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """Mean powers `[..., n_frames]` of the windows of `window` samples moved a hop at a time, from the
    energy of each hop `[..., n_hops]`."""
    return hop_energy.unfold(-1, window // hop, 1).sum(dim=-1) / window


def weighted_power(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """`[..., C, T] -> [..., T]`: the channel-weighted sum of the squared K-weighted channels (all
    weights are equal), what BS.1770's blocks average."""
    return CHANNEL_WEIGHT * k_weighting(x, sample_rate).square().sum(dim=-2)


def _power_to_lufs(power: torch.Tensor) -> torch.Tensor:
    return LOUDNESS_OFFSET_DB + power_to_db(power)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the last dimension of the entries where `mask` holds (0 where none do)."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=-1)
    return total / mask.sum(dim=-1).clamp_min(1)


def _gates(power: torch.Tensor, relative_gate_lu: float) -> torch.Tensor:
    """Absolute (-70 LUFS) and relative gate over frame powers `[..., n]`, as a detached mask."""
    power = power.detach()
    level = _power_to_lufs(power)
    absolute = level > ABSOLUTE_GATE_LUFS
    threshold = _power_to_lufs(_masked_mean(power, absolute)) + relative_gate_lu
    return absolute & (level > threshold.unsqueeze(-1))


def integrated_loudness(x: torch.Tensor, sample_rate: int, *, blockwise: bool = False) -> torch.Tensor:
    """Gated integrated loudness, ITU-R BS.1770-4, in LUFS. Differentiable.

    400 ms blocks with 75 % overlap (full blocks only, as libebur128), channel weights 1.0, absolute
    gate -70 LUFS, relative gate -10 LU. A mono `[1, T]` input is the loudness of that one channel (as
    pyloudnorm on a 1-D array; BS.1770 does not add 3 dB for dual-mono playback). A signal shorter than
    400 ms is measured as one block. If no block passes the absolute gate (silence included) the
    result is `SILENCE_LUFS` with zero gradient. Every item of a batch is gated independently.

    Args:
        x: `[..., C, T]` signal, C = 1 or 2, any float dtype and device. Not clipped: +20 dBFS reads right.
        sample_rate: Hz.
        blockwise: meter a long signal (`automix.dsp.filters.is_long`) a block of time at a time
            (`HopEnergyMeter`), in memory for one block; the same value, without gradients.

    Raises:
        ValueError: `blockwise` while a gradient is being recorded for x.

    Returns:
        `[...]` loudness in LUFS, in x's dtype.
    """
    validate_audio(x)
    check_blockwise(blockwise, x)
    if blockwise and is_long(x.shape[-1], sample_rate):
        return HopEnergyMeter.of(x, sample_rate).integrated_loudness().to(x.dtype)
    power = frame_powers(weighted_power(x, sample_rate), *window_samples(sample_rate, BLOCK_S))
    return _gated_loudness(power).to(x.dtype)


class HopEnergyMeter:
    """A signal's K-weighted power (`weighted_power`) summed over each 100 ms hop (`window_samples`), fed
    a block of time at a time: every window of BS.1770 and EBU Tech 3341/3342 is a run of whole hops,
    so the loudness measures follow from these sums, in memory for one block rather than several copies
    of the signal. Each block is K-weighted from the end of the block before (the filter's impulse
    response, `k_weighting_impulse_response`): the sums are those of the whole signal.
    """

    def __init__(
        self, lead: torch.Size, n_samples: int, sample_rate: int, device=None, *, bins_per_hop: int = 1
    ):
        self.sample_rate = sample_rate
        self.hop = window_samples(sample_rate, BLOCK_S)[1]
        if self.hop % bins_per_hop:
            raise ValueError(f"bins_per_hop {bins_per_hop} does not divide the hop of {self.hop} samples")
        self.bins_per_hop = bins_per_hop
        self.warmup = k_weighting_impulse_response(sample_rate).shape[-1] - 1
        n_bins = n_samples // self.hop * bins_per_hop
        self.bin_energy = torch.zeros(*lead, n_bins, dtype=torch.float64, device=device)
        self._before = None  # the last `warmup` samples fed, `[..., C, warmup]`
        self._fed = 0

    @classmethod
    def of(cls, x: torch.Tensor, sample_rate: int, *, bins_per_hop: int = 1) -> "HopEnergyMeter":
        """The meter fed all of x `[..., C, T]`, `METER_BLOCK_HOPS` at a time."""
        meter = cls(x.shape[:-2], x.shape[-1], sample_rate, x.device, bins_per_hop=bins_per_hop)
        block = METER_BLOCK_HOPS * meter.hop
        for start in range(0, x.shape[-1], block):
            meter.add(x[..., start : start + block])
        return meter

    def add(self, block: torch.Tensor) -> None:
        """The signal's next `[..., C, L]` samples; L a whole number of hops but for the last block."""
        if self._fed % self.hop:
            raise ValueError("only the last block may end within a hop")
        before = self._before
        if before is None:
            before = block.new_zeros(*block.shape[:-1], self.warmup)
        heard = torch.cat([before, block], dim=-1)
        power = weighted_power(heard, self.sample_rate)[..., self.warmup :]
        bin_samples = self.hop // self.bins_per_hop
        first = self._fed // bin_samples
        # whole hops only
        n_bins = min(power.shape[-1] // self.hop * self.bins_per_hop, self.bin_energy.shape[-1] - first)
        self.bin_energy[..., first : first + n_bins] = _bin_sums(power, bin_samples, n_bins)
        self._before = heard[..., heard.shape[-1] - self.warmup :]
        self._fed += block.shape[-1]

    @property
    def energy(self) -> torch.Tensor:
        """`[..., n_hops]` float64: the K-weighted energy of each whole hop fed."""
        return self.bin_energy.unflatten(-1, (-1, self.bins_per_hop)).sum(-1)

    def integrated_loudness(self) -> torch.Tensor:
        """`integrated_loudness` of the signal fed (at least one 400 ms block): `[...]` LUFS, float64."""
        return integrated_loudness_of_hops(self.energy, self.sample_rate)

    def loudness_range(self) -> torch.Tensor:
        """`loudness_range` of the signal fed (at least one 3 s window of it): `[...]` LU, float64."""
        return _range_of(_window_powers(self.energy, self.sample_rate, SHORT_TERM_S))


def _window_powers(hop_energy: torch.Tensor, sample_rate: int, window_s: float) -> torch.Tensor:
    """Mean powers of the windows of `window_s` moved a hop at a time, from energies per hop."""
    return _hop_window_means(hop_energy, *window_samples(sample_rate, window_s))


def integrated_loudness_of_hops(hop_energy: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """`integrated_loudness` from the K-weighted energy of each 100 ms hop `[..., n_hops]`
    (`HopEnergyMeter.energy`, at least one 400 ms block): `[...]` LUFS, float64."""
    return _gated_loudness(_window_powers(hop_energy, sample_rate, BLOCK_S))


def _gated_loudness(power: torch.Tensor) -> torch.Tensor:
    """BS.1770's gated mean of the 400 ms block powers `[..., n_blocks]`, in LUFS."""
    keep = _gates(power, RELATIVE_GATE_LU)
    measured = keep.any(dim=-1)
    # Both branches of the `where` are finite, so the unselected one passes no NaN into the gradient.
    gated_power = torch.where(measured, _masked_mean(power, keep), 1.0)
    return torch.where(measured, _power_to_lufs(gated_power), SILENCE_LUFS)


def _sliding_loudness(x: torch.Tensor, sample_rate: int, window_s: float) -> torch.Tensor:
    validate_audio(x)
    power = frame_powers(weighted_power(x, sample_rate), *window_samples(sample_rate, window_s))
    return _power_to_lufs(power).to(x.dtype)


def loudness_after_gain(lufs: torch.Tensor, gain_db: torch.Tensor) -> torch.Tensor:
    """Integrated loudness after a gain: `lufs + gain_db`, but silence (`SILENCE_LUFS`: no block passed
    the absolute gate) stays silence rather than becoming a level nothing was measured at."""
    return torch.where(lufs > SILENCE_LUFS, lufs + gain_db, torch.full_like(lufs, SILENCE_LUFS))


def joined_loudness(lufs: torch.Tensor, dim: int) -> torch.Tensor:
    """The loudness of equal-length signals joined in time, from the integrated loudness of each along
    `dim`: the mean of their powers over the ones above silence, `SILENCE_LUFS` where all are silent.
    Differentiable. The integrated loudness of the audible ones joined, but for the blocks across their
    joins and BS.1770's relative gate over the joined blocks: a part resting through some of them reads
    its level where it plays, not a level averaged with the silence floor."""
    audible = lufs > SILENCE_LUFS
    power = torch.where(audible, 10.0 ** ((lufs - LOUDNESS_OFFSET_DB) / 10.0), torch.zeros_like(lufs))
    mean = power.sum(dim) / audible.sum(dim).clamp_min(1)
    return torch.where(audible.any(dim), _power_to_lufs(mean), torch.full_like(mean, SILENCE_LUFS))


def momentary_loudness(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Momentary loudness (400 ms window, ungated), EBU Tech 3341, every 100 ms. Differentiable.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.

    Returns:
        `[..., n_frames]` LUFS; frame j covers `[j * 100 ms, j * 100 ms + 400 ms)`; silence reads
        `LOUDNESS_OFFSET_DB + AMP_FLOOR_DB`. A signal shorter than 400 ms gives one frame over all of it.
    """
    return _sliding_loudness(x, sample_rate, BLOCK_S)


def short_term_loudness(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Short-term loudness (3 s window, ungated), EBU Tech 3341, every 100 ms. Differentiable.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.

    Returns:
        `[..., n_frames]` LUFS; frame j covers `[j * 100 ms, j * 100 ms + 3 s)`. A signal shorter than
        3 s gives one frame over all of it.
    """
    return _sliding_loudness(x, sample_rate, SHORT_TERM_S)


def gated_quantile(values: torch.Tensor, mask: torch.Tensor, quantile: float) -> torch.Tensor:
    """Quantile over the last dimension of the entries where `mask` holds, per item.

    Linear interpolation between order statistics at position `(n - 1) * quantile`, as
    `numpy.percentile`'s default. Differentiable with respect to `values`.

    Args:
        values: `[..., n]`.
        mask: `[..., n]` bool, which entries count.
        quantile: in [0, 1].

    Returns:
        `[...]`; 0 for an item with no entry in the mask.
    """
    # Masked-out entries sort last; the largest finite value keeps every gathered value finite.
    filler = torch.finfo(values.dtype).max
    ordered = torch.sort(torch.where(mask, values, torch.full_like(values, filler)), dim=-1).values
    count = mask.sum(dim=-1, keepdim=True)
    position = (count - 1).clamp_min(0) * quantile
    lower = position.floor().long()
    upper = torch.minimum(lower + 1, (count - 1).clamp_min(0))
    fraction = (position - lower).to(values.dtype)
    low_value, high_value = ordered.gather(-1, lower), ordered.gather(-1, upper)
    result = (low_value + fraction * (high_value - low_value)).squeeze(-1)
    return torch.where(count.squeeze(-1) > 0, result, torch.zeros_like(result))


def loudness_range(x: torch.Tensor, sample_rate: int, *, blockwise: bool = False) -> torch.Tensor:
    """Loudness range (LRA), EBU Tech 3342, in LU. Not differentiable.

    Short-term loudness (3 s windows, 100 ms hop), absolute gate -70 LUFS, relative gate 20 LU below
    the power mean of the absolutely gated values, then the 95th minus the 10th percentile
    (`gated_quantile`: linear interpolation, as the Tech 3342 reference code and pyloudnorm;
    libebur128 takes the nearest rank instead). 0 where nothing passes the gates.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.
        blockwise: meter a long signal (`automix.dsp.filters.is_long`) a block of time at a time
            (`HopEnergyMeter`), in memory for one block; the same value.

    Returns:
        `[...]` LRA in LU, in x's dtype.
    """
    validate_audio(x)
    with torch.no_grad():
        if blockwise and is_long(x.shape[-1], sample_rate):
            return HopEnergyMeter.of(x, sample_rate).loudness_range().to(x.dtype)
        power = frame_powers(weighted_power(x, sample_rate), *window_samples(sample_rate, SHORT_TERM_S))
        return _range_of(power).to(x.dtype)


def _range_of(power: torch.Tensor) -> torch.Tensor:
    """EBU Tech 3342's range of the short-term powers `[..., n]`, in LU."""
    keep = _gates(power, LRA_RELATIVE_GATE_LU)
    level = _power_to_lufs(power)
    return gated_quantile(level, keep, LRA_HIGH_QUANTILE) - gated_quantile(level, keep, LRA_LOW_QUANTILE)
