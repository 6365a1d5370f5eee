"""Gain staging: the input gain of a song's channel strips.

The console's compressors, like a hardware console's, act on levels in dBFS, so the same stems exported
20 dB quieter would be mixed differently: their compressors would hardly act, and the master's trim
would have to make up the difference. As an engineer sets each channel's input gain first, every song's
stems go through one input gain (`input_gain_db`) that brings their unprocessed sum to `INPUT_LUFS`:
the same for all of a song's stems, so their balance is the one given, and a mix that does not depend
on the level the stems came at.
"""

import torch

from automix import loudness, metrics
from automix.dsp.filters import is_long

# The loudness of a song's unprocessed stem sum after the input gain: that of the synthetic songs the
# console was tuned and trained on (-7.5 to -10 LUFS), and about that of a MUSDB mixture. Silent songs
# are left alone; the gain is at most this much either way.
INPUT_LUFS = -9.0
MAX_INPUT_GAIN_DB = 60.0


def input_gain_db(
    stems: torch.Tensor, sample_rate: int, mask: torch.Tensor | None = None, *, blockwise: bool = False
) -> torch.Tensor:
    """The gain `[B]` dB that brings the sum of each song's stems `[B, N, 2, T]` (the real ones, where a
    `mask` is given) to `INPUT_LUFS`; 0 for a silent song (nothing above the absolute gate). No gradient.

    `blockwise`: a long song's sum (`automix.dsp.filters.is_long`) is metered a block of time at a time,
    with no copy of it; the same gain. Always allowed: the gain is measured without gradients."""
    weight = None if mask is None else mask.to(stems.dtype)[..., None, None]

    def stem_sum(part: torch.Tensor) -> torch.Tensor:
        return (part if weight is None else part * weight).sum(dim=1)

    with torch.no_grad():
        n_samples = stems.shape[-1]
        if not (blockwise and is_long(n_samples, sample_rate)):
            lufs = metrics.integrated_loudness(stem_sum(stems), sample_rate).double()
        else:
            meter = loudness.HopEnergyMeter(stems.shape[:1], n_samples, sample_rate, stems.device)
            for part in stems.split(loudness.METER_BLOCK_HOPS * meter.hop, dim=-1):
                meter.add(stem_sum(part))
            lufs = meter.integrated_loudness()
        gain_db = (INPUT_LUFS - lufs).clamp(-MAX_INPUT_GAIN_DB, MAX_INPUT_GAIN_DB)
        return torch.where(lufs > loudness.SILENCE_LUFS, gain_db, 0.0).to(stems.dtype)
