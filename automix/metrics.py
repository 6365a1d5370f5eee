"""Differentiable measurements of a mix: loudness, peaks, spectral shape, stereo width, dynamics.

Every function takes `[..., C, T]` tensors (C = 1 or 2, channels-first) and returns a tensor with the
leading dimensions (C and T reduced), finite on silence, with finite gradients there too. The
loudness meters live in `automix.loudness` and are re-exported here.
"""

import torch

from automix.dsp.filters import rfft
from automix.dsp.oversample import (
    RECONSTRUCTION_OVERSAMPLING,
    TAPS_PER_PHASE,
    TRUE_PEAK_OVERSAMPLING,
    reconstruction_envelope,
    upsample,
)
from automix.loudness import (
    BLOCK_S,
    frame_powers,
    gated_quantile,
    integrated_loudness,
    k_weighting,
    loudness_range,
    momentary_loudness,
    short_term_loudness,
    validate_audio,
    window_samples,
)
from automix.units import AMP_FLOOR_DB, amp_to_db, power_to_db

__all__ = [
    "band_energy",
    "crest_factor_db",
    "dynamic_range_db",
    "channel_balance_db",
    "integrated_loudness",
    "k_weighting",
    "loudness_range",
    "momentary_loudness",
    "reconstructed_peak",
    "rms_db",
    "sample_peak",
    "short_term_loudness",
    "spectral_centroid",
    "spectral_shape",
    "stereo_ms_ratio",
    "true_peak",
]

# Samples per chunk of `true_peak` without gradients.
TRUE_PEAK_CHUNK_SAMPLES = 2**18
# Spectral centroid and band energy: docs/design.md, *Contracts* (Hann window, periodic, as scipy/librosa).
STFT_N_FFT = 2048
STFT_HOP = 512
# Frames transformed together (over all rows): ~2 MB of float32 windowed frames, whose spectrum, power
# and magnitude stay in cache through the passes over them.
STFT_BLOCK_FRAMES = 256
# Band edges of `band_energy`: below the low-mid edge is bass (kick, bass guitar fundamentals), above
# the mid-high edge is presence and air; the style targets' `frequency_balance` uses the same bands.
LOW_MID_EDGE_HZ = 250.0
MID_HIGH_EDGE_HZ = 4000.0
# An M/S ratio past this (side 6 dB over mid, the channels' correlation under −0.6) cancels in mono: channels
# largely of opposite polarity (one inverted), never uncorrelated ones (at most 1) nor a master's width.
CANCELS_IN_MONO_MS = 2.0
# Floor of a mean-square that divides (the M/S ratio): the power of AMP_FLOOR_DB, so silence stays finite.
POWER_FLOOR = 10.0 ** (AMP_FLOOR_DB / 10.0)
# `dynamic_range_db`: spread of 400 ms RMS levels, the percentiles EBU Tech 3342 uses for LRA, with
# frames below BS.1770's absolute gate level left out so that silence does not count as dynamics.
DYNAMIC_RANGE_GATE_DBFS = -70.0
DYNAMIC_RANGE_LOW_QUANTILE = 0.10
DYNAMIC_RANGE_HIGH_QUANTILE = 0.95


