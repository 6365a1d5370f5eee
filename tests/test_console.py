"""The whole console: gradients reach every parameter through the mix's measurements."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from automix import metrics
from automix.dsp import console, filters
from automix.dsp.console import (
    MASTER_PARAMETERS,
    STEM_PARAMETERS,
    bus_detector_power,
    channel_strip,
    channel_strip_blocks,
    master_drive,
    master_drive_blocks,
    master_section,
    render_mix,
)
from automix.dsp.stereo import gain
from automix.params import ParameterSpace
from automix.synth import synth_stems

SAMPLE_RATE = 22050


def active_params(n_stems):
    """Settings where every stage is engaged: EQ moves, compressors and limiter work."""
    stem, master = ParameterSpace().neutral(n_stems, dtype=torch.float64)
    stem |= {
        "eq_gain_db": torch.tensor([4.0, -3.0, 2.0, 5.0], dtype=torch.float64).expand(n_stems, 4).clone(),
        "comp_threshold_db": torch.full((n_stems,), -30.0, dtype=torch.float64),
        "comp_ratio": torch.full((n_stems,), 4.0, dtype=torch.float64),
        "comp_knee_db": torch.full((n_stems,), 12.0, dtype=torch.float64),
        "drive": torch.full((n_stems,), 2.0, dtype=torch.float64),
        "pan": torch.linspace(-0.5, 0.5, n_stems, dtype=torch.float64),
    }
    master |= {
        "bus_threshold_db": torch.tensor(-24.0, dtype=torch.float64),
        "bus_ratio": torch.tensor(2.0, dtype=torch.float64),
        "bus_knee_db": torch.tensor(12.0, dtype=torch.float64),
        "eq_gain_db": torch.tensor([1.0, -1.0, 2.0, 1.5], dtype=torch.float64),
        "width": torch.tensor(1.2, dtype=torch.float64),
        "limiter_threshold": torch.tensor(0.8, dtype=torch.float64),
    }
    return stem, master


def test_every_console_parameter_gets_a_gradient_through_the_measurements():
    stems = synth_stems(3.0, SAMPLE_RATE, seed=3)[0].double()
    stem_params, master_params = active_params(stems.shape[0])
    leaves = [*stem_params.values(), *master_params.values()]
    for leaf in leaves:
        leaf.requires_grad_(True)
    mix, _ = render_mix(stems, SAMPLE_RATE, stem_params, master_params)
    loss = (
        metrics.integrated_loudness(mix, SAMPLE_RATE)
        + metrics.spectral_centroid(mix, SAMPLE_RATE) / 1000
        + metrics.stereo_ms_ratio(mix)
    )
    loss.backward()
    for group, names in ((stem_params, STEM_PARAMETERS), (master_params, MASTER_PARAMETERS)):
        for name in names:
            grad = group[name].grad
            assert grad is not None and torch.isfinite(grad).all(), name
            assert (grad != 0).any(), name


def test_batched_render_equals_per_item_renders():
    songs = torch.stack([synth_stems(1.0, SAMPLE_RATE, seed=s)[0] for s in (1, 2)])
    stem_params, master_params = (
        {k: v.expand(2, *v.shape).clone() for k, v in group.items()}
        for group in ParameterSpace().neutral(songs.shape[1])
    )
    stem_params["level_db"] = torch.tensor([[-3.0, 0.0, 2.0, -6.0], [1.0, -2.0, 0.0, -1.0]])
    master_params["width"] = torch.tensor([0.8, 1.3])
    batched, _ = render_mix(songs, SAMPLE_RATE, stem_params, master_params)
    for item in range(2):
        single, _ = render_mix(
            songs[item],
            SAMPLE_RATE,
            {k: v[item] for k, v in stem_params.items()},
            {k: v[item] for k, v in master_params.items()},
        )
        torch.testing.assert_close(batched[item], single, rtol=1e-4, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    kind=st.sampled_from(["silence", "dc", "noise"]),
    level=st.floats(0.0, 1.0),
    unit_params=st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8),
)
def test_console_output_is_finite_for_any_in_range_settings(kind, level, unit_params):
    n_samples = 2048
    signal = {
        "silence": torch.zeros(2, 2, n_samples),
        "dc": torch.full((2, 2, n_samples), level),
        "noise": level * (2 * torch.rand(2, 2, n_samples, generator=torch.Generator().manual_seed(0)) - 1),
    }[kind]
    u = torch.tensor(unit_params)
    stem_params, master_params = ParameterSpace().neutral(2)
    stem_params |= {
        "eq_gain_db": (24 * u[:4] - 12).expand(2, 4).clone(),
        "comp_threshold_db": torch.full((2,), -40 + 34 * u[4].item()),
        "comp_ratio": torch.full((2,), 1 + 9 * u[5].item()),
        "drive": torch.full((2,), 1 + 2 * u[6].item()),
        "level_db": torch.full((2,), -24 + 30 * u[7].item()),
    }
    master_params["limiter_threshold"] = torch.tensor(0.7 + 0.3 * u[0].item())
    mix, _ = render_mix(signal, SAMPLE_RATE, stem_params, master_params)
    assert torch.isfinite(mix).all()


def test_channel_strip_removes_a_dc_offset():
    """A constant offset is inaudible; the strip's high-pass takes it out (closed form: a 2nd-order
    high-pass's step response decays to 0), leaving an added tone untouched."""
    seconds = 2.0
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    tone = 0.1 * torch.sin(2 * torch.pi * 440 * t)
    stems = (0.4 + tone).expand(1, 2, -1).clone()
    stem_params, _ = ParameterSpace().neutral(1, dtype=torch.float64)
    stem_params |= {
        "comp_ratio": torch.ones(1, dtype=torch.float64),
        "level_db": torch.zeros(1, dtype=torch.float64),
    }
    out = channel_strip(stems, SAMPLE_RATE, stem_params)[0, 0]
    settled = out[SAMPLE_RATE:]  # after the high-pass's transient
    assert settled.mean().abs() < 1e-3
    centre_pan = 2**-0.5  # -3 dB per channel at the centre
    assert settled.std().item() == pytest.approx(centre_pan * tone.std().item(), rel=0.02)


