"""Differentiable audio processors: pure functions on `[..., channels, samples]` tensors.

    from automix.dsp import compressor, limiter

    squashed = compressor(x, 44100, threshold_db=-20.0, ratio=4.0, attack_ms=5.0, release_ms=100.0,
                          makeup_db=0.0)
    mastered = limiter(squashed, 44100, ceiling_dbtp=-1.0)

- EQ (`filters`, `eq`): RBJ cookbook biquads, applied exactly (causal, zero initial state) by sampling
  their response on an FFT grid; the four-band EQ of the channel strips and the master.
- Dynamics (`dynamics`): a feed-forward, stereo-linked RMS compressor with a quadratic soft knee and
  attack/release ballistics.
- Limiter (`limiter`): a look-ahead, true-peak brick-wall limiter linked over channels.
- Saturation and stereo (`saturation`, `stereo`): a level-compensated tanh waveshaper; gain,
  constant-power pan and mid/side width.
- Console (`console`): the channel strip and master section built from the above, and `render_mix`.
- Oversampling (`oversample`): 4x band-limited interpolation for true-peak detection.

Measurements (K-weighting, loudness, loudness range, true peak) live in `automix.loudness` and
`automix.metrics`; this package imports neither, nor the mixer. `automix.dsp.limiter` as an attribute is
the function `limiter`; its module's other names import as `from automix.dsp.limiter import ...`.

References:
    R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad filter coefficients" (W3C Audio EQ
        Cookbook): `peaking`, `low_shelf`, `high_shelf`, `low_pass`, `high_pass`.
    D. Giannoulis, M. Massberg and J. D. Reiss, "Digital Dynamic Range Compressor Design — A Tutorial
        and Analysis", J. Audio Eng. Soc. 60(6), 2012: the compressor's gain computer and soft knee
        (`soft_knee_gain_db`).
    ITU-R BS.1770-4, Annex 2: true-peak measurement by 4x oversampling (`upsample`, the limiter's peak
        detector); its Annex 1 K-weighting is `automix.loudness.k_weighting`.
    EBU Tech 3342: loudness range, `automix.loudness.loudness_range`.
"""

from automix.dsp.console import (
    bus_detector_power,
    channel_strip,
    channel_strip_blocks,
    master_drive,
    master_drive_blocks,
    master_section,
    render_mix,
)
from automix.dsp.dynamics import (
    ballistics,
    compressor,
    compressor_block,
    detector_mean_square,
    soft_knee_gain_db,
)
from automix.dsp.eq import biquad_eq, four_band_eq, four_band_sections
from automix.dsp.filters import (
    apply_biquads,
    frequency_response,
    high_pass,
    high_shelf,
    is_long,
    low_pass,
    low_shelf,
    peaking,
)
from automix.dsp.limiter import limiter
from automix.dsp.oversample import polyphase_fir, upsample
from automix.dsp.saturation import saturate
from automix.dsp.stereo import gain, pan, stereo_width

__all__ = [
    "apply_biquads",
    "ballistics",
    "biquad_eq",
    "bus_detector_power",
    "channel_strip",
    "channel_strip_blocks",
    "compressor",
    "compressor_block",
    "detector_mean_square",
    "four_band_eq",
    "four_band_sections",
    "frequency_response",
    "gain",
    "high_pass",
    "high_shelf",
    "is_long",
    "limiter",
    "low_pass",
    "low_shelf",
    "master_drive",
    "master_drive_blocks",
    "master_section",
    "pan",
    "peaking",
    "polyphase_fir",
    "render_mix",
    "saturate",
    "soft_knee_gain_db",
    "stereo_width",
    "upsample",
]
