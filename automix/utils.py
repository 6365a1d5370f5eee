"""Small helpers of the public API (docs/design.md, *Public API*)."""

import torch

from automix.synth import white_noise


def create_white_noise_stems(
    n: int, duration: float, sample_rate: int = 44100, seed: int = 0
) -> torch.Tensor:
    """`n` seeded stereo white-noise stems `[n, 2, T]` float32, T = round(duration * sample_rate).

    Independent left and right channels, each at -20 dBFS RMS (see `automix.synth.white_noise`).

    Args:
        n: number of stems.
        duration: seconds.
        sample_rate: Hz.
        seed: the same seed gives the same noise.
    """
    return white_noise(n, duration, sample_rate, seed=seed)
