"""Soft saturation for harmonic enhancement."""

import torch
from torch.autograd.function import once_differentiable


def saturate(
    x: torch.Tensor, *, drive: torch.Tensor | float, gain: torch.Tensor | None = None
) -> torch.Tensor:
    """tanh waveshaper, level-compensated: y = tanh(drive * x) / drive, times an optional gain after it.

    The small-signal gain is 1 at any drive, so drive changes the harmonic content and the crest of
    loud passages, not the level of quiet ones; drive 1 adds only the gentle curve of tanh itself.

    Args:
        x: `[..., C, T]`.
        drive: `[...]` or scalar, >= 1 (the project range is 1-3).
        gain: linear gain after the shaper, broadcast against x (a strip's level and pan, `[..., 2, 1]`);
            None: 1.
    """
    drive = torch.as_tensor(drive, dtype=x.dtype, device=x.device)[..., None, None]
    gain = torch.ones((), dtype=x.dtype, device=x.device) if gain is None else gain
    return _Saturation.apply(x, drive, gain)


class _Saturation(torch.autograd.Function):
    """`tanh(drive · x) / drive · gain`, one node that keeps only its inputs: autograd's three steps kept
    two signal-sized results besides x. The backward recomputes the tanh."""

    @staticmethod
    def forward(ctx, x, drive, gain):
        ctx.save_for_backward(x, drive, gain)
        shaped = (drive * x).tanh_()
        scale = gain / drive
        if torch.broadcast_shapes(shaped.shape, scale.shape) == shaped.shape:
            return shaped.mul_(scale)  # in place on its own temporary
        return shaped * scale  # a mono input spread to two channels

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """With s = tanh(drive · x) and g = grad · gain: d/dx = g (1 − s²); d/dgain = grad · s / drive;
        d/ddrive = g ((1 − s²) x / drive − s / drive²), summed where drive is broadcast (over which it is
        constant, so the divisions follow the sums). In place on signal-sized temporaries of its own."""
        x, drive, gain = ctx.saved_tensors
        needs_x, needs_drive, needs_gain = ctx.needs_input_grad
        shaped = (drive * x).tanh_()
        grad_gain = (grad * shaped).div_(drive).sum_to_size(gain.shape) if needs_gain else None
        grad_shaped = grad * gain
        grad_drive = (grad_shaped * shaped).sum_to_size(drive.shape) if needs_drive else None
        grad_u = grad_shaped.mul_(shaped.square_().neg_().add_(1))  # times d tanh(u) / du = 1 − s²
        if needs_drive:
            grad_drive = ((grad_u * x).sum_to_size(drive.shape) - grad_drive / drive) / drive
        grad_x = grad_u.sum_to_size(x.shape) if needs_x else None
        return grad_x, grad_drive, grad_gain