@pytest.mark.parametrize("blockwise", [False, True])
def test_the_strips_input_gain_is_the_same_gain_applied_to_the_stems(blockwise):
    """`input_gain_db`, folded into the EQ cascade, acts as that gain on the stems before the strip, the
    compressors and saturation engaged: 30 dB up on quiet stems gives the strip's output of the stems
    made 30 dB louder, whole and block by block."""
    stems = synth_stems(3.0, SAMPLE_RATE, seed=4)[0].double()
    params, _ = active_params(stems.shape[0])
    quiet = stems * 10 ** (-30 / 20)
    staged = params | {"input_gain_db": torch.full((stems.shape[0],), 30.0, dtype=torch.float64)}
    if blockwise:
        expected = torch.cat([b for _, b in channel_strip_blocks(stems, SAMPLE_RATE, params, 8192)], -1)
        output = torch.cat([b for _, b in channel_strip_blocks(quiet, SAMPLE_RATE, staged, 8192)], -1)
    else:
        expected = channel_strip(stems, SAMPLE_RATE, params)
        output = channel_strip(quiet, SAMPLE_RATE, staged)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("block_samples", [4096, 30000])
def test_strips_rendered_a_block_at_a_time_match_the_whole_signal(block_samples):
    """Block by block (the EQ's warm-up exact, the compressor's gain carried over, its detector hearing
    the blocks around) the strips give what they give on the whole signal, down to the detector's
    far quadrature tail."""
    stems = synth_stems(6.0, SAMPLE_RATE, seed=3)[0].double()
    params, _ = active_params(stems.shape[0])
    params["comp_threshold_db"] = torch.tensor([-40.0, -30.0, -35.0, -25.0], dtype=torch.float64)
    params["comp_release_ms"] = torch.full((4,), 400.0, dtype=torch.float64)  # a long memory to carry
    whole = channel_strip(stems, SAMPLE_RATE, params)
    starts, blocks = zip(*channel_strip_blocks(stems, SAMPLE_RATE, params, block_samples), strict=True)
    assert list(starts) == list(range(0, stems.shape[-1], block_samples))
    joined = torch.cat(blocks, dim=-1)
    error_db = 10 * torch.log10((joined - whole).square().sum((-1, -2)) / whole.square().sum((-1, -2)))
    assert error_db.max() < -60


