"""White and pink noise stems at a set RMS level."""

import torch

from automix.errors import AutomixError
from automix.synth._dsp import _n_samples
from automix.synth._random import _PINK_STREAM, _WHITE_STREAM, _generator

NOISE_RMS_DBFS = -20.0


def _noise_shape(n_stems: int, duration_s: float, sample_rate: int) -> tuple[int, int, int]:
    if not (isinstance(n_stems, int) and n_stems >= 1):
        raise AutomixError(f"n_stems must be a positive integer, got {n_stems!r}")
    return n_stems, 2, _n_samples(duration_s, sample_rate)


def _set_rms(x: torch.Tensor, rms_dbfs: float) -> torch.Tensor:
    rms = x.square().mean(dim=-1, keepdim=True).sqrt()
    return x * (10.0 ** (rms_dbfs / 20.0) / rms.clamp_min(torch.finfo(x.dtype).tiny))


def white_noise(
    n_stems: int,
    duration_s: float,
    sample_rate: int = 44100,
    *,
    seed: int = 0,
    rms_dbfs: float = NOISE_RMS_DBFS,
) -> torch.Tensor:
    """Gaussian white noise stems `[n_stems, 2, T]` float32, independent L/R, each channel at `rms_dbfs` RMS.

    At the default -20 dBFS, minutes of noise peak near -5 dBFS (5.5 sigma): far from clipping.
    """
    shape = _noise_shape(n_stems, duration_s, sample_rate)
    return _set_rms(torch.randn(shape, generator=_generator(seed, _WHITE_STREAM)), rms_dbfs)


def pink_noise(
    n_stems: int,
    duration_s: float,
    sample_rate: int = 44100,
    *,
    seed: int = 0,
    rms_dbfs: float = NOISE_RMS_DBFS,
) -> torch.Tensor:
    """Pink (1/f power, -3.01 dB/octave) noise stems `[n_stems, 2, T]` float32, independent L/R.

    Gaussian white noise shaped in the frequency domain by |H(f)| = f^-1/2 on every FFT bin (DC removed),
    so the expected power spectrum is exactly 1/f; each channel is then set to `rms_dbfs` RMS.
    """
    shape = _noise_shape(n_stems, duration_s, sample_rate)
    white = torch.randn(shape, generator=_generator(seed, _PINK_STREAM), dtype=torch.float64)
    spectrum = torch.fft.rfft(white)
    bins = torch.arange(spectrum.shape[-1], dtype=torch.float64)
    shaping = torch.where(bins > 0, bins.clamp_min(1.0).rsqrt(), torch.zeros_like(bins))
    pink = torch.fft.irfft(spectrum * shaping, n=shape[-1])
    return _set_rms(pink, rms_dbfs).float()
