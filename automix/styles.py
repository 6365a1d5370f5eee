"""Style targets: what a mix should measure. Load, validate, interpolate, or take them from a reference.

A style is an integrated loudness (LUFS), a spectral centroid (Hz) and a stereo M/S ratio, the three
measurements of `automix.metrics` that the loss compares, and optionally a frequency balance: relative
energies below 250 Hz, in 250-4000 Hz and above 4000 Hz (the bands of `automix.metrics.band_energy`).

The built-in styles `DEFAULT_STYLES` equal `conf/style/*.yaml` (a test compares them). Custom targets
come from a YAML file shaped as in docs/design.md, *Style targets*::

    style_targets:
      my_style:
        lufs: -11.0
        spectral_centroid_hz: 2400
        stereo_ms_ratio: 0.7
        frequency_balance: {low_energy: 0.45, mid_energy: 0.4, high_energy: 0.15}  # optional

or the same without the top `style_targets:` key.
"""

import dataclasses
import difflib
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
import yaml

from automix.errors import AutomixError
from automix.io import load_audio, to_stereo
from automix.loudness import BLOCK_S, SILENCE_LUFS, all_finite, window_samples
from automix.metrics import band_energy, integrated_loudness, spectral_centroid, stereo_ms_ratio
from automix.reference_balance import long_term_spectrum_db

# Plausible ranges of a target, checked when targets are read from a file.
LUFS_RANGE = (-40.0, 0.0)
CENTROID_RANGE_HZ = (100.0, 10000.0)
MS_RATIO_RANGE = (0.0, 2.0)
# `random_style`: the range of commercial masters, from quiet acoustic to loud rock; centroids are
# drawn log-uniformly (equal odds per octave).
RANDOM_LUFS_RANGE = (-16.0, -7.0)
RANDOM_CENTROID_RANGE_HZ = (1200.0, 4000.0)
RANDOM_MS_RATIO_RANGE = (0.3, 1.0)

# Loudness people deliver to (`with_loudness`): streaming services' normalisation level (Spotify, YouTube,
# Tidal: −14 LUFS), Apple Music's (−16 LUFS; its Sound Check and AES TD1004 for streaming), and EBU R128
# broadcast (−23 LUFS ±0.5 LU, at most −1 dBTP: the ceiling every mix keeps).
LOUDNESS_PRESETS = MappingProxyType({"streaming": -14.0, "apple_music": -16.0, "ebu_r128": -23.0})

TOP_KEY = "style_targets"
BALANCE_KEYS = ("low_energy", "mid_energy", "high_energy")
VECTOR_NAMES = ("lufs", "spectral_centroid_hz", "stereo_ms_ratio")
_RANGES = {
    "lufs": (LUFS_RANGE, "LUFS"),
    "spectral_centroid_hz": (CENTROID_RANGE_HZ, "Hz"),
    "stereo_ms_ratio": (MS_RATIO_RANGE, "(RMS side / RMS mid)"),
}
_FIELDS = (*VECTOR_NAMES, "frequency_balance")


