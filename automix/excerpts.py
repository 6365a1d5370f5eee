"""The excerpts of a song the per-song optimiser's Adam steps measure (`automix.optimize`): the loudest
windows that between them hear every stem play.
"""

import torch


def select_excerpts(
    stems: torch.Tensor, sample_rate: int, excerpt_s: float, n_excerpts: int, playing_db: float
):
    """Non-overlapping excerpts of each song that hear every stem play, the loudest that do:
    `[B, N, 2, T] -> [B, K, N, 2, L]`, in time order.

    Each pick is the window (half-overlapping candidates) that adds the most stems not yet heard playing,
    the loudest such (mean square of the unprocessed stem sum); once every stem is heard, the loudest. A
    stem plays in a window when its mean square there is within `playing_db` of its loudest window's:
    the loudest sections alone can leave out a part that plays elsewhere. Where the picks leave no room
    for another, it may overlap them. A song no longer than the excerpts together is returned whole
    (K = 1, L = T).
    """
    n_samples = stems.shape[-1]
    length = int(excerpt_s * sample_rate)
    if n_samples <= length * n_excerpts:
        return stems[:, None]
    hop = length // 2
    starts = list(range(0, n_samples - length + 1, hop))
    with torch.no_grad():
        # Each window's energy from its two hops' (a window of odd length is ranked a sample short).
        window_stem_energy = _window_energy(stems, hop, len(starts))  # [B, N, W]
        window_energy = _window_energy(stems.sum(dim=1), hop, len(starts))  # [B, W]
        loudest = window_stem_energy.amax(dim=-1, keepdim=True)
        playing = (window_stem_energy > loudest * 10 ** (-playing_db / 10)) & (loudest > 0)  # [B, N, W]
    excerpts = []
    for item in range(stems.shape[0]):
        by_loudness = torch.argsort(window_energy[item], descending=True).tolist()
        heard = torch.zeros_like(playing[item, :, 0])
        chosen: list[int] = []
        for _ in range(n_excerpts):
            free = [w for w in by_loudness if all(abs(starts[w] - starts[c]) >= length for c in chosen)]
            # Where earlier picks leave no room, an overlapping one: every song of a batch gets K excerpts.
            free = free or [w for w in by_loudness if w not in chosen]
            new_stems = [int((playing[item, :, w] & ~heard).sum()) for w in free]
            pick = free[new_stems.index(max(new_stems))]  # the loudest of those adding the most
            chosen.append(pick)
            heard |= playing[item, :, pick]
        chosen.sort()
        excerpts.append(torch.stack([stems[item, ..., starts[w] : starts[w] + length] for w in chosen]))
    return torch.stack(excerpts)


def _window_energy(x: torch.Tensor, hop: int, n_windows: int) -> torch.Tensor:
    """`[..., C, T] -> [..., n_windows]`: the energy of x over windows of two hops moved a hop at a time,
    summed over channels; by norms of the hops (no squared copy of a song's stems)."""
    hops = x[..., : (n_windows + 1) * hop].unflatten(-1, (n_windows + 1, hop))
    hop_energy = torch.linalg.vector_norm(hops, dim=-1).square().sum(dim=-2)
    return hop_energy[..., :-1] + hop_energy[..., 1:]
