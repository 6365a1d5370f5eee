"""The loudness-meter test signals of EBU Tech 3341 and Tech 3342, and the readings they must give.

Signals are synthesised from the documents' definitions: stereo 1 kHz sines, both channels the same,
levels in dBFS as the sine's peak, stepping from level to level with continuous phase. The expected
readings and tolerances are the documents' own. `tests/test_loudness_conformance.py` and `validate.py`
both use them.
"""

import numpy as np
import torch

EBU_TONE_HZ = 1000.0

# EBU Tech 3341 (2016), Table 1: (levels dBFS, durations s, expected integrated loudness LUFS).
TECH_3341_INTEGRATED_CASES = {
    1: ([-23.0], [20.0], -23.0),
    2: ([-33.0], [20.0], -33.0),
    3: ([-36.0, -23.0, -36.0], [10.0, 60.0, 10.0], -23.0),
    4: ([-72.0, -36.0, -23.0, -36.0, -72.0], [10.0, 10.0, 60.0, 10.0, 10.0], -23.0),
    5: ([-26.0, -20.0, -26.0], [20.0, 20.1, 20.0], -23.0),
}
TECH_3341_TOLERANCE_LU = 0.1

# EBU Tech 3342 (2016), Table 1: (levels dBFS, durations s, expected LRA in LU).
TECH_3342_CASES = {
    1: ([-20.0, -30.0], [20.0, 20.0], 10.0),
    2: ([-20.0, -15.0], [20.0, 20.0], 5.0),
    3: ([-40.0, -20.0], [20.0, 20.0], 20.0),
    4: ([-50.0, -35.0, -20.0, -35.0, -50.0], [20.0] * 5, 15.0),
}
TECH_3342_TOLERANCE_LU = 1.0


def sine_sequence(levels_dbfs, durations_s, sample_rate: int) -> torch.Tensor:
    """Stereo `[2, T]` float32 1 kHz sine, phase-continuous, stepping through peak levels in dBFS.

    Args:
        levels_dbfs: the sine's peak level in each segment, dBFS.
        durations_s: each segment's length, seconds (rounded to whole samples).
        sample_rate: Hz.
    """
    lengths = [round(d * sample_rate) for d in durations_s]
    amplitude = np.repeat(10.0 ** (np.asarray(levels_dbfs) / 20.0), lengths)
    tone = amplitude * np.sin(2 * np.pi * EBU_TONE_HZ * np.arange(amplitude.size) / sample_rate)
    return torch.from_numpy(np.stack([tone, tone])).float()