@dataclass(frozen=True, kw_only=True)
class StyleTarget:
    """One style's targets.

    Attributes:
        name: the style's name (a key of the targets mapping, or a description such as a blend's).
        lufs: integrated loudness, LUFS (BS.1770-4).
        spectral_centroid_hz: centroid of the mid signal's average magnitude spectrum, Hz (> 0).
        stereo_ms_ratio: RMS(side) / RMS(mid) (>= 0).
        frequency_balance: relative energies (low, mid, high), any scale, or None for no target; see
            `balance_fractions()` for the fractions that `automix.metrics.band_energy` is compared with.
        spectrum_db: a reference's long-term 1/3-octave spectrum (`automix.reference_balance`), dB, from
            25 Hz up; the per-song optimiser starts from the stem balance that matches it. None for a
            style (not saved with it).
    """

    name: str
    lufs: float
    spectral_centroid_hz: float
    stereo_ms_ratio: float
    frequency_balance: tuple[float, float, float] | None = None
    spectrum_db: tuple[float, ...] | None = None

    def __post_init__(self):
        values = [self.lufs, self.spectral_centroid_hz, self.stereo_ms_ratio, *(self.frequency_balance or ())]
        if not all(math.isfinite(v) for v in values):
            raise AutomixError(f"style '{self.name}': targets must be finite numbers, got {self}")
        if self.spectral_centroid_hz <= 0 or self.stereo_ms_ratio < 0:
            raise AutomixError(f"style '{self.name}': need spectral_centroid_hz > 0 and stereo_ms_ratio >= 0")
        for field in VECTOR_NAMES:
            object.__setattr__(self, field, float(getattr(self, field)))
        if self.frequency_balance is not None:
            balance = tuple(float(v) for v in self.frequency_balance)
            if len(balance) != len(BALANCE_KEYS) or min(balance) < 0 or sum(balance) <= 0:
                raise AutomixError(
                    f"style '{self.name}': frequency_balance must be 3 energies >= 0, not all 0, "
                    f"got {balance}"
                )
            object.__setattr__(self, "frequency_balance", balance)

    def balance_fractions(self) -> tuple[float, float, float] | None:
        """`frequency_balance` normalised to fractions summing to 1 (as `band_energy` gives), or None."""
        if self.frequency_balance is None:
            return None
        total = sum(self.frequency_balance)
        return tuple(v / total for v in self.frequency_balance)

    def as_tensor(self, *, with_balance: bool = False, dtype=torch.float32, device=None) -> torch.Tensor:
        """The targets as a vector for conditioning a network, in units (the network scales them).

        Args:
            with_balance: append the three `balance_fractions()`.
            dtype, device: of the result.

        Returns:
            `[3]` (lufs LUFS, centroid Hz, M/S ratio), or `[6]` with the band fractions.

        Raises:
            AutomixError: `with_balance` for a style without a frequency balance.
        """
        values = [self.lufs, self.spectral_centroid_hz, self.stereo_ms_ratio]
        if with_balance:
            if self.balance_fractions() is None:
                raise AutomixError(f"style '{self.name}' has no frequency_balance; add one to its targets")
            values += self.balance_fractions()
        return torch.tensor(values, dtype=dtype, device=device)

    def to_config(self) -> dict:
        """Plain dict in the YAML shape of one style (for checkpoints and reports)."""
        config = {field: getattr(self, field) for field in VECTOR_NAMES}
        if self.frequency_balance is not None:
            config["frequency_balance"] = dict(zip(BALANCE_KEYS, self.frequency_balance, strict=True))
        return config


DEFAULT_STYLES: Mapping[str, StyleTarget] = MappingProxyType(
    {
        "rock_punk": StyleTarget(
            name="rock_punk", lufs=-9.5, spectral_centroid_hz=2800.0, stereo_ms_ratio=0.6
        ),
        "rnb_ballad": StyleTarget(
            name="rnb_ballad", lufs=-12.0, spectral_centroid_hz=1800.0, stereo_ms_ratio=0.8
        ),
        "country_pop": StyleTarget(
            name="country_pop", lufs=-10.5, spectral_centroid_hz=2200.0, stereo_ms_ratio=0.7
        ),
    }
)


# ---------------------------------------------------------------------------------------- reading


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives one key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # a complex key: SafeLoader rejects the unhashable ones itself
            if key in seen:
                raise _DuplicateKeyError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path):
    if path.is_dir():
        raise AutomixError(f"{path}: a folder, not a file; give a YAML file of style targets")
    if not path.is_file():
        raise AutomixError(f"{path}: no such file; check the path of the style targets")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AutomixError(f"{path}: cannot read it ({error}); give a UTF-8 YAML file") from error
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        if isinstance(error, _DuplicateKeyError):
            raise AutomixError(f"{path}{where}: {problem}; keep one") from error
        raise AutomixError(f"{path}: not valid YAML{where}: {problem}; fix the syntax") from error


