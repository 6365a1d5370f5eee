"""Gain, constant-power pan and mid/side width on `[..., C, T]` signals."""

import math

import torch

from automix.units import db_to_amp


def gain(x: torch.Tensor, *, gain_db: torch.Tensor | float) -> torch.Tensor:
    """Scale `[..., C, T]` by `gain_db` (`[...]` or scalar)."""
    return x * db_to_amp(torch.as_tensor(gain_db, dtype=x.dtype, device=x.device))[..., None, None]


def pan(x: torch.Tensor, *, pan: torch.Tensor | float) -> torch.Tensor:
    """Constant-power pan law, -3 dB at the centre (sin/cos law).

    Args:
        x: `[..., C, T]`, C = 1 or 2; a mono input is spread to both channels, a stereo input has its
            left channel scaled by the left gain and its right by the right gain (a balance control).
        pan: `[...]` or scalar in [-1, 1]; -1 is hard left, 0 centre, +1 hard right.

    Returns:
        `[..., 2, T]`.
    """
    angle = (torch.as_tensor(pan, dtype=x.dtype, device=x.device) + 1) * (math.pi / 4)
    gains = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)[..., None]  # [..., 2, 1]
    return x * gains


def stereo_width(x: torch.Tensor, *, width: torch.Tensor | float) -> torch.Tensor:
    """Scale the side signal: M = (L+R)/2, S = (L-R)/2, S' = width * S.

    Args:
        x: `[..., 2, T]` stereo.
        width: `[...]` or scalar; 0 is mono, 1 unchanged, above 1 wider.

    Returns:
        `[..., 2, T]`; the mid signal is unchanged, so the M/S ratio scales by exactly `width`.
    """
    width = torch.as_tensor(width, dtype=x.dtype, device=x.device)[..., None]
    mid = (x[..., 0, :] + x[..., 1, :]) / 2
    side = (x[..., 0, :] - x[..., 1, :]) / 2 * width
    return torch.stack([mid + side, mid - side], dim=-2)
