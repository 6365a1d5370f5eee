"""The mixing console as one function: a channel strip per stem, the sum, and the master section.

Parameters travel in plain dicts of tensors in units (dB, Hz, ms, ratio), keyed by the names below;
`automix.params.ParameterSpace` maps the network's [0, 1] outputs to them.
"""

from collections.abc import Iterator

import torch

from automix.dsp.dynamics import (
    DETECTOR_CONTEXT_MS,
    compressor_block,
    detector_mean_square,
    hilbert_pad_samples,
)
from automix.dsp.eq import four_band_eq, four_band_sections
from automix.dsp.filters import (
    biquad_response,
    biquads_with_quadrature,
    check_blockwise,
    filter_with_quadrature,
    impulse_response_length,
    is_long,
    overlap_save,
    quadrature_response,
)
from automix.dsp.limiter import DEFAULT_CEILING_DBTP, limiter
from automix.dsp.saturation import saturate
from automix.dsp.stereo import gain, pan, stereo_width
from automix.units import db_to_amp

# Per stem, `[..., N]` each (the EQ ones `[..., N, 4]`, bands in `automix.dsp.eq.EQ_BANDS` order).
STEM_PARAMETERS = (
    "eq_gain_db",
    "eq_freq_hz",
    "eq_q",
    "comp_threshold_db",
    "comp_ratio",
    "comp_attack_ms",
    "comp_release_ms",
    "comp_makeup_db",
    "comp_knee_db",
    "drive",
    "level_db",
    "pan",
)
# and, where given, "input_gain_db" `[..., N]`: the strip's input gain ahead of its EQ, the gain staging
# `automix.chain.AutoMixChain` sets from the stems' level (not a setting the predictor makes).
# Master, `[...]` each (the EQ ones `[..., 4]`). The limiter threshold is linear (0.7-1.0): the mix is
# driven into the limiter by 1 / threshold, and the limiter holds the output at the ceiling.
MASTER_PARAMETERS = (
    "bus_threshold_db",
    "bus_ratio",
    "bus_attack_ms",
    "bus_release_ms",
    "bus_makeup_db",
    "bus_knee_db",
    "eq_gain_db",
    "eq_freq_hz",
    "eq_q",
    "width",
    "limiter_threshold",
)
# Every strip's EQ cascade ends in a high-pass here: it removes DC offsets and infrasonic rumble, which
# are inaudible but would take the limiter's headroom (the lowest musical fundamental, B0, is 31 Hz).
DC_BLOCK_HZ = 20.0
# A long mix rendered block-wise (`blockwise=True`) goes through the master section up to the limiter
# this many samples at a time (`master_drive_blocks`); the limiter works by blocks of its own.
MASTER_BLOCK_SAMPLES = 2**18


COMPRESSOR_SETTINGS = ("threshold_db", "ratio", "attack_ms", "release_ms", "makeup_db", "knee_db")


def compressor_settings(params: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, ...]:
    """The compressor settings `{prefix}_threshold_db`, ... of `params`, in `COMPRESSOR_SETTINGS` order
    (`compressor`'s keyword order, `compressor_block`'s tuple)."""
    return tuple(params[f"{prefix}_{name}"] for name in COMPRESSOR_SETTINGS)


def _compress(
    x: torch.Tensor, sample_rate: int, params: dict[str, torch.Tensor], prefix: str, power=None
) -> torch.Tensor:
    """The compressor with the settings `{prefix}_threshold_db`, ... of `params`; `power`: its
    detector's power of x when already known (`compressor_block`)."""
    return compressor_block(x, sample_rate, compressor_settings(params, prefix), power=power)[0]