def _is_number(value) -> bool:
    """A finite int or float (YAML's `yes`/`no` are bools, not numbers)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _number(where: str, field: str, value, bounds: tuple[float, float], unit: str) -> float:
    low, high = bounds
    if not (_is_number(value) and low <= value <= high):
        raise AutomixError(
            f"{where}: {field} must be a number between {low:g} and {high:g} {unit}, got {value!r}"
            + _quoted_number_hint(value)
        )
    return float(value)


def _quoted_number_hint(value) -> str:
    """A hint when YAML read a number as text: quoted, or an exponent without a sign (YAML 1.1)."""
    try:
        float(value)
    except (TypeError, ValueError):
        return ""
    return (
        " (text, not a number: write it unquoted, with a decimal point, e.g. 2800.0 or 2.8e+3)"
        if isinstance(value, str)
        else ""
    )


def _balance(where: str, value) -> tuple[float, float, float] | None:
    if value is None:
        return None
    shape = "{low_energy: ..., mid_energy: ..., high_energy: ...}"
    if not isinstance(value, Mapping):
        raise AutomixError(f"{where}: frequency_balance must be a mapping {shape}, got {value!r}")
    _check_keys(f"{where}: frequency_balance", value, BALANCE_KEYS, BALANCE_KEYS)
    energies = []
    for key in BALANCE_KEYS:
        energy = value[key]
        if not (_is_number(energy) and energy >= 0):
            raise AutomixError(
                f"{where}: frequency_balance.{key} must be a number >= 0 (a relative energy), got {energy!r}"
            )
        energies.append(float(energy))
    if sum(energies) <= 0:
        raise AutomixError(f"{where}: frequency_balance is all 0; give relative energies, e.g. {shape}")
    return tuple(energies)


def _check_keys(where: str, entry: Mapping, required, allowed) -> None:
    unknown = [key for key in entry if key not in allowed]
    if unknown:
        key = unknown[0]
        prefixed = [name for name in allowed if name.startswith(str(key)) or str(key).startswith(name)]
        close = prefixed or difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise AutomixError(f"{where}: unknown field {key!r}; {hint}(fields: {', '.join(allowed)})")
    missing = [key for key in required if key not in entry]
    if missing:
        raise AutomixError(f"{where}: missing {', '.join(missing)}")


def styles_from_config(config: Mapping, source: str = "style targets") -> dict[str, StyleTarget]:
    """Validate style targets given as a mapping (parsed YAML, or a Hydra/OmegaConf config).

    Args:
        config: `{style_targets: {name: {...}}}`, or the bare `{name: {...}}` (see the module docstring).
        source: what to name in error messages (the file).

    Returns:
        `{name: StyleTarget}` of the styles in `config` only (no defaults).

    Raises:
        AutomixError: "<source>: style '<name>': <field> must be ..., got <value>" for the first problem:
            not a mapping, no styles, unknown or missing fields, non-numbers, NaN, out of range values.
    """
    if not isinstance(config, Mapping):
        raise AutomixError(
            f"{source}: expected a mapping '{TOP_KEY}: {{name: {{lufs: ..., spectral_centroid_hz: ..., "
            f"stereo_ms_ratio: ...}}}}', got {type(config).__name__}"
        )
    if TOP_KEY in config:
        others = [key for key in config if key != TOP_KEY]
        if others:
            raise AutomixError(f"{source}: unknown top-level keys {others} next to '{TOP_KEY}'")
        config = config[TOP_KEY] or {}
        if not isinstance(config, Mapping):
            raise AutomixError(f"{source}: '{TOP_KEY}' must map style names to targets, got {config!r}")
    if not config:
        raise AutomixError(f"{source}: no styles in it; add one under '{TOP_KEY}:'")
    styles = {}
    for name, entry in config.items():
        if not isinstance(name, str) or not name.strip():
            raise AutomixError(f"{source}: style names must be non-empty text, got {name!r}")
        where = f"{source}: style '{name}'"
        if not isinstance(entry, Mapping):
            raise AutomixError(f"{where}: expected a mapping of {', '.join(VECTOR_NAMES)}, got {entry!r}")
        _check_keys(where, entry, VECTOR_NAMES, _FIELDS)
        values = {field: _number(where, field, entry[field], *_RANGES[field]) for field in VECTOR_NAMES}
        balance = _balance(where, entry.get("frequency_balance"))
        styles[name] = StyleTarget(name=name, **values, frequency_balance=balance)
    return styles


def load_style_targets(path: str | os.PathLike | None = None) -> dict[str, StyleTarget]:
    """The built-in styles, with the styles of a YAML file merged over them.

    Merging keeps `--targets custom.yaml --style rock_punk` working; a custom style with a built-in
    style's name replaces it.

    Args:
        path: a YAML file shaped as in the module docstring; None for the built-in styles only.

    Returns:
        `{name: StyleTarget}`, a new dict.

    Raises:
        AutomixError: a missing, empty or unreadable file, broken YAML (with its line), or any
            problem `styles_from_config` finds; the message starts with the path.
    """
    styles = dict(DEFAULT_STYLES)
    if path is None:
        return styles
    path = Path(path)
    config = _read_yaml(path)
    if config is None:
        raise AutomixError(f"{path}: the file is empty; add styles under '{TOP_KEY}:'")
    styles.update(styles_from_config(config, str(path)))
    return styles


def get_style(targets: Mapping[str, StyleTarget], name: "str | StyleTarget") -> StyleTarget:
    """The style called `name` (a StyleTarget is returned as it is).

    Raises:
        AutomixError: unknown name; the message lists the valid ones.
    """
    if isinstance(name, StyleTarget):
        return name
    if name not in targets:
        raise AutomixError(
            f"unknown style {name!r}; choose one of: {', '.join(sorted(targets))} "
            "(or define it in a --targets YAML file)"
        )
    return targets[name]


def with_loudness(style: StyleTarget, target: "float | str") -> StyleTarget:
    """`style` delivered at another loudness: `target` in LUFS, or a name of `LOUDNESS_PRESETS`; the
    style's tone and width are kept.

    Raises:
        AutomixError: an unknown preset or a loudness outside `LUFS_RANGE`.
    """
    if isinstance(target, str):
        try:
            lufs = LOUDNESS_PRESETS[target] if target in LOUDNESS_PRESETS else float(target)
        except ValueError:
            raise AutomixError(
                f"loudness target {target!r}: give LUFS (e.g. -14) or one of {', '.join(LOUDNESS_PRESETS)}"
            ) from None
    else:
        lufs = float(target)
    lufs = _number("loudness target", "lufs", lufs, LUFS_RANGE, "LUFS")
    return dataclasses.replace(style, name=f"{style.name} at {lufs:g} LUFS", lufs=lufs)


# ------------------------------------------------------------------------------ making new targets


def blend_styles(a: StyleTarget, b: StyleTarget, t: float) -> StyleTarget:
    """Interpolate from `a` (t = 0) to `b` (t = 1).

    LUFS and M/S ratio linearly (LUFS is already a log scale), the centroid geometrically (linear in
    octaves), the band fractions linearly when both styles have them (else no balance target).
    The endpoints reproduce `a` and `b` exactly (the balance as fractions).

    Raises:
        AutomixError: t is not a number in [0, 1].
    """
    if not (isinstance(t, numbers.Real) and 0.0 <= t <= 1.0):
        raise AutomixError(f"blend amount must be a number between 0 and 1, got {t!r}")
    t = float(t)

    def linear(x: float, y: float) -> float:
        return (1.0 - t) * x + t * y

    balance = None
    if a.balance_fractions() is not None and b.balance_fractions() is not None:
        balance = tuple(
            linear(x, y) for x, y in zip(a.balance_fractions(), b.balance_fractions(), strict=True)
        )
    return StyleTarget(
        name=f"{a.name}*{1.0 - t:.2f}+{b.name}*{t:.2f}",
        lufs=linear(a.lufs, b.lufs),
        spectral_centroid_hz=a.spectral_centroid_hz ** (1.0 - t) * b.spectral_centroid_hz**t,
        stereo_ms_ratio=linear(a.stereo_ms_ratio, b.stereo_ms_ratio),
        frequency_balance=balance,
    )


@torch.no_grad()
def style_from_reference(audio: torch.Tensor, sample_rate: int, name: str = "reference") -> StyleTarget:
    """The targets a reference track measures: integrated LUFS, centroid, M/S ratio, band balance.

    A mono reference is measured as dual-mono (M/S 0), as a mono file would be played.

    Args:
        audio: `[C, T]` or `[..., C, T]` with one item in the leading dimensions.
        sample_rate: Hz.
        name: the style's name.

    Raises:
        AutomixError: several tracks, not mono/stereo, NaN samples, a reference shorter than one
            400-ms loudness block, or a silent one.
    """
    if audio.ndim < 2 or audio[..., 0, 0].numel() != 1:
        raise AutomixError(f"a reference is one [channels, samples] track, got shape {tuple(audio.shape)}")
    if not all_finite(audio):
        raise AutomixError("the reference has NaN or infinite samples; re-export it")
    stereo = to_stereo(audio.reshape(audio.shape[-2:]))
    # BS.1770 integrates over 400-ms blocks: a shorter track (a click) has no loudness to aim a mix at.
    if stereo.shape[-1] < window_samples(sample_rate, BLOCK_S)[0]:  # as `AutoMixChain.judged` asks of a mix
        raise AutomixError(
            f"the reference is {1000 * stereo.shape[-1] / sample_rate:.0f} ms long, shorter than one "
            f"{1000 * BLOCK_S:.0f}-ms loudness block; give a mixed track"
        )
    lufs = integrated_loudness(stereo, sample_rate, blockwise=True).item()
    if lufs <= SILENCE_LUFS:
        raise AutomixError(f"the reference is silent (below {SILENCE_LUFS:g} LUFS); give a track with music")
    measured = {
        "lufs": lufs,
        "spectral_centroid_hz": spectral_centroid(stereo, sample_rate).item(),
        "stereo_ms_ratio": stereo_ms_ratio(stereo).item(),
    }
    # The ranges a targets file is held to: a test tone or a track in antiphase is no mix to aim at.
    for field, ((low, high), unit) in _RANGES.items():
        if not low <= measured[field] <= high:
            raise AutomixError(
                f"the reference measures {field} {measured[field]:.6g}, outside the {low:g} to {high:g} "
                f"{unit} a mix can be aimed at; give a mixed track"
            )
    return StyleTarget(
        name=name,
        **measured,
        frequency_balance=tuple(band_energy(stereo, sample_rate).tolist()),
        spectrum_db=tuple(long_term_spectrum_db(stereo, sample_rate).tolist()),
    )


def style_from_reference_file(path: str | os.PathLike, name: str | None = None) -> StyleTarget:
    """`style_from_reference` of an audio file (read by `automix.io.load_audio`); name: the file's stem."""
    audio, sample_rate = load_audio(path)
    try:
        return style_from_reference(audio, sample_rate, Path(path).stem if name is None else name)
    except AutomixError as error:
        raise AutomixError(f"{path}: {error}") from None


def random_style(generator: torch.Generator | None = None, name: str = "random") -> StyleTarget:
    """Plausible random targets, for training on custom styles (ranges: `RANDOM_*` constants).

    LUFS and M/S ratio uniform, centroid log-uniform; no frequency balance.
    """
    u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()

    def uniform(fraction: float, bounds: tuple[float, float]) -> float:
        return bounds[0] + fraction * (bounds[1] - bounds[0])

    low_hz, high_hz = RANDOM_CENTROID_RANGE_HZ
    return StyleTarget(
        name=name,
        lufs=uniform(u[0], RANDOM_LUFS_RANGE),
        spectral_centroid_hz=math.exp(uniform(u[1], (math.log(low_hz), math.log(high_hz)))),
        stereo_ms_ratio=uniform(u[2], RANDOM_MS_RATIO_RANGE),
    )
