"""Soft saturation for harmonic enhancement."""

import torch


def saturate(x: torch.Tensor, *, drive: torch.Tensor | float) -> torch.Tensor:
    """tanh waveshaper, level-compensated: y = tanh(drive * x) / drive.

    The small-signal gain is 1 at any drive, so drive changes the harmonic content and the crest of
    loud passages, not the level of quiet ones; drive 1 adds only the gentle curve of tanh itself.

    Args:
        x: `[..., C, T]`.
        drive: `[...]` or scalar, >= 1 (the project range is 1-3).
    """
    drive = torch.as_tensor(drive, dtype=x.dtype, device=x.device)[..., None, None]
    return torch.tanh(drive * x) / drive
