"""Decibel conversions: the one `db_to_amp` / `amp_to_db` pair of the project."""

import math

import torch

# Floor of amplitude-to-dB conversions: far below 24-bit quantisation (-144 dBFS), so it never
# changes a real measurement, and it keeps silence finite.
AMP_FLOOR_DB = -200.0


def db_to_amp(gain_db: torch.Tensor | float) -> torch.Tensor:
    """Amplitude ratio of a level in dB: 10^(dB/20), as exp (cheaper than a power of 10 on a signal)."""
    return torch.exp(torch.as_tensor(gain_db) * (math.log(10.0) / 20.0))


def amp_to_db(amplitude: torch.Tensor, floor_db: float = AMP_FLOOR_DB) -> torch.Tensor:
    """Level in dB of an amplitude ratio, 20·log10(|a|), never below `floor_db`."""
    floor_amp = 10.0 ** (floor_db / 20.0)
    return 20.0 * torch.log10(amplitude.abs().clamp_min(floor_amp))


def power_to_db(power: torch.Tensor, floor_db: float = AMP_FLOOR_DB) -> torch.Tensor:
    """Level in dB of a power ratio, 10·log10(p), never below `floor_db`."""
    floor_power = 10.0 ** (floor_db / 10.0)
    return 10.0 * torch.log10(power.clamp_min(floor_power))
