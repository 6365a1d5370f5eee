"""Soft saturation for harmonic enhancement."""

import torch
from torch.autograd.function import once_differentiable


def saturate(
    x: torch.Tensor, *, drive: torch.Tensor | float, gain: torch.Tensor | None = None
) -> torch.Tensor:
    """tanh waveshaper blended with the dry signal, times an optional gain after it: with d = drive,
    y = x / d + (1 − 1/d) · tanh(d·x) / d.

    Drive 1 is clean (y = x: the strip's neutral setting adds no harmonics); the shaped share 1 − 1/d
    and the curve grow with the drive (d = 3: two thirds of tanh(3x)/3). The small-signal gain is 1 at
    any drive, so drive changes the harmonic content and the crest of loud passages, not the level of
    quiet ones.

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
    """`(x + (drive − 1) · tanh(drive · x) / drive) / drive · gain`, one node that keeps only its
    inputs: autograd's steps kept signal-sized results besides x. The backward recomputes the tanh."""

    @staticmethod
    def forward(ctx, x, drive, gain):
        ctx.save_for_backward(x, drive, gain)
        shaped = (drive * x).tanh_().mul_((drive - 1) / drive).add_(x)
        scale = gain / drive
        if torch.broadcast_shapes(shaped.shape, scale.shape) == shaped.shape:
            return shaped.mul_(scale)  # in place on its own temporary
        return shaped * scale  # a mono input spread to two channels

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """With d = drive, s = tanh(d·x), y = x/d + (d − 1) s / d² and g = grad · gain:
        d/dgain = grad · y; d/dx = g (1 + (d − 1)(1 − s²)) / d;
        d/dd = g (−x / d² + (2 − d) s / d³ + (d − 1)(1 − s²) x / d²), summed where d is broadcast (over
        which it is constant, so the factors in d follow the sums). In place on signal-sized temporaries
        of its own."""
        x, drive, gain = ctx.saved_tensors
        needs_x, needs_drive, needs_gain = ctx.needs_input_grad
        shaped = (drive * x).tanh_()
        grad_shaped = grad * gain
        grad_gain = None
        if needs_gain:
            wet = shaped * ((drive - 1) / drive)
            grad_gain = (grad * wet.add_(x)).div_(drive).sum_to_size(gain.shape)
        grad_drive = None
        if needs_drive:
            grad_s = (grad_shaped * shaped).sum_to_size(drive.shape)
            grad_dry = (grad_shaped * x).sum_to_size(drive.shape)
        slope = shaped.square_().neg_().add_(1)  # d tanh(u) / du = 1 − s²
        if needs_drive:
            grad_curve = (grad_shaped * slope * x).sum_to_size(drive.shape)
            grad_drive = (-grad_dry + (2 - drive) * grad_s / drive + (drive - 1) * grad_curve) / drive**2
        grad_x = None
        if needs_x:
            grad_x = grad_shaped.mul_(slope.mul_(drive - 1).add_(1)).div_(drive).sum_to_size(x.shape)
        return grad_x, grad_drive, grad_gain
