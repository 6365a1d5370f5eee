"""Differentiable audio processors: pure functions on `[..., channels, samples]` tensors."""
