"""Style targets: defaults equal conf/style, file validation, blending, targets from a reference."""

import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from omegaconf import OmegaConf

from automix.errors import AutomixError
from automix.metrics import band_energy, integrated_loudness, spectral_centroid, stereo_ms_ratio
from automix.styles import (
    DEFAULT_STYLES,
    RANDOM_CENTROID_RANGE_HZ,
    RANDOM_LUFS_RANGE,
    RANDOM_MS_RATIO_RANGE,
    StyleTarget,
    blend_styles,
    get_style,
    load_style_targets,
    random_style,
    style_from_reference,
    style_from_reference_file,
    styles_from_config,
)

CONF_STYLE = Path(__file__).resolve().parents[1] / "conf" / "style"
SAMPLE_RATE = 44100
VALID = "lufs: -11.0\n    spectral_centroid_hz: 2400\n    stereo_ms_ratio: 0.7"


def _write(tmp_path: Path, text: str, name: str = "custom.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path) -> str:
    with pytest.raises(AutomixError) as caught:
        load_style_targets(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# ------------------------------------------------------------------------------------ defaults


def test_defaults_are_the_design_table():
    table = {
        "rock_punk": (-9.5, 2800, 0.6),
        "rnb_ballad": (-12.0, 1800, 0.8),
        "country_pop": (-10.5, 2200, 0.7),
    }
    assert set(DEFAULT_STYLES) == set(table)
    for name, (lufs, centroid_hz, ms) in table.items():
        assert DEFAULT_STYLES[name] == StyleTarget(
            name=name, lufs=lufs, spectral_centroid_hz=centroid_hz, stereo_ms_ratio=ms
        )


def test_defaults_equal_the_style_configs():
    files = sorted(CONF_STYLE.glob("*.yaml"))
    assert {path.stem for path in files} == set(DEFAULT_STYLES)
    for path in files:
        assert styles_from_config(yaml.safe_load(path.read_text()), path.name) == {
            path.stem: DEFAULT_STYLES[path.stem]
        }
        assert load_style_targets(path) == dict(DEFAULT_STYLES)


def test_no_path_gives_a_fresh_copy_of_the_defaults():
    styles = load_style_targets()
    assert styles == dict(DEFAULT_STYLES)
    styles["x"] = DEFAULT_STYLES["rock_punk"]
    assert "x" not in load_style_targets()


# ------------------------------------------------------------------------------- custom files


def test_custom_styles_merge_over_the_defaults(tmp_path):
    path = _write(
        tmp_path,
        f"style_targets:\n  my_style:\n    {VALID}\n"
        "    frequency_balance: {low_energy: 2, mid_energy: 1, high_energy: 1}\n"
        "  rock_punk:\n    lufs: -8.0\n    spectral_centroid_hz: 3000\n    stereo_ms_ratio: 0.5\n",
    )
    styles = load_style_targets(path)
    assert set(styles) == {*DEFAULT_STYLES, "my_style"}
    assert styles["rnb_ballad"] == DEFAULT_STYLES["rnb_ballad"]
    assert styles["rock_punk"].lufs == -8.0
    mine = get_style(styles, "my_style")
    assert (mine.lufs, mine.spectral_centroid_hz, mine.stereo_ms_ratio) == (-11.0, 2400.0, 0.7)
    assert mine.frequency_balance == (2.0, 1.0, 1.0)
    assert mine.balance_fractions() == (0.5, 0.25, 0.25)


def test_the_bare_shape_of_the_original_design_is_accepted(tmp_path):
    bare = load_style_targets(_write(tmp_path, f"my_custom_style:\n    {VALID}\n", "bare.yaml"))
    wrapped = load_style_targets(_write(tmp_path, f"style_targets:\n  my_custom_style:\n    {VALID}\n"))
    assert bare == wrapped
    assert bare["my_custom_style"].spectral_centroid_hz == 2400.0


def test_a_hydra_config_is_accepted():
    config = OmegaConf.create(
        {"style_targets": {"x": {"lufs": -9, "spectral_centroid_hz": 2000, "stereo_ms_ratio": 1}}}
    )
    assert styles_from_config(config)["x"].lufs == -9.0


def test_the_message_names_file_style_field_and_value(tmp_path):
    path = _write(
        tmp_path,
        "style_targets:\n  x:\n    lufs: loud\n    spectral_centroid_hz: 2000\n    stereo_ms_ratio: 1\n",
    )
    assert _error(path) == f"{path}: style 'x': lufs must be a number between -40 and 0 LUFS, got 'loud'"


def _style(**fields) -> str:
    values = {"lufs": "-10", "spectral_centroid_hz": "2000", "stereo_ms_ratio": "0.7", **fields}
    lines = "".join(f"    {key}: {value}\n" for key, value in values.items() if value is not None)
    return f"style_targets:\n  x:\n{lines}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_style(lufs=".nan"), "lufs must be a number between -40 and 0 LUFS, got nan"),
        (_style(lufs="5"), "lufs must be a number between -40 and 0 LUFS, got 5"),
        (_style(lufs=".inf"), "lufs must be a number"),
        (_style(lufs="yes"), "lufs must be a number"),
        (_style(lufs="[-9]"), "lufs must be a number"),
        (_style(spectral_centroid_hz="50"), "spectral_centroid_hz must be a number between 100 and 10000 Hz"),
        (
            _style(spectral_centroid_hz="2.8e3"),
            "spectral_centroid_hz must be a number between 100 and 10000 Hz, got '2.8e3' (text",
        ),
        (_style(spectral_centroid_hz='"2800"'), "got '2800' (text, not a number"),
        (_style(stereo_ms_ratio="-0.1"), "stereo_ms_ratio must be a number between 0 and 2"),
        (_style(stereo_ms_ratio="3"), "stereo_ms_ratio must be a number between 0 and 2"),
        (_style(stereo_ms_ratio=None), "style 'x': missing stereo_ms_ratio"),
        (_style(lufs=None, stereo_ms_ratio=None), "style 'x': missing lufs, stereo_ms_ratio"),
        (
            _style(spectral_centroid_hz=None, spectral_centroid="2000"),
            "style 'x': unknown field 'spectral_centroid'; did you mean 'spectral_centroid_hz'?",
        ),
        (_style(frequency_balance="0.5"), "frequency_balance must be a mapping"),
        (
            _style(frequency_balance="{low_energy: -1, mid_energy: 1, high_energy: 1}"),
            "frequency_balance.low_energy must be a number >= 0",
        ),
        (
            _style(frequency_balance="{low_energy: 1, mid_energy: .nan, high_energy: 1}"),
            "frequency_balance.mid_energy must be a number >= 0",
        ),
        (
            _style(frequency_balance="{low_energy: 0, mid_energy: 0, high_energy: 0}"),
            "frequency_balance is all 0",
        ),
        (
            _style(frequency_balance="{low_energy: 1, mid_energy: 1}"),
            "frequency_balance: missing high_energy",
        ),
        (
            _style(frequency_balance="{low: 1, mid_energy: 1, high_energy: 1}"),
            "frequency_balance: unknown field 'low'; did you mean 'low_energy'?",
        ),
        ("style_targets:\n  x: 5\n", "style 'x': expected a mapping"),
        ("style_targets:\n  x: {lufs: -9\n", "not valid YAML at line 3"),
        ("style_targets:\n  x:\n    lufs: -9\n   bad: [\n", "not valid YAML at line"),
        ("- rock_punk\n- rnb_ballad\n", "expected a mapping"),
        ("style_targets: [1, 2]\n", "'style_targets' must map style names to targets"),
        ("style_targets: {}\n", "no styles in it"),
        ("style_targets:\n", "no styles in it"),
        (f"style_targets:\n  x:\n    {VALID}\nstyle: rock_punk\n", "unknown top-level keys ['style']"),
        (_style() + "  x:\n    lufs: -9\n", "key 'x' is given twice"),
        (_style(lufs="-9\n    lufs: -10"), "key 'lufs' is given twice"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        (f"12:\n    {VALID}\n", "style names must be non-empty text, got 12"),
    ],
)
def test_bad_target_files_raise_one_line_naming_the_problem(tmp_path, text, expected):
    message = _error(_write(tmp_path, text))
    assert expected in message


def test_missing_file_and_folder(tmp_path):
    assert "no such file" in _error(tmp_path / "nope.yaml")
    assert "a folder" in _error(tmp_path)


def test_unknown_style_lists_the_valid_names():
    with pytest.raises(
        AutomixError, match="unknown style 'jazz'; choose one of: country_pop, rnb_ballad, rock_punk"
    ):
        get_style(load_style_targets(), "jazz")
    assert get_style({}, DEFAULT_STYLES["rock_punk"]) is DEFAULT_STYLES["rock_punk"]


# --------------------------------------------------------------------------- the target object


def test_as_tensor_and_to_config():
    style = StyleTarget(
        name="s", lufs=-10, spectral_centroid_hz=2000, stereo_ms_ratio=0.5, frequency_balance=(1, 1, 2)
    )
    assert style.as_tensor().tolist() == [-10.0, 2000.0, 0.5]
    assert style.as_tensor(with_balance=True, dtype=torch.float64).tolist() == [
        -10.0,
        2000.0,
        0.5,
        0.25,
        0.25,
        0.5,
    ]
    assert styles_from_config({"s": style.to_config()})["s"] == style
    with pytest.raises(AutomixError, match="no frequency_balance"):
        DEFAULT_STYLES["rock_punk"].as_tensor(with_balance=True)


def test_impossible_targets_are_refused():
    with pytest.raises(AutomixError):
        StyleTarget(name="s", lufs=math.nan, spectral_centroid_hz=2000, stereo_ms_ratio=0.5)
    with pytest.raises(AutomixError):
        StyleTarget(name="s", lufs=-9, spectral_centroid_hz=0, stereo_ms_ratio=0.5)
    with pytest.raises(AutomixError):
        StyleTarget(
            name="s", lufs=-9, spectral_centroid_hz=2000, stereo_ms_ratio=0.5, frequency_balance=(0, 0, 0)
        )


# ----------------------------------------------------------------------------------- blending


def test_blend_endpoints_and_midpoint():
    a = StyleTarget(
        name="a", lufs=-9.5, spectral_centroid_hz=2800, stereo_ms_ratio=0.6, frequency_balance=(2, 1, 1)
    )
    b = StyleTarget(
        name="b", lufs=-12.0, spectral_centroid_hz=1800, stereo_ms_ratio=0.8, frequency_balance=(1, 2, 1)
    )
    for t, end in ((0.0, a), (1.0, b)):
        blend = blend_styles(a, b, t)
        assert (blend.lufs, blend.spectral_centroid_hz, blend.stereo_ms_ratio) == (
            end.lufs,
            end.spectral_centroid_hz,
            end.stereo_ms_ratio,
        )
        assert blend.frequency_balance == pytest.approx(end.balance_fractions())
    middle = blend_styles(a, b, 0.5)
    assert middle.lufs == pytest.approx(-10.75)
    assert middle.stereo_ms_ratio == pytest.approx(0.7)
    assert middle.spectral_centroid_hz == pytest.approx(math.sqrt(2800 * 1800))
    assert middle.frequency_balance == pytest.approx((0.375, 0.375, 0.25))
    assert blend_styles(a, b, 0.3).name == "a*0.70+b*0.30"
    assert blend_styles(DEFAULT_STYLES["rock_punk"], b, 0.5).frequency_balance is None


@pytest.mark.parametrize("t", [-0.1, 1.5, math.nan, "half"])
def test_blend_amount_outside_0_1_is_refused(t):
    with pytest.raises(AutomixError, match="between 0 and 1"):
        blend_styles(DEFAULT_STYLES["rock_punk"], DEFAULT_STYLES["rnb_ballad"], t)


# --------------------------------------------------------------------------- from a reference


def _reference(seconds: float = 2.0) -> torch.Tensor:
    """Stereo: a 1 kHz sine in the middle plus independent noise left and right."""
    gen = torch.Generator().manual_seed(0)
    n = torch.arange(round(seconds * SAMPLE_RATE), dtype=torch.float64)
    sine = 0.3 * torch.sin(2 * math.pi * 1000.0 * n / SAMPLE_RATE)
    side = 0.05 * torch.randn(n.shape, generator=gen, dtype=torch.float64)
    return torch.stack([sine + side, sine - side]).float()


def test_style_from_reference_equals_the_metrics():
    audio = _reference()
    style = style_from_reference(audio, SAMPLE_RATE, name="ref")
    assert style.name == "ref"
    assert style.lufs == pytest.approx(integrated_loudness(audio, SAMPLE_RATE).item())
    assert style.spectral_centroid_hz == pytest.approx(spectral_centroid(audio, SAMPLE_RATE).item())
    assert style.stereo_ms_ratio == pytest.approx(stereo_ms_ratio(audio).item())
    assert style.frequency_balance == pytest.approx(band_energy(audio, SAMPLE_RATE).tolist())
    # M = sine, S = noise: the ratio is RMS(noise) / RMS(sine), closed form.
    assert style.stereo_ms_ratio == pytest.approx(0.05 / (0.3 / math.sqrt(2)), rel=0.02)
    assert style_from_reference(audio[None], SAMPLE_RATE, name="ref") == style


def test_style_from_reference_file_reads_mono_as_dual_mono(tmp_path):
    mono = _reference()[:1]
    path = tmp_path / "ref.wav"
    sf.write(path, mono.T.numpy(), SAMPLE_RATE, subtype="FLOAT")
    style = style_from_reference_file(path)
    assert style.name == "ref"
    assert style.stereo_ms_ratio == 0.0
    assert style.lufs == pytest.approx(integrated_loudness(mono.expand(2, -1), SAMPLE_RATE).item())


def test_bad_references_are_refused():
    with pytest.raises(AutomixError, match="silent"):
        style_from_reference(torch.zeros(2, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(AutomixError, match="one"):
        style_from_reference(torch.zeros(3, 2, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(AutomixError, match="NaN"):
        style_from_reference(torch.full((2, SAMPLE_RATE), math.nan), SAMPLE_RATE)


def test_references_no_mix_could_aim_at_are_refused_as_a_targets_file_would_be():
    """A test tone or a track in antiphase measures outside the ranges a targets file is held to (an
    antiphase reference gave "M/S 1552756.88", then a run that failed after minutes)."""
    seconds = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    hum = 0.5 * torch.sin(2 * math.pi * 50.0 * seconds)
    with pytest.raises(AutomixError, match=r"spectral_centroid_hz 5\d\.\d+, outside the 100 to 10000 Hz"):
        style_from_reference(torch.stack([hum, hum]), SAMPLE_RATE)
    tone = 0.5 * torch.sin(2 * math.pi * 1000.0 * seconds)
    with pytest.raises(AutomixError, match="stereo_ms_ratio .* outside the 0 to 2"):
        style_from_reference(torch.stack([tone, -0.999 * tone]), SAMPLE_RATE)


# --------------------------------------------------------------------------------------- random


def test_random_styles_are_seeded_and_in_range():
    def draw(seed):
        return random_style(torch.Generator().manual_seed(seed))

    assert draw(1) == draw(1) and draw(1) != draw(2)
    styles = [draw(seed) for seed in range(2000)]
    for values, (low, high) in (
        ([s.lufs for s in styles], RANDOM_LUFS_RANGE),
        ([s.spectral_centroid_hz for s in styles], RANDOM_CENTROID_RANGE_HZ),
        ([s.stereo_ms_ratio for s in styles], RANDOM_MS_RATIO_RANGE),
    ):
        assert low <= min(values) and max(values) <= high
        assert max(values) - min(values) > 0.95 * (high - low)
    # log-uniform: the median centroid is the geometric mean of the range
    centroids = sorted(s.spectral_centroid_hz for s in styles)
    assert centroids[len(centroids) // 2] == pytest.approx(
        math.sqrt(math.prod(RANDOM_CENTROID_RANGE_HZ)), rel=0.05
    )