def test_the_master_drive_rendered_a_block_at_a_time_matches_the_whole_signal():
    """The bus compressor's gain and the master EQ's input carried across blocks: the drive into the
    limiter of the whole-signal master section, down to the detector's far quadrature tail."""
    stems = synth_stems(6.0, SAMPLE_RATE, seed=4)[0].double()
    stem_params, master_params = active_params(stems.shape[0])
    mix = channel_strip(stems, SAMPLE_RATE, stem_params).sum(dim=0)
    whole = master_drive(mix, SAMPLE_RATE, master_params)
    blocks = [block for _, block in master_drive_blocks(mix, SAMPLE_RATE, master_params, 5000)]
    joined = torch.cat(blocks, dim=-1)
    error_db = 10 * torch.log10((joined - whole).square().sum() / whole.square().sum())
    assert error_db < -60


@pytest.mark.parametrize("blockwise", [False, True])
def test_renders_at_other_gains_may_share_the_bus_detectors_power(monkeypatch, blockwise):
    """The bus compressor's detector is quadratic in its input: its power of the bus, scaled by a gain
    squared, renders the master at that gain exactly as the master's own detector does, on the whole
    signal and a block at a time (1 s blocks)."""
    stems = synth_stems(4.0, SAMPLE_RATE, seed=5)[0].double()
    stem_params, master_params = active_params(stems.shape[0])
    bus = channel_strip(stems, SAMPLE_RATE, stem_params).sum(dim=0, keepdim=True)
    if blockwise:
        monkeypatch.setattr(filters, "BLOCKWISE_MIN_SECONDS", 1.0)
        monkeypatch.setattr(console, "MASTER_BLOCK_SAMPLES", SAMPLE_RATE)
    gain_db = torch.tensor([6.0], dtype=torch.float64)
    with torch.no_grad():
        power = bus_detector_power(bus, SAMPLE_RATE, blockwise=blockwise) * 10 ** (gain_db[:, None] / 10)
        louder = gain(bus, gain_db=gain_db)
        shared = master_section(louder, SAMPLE_RATE, master_params, detector_power=power, blockwise=blockwise)
        own = master_section(louder, SAMPLE_RATE, master_params, blockwise=blockwise)
    torch.testing.assert_close(shared, own, rtol=1e-9, atol=1e-12)


def test_sounding_mask_holds_a_sound_for_its_decay():
    stems = torch.zeros(1, 2, 2, 4000)
    stems[0, 1, 0, 1000] = 0.5
    mask = console.sounding_mask(stems, decay=300)[0]
    block = console.SILENCE_BLOCK_SAMPLES
    assert mask[1000 : 1000 + 300 + 1].all()  # the sound and its decay
    assert not mask[: 1000 // block * block].any()  # before the block the sound is in
    assert not mask[1000 + 300 + 2 * block :].any()  # at most a block of grain each side past the decay


def test_digital_silence_stays_silent_and_the_rest_is_untouched():
    """A burst, then silence: in float32 the FFT filters leave rounding (~1e-7 of the peak) in the
    silence, where the float64 render, the reference, is below the filters' cut-off. The kept mix is
    exactly 0 there and the same render elsewhere."""
    torch.manual_seed(0)
    n = SAMPLE_RATE * 2
    stems = torch.zeros(1, 2, 2, n, dtype=torch.float64)
    stems[..., : SAMPLE_RATE // 4] = 0.3 * torch.randn(1, 2, 2, SAMPLE_RATE // 4, dtype=torch.float64)
    stem, master = active_params(2)
    renders = {
        dtype: render_mix(
            stems.to(dtype), SAMPLE_RATE, {k: v.to(dtype) for k, v in stem.items()},
            {k: v.to(dtype) for k, v in master.items()},
        )[0]
        for dtype in (torch.float32, torch.float64)
    }  # fmt: skip
    decay = console.decay_samples(SAMPLE_RATE, stem, master)
    kept = console.keep_digital_silence(renders[torch.float32], stems, decay)
    silent = ~console.sounding_mask(stems, decay)[0]
    assert silent[SAMPLE_RATE // 4 + decay + 2 * console.SILENCE_BLOCK_SAMPLES :].all()
    peak = renders[torch.float64].abs().max()
    assert renders[torch.float64][..., silent].abs().max() < 1e-7 * peak  # the exact output there
    assert renders[torch.float32][..., silent].abs().max() > 0  # float32 rounding, which is removed
    assert (kept[..., silent] == 0).all()
    torch.testing.assert_close(kept[..., ~silent], renders[torch.float32][..., ~silent], rtol=0, atol=0)
