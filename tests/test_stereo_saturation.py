"""Gain, pan, width and saturation against their closed forms."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from automix.dsp.saturation import saturate
from automix.dsp.stereo import gain, pan, stereo_width


def test_gain_in_db_scales_amplitude():
    x = torch.randn(3, 2, 100, dtype=torch.float64)
    out = gain(x, gain_db=torch.tensor([-6.0, 0.0, 20.0], dtype=torch.float64))
    expected = x * torch.tensor([10 ** (-6 / 20), 1.0, 10.0], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    ("position", "left_db", "right_db"),
    [(-1.0, 0.0, -math.inf), (0.0, -3.0103, -3.0103), (1.0, -math.inf, 0.0)],
)
def test_pan_law_is_constant_power_with_minus_3db_centre(position, left_db, right_db):
    mono = torch.ones(1, 10, dtype=torch.float64)
    out = pan(mono, pan=position)
    for channel, expected_db in enumerate((left_db, right_db)):
        level = out[channel, 0].item()
        if math.isinf(expected_db):
            assert abs(level) < 1e-12
        else:
            assert 20 * math.log10(level) == pytest.approx(expected_db, abs=1e-3)


@given(st.floats(-1, 1))
def test_pan_keeps_power_constant(position):
    out = pan(torch.ones(1, 4, dtype=torch.float64), pan=position)
    assert out.pow(2).sum(dim=0)[0].item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("width", [0.0, 0.5, 1.0, 1.5])
def test_width_scales_side_and_keeps_mid(width):
    x = torch.randn(2, 1000, dtype=torch.float64)
    out = stereo_width(x, width=width)
    mid, side = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2
    torch.testing.assert_close((out[0] + out[1]) / 2, mid)
    torch.testing.assert_close((out[0] - out[1]) / 2, side * width)


def test_saturation_is_clean_at_drive_1_and_blends_in_level_compensated_tanh():
    x = torch.linspace(-2, 2, 101, dtype=torch.float64).expand(2, -1)
    torch.testing.assert_close(saturate(x, drive=1.0), x, rtol=0, atol=0)
    torch.testing.assert_close(saturate(x, drive=3.0), torch.tanh(3 * x) / 3)
    half = (x + torch.tanh(2 * x) / 2) / 2  # drive 2: halfway from 1 to 3, half of each
    torch.testing.assert_close(saturate(x, drive=2.0), half)
    quiet = 1e-5 * torch.randn(2, 100, dtype=torch.float64)
    torch.testing.assert_close(saturate(quiet, drive=3.0), quiet, rtol=1e-7, atol=0)  # small-signal gain 1


def test_saturation_with_a_gain_after_it_differentiates_as_autograd_does_its_steps():
    """A mono stem spread by a stereo gain (level and pan, as in the strips): values and gradients of
    the fused node against autograd of its formula's steps, and gradcheck (drives inside the blend's
    range, where its share has a slope)."""
    torch.manual_seed(1)
    x = torch.randn(3, 1, 64, dtype=torch.float64, requires_grad=True)
    drive = torch.tensor([1.3, 2.0, 2.7], dtype=torch.float64, requires_grad=True)
    after = torch.rand(3, 2, 1, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 2, 64, dtype=torch.float64)
    d = drive[:, None, None]
    share = (d - 1) / 2
    steps = ((1 - share) * x + share * torch.tanh(d * x) / d) * after
    fused = saturate(x, drive=drive, gain=after)
    torch.testing.assert_close(fused, steps)
    expected = torch.autograd.grad((steps * weights).sum(), (x, drive, after))
    got = torch.autograd.grad((fused * weights).sum(), (x, drive, after))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda x, d, g: saturate(x, drive=d, gain=g), (x, drive, after))


def test_saturation_at_the_neutral_drive_has_the_gradient_toward_more_drive():
    """At drive 1 the shaper is clean but its drive gradient is the right derivative (a one-sided
    difference), so an optimiser can start there."""
    x = torch.linspace(0, 2, 101, dtype=torch.float64).expand(2, -1)
    drive = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (got,) = torch.autograd.grad(saturate(x, drive=drive).sum(), drive)
    step = 1e-6
    expected = (saturate(x, drive=1.0 + step).sum() - saturate(x, drive=1.0).sum()) / step
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=0)
    assert got < 0  # more drive takes the loud samples down


def test_finite_difference_gradients_of_stereo_and_saturation():
    x = torch.randn(2, 32, dtype=torch.float64, requires_grad=True)
    for fn, value in ((pan, 0.3), (stereo_width, 1.2), (saturate, 1.7), (gain, -4.0)):
        param = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        name = {pan: "pan", stereo_width: "width", saturate: "drive", gain: "gain_db"}[fn]
        assert torch.autograd.gradcheck(lambda x, p, fn=fn, name=name: fn(x, **{name: p}), (x, param))