def _safe_sqrt(value: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not NaN) gradient at 0."""
    if not value.requires_grad:
        return value.sqrt()  # the same values: the masks only keep a gradient finite
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, 1.0)), 0.0)


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 (with zero gradient) where the denominator is 0."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1.0), 0.0)


def true_peak(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """True peak, ITU-R BS.1770-4 Annex 2, in dBTP. Differentiable (max subgradient).

    The largest magnitude over channels and time of the 4x band-limited interpolation
    (`automix.dsp.oversample.upsample`). Annex 2 attenuates by 12.04 dB before oversampling for
    fixed-point headroom; in floating point nothing clips, so that step (and the +12.04 dB after it)
    is left out. 4x is used at every sample rate (Annex 2 allows 2x at 96 kHz and 1x at 192 kHz).
    The signal is taken as zero outside it, so an abrupt start overshoots (Gibbs) as it would on
    playback.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz (the oversampling factor does not depend on it).

    Returns:
        `[...]` true peak in dBTP, never below `AMP_FLOOR_DB`.
    """
    validate_audio(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return amp_to_db(upsample(x, TRUE_PEAK_OVERSAMPLING).abs().amax(dim=(-2, -1)))
    # Without gradients, in time chunks: a whole song's 4x oversampled signal would take gigabytes. Each
    # chunk is interpolated with `TAPS_PER_PHASE` samples of context each side and only its own
    # samples' phases are kept, which equal those of the whole signal's interpolation.
    n_samples, context, factor = x.shape[-1], TAPS_PER_PHASE, TRUE_PEAK_OVERSAMPLING
    peaks = []
    for start in range(0, n_samples, TRUE_PEAK_CHUNK_SAMPLES):
        stop = min(start + TRUE_PEAK_CHUNK_SAMPLES, n_samples)
        first = max(0, start - context)
        phases = upsample(x[..., first : stop + context], factor)
        own = phases[..., (start - first) * factor : (stop - first) * factor]
        peaks.append(own.abs().amax(dim=(-2, -1)))
    return amp_to_db(torch.stack(peaks).amax(dim=0))


def reconstructed_peak(x: torch.Tensor, sample_rate: int, oversample: int = RECONSTRUCTION_OVERSAMPLING):
    """Peak of the band-limited reconstruction (what a DAC or a codec's decoder makes of the samples), in
    dBTP: FFT interpolation sampled `oversample` times per sample (`automix.dsp.oversample.
    reconstruction_envelope`). Every output's ceiling is kept on this meter; `true_peak` is the 4x
    meter of BS.1770-4, which reads up to ~0.7 dB lower near Nyquist. Not differentiable.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz (the oversampling factor does not depend on it).
        oversample: interpolated values per sample.

    Returns:
        `[...]` dBTP, never below `AMP_FLOOR_DB`.
    """
    validate_audio(x)
    peak = reconstruction_envelope(x, oversample).amax(dim=-1)
    return amp_to_db(peak.reshape(x.shape[:-2]))


def sample_peak(x: torch.Tensor) -> torch.Tensor:
    """Largest sample magnitude over channels and time, in dBFS (never below `AMP_FLOOR_DB`).

    Args:
        x: `[..., C, T]` signal.

    Returns:
        `[...]` dBFS.
    """
    return amp_to_db(x.abs().amax(dim=(-2, -1)))


def rms_db(x: torch.Tensor) -> torch.Tensor:
    """RMS over channels and time, in dBFS: 10·log10(mean x²), so a full-scale sine reads -3.01 dBFS.

    Args:
        x: `[..., C, T]` signal.

    Returns:
        `[...]` dBFS, never below `AMP_FLOOR_DB`.
    """
    return power_to_db(x.square().mean(dim=(-2, -1)))


def crest_factor_db(x: torch.Tensor) -> torch.Tensor:
    """Crest factor: sample peak (dBFS) minus RMS (dBFS), in dB; 3.01 dB for a sine, 0 for silence.

    Args:
        x: `[..., C, T]` signal.

    Returns:
        `[...]` dB.
    """
    return sample_peak(x) - rms_db(x)


def dynamic_range_db(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Spread of short-term RMS levels, in dB: 95th minus 10th percentile. Differentiable.

    RMS (over channels, unweighted) in 400 ms frames every 100 ms; frames below
    `DYNAMIC_RANGE_GATE_DBFS` are left out; percentiles as `automix.loudness.gated_quantile` (linear
    interpolation). Like EBU Tech 3342's LRA without K-weighting or a relative gate: a song alternating
    between two levels reads their difference; 0 for a steady signal or silence.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.

    Returns:
        `[...]` dB, in x's dtype.
    """
    validate_audio(x)
    power = frame_powers(x.square().mean(dim=-2), *window_samples(sample_rate, BLOCK_S))
    level = power_to_db(power)
    keep = level.detach() > DYNAMIC_RANGE_GATE_DBFS
    high = gated_quantile(level, keep, DYNAMIC_RANGE_HIGH_QUANTILE)
    low = gated_quantile(level, keep, DYNAMIC_RANGE_LOW_QUANTILE)
    return (high - low).to(x.dtype)


def _mid_spectrum_means(x: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """STFT of the mid signal averaged over frames: `(mean |X| [..., bins], mean |X|² [..., bins],
    bin frequencies [bins] in Hz)`.

    M = (L + R) / 2 (the channel itself for mono). As `torch.stft` with a periodic Hann window, n_fft
    2048, hop 512 and `center=False`: frame k covers samples [512·k, 512·k + 2048), all inside the signal,
    so a sine starting at full level adds no artificial onset (zero padding at the edges, as
    `center=True` does, would spread the onset over the whole spectrum). There are
    1 + (T − 2048) // 512 frames; the last < 512 samples may be left out; a signal shorter than 2048
    samples is zero-padded at its end to one frame. Frames are transformed about `STFT_BLOCK_FRAMES` at
    a time (several rows' when rows are short): a whole song's spectrogram would be four times the
    song's size, and a block that stays in cache is passed over several times at little cost.
    """
    validate_audio(x)
    mid = x.mean(dim=-2)
    *lead, n_samples = mid.shape
    window = torch.hann_window(STFT_N_FFT, periodic=True, dtype=x.dtype, device=x.device)
    padded = torch.nn.functional.pad(mid.reshape(-1, n_samples), (0, max(STFT_N_FFT - n_samples, 0)))
    frames = padded.unfold(-1, STFT_N_FFT, STFT_HOP)  # a view: [rows, frames, n_fft]
    n_rows, n_frames = frames.shape[:2]
    rows_per_block = max(1, STFT_BLOCK_FRAMES // n_frames)
    frames_per_block = max(1, STFT_BLOCK_FRAMES // rows_per_block)
    magnitude_sums, power_sums = [], []
    for row in range(0, n_rows, rows_per_block):
        magnitude_sum = power_sum = 0.0
        for start in range(0, n_frames, frames_per_block):
            # torch.stft's frames, windowed and transformed directly: `rfft`'s backward is a real FFT.
            block = frames[row : row + rows_per_block, start : start + frames_per_block]
            spectrum = rfft(block * window)
            power = spectrum.real.square() + spectrum.imag.square()
            magnitude_sum = magnitude_sum + _safe_sqrt(power).sum(dim=-2)
            power_sum = power_sum + power.sum(dim=-2)
        magnitude_sums.append(magnitude_sum)
        power_sums.append(power_sum)
    magnitude_sum, power_sum = torch.cat(magnitude_sums), torch.cat(power_sums)
    freqs_hz = torch.fft.rfftfreq(STFT_N_FFT, d=1.0 / sample_rate, dtype=x.dtype, device=x.device)
    return (
        (magnitude_sum / n_frames).reshape(*lead, -1),
        (power_sum / n_frames).reshape(*lead, -1),
        freqs_hz,
    )


def _centroid(magnitude: torch.Tensor, freqs_hz: torch.Tensor) -> torch.Tensor:
    return _safe_ratio((freqs_hz * magnitude).sum(dim=-1), magnitude.sum(dim=-1))


def _band_fractions(power: torch.Tensor, freqs_hz: torch.Tensor) -> torch.Tensor:
    low = freqs_hz < LOW_MID_EDGE_HZ
    high = freqs_hz >= MID_HIGH_EDGE_HZ
    bands = torch.stack([low, ~low & ~high, high]).to(power.dtype)  # [3, bins]
    energy = power @ bands.T
    return _safe_ratio(energy, energy.sum(dim=-1, keepdim=True))


def spectral_centroid(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Centroid of the long-term average magnitude spectrum of the mid signal, in Hz. Differentiable.

    docs/design.md, *Spectral centroid*: X̄(f) = mean over STFT frames of |X(f)| (see
    `_mid_spectrum_means`), then Σ f·X̄(f) / Σ X̄(f). Silence reads 0 Hz, with zero gradient.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.

    Returns:
        `[...]` Hz.
    """
    magnitude, _, freqs_hz = _mid_spectrum_means(x, sample_rate)
    return _centroid(magnitude, freqs_hz)


def band_energy(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Fractions of the mid signal's energy below 250 Hz, in 250–4000 Hz, and above 4000 Hz.

    From the STFT power spectrum averaged over frames (see `_mid_spectrum_means`); a bin belongs to
    the band its centre frequency falls in (lower edges inclusive). Differentiable.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.

    Returns:
        `[..., 3]` (low, mid, high) fractions summing to 1; all 0 for silence.
    """
    _, power, freqs_hz = _mid_spectrum_means(x, sample_rate)
    return _band_fractions(power, freqs_hz)


def spectral_shape(x: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(spectral_centroid [...], band_energy [..., 3])` from one STFT: what the two functions return,
    at the cost of one."""
    magnitude, power, freqs_hz = _mid_spectrum_means(x, sample_rate)
    return _centroid(magnitude, freqs_hz), _band_fractions(power, freqs_hz)


def stereo_ms_ratio(x: torch.Tensor) -> torch.Tensor:
    """Side-to-mid ratio RMS(S) / RMS(M), M = (L + R) / 2, S = (L − R) / 2. Differentiable.

    0 for mono (C = 1, or L = R), 1 for uncorrelated L and R of equal level (or one channel alone),
    large for an out-of-phase signal (M's power is floored at `POWER_FLOOR`). Silence reads 0 with
    zero gradient.

    Args:
        x: `[..., C, T]` signal.

    Returns:
        `[...]` ratio (linear).
    """
    validate_audio(x)
    left, right = x[..., 0, :], x[..., -1, :]  # a mono input has left = right, so S = 0
    mid_power = ((left + right) / 2).square().mean(dim=-1)
    side_power = ((left - right) / 2).square().mean(dim=-1)
    # Two roots, not the root of the ratio: at a floored mid the ratio's gradient overflows float32.
    return _safe_sqrt(side_power) / (mid_power + POWER_FLOOR).sqrt()


def channel_balance_db(x: torch.Tensor) -> torch.Tensor:
    """How much louder the left channel is than the right: 10·log10(mean L² / mean R²), dB. Differentiable.

    0 for mono (C = 1) and for silence (both powers are floored at `POWER_FLOOR`), positive for a mix
    that leans left.

    Args:
        x: `[..., C, T]` signal.

    Returns:
        `[...]` dB.
    """
    validate_audio(x)
    left, right = x[..., 0, :], x[..., -1, :]
    left_power = left.square().mean(dim=-1) + POWER_FLOOR
    return 10.0 * torch.log10(left_power / (right.square().mean(dim=-1) + POWER_FLOOR))
