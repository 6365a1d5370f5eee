"""A mix's console as a file: every setting in units, keyed by stem name, to keep, edit and render again.

The JSON shape (schema version 1; docs/design.md, *Settings files*):

    {"schema_version": 1, "automix_version": "0.1.0", "sample_rate": 44100, "ceiling_dbtp": -1.0,
     "input_gain_db": 3.1, "master_trim_db": 7.4,
     "stems": {"drums": {"eq_gain_db": [4 values], ..., "level_db": -6.0, "pan": 0.1}, ...},
     "master": {"bus_threshold_db": -18.0, ..., "limiter_threshold": 1.0},
     "targets": {"style": "rock_punk", "lufs": -9.5, "spectral_centroid": 2800.0, "stereo_ms_ratio": 0.6}}

`AutoMixChain.render_settings` renders it without optimisation: the same stems give the same mix.
"""

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from automix import __version__
from automix.dsp.console import MASTER_PARAMETERS, STEM_PARAMETERS
from automix.errors import AutomixError
from automix.io import PathLike, atomic_write_text
from automix.params import ParameterRange, ParameterSpace
from automix.styles import StyleTarget
from automix.trim import MAX_TRIM_DB

SCHEMA_VERSION = 1
MAX_INPUT_GAIN_DB = 60.0  # a file's input gain is held to this (the measured one is far inside)
_TOP_FIELDS = ("schema_version", "sample_rate", "input_gain_db", "master_trim_db", "stems", "master")
_OPTIONAL_FIELDS = ("automix_version", "ceiling_dbtp", "targets")


@dataclass(frozen=True)
class ConsoleSettings:
    """One song's console in units, as a settings file holds it.

    Attributes:
        names: the stems' names, in the order of the rows of `stem_params`.
        stem_params: `STEM_PARAMETERS`, each `[N]` (EQ `[N, 4]`), float32.
        master_params: `MASTER_PARAMETERS`, each `[]` (EQ `[4]`), float32.
        master_trim_db: the master's input trim, dB.
        input_gain_db: every strip's input gain (the song's gain staging), dB.
        sample_rate: Hz the settings were made at (time constants and filters are in units: any rate works).
        ceiling_dbtp: the limiter's ceiling.
        targets: what the mix was aimed at, for the report; None where the file gives none.
        source: the file, for messages.
    """

    names: tuple[str, ...]
    stem_params: dict[str, torch.Tensor]
    master_params: dict[str, torch.Tensor]
    master_trim_db: float
    input_gain_db: float
    sample_rate: int
    ceiling_dbtp: float
    targets: StyleTarget | None = None
    source: str = "settings"

    def ordered(self, names: Sequence[str]) -> "ConsoleSettings":
        """The same settings with the stems in the order of `names` (the stems given).

        Raises:
            AutomixError: a stem given that the settings do not name, or one they name that is not given.
        """
        source = self.source
        unknown = [name for name in self.names if name not in names]
        if unknown:
            raise AutomixError(
                f"{source}: stems.{unknown[0]} names no stem given (given: {', '.join(names)}); "
                "give that stem or remove its entry"
            )
        missing = [name for name in names if name not in self.names]
        if missing:
            raise AutomixError(f"{source}: no settings for the stem {missing[0]!r}; add an entry under stems")
        order = torch.tensor([self.names.index(name) for name in names])
        params = {key: value[order] for key, value in self.stem_params.items()}
        return dataclasses.replace(self, names=tuple(names), stem_params=params)


def settings_from_analysis(
    analysis: Mapping, names: Sequence[str], sample_rate: int, style: StyleTarget | None = None
) -> dict:
    """The settings file's dict of one song's analysis (`AutoMixChain.forward`, not a batch)."""
    stem_params = analysis["stem_params"]

    def plain(value: torch.Tensor):
        return value.detach().cpu().double().tolist()

    input_gain = stem_params.get("input_gain_db")
    settings = {
        "schema_version": SCHEMA_VERSION,
        "automix_version": __version__,
        "sample_rate": int(sample_rate),
        "ceiling_dbtp": float(analysis.get("ceiling_dbtp", -1.0)),
        "input_gain_db": 0.0 if input_gain is None else float(input_gain.reshape(-1)[0]),
        "master_trim_db": float(analysis.get("master_trim_db", 0.0)),
        "stems": {
            name: {key: plain(stem_params[key][i]) for key in STEM_PARAMETERS} for i, name in enumerate(names)
        },
        "master": {key: plain(analysis["master_params"][key]) for key in MASTER_PARAMETERS},
    }
    if style is not None:
        settings["targets"] = {
            "style": style.name,
            "lufs": style.lufs,
            "spectral_centroid": style.spectral_centroid_hz,
            "stereo_ms_ratio": style.stereo_ms_ratio,
        }
    return settings


def write_settings(path: PathLike, settings: Mapping, *, protect=()) -> Path:
    """Write a settings dict as JSON, atomically."""
    return atomic_write_text(path, json.dumps(settings, indent=2, allow_nan=False) + "\n", protect=protect)


def read_settings(path: PathLike, space: ParameterSpace | None = None) -> ConsoleSettings:
    """A settings file, checked field by field against the parameter ranges of `space` (the defaults).

    Raises:
        AutomixError: one line naming the file and the field: not JSON, a missing or unknown field, a
            value that is not a number or outside its range, a newer schema.
    """
    path = Path(path)
    if not path.is_file():
        raise AutomixError(f"{path}: no such settings file; check the path")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise AutomixError(f"{path}: cannot read it ({error}); give a UTF-8 JSON file") from None
    except json.JSONDecodeError as error:
        raise AutomixError(
            f"{path}: not valid JSON (line {error.lineno}: {error.msg}); fix the syntax"
        ) from None
    return parse_settings(data, space or ParameterSpace(), str(path))


