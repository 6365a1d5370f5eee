"""ParameterSpace: the named ranges of every console parameter, and the one map [0, 1] <-> units.

The network's outputs live in [0, 1]; everything else in the project speaks units (dB, Hz, ms, ratio).
`ParameterSpace.denormalize` is the only place that maps between them. Frequencies, times, Q and
ratios map on a log scale, so equal steps in [0, 1] are equal musical steps.

The defaults below equal `conf/dsp/default.yaml` (a test compares them), so a user of the library
without Hydra gets the same ranges as the training and mixing configs.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from automix.dsp.console import MASTER_PARAMETERS, STEM_PARAMETERS
from automix.errors import AutomixError

RANGE_END_MARGIN = 0.02  # a normalised setting this close to an end of its range is pinned there


@dataclass(frozen=True)
class ParameterRange:
    """One parameter's range in units; per-band parameters give a tuple per band.

    Attributes:
        low, high: bounds in units.
        neutral: where the predictor starts, in units (inside the range).
        log: map on a log scale (for Hz, ms, Q and ratios; needs low > 0).
    """

    low: float | tuple[float, ...]
    high: float | tuple[float, ...]
    neutral: float | tuple[float, ...]
    log: bool = False

    def __post_init__(self):
        low, high, neutral = (
            torch.as_tensor(v, dtype=torch.float64) for v in (self.low, self.high, self.neutral)
        )
        if low.shape != high.shape or low.shape != neutral.shape:
            raise AutomixError(f"range {self}: low, high and neutral must have the same number of values")
        if not (low < high).all() or not ((low <= neutral) & (neutral <= high)).all():
            raise AutomixError(f"range {self}: need low < high and low <= neutral <= high")
        if self.log and not (low > 0).all():
            raise AutomixError(f"range {self}: a log-scale range needs low > 0")

    @property
    def n_values(self) -> int:
        """1 for a scalar parameter, the number of bands for a per-band one."""
        return 1 if isinstance(self.low, int | float) else len(self.low)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(low, high)` in units, float64."""
        return tuple(torch.as_tensor(v, dtype=torch.float64) for v in (self.low, self.high))

    def scaled_bounds(self, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = (torch.as_tensor(v, dtype=dtype, device=device) for v in (self.low, self.high))
        return (low.log(), high.log()) if self.log else (low, high)


def _bands(*values: float) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


DEFAULT_STEM_RANGES: dict[str, ParameterRange] = {
    "eq_gain_db": ParameterRange(_bands(-12, -12, -12, -12), _bands(12, 12, 12, 12), _bands(0, 0, 0, 0)),
    "eq_freq_hz": ParameterRange(
        _bands(30, 150, 1000, 3000), _bands(300, 1500, 8000, 16000), _bands(100, 400, 2500, 8000), log=True
    ),
    "eq_q": ParameterRange(
        _bands(0.5, 0.5, 0.5, 0.5), _bands(1.0, 4.0, 4.0, 1.0), _bands(0.7071, 1.0, 1.0, 0.7071), log=True
    ),
    "comp_threshold_db": ParameterRange(-40.0, -6.0, -20.0),
    "comp_ratio": ParameterRange(1.0, 10.0, 1.0, log=True),
    "comp_attack_ms": ParameterRange(1.0, 100.0, 10.0, log=True),
    "comp_release_ms": ParameterRange(10.0, 1000.0, 100.0, log=True),
    "comp_makeup_db": ParameterRange(0.0, 12.0, 0.0),
    "comp_knee_db": ParameterRange(0.0, 12.0, 6.0),
    "drive": ParameterRange(1.0, 3.0, 1.0),
    "level_db": ParameterRange(-24.0, 6.0, -6.0),
    "pan": ParameterRange(-1.0, 1.0, 0.0),
}
DEFAULT_MASTER_RANGES: dict[str, ParameterRange] = {
    "bus_threshold_db": ParameterRange(-30.0, -6.0, -18.0),
    "bus_ratio": ParameterRange(1.0, 4.0, 1.0, log=True),
    "bus_attack_ms": ParameterRange(5.0, 100.0, 30.0, log=True),
    "bus_release_ms": ParameterRange(50.0, 1000.0, 200.0, log=True),
    "bus_makeup_db": ParameterRange(0.0, 6.0, 0.0),
    "bus_knee_db": ParameterRange(0.0, 12.0, 6.0),
    "eq_gain_db": ParameterRange(_bands(-6, -6, -6, -6), _bands(6, 6, 6, 6), _bands(0, 0, 0, 0)),
    "eq_freq_hz": ParameterRange(
        _bands(30, 150, 1000, 3000), _bands(300, 1500, 8000, 16000), _bands(100, 400, 2500, 8000), log=True
    ),
    "eq_q": ParameterRange(
        _bands(0.5, 0.5, 0.5, 0.5),
        _bands(1.0, 2.0, 2.0, 1.0),
        _bands(0.7071, 0.7071, 0.7071, 0.7071),
        log=True,
    ),
    "width": ParameterRange(0.5, 1.5, 1.0),
    "limiter_threshold": ParameterRange(0.7, 1.0, 1.0),
}


@dataclass(frozen=True)
class ParameterSpace:
    """The ranges of the stem and master parameters of `automix.dsp.console`.

    Normalised parameters are `[..., N, n_stem]` for the stems and `[..., n_master]` for the master, the
    columns in `stem_columns()` / `master_columns()` order (per-band parameters take one column a band).
    """

    stem: Mapping[str, ParameterRange] = field(default_factory=lambda: dict(DEFAULT_STEM_RANGES))
    master: Mapping[str, ParameterRange] = field(default_factory=lambda: dict(DEFAULT_MASTER_RANGES))

    def __post_init__(self):
        for group, names in ((self.stem, STEM_PARAMETERS), (self.master, MASTER_PARAMETERS)):
            if set(group) != set(names):
                missing, extra = sorted(set(names) - set(group)), sorted(set(group) - set(names))
                raise AutomixError(f"dsp ranges: missing {missing}, unknown {extra}")

    @classmethod
    def from_config(cls, config: Mapping) -> "ParameterSpace":
        """From a plain mapping shaped like `conf/dsp/default.yaml` (`stem:` and `master:` sections)."""

        def ranges(section: str, names) -> dict[str, ParameterRange]:
            entries = config.get(section) or {}
            try:
                return {name: _range_from_config(entries[name]) for name in names}
            except KeyError as error:
                raise AutomixError(f"dsp config: {section}.{error.args[0]} is missing") from None
            except (TypeError, ValueError) as error:
                raise AutomixError(f"dsp config: {section}: {error}") from None

        return cls(ranges("stem", STEM_PARAMETERS), ranges("master", MASTER_PARAMETERS))

    def to_config(self) -> dict:
        """A plain mapping that `from_config` reads back (for checkpoints and YAML)."""

        def entries(ranges):
            return {
                name: {
                    "low": _plain(spec.low),
                    "high": _plain(spec.high),
                    "neutral": _plain(spec.neutral),
                    "log": spec.log,
                }  # fmt: skip
                for name, spec in ranges.items()
            }

        return {"stem": entries(self.stem), "master": entries(self.master)}

    @property
    def n_stem(self) -> int:
        """Normalised values per stem."""
        return sum(self.stem[name].n_values for name in STEM_PARAMETERS)

    @property
    def n_master(self) -> int:
        """Normalised values for the master."""
        return sum(self.master[name].n_values for name in MASTER_PARAMETERS)

    def denormalize(self, stem_unit: torch.Tensor, master_unit: torch.Tensor):
        """Map [0, 1] values to units.

        Args:
            stem_unit: `[..., N, n_stem]` in [0, 1].
            master_unit: `[..., n_master]` in [0, 1].

        Returns:
            `(stem_params, master_params)`: dicts in units, shaped as `automix.dsp.console` takes them.
        """
        return self.denormalize_stems(stem_unit), self.denormalize_master(master_unit)

    def denormalize_stems(self, stem_unit: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[..., N, n_stem]` in [0, 1] -> stem parameters in units."""
        return _denormalize(stem_unit, self.stem, STEM_PARAMETERS)

    def denormalize_master(self, master_unit: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[..., n_master]` in [0, 1] -> master parameters in units."""
        return _denormalize(master_unit, self.master, MASTER_PARAMETERS)

    def normalize(self, stem_params: Mapping, master_params: Mapping):
        """The inverse of `denormalize`: `(stem_unit [..., N, n_stem], master_unit [..., n_master])`."""
        return self.normalize_stems(stem_params), self.normalize_master(master_params)

    def normalize_stems(self, stem_params: Mapping) -> torch.Tensor:
        """Stem parameters in units -> `[..., N, n_stem]` in [0, 1] (outside it where out of range)."""
        return _normalize(stem_params, self.stem, STEM_PARAMETERS)

    def normalize_master(self, master_params: Mapping) -> torch.Tensor:
        """Master parameters in units -> `[..., n_master]` in [0, 1] (outside it where out of range)."""
        return _normalize(master_params, self.master, MASTER_PARAMETERS)

    def neutral_unit(self, n_stems: int, dtype=torch.float32, device=None):
        """The neutral settings in [0, 1]: `(stem_unit [N, n_stem], master_unit [n_master])`."""

        def neutral(ranges, names):
            return {name: torch.as_tensor(ranges[name].neutral, dtype=dtype, device=device) for name in names}

        stem_unit, master_unit = self.normalize(
            neutral(self.stem, STEM_PARAMETERS), neutral(self.master, MASTER_PARAMETERS)
        )
        return stem_unit.expand(n_stems, -1).clone(), master_unit

    def neutral(self, n_stems: int, dtype=torch.float32, device=None):
        """The neutral settings in units, for `n_stems` stems."""
        return self.denormalize(*self.neutral_unit(n_stems, dtype, device))

    def pinned_share(
        self, stem_params: Mapping, master_params: Mapping, mask=None, margin: float = RANGE_END_MARGIN
    ) -> torch.Tensor:
        """`[...]` the share of a console's settings pinned at an end of their range: within `margin`
        (normalised) of it, where neutral is not (a makeup gain of 0 dB sits at its range's end
        unprocessed). Over the strips of real stems and the master; each band a setting.

        Args:
            stem_params: stem settings in units, `[..., N]` (`[..., N, bands]`), as an analysis holds them.
            master_params: master settings in units, `[...]` (`[..., bands]`).
            mask: `[..., N]` 1 for real stems, or None.
        """
        stem_unit, master_unit = self.normalize(stem_params, master_params)
        neutral_stem, neutral_master = self.neutral_unit(
            stem_unit.shape[-2], stem_unit.dtype, stem_unit.device
        )

        def pinned(unit, neutral):
            low = (unit < margin) & (neutral >= margin)
            high = (unit > 1 - margin) & (neutral <= 1 - margin)
            return (low | high).to(unit.dtype)

        real = torch.ones(stem_unit.shape[:-1], dtype=stem_unit.dtype, device=stem_unit.device)
        real = real if mask is None else mask.to(real)
        count = (pinned(stem_unit, neutral_stem).sum(-1) * real).sum(-1)
        count = count + pinned(master_unit, neutral_master).sum(-1)
        return count / (real.sum(-1) * stem_unit.shape[-1] + master_unit.shape[-1])


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _range_from_config(entry: Mapping) -> ParameterRange:
    def value(key):
        raw = entry[key]
        return tuple(float(v) for v in raw) if isinstance(raw, list | tuple) else float(raw)

    return ParameterRange(value("low"), value("high"), value("neutral"), log=bool(entry.get("log", False)))


def _denormalize(unit: torch.Tensor, ranges: Mapping[str, ParameterRange], names) -> dict[str, torch.Tensor]:
    params, column = {}, 0
    for name in names:
        spec = ranges[name]
        width = spec.n_values
        low, high = spec.scaled_bounds(unit.dtype, unit.device)
        value = low + unit[..., column : column + width] * (high - low)
        value = value.exp() if spec.log else value
        params[name] = value if width > 1 else value[..., 0]
        column += width
    return params


def _normalize(params: Mapping, ranges: Mapping[str, ParameterRange], names) -> torch.Tensor:
    columns = []
    for name in names:
        spec = ranges[name]
        value = torch.as_tensor(params[name])
        value = value.log() if spec.log else value
        low, high = spec.scaled_bounds(value.dtype, value.device)
        unit = (value - low) / (high - low)
        columns.append(unit if spec.n_values > 1 else unit[..., None])
    return torch.cat(columns, dim=-1)


def logit(p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Inverse sigmoid, with p kept `eps` inside (0, 1) so boundary settings have finite logits."""
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)
