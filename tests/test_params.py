"""ParameterSpace: the [0, 1] <-> units map, and the library defaults equal conf/dsp."""

from pathlib import Path

import pytest
import torch
import yaml

from automix.dsp.console import MASTER_PARAMETERS, STEM_PARAMETERS
from automix.errors import AutomixError
from automix.params import ParameterRange, ParameterSpace

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_library_defaults_equal_the_dsp_config():
    config = yaml.safe_load((CONF / "dsp" / "default.yaml").read_text())
    assert ParameterSpace.from_config(config) == ParameterSpace()


def test_denormalize_maps_ends_to_bounds_and_midpoint_linear_or_geometric():
    space = ParameterSpace()
    for unit_value in (0.0, 0.5, 1.0):
        stem_unit = torch.full((3, space.n_stem), unit_value, dtype=torch.float64)
        master_unit = torch.full((space.n_master,), unit_value, dtype=torch.float64)
        stem, master = space.denormalize(stem_unit, master_unit)
        for params, ranges in ((stem, space.stem), (master, space.master)):
            for name, spec in ranges.items():
                low = torch.as_tensor(spec.low, dtype=torch.float64)
                high = torch.as_tensor(spec.high, dtype=torch.float64)
                if unit_value == 0.5:
                    expected = torch.sqrt(low * high) if spec.log else (low + high) / 2
                else:
                    expected = low if unit_value == 0 else high
                torch.testing.assert_close(params[name], expected.expand_as(params[name]), msg=name)


def test_normalize_inverts_denormalize_and_shapes_match_the_console():
    space = ParameterSpace()
    stem_unit = torch.rand(2, 5, space.n_stem, dtype=torch.float64)
    master_unit = torch.rand(2, space.n_master, dtype=torch.float64)
    stem, master = space.denormalize(stem_unit, master_unit)
    assert set(stem) == set(STEM_PARAMETERS) and set(master) == set(MASTER_PARAMETERS)
    assert stem["eq_gain_db"].shape == (2, 5, 4) and stem["pan"].shape == (2, 5)
    assert master["eq_q"].shape == (2, 4) and master["width"].shape == (2,)
    again_stem, again_master = space.normalize(stem, master)
    torch.testing.assert_close(again_stem, stem_unit)
    torch.testing.assert_close(again_master, master_unit)


def test_neutral_settings_are_the_configured_ones():
    stem, master = ParameterSpace().neutral(3, dtype=torch.float64)
    torch.testing.assert_close(stem["comp_ratio"], torch.full((3,), 1.0, dtype=torch.float64))
    torch.testing.assert_close(master["limiter_threshold"], torch.tensor(1.0, dtype=torch.float64))


def test_pinned_share_counts_settings_at_an_end_of_their_range_but_not_at_a_neutral_end():
    space = ParameterSpace()
    stem, master = space.neutral(3, dtype=torch.float64)
    stem = {name: value.expand(2, *value.shape).clone() for name, value in stem.items()}
    master = {name: value.expand(2, *value.shape).clone() for name, value in master.items()}
    stem["level_db"][0, 0] = 6.0  # the top of its range: pinned
    stem["eq_gain_db"][0, 1, 3] = -11.9  # one band within 2 % of the bottom: pinned
    stem["comp_makeup_db"][0, 2] = 0.0  # neutral, at its range's end: not pinned
    master["width"][0] = 0.5  # the bottom: pinned
    stem["pan"][1, 1] = 0.99  # 0.995 normalised: pinned
    stem["level_db"][1, 2] = 6.0  # a masked stem's: not counted
    share = space.pinned_share(stem, master, mask=torch.tensor([[1.0, 1, 1], [1, 1, 0]]))
    expected = [3 / (3 * space.n_stem + space.n_master), 1 / (2 * space.n_stem + space.n_master)]
    torch.testing.assert_close(share, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize(
    "bad",
    [
        {"low": 1.0, "high": 0.0, "neutral": 0.5},
        {"low": 0.0, "high": 1.0, "neutral": 2.0},
        {"low": 0.0, "high": 10.0, "neutral": 1.0, "log": True},
        {"low": (0.0, 1.0), "high": 2.0, "neutral": 1.0},
    ],
)
def test_invalid_ranges_are_refused(bad):
    with pytest.raises(AutomixError):
        ParameterRange(**bad)


def test_config_missing_a_parameter_names_it():
    config = yaml.safe_load((CONF / "dsp" / "default.yaml").read_text())
    del config["stem"]["pan"]
    with pytest.raises(AutomixError, match="stem.pan"):
        ParameterSpace.from_config(config)