def _level_pan(params: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Level and pan, both per-stem gains, as one `[..., N, 2, 1]` gain: one pass over the audio."""
    return pan(gain(torch.ones_like(like[..., :1, :1]), gain_db=params["level_db"]), pan=params["pan"])


def _width_and_drive(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The master's M/S width, then the drive into the limiter (1 / `limiter_threshold`)."""
    return stereo_width(x, width=params["width"]) / params["limiter_threshold"][..., None, None]


def _strip_eq_sections(
    sample_rate: int, params: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The strips' EQ cascades `(b, a)`: the input gain (`input_gain_db`, where `params` has one), the
    four bands of `params` and the `DC_BLOCK_HZ` high-pass."""
    b, a = four_band_sections(
        sample_rate,
        gain_db=params["eq_gain_db"],
        freq_hz=params["eq_freq_hz"],
        q=params["eq_q"],
        highpass_hz=DC_BLOCK_HZ,
    )
    if "input_gain_db" in params:  # folded into the first band's numerator: no pass over the audio
        input_gain = db_to_amp(params["input_gain_db"].to(b.dtype))[..., None]
        b = torch.cat([b[..., :1, :] * input_gain[..., None], b[..., 1:, :]], dim=-2)
    return b, a


def channel_strip(stems: torch.Tensor, sample_rate: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(Input gain) -> EQ -> compressor -> saturation -> level -> pan, for every stem at once.

    The EQ's output and the Hilbert transform the compressor's detector needs of it come from one FFT
    of the stems (`automix.dsp.filters.biquads_with_quadrature`); the detector's transform includes
    the EQ's decay past the stems' end.

    Args:
        stems: `[..., N, C, T]`, C = 1 or 2.
        sample_rate: Hz.
        params: `STEM_PARAMETERS`, each `[..., N]` (EQ `[..., N, 4]`).

    Returns:
        `[..., N, 2, T]` processed stems.
    """
    b, a = _strip_eq_sections(sample_rate, params)
    x, quadrature = biquads_with_quadrature(stems, b, a, sample_rate, hilbert_pad_samples(sample_rate))
    x = _compress(x, sample_rate, params, "comp", detector_mean_square(x, sample_rate, quadrature))
    return saturate(x, drive=params["drive"], gain=_level_pan(params, x))


def channel_strip_blocks(
    stems: torch.Tensor, sample_rate: int, params: dict[str, torch.Tensor], block_samples: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """`channel_strip` a block of time at a time, so that a long song's processing needs memory for one
    block, not for the whole song: yields `(start, [..., N, 2, L])` in time order, L ≤ `block_samples`.

    The EQ of each block starts early enough for its impulse response to have decayed
    (`impulse_response_length`): exact. The compressor's detector hears `DETECTOR_CONTEXT_MS` of the
    signal around each block (its quadrature from the EQ's own FFT, as in `channel_strip`) and its gain
    carries on from the block before (`compressor_block`): equal to the whole-signal strip but for the
    far tail of the detector's quadrature transform. No gradients.
    """
    n_samples = stems.shape[-1]
    b, a = _strip_eq_sections(sample_rate, params)
    context = round(DETECTOR_CONTEXT_MS * sample_rate / 1000.0)
    eq_warmup = impulse_response_length(a, sample_rate) - 1  # less the sample it starts on
    span = eq_warmup + block_samples + 2 * context  # the most of the stems a block's EQ reads
    eq = quadrature_response(b, a, sample_rate, span, hilbert_pad_samples(sample_rate), stems.dtype)
    level_pan = _level_pan(params, stems)
    settings = compressor_settings(params, "comp")
    gain_state = None
    for start, stop, heard in _detector_blocks(n_samples, sample_rate, block_samples):
        first = max(0, heard[0] - eq_warmup)
        equalised, quadrature = (
            signal[..., heard[0] - first :]
            for signal in filter_with_quadrature(stems[..., first : heard[1]], *eq)
        )
        compressed, gain_state = compressor_block(
            equalised,
            sample_rate,
            settings,
            gain_state=gain_state,
            context=(start - heard[0], heard[1] - stop),
            power=detector_mean_square(equalised, sample_rate, quadrature)[
                :, start - heard[0] : stop - heard[0]
            ],
        )
        yield start, saturate(compressed, drive=params["drive"], gain=level_pan)


def master_drive(
    mix: torch.Tensor,
    sample_rate: int,
    params: dict[str, torch.Tensor],
    detector_power: torch.Tensor | None = None,
    *,
    blockwise: bool = False,
) -> torch.Tensor:
    """The master section up to the limiter: bus compressor -> master EQ -> M/S width -> the drive into
    the limiter (1 / `limiter_threshold`). `[..., 2, T]` -> `[..., 2, T]`.
    `detector_power`: the bus compressor's detector power of `mix` (`bus_detector_power`) when already
    known; None: from the mix. `blockwise`: a long mix (`automix.dsp.filters.is_long`) goes through it a
    block at a time (`master_drive_blocks`), without gradients (ValueError while one is being recorded).
    """
    check_blockwise(blockwise, mix, params, detector_power)
    if blockwise and is_long(mix.shape[-1], sample_rate):
        drive = torch.empty_like(mix)
        blocks = master_drive_blocks(mix, sample_rate, params, MASTER_BLOCK_SAMPLES, detector_power)
        for start, block in blocks:
            drive[..., start : start + block.shape[-1]] = block
        return drive
    x = _compress(mix, sample_rate, params, "bus", detector_power)
    x = four_band_eq(
        x, sample_rate, gain_db=params["eq_gain_db"], freq_hz=params["eq_freq_hz"], q=params["eq_q"]
    )
    return _width_and_drive(x, params)


def master_drive_blocks(
    mix: torch.Tensor,
    sample_rate: int,
    params: dict[str, torch.Tensor],
    block_samples: int,
    detector_power: torch.Tensor | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """`master_drive` a block of time at a time, as `channel_strip_blocks` does the strips: yields
    `(start, [..., 2, L])` in time order. The compressor's detector hears the blocks around (or its
    power is `detector_power`'s) and its gain carries on; the EQ hears the compressor's output of the
    block before. No gradients."""
    n_samples = mix.shape[-1]
    b, a = four_band_sections(
        sample_rate, gain_db=params["eq_gain_db"], freq_hz=params["eq_freq_hz"], q=params["eq_q"]
    )
    eq = biquad_response(b, a, sample_rate, block_samples, mix.dtype)
    eq_warmup = eq[-1] - 1
    settings = compressor_settings(params, "bus")
    gain_state = None
    compressed_before = mix.new_zeros(*mix.shape[:-1], eq_warmup)
    for start, stop, heard in _detector_blocks(n_samples, sample_rate, block_samples):
        if detector_power is not None:
            heard, power = (start, stop), detector_power[:, start:stop]
        else:
            power = None
        compressed, gain_state = compressor_block(
            mix[..., heard[0] : heard[1]],
            sample_rate,
            settings,
            gain_state=gain_state,
            context=(start - heard[0], heard[1] - stop),
            power=power,
        )
        joined = torch.cat([compressed_before, compressed], dim=-1)
        equalised = overlap_save(joined, *eq)[..., eq_warmup:]
        compressed_before = joined[..., joined.shape[-1] - eq_warmup :]
        yield start, _width_and_drive(equalised, params)


def bus_detector_power(mix: torch.Tensor, sample_rate: int, *, blockwise: bool = False) -> torch.Tensor:
    """The bus compressor's detector power `[B, T]` of a mix `[B, 2, T]` (`detector_mean_square`), as
    `master_drive` computes it: with `blockwise`, a long mix a block at a time without gradients, the
    detector hearing the blocks around. Renders of one bus at different gains can share it
    (`master_section`'s `detector_power`), scaled by each gain squared: the detector is quadratic in
    its input."""
    check_blockwise(blockwise, mix)
    n_samples = mix.shape[-1]
    if not (blockwise and is_long(n_samples, sample_rate)):
        return detector_mean_square(mix, sample_rate)
    power = mix.new_empty(mix.shape[0], n_samples)
    for start, stop, heard in _detector_blocks(n_samples, sample_rate, MASTER_BLOCK_SAMPLES):
        block = detector_mean_square(mix[..., heard[0] : heard[1]], sample_rate)
        power[:, start:stop] = block[:, start - heard[0] : stop - heard[0]]
    return power


def _detector_blocks(n_samples: int, sample_rate: int, block_samples: int) -> Iterator[tuple]:
    """`(start, stop, heard)` of each block of a signal, `heard` the span around it its compressor's
    detector hears (`DETECTOR_CONTEXT_MS` each side, within the signal)."""
    context = round(DETECTOR_CONTEXT_MS * sample_rate / 1000.0)
    for start in range(0, n_samples, block_samples):
        stop = min(start + block_samples, n_samples)
        yield start, stop, (max(0, start - context), min(n_samples, stop + context))


def master_section(
    mix: torch.Tensor,
    sample_rate: int,
    params: dict[str, torch.Tensor],
    *,
    ceiling_dbtp: float = DEFAULT_CEILING_DBTP,
    limiter_lookahead_ms: float | None = None,
    limiter_release_ms: float | None = None,
    detector_power: torch.Tensor | None = None,
    blockwise: bool = False,
    reconstruct: bool = True,
    return_gain: bool = False,
):
    """Bus compressor -> master EQ -> M/S width -> true-peak limiter.

    Args:
        mix: `[..., 2, T]` summed stems.
        params: `MASTER_PARAMETERS`, each `[...]` (EQ `[..., 4]`).
        ceiling_dbtp: the limiter's output ceiling, dBTP.
        limiter_lookahead_ms, limiter_release_ms: None keeps the limiter's defaults.
        detector_power: `[B, T]` the bus compressor's detector power of `mix` (`bus_detector_power`),
            when already known; None: from the mix.
        blockwise: a long mix (`automix.dsp.filters.is_long`) goes through the drive and the limiter a
            block of time at a time (`master_drive`, `limiter`), in memory for one block; no gradients.
        reconstruct, return_gain: as `limiter`'s (its 16x reconstruction check; its gain).

    Returns:
        `[..., 2, T]` master, true peak <= `ceiling_dbtp`; with `return_gain`, `(master, limiter gain
        [..., T])`.

    Raises:
        ValueError: `blockwise` while a gradient is being recorded for the mix or the settings.
    """
    timing = {"lookahead_ms": limiter_lookahead_ms, "release_ms": limiter_release_ms}
    return limiter(
        master_drive(mix, sample_rate, params, detector_power, blockwise=blockwise),
        sample_rate,
        ceiling_dbtp=ceiling_dbtp,
        overwrite=True,  # the drive is this function's own
        blockwise=blockwise,
        reconstruct=reconstruct,
        return_gain=return_gain,
        **{k: v for k, v in timing.items() if v is not None},
    )


SILENCE_BLOCK_SAMPLES = 64  # the grain of `keep_digital_silence`'s test for sounding stems


def decay_samples(sample_rate: int, stem_params: dict, master_params: dict) -> int:
    """Samples after which the console's filters (the longest strip EQ with its DC block, then the master
    EQ) have decayed below `automix.dsp.filters.IR_DECAY_DB`, where they are cut off: an upper bound."""
    _, strip_a = _strip_eq_sections(sample_rate, stem_params)
    _, master_a = four_band_sections(
        sample_rate,
        gain_db=master_params["eq_gain_db"],
        freq_hz=master_params["eq_freq_hz"],
        q=master_params["eq_q"],
    )
    return impulse_response_length(strip_a, sample_rate) + impulse_response_length(master_a, sample_rate)


@torch.no_grad()
def sounding_mask(stems: torch.Tensor, decay: int) -> torch.Tensor:
    """`[B, T]` bool: False where every stem of `stems` `[B, N, C, T]` has been exactly 0 for more than
    `decay` samples. Tested `SILENCE_BLOCK_SAMPLES` at a time, which keeps up to that many more True."""
    batch, n_stems, _, n_samples = stems.shape
    block = SILENCE_BLOCK_SAMPLES
    n_blocks = -(-n_samples // block)
    sounding = stems.new_zeros(batch, n_blocks * block, dtype=torch.bool)
    for stem in range(n_stems):  # one stem's test at a time: memory for a bool signal, not N of them
        sounding[:, :n_samples] |= (stems[:, stem] != 0).any(dim=-2)
    sounding = sounding.reshape(batch, n_blocks, block).any(dim=-1)
    count = sounding.cumsum(dim=-1)
    reach = -(-decay // block) + 1  # blocks a sound's decay can reach past its own
    before = torch.nn.functional.pad(count, (reach, 0))[..., :n_blocks]
    return (count > before).repeat_interleave(block, dim=-1)[..., :n_samples]


def keep_digital_silence(mix: torch.Tensor, stems: torch.Tensor, decay: int) -> torch.Tensor:
    """`mix` `[B, 2, T]` at exactly 0 where the stems `[B, N, C, T]` have been digital silence for longer
    than the console's filters' `decay` (`decay_samples`): there the console's output is below the
    filters' cut-off, and what the mix holds is the rounding of its FFT filters (~1e−7 of the signal in
    float32), which a log-magnitude measure reads. The compressors, the saturation and the limiter
    leave 0 at 0: nothing else sounds there."""
    return mix * sounding_mask(stems, decay)[:, None, :].to(mix.dtype)


def render_mix(
    stems: torch.Tensor,
    sample_rate: int,
    stem_params: dict[str, torch.Tensor],
    master_params: dict[str, torch.Tensor],
    *,
    stem_mask: torch.Tensor | None = None,
    ceiling_dbtp: float = DEFAULT_CEILING_DBTP,
    blockwise: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole console: strips, sum, master.

    Args:
        stems: `[..., N, C, T]`.
        stem_mask: `[..., N]` 1 for real stems, 0 for padding; None means all real.
        blockwise: a long mix goes through the master section a block of time at a time
            (`master_section`), without gradients.

    Returns:
        `(master [..., 2, T], processed stems [..., N, 2, T])`.
    """
    processed = channel_strip(stems, sample_rate, stem_params)
    if stem_mask is not None:
        processed = processed * stem_mask[..., None, None].to(processed.dtype)
    master = master_section(
        processed.sum(dim=-3), sample_rate, master_params, ceiling_dbtp=ceiling_dbtp, blockwise=blockwise
    )
    return master, processed
