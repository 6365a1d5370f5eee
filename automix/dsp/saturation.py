"""Soft saturation for harmonic enhancement."""

import torch
from torch.autograd.function import once_differentiable

# The drive at which the shaper is all tanh: the top of the project's drive range (1-3).
FULL_DRIVE = 3.0


def saturate(
    x: torch.Tensor, *, drive: torch.Tensor | float, gain: torch.Tensor | None = None
) -> torch.Tensor:
    """A level-compensated tanh waveshaper blended with the dry signal, times an optional gain after it:
    with d = drive and w = (d − 1) / (`FULL_DRIVE` − 1) within [0, 1], y = (1 − w)·x + w·tanh(d·x)/d.

    Drive 1 is clean (the strip's neutral setting adds no harmonics); the tanh's share and its curve
    grow together up to `FULL_DRIVE`, where y = tanh(d·x)/d. The small-signal gain is 1 at any drive, so
    drive changes the harmonic content and the crest of loud passages, not the level of quiet ones.

    Args:
        x: `[..., C, T]`.
        drive: `[...]` or scalar, >= 1 (the project range is 1-3).
        gain: linear gain after the shaper, broadcast against x (a strip's level and pan, `[..., 2, 1]`);
            None: 1.
    """
    drive = torch.as_tensor(drive, dtype=x.dtype, device=x.device)[..., None, None]
    gain = torch.ones((), dtype=x.dtype, device=x.device) if gain is None else gain
    return _Saturation.apply(x, drive, gain)


def _wet_share(drive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(w, dw/dd)`: the tanh's share of the output at each drive, and its slope, one-sided at the
    range's ends (so that a strip at the neutral drive 1 has a gradient toward more)."""
    share = (drive - 1) / (FULL_DRIVE - 1)
    inside = (share >= 0) & (share <= 1)
    return share.clamp(0, 1), inside.to(drive.dtype) / (FULL_DRIVE - 1)


class _Saturation(torch.autograd.Function):
    """`((1 − w)·x + w·tanh(d·x)/d) · gain`, one node that keeps only its inputs: autograd's steps kept
    several signal-sized results besides x. The backward recomputes the tanh."""

    @staticmethod
    def forward(ctx, x, drive, gain):
        ctx.save_for_backward(x, drive, gain)
        share, _ = _wet_share(drive)
        shaped = (drive * x).tanh_().mul_(share / drive).addcmul_(x, 1 - share)
        if torch.broadcast_shapes(shaped.shape, gain.shape) == shaped.shape:
            return shaped.mul_(gain)  # in place on its own temporary
        return shaped * gain  # a mono input spread to two channels

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """With s = tanh(d·x), v = s/d − x, y = x + w·v and g = grad · gain: d/dgain = grad · y;
        d/dx = g (1 − w s²); d/dd = g (w' v + w ((1 − s²) x / d − s / d²)), summed where d is broadcast
        (over which w, w' and d are constant, so their factors follow the sums). In place on
        signal-sized temporaries of its own."""
        x, drive, gain = ctx.saved_tensors
        needs_x, needs_drive, needs_gain = ctx.needs_input_grad
        share, share_slope = _wet_share(drive)
        shaped = (drive * x).tanh_()
        grad_shaped = grad * gain
        grad_gain = None
        if needs_gain:
            dry = x * (1 - share)
            grad_gain = (grad * shaped.mul(share / drive).add_(dry)).sum_to_size(gain.shape)
        grad_drive = None
        if needs_drive:
            sum_gs = (grad_shaped * shaped).sum_to_size(drive.shape)
            sum_gx = (grad_shaped * x).sum_to_size(drive.shape)
            sum_gsx = (grad_shaped * x * shaped.square()).sum_to_size(drive.shape)
            # Σ g v = Σ g s / d − Σ g x; Σ g (1 − s²) x = Σ g x − Σ g s² x.
            grad_drive = share_slope * (sum_gs / drive - sum_gx) + share * (
                (sum_gx - sum_gsx) / drive - sum_gs / drive**2
            )
        grad_x = None
        if needs_x:
            grad_x = grad_shaped.mul_(shaped.square_().mul_(share).neg_().add_(1)).sum_to_size(x.shape)
        return grad_x, grad_drive, grad_gain
