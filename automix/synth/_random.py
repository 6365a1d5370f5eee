"""Seeded draws: one `torch.Generator` stream per part of a song, so parts do not depend on each other."""

import torch

_SEED_STRIDE = 1009  # streams: 0 structure, 1-4 the stems, then the noises
_WHITE_STREAM, _PINK_STREAM = 5, 6


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * _SEED_STRIDE + stream) % 2**63)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=gen).item()


def _choice(gen: torch.Generator, options: tuple):
    return options[int(torch.randint(len(options), (), generator=gen))]


def _side(gen: torch.Generator, low: float, high: float) -> float:
    """A pan position with |pan| in [low, high], left or right."""
    return _uniform(gen, low, high) * _choice(gen, (-1.0, 1.0))