def parse_settings(data, space: ParameterSpace, source: str = "settings") -> ConsoleSettings:
    """`read_settings` on a parsed JSON value."""
    if not isinstance(data, Mapping):
        raise AutomixError(f"{source}: expected a JSON object of settings, got {type(data).__name__}")
    _check_fields(source, "", data, _TOP_FIELDS, _TOP_FIELDS + _OPTIONAL_FIELDS)
    version = data["schema_version"]
    if not _is_number(version) or int(version) != version or not 1 <= version <= SCHEMA_VERSION:
        raise AutomixError(
            f"{source}: schema_version {version!r} is not one this automix reads (1 to {SCHEMA_VERSION}); "
            "write the file with this version"
        )
    rate = data["sample_rate"]
    if not (_is_number(rate) and int(rate) == rate and 8000 <= rate <= 384000):
        raise AutomixError(f"{source}: sample_rate must be a whole number of Hz, 8000-384000, got {rate!r}")
    trim = _scalar(source, "master_trim_db", data["master_trim_db"], -MAX_TRIM_DB, MAX_TRIM_DB)
    input_gain = _scalar(
        source, "input_gain_db", data["input_gain_db"], -MAX_INPUT_GAIN_DB, MAX_INPUT_GAIN_DB
    )
    ceiling = _scalar(source, "ceiling_dbtp", data.get("ceiling_dbtp", -1.0), -20.0, 0.0)
    stems = data["stems"]
    if not isinstance(stems, Mapping) or not stems:
        raise AutomixError(f"{source}: stems must map each stem's name to its settings, got {stems!r}")
    rows = [
        _section(source, f"stems.{name}", entry, space.stem, STEM_PARAMETERS) for name, entry in stems.items()
    ]
    stem_params = {key: torch.stack([row[key] for row in rows]) for key in STEM_PARAMETERS}
    master_params = _section(source, "master", data["master"], space.master, MASTER_PARAMETERS)
    return ConsoleSettings(
        tuple(str(name) for name in stems),
        stem_params,
        master_params,
        trim,
        input_gain,
        int(rate),
        ceiling,
        _targets(source, data.get("targets")),
        source,
    )


def _section(source: str, where: str, entry, ranges: Mapping[str, ParameterRange], names) -> dict:
    if not isinstance(entry, Mapping):
        raise AutomixError(f"{source}: {where} must be an object of settings, got {entry!r}")
    _check_fields(source, f"{where}.", entry, names, names)
    values = {}
    for name in names:
        spec, value = ranges[name], entry[name]
        low, high = (
            torch.as_tensor(bound, dtype=torch.float64).reshape(-1) for bound in (spec.low, spec.high)
        )
        given = value if isinstance(value, list) else [value]
        if spec.n_values > 1 and not (isinstance(value, list) and len(value) == spec.n_values):
            raise AutomixError(
                f"{source}: {where}.{name} must be a list of {spec.n_values} numbers, got {value!r}"
            )
        if not all(_is_number(v) and math.isfinite(v) for v in given) or (
            spec.n_values == 1 and len(given) != 1
        ):
            raise AutomixError(f"{source}: {where}.{name} must be {_shape(spec)}, got {value!r}")
        tensor = torch.tensor(given, dtype=torch.float64)
        # A value written from a float32 setting may sit a rounding step past its bound.
        outside = (tensor < low - 1e-6 * low.abs().clamp_min(1)) | (
            tensor > high + 1e-6 * high.abs().clamp_min(1)
        )
        if outside.any():
            band = int(outside.nonzero()[0])
            label = f"{where}.{name}" + (f"[{band}]" if spec.n_values > 1 else "")
            raise AutomixError(
                f"{source}: {label} is {float(tensor[band]):g}, outside its range "
                f"{float(low[band]):g} to {float(high[band]):g}"
            )
        values[name] = tensor.float() if spec.n_values > 1 else tensor[0].float()
    return values


def _targets(source: str, entry) -> StyleTarget | None:
    if entry is None:
        return None
    fields = ("lufs", "spectral_centroid", "stereo_ms_ratio")
    if not isinstance(entry, Mapping):
        raise AutomixError(f"{source}: targets must be an object, got {entry!r}")
    _check_fields(source, "targets.", entry, fields, (*fields, "style"))
    for field in fields:
        if not _is_number(entry[field]):
            raise AutomixError(f"{source}: targets.{field} must be a number, got {entry[field]!r}")
    try:
        return StyleTarget(
            name=str(entry.get("style", "settings")),
            lufs=entry["lufs"],
            spectral_centroid_hz=entry["spectral_centroid"],
            stereo_ms_ratio=entry["stereo_ms_ratio"],
        )
    except AutomixError as error:
        raise AutomixError(f"{source}: targets: {error}") from None


def _check_fields(source: str, prefix: str, entry: Mapping, required, allowed) -> None:
    unknown = [key for key in entry if key not in allowed]
    if unknown:
        raise AutomixError(f"{source}: unknown field {prefix}{unknown[0]}; known: {', '.join(allowed)}")
    missing = [key for key in required if key not in entry]
    if missing:
        raise AutomixError(f"{source}: missing field {prefix}{missing[0]}")


def _scalar(source: str, field: str, value, low: float, high: float) -> float:
    if not (_is_number(value) and math.isfinite(value) and low <= value <= high):
        raise AutomixError(f"{source}: {field} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _shape(spec: ParameterRange) -> str:
    return "a number" if spec.n_values == 1 else f"a list of {spec.n_values} numbers"


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
