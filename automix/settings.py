"""Mix-time settings: the per-song optimiser's (`OptimizeSettings`), predict mode's (`PredictSettings`)
and the master's limits (`MasteringSettings`).

The defaults equal `conf/mix.yaml` (a test compares them); `mix.py` reads that file, and `--config FILE`
overrides any of its keys. `load_mix_settings` validates what it reads: an unknown key or a value of the
wrong kind is a one-line `AutomixError` naming the file and the key.
"""

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

from automix.errors import AutomixError

MIX_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "mix.yaml"
# Where the per-song optimiser takes the stems' balance from (`OptimizeSettings.balance_start`).
BALANCE_STARTS = ("auto", "equal_loudness", "stems", "predicted", "checkpoint", "reference")
# Where predict mode takes the balance of a song mixed to a reference, and of one mixed to a style, from.
PREDICT_BALANCES = ("auto", "predicted")
STYLE_BALANCES = ("equal_loudness", "predicted")
# The settings that take one of a few names, and those names.
CHOICES = {"balance_start": BALANCE_STARTS, "balance": PREDICT_BALANCES, "style_balance": STYLE_BALANCES}
ROOT = MIX_CONFIG.parents[1]  # a relative `balance_checkpoint` is read from here


class Tolerances(NamedTuple):
    """How far a mix may be from its targets: LU, Hz, M/S ratio."""

    lufs_lu: float
    centroid_hz: float
    ms_ratio: float


@dataclass(frozen=True)
class OptimizeSettings:
    """Settings of the per-song optimiser (`automix.optimize.SongOptimizer`; conf/mix.yaml `optimize:`).

    Attributes:
        steps: most Adam steps on the excerpts per attempt.
        learning_rate: Adam's step size on the logits of the normalised settings.
        excerpt_s: seconds of each excerpt.
        n_excerpts: excerpts per song (songs shorter than their total are used whole).
        refine_steps: most correction rounds on the full render per attempt.
        attempts: full-render corrections in all, each after Adam on excerpts but the first.
        promise: what the default mode promises (the closest render is the one keeping most of these).
        stop: the refinement's tolerances, well inside the promise.
        handover_centroid_hz: Adam hands over once the excerpts' centroid is this close (and the tilt
            has room left to close the rest).
        handover_width_margin: ... and the width that scales the M/S ratio to its target stays this far
            inside its range.
        max_aim_ratio: the excerpts' aim moves a target by at most this factor either way.
        playing_db: a stem plays in an excerpt when its mean square there is within this many dB of its
            loudest excerpt's.
        balance_start: the stems' balance the optimisation starts from: "equal_loudness" (every
            stem's level set so that the stems play at the same loudness), "stems" (each stem's level
            set so that the stems play at the balance they were handed over at: a rough mix kept),
            "predicted" (the predictor's strips), "checkpoint" (the predictor's strips with each stem's
            level set to the balance `balance_checkpoint`'s predictor gives the stems at the song's
            loudness and the stems' own tone and width), "reference"
            (from equal loudness, the stem levels whose sum has the reference's long-term spectrum, for
            songs mixed to a reference; `automix.reference_balance`) or "auto" (predicted where the chain
            was loaded from a checkpoint, else the reference's where the song has one, else
            `balance_checkpoint`'s balance where one is set, else equal loudness).
        balance_checkpoint: an automix checkpoint whose predicted balance "checkpoint" and "auto" start
            from (a relative path is read from the repository root; the default is the shipped one);
            None for none.
        balance_checkpoint_share: how much of each stem's move from equal loudness to
            `balance_checkpoint`'s balance the start takes (1: all of it; 0: equal loudness).
        balance_stems_share: a start without a reference ("equal_loudness", "checkpoint") takes this
            share of the balance the stems were handed over at and the rest of its own (0: none; 1: the
            stems as handed over, "stems").
        balance_budget_db: each stem's loudness relative to the stems together stays within this many
            dB of the start (docs/design.md, *The per-song optimiser*); a target the master cannot
            reach within it is reported missed.
        eq_budget_db: each strip's EQ band gain stays within this many dB of the start's while Adam
            reaches the targets (0: the stems keep their tone against one another, which is part of
            the balance a listener hears; a target the master cannot reach is reported missed).
        one_tone_eq_budget_db: the same for a song whose stems are of one tone (noise of one colour, one
            instrument: `SongOptimizer.one_tone`), whose balance no reshaping of them all changes.
        strip_tone_octaves: how far (octaves of centroid) past the master's reach the strips may carry
            the tone: where the start's refined render misses the centroid by more, the miss is
            reported and Adam's strips replace the start's only by keeping more of the other promises.
        reference_balance_spread_db: how far (dB, RMS) the "reference" start expects a stem to sit
            from equal loudness: the smaller, the nearer the start stays to it, above all where the
            reference's spectrum is not the stems' (other music; `fit_reference_balance`).
    """

    steps: int = 30
    learning_rate: float = 0.1
    excerpt_s: float = 3.0
    n_excerpts: int = 3
    refine_steps: int = 6
    attempts: int = 3
    promise: Tolerances = Tolerances(0.5, 100.0, 0.05)
    stop: Tolerances = Tolerances(0.2, 40.0, 0.02)
    handover_centroid_hz: float = 100.0
    handover_width_margin: float = 0.05
    max_aim_ratio: float = 1.5
    playing_db: float = 20.0
    balance_start: str = "auto"
    balance_checkpoint: str | None = "checkpoints/default.ckpt"
    balance_checkpoint_share: float = 0.5
    balance_stems_share: float = 0.0
    balance_budget_db: float = 1.0
    eq_budget_db: float = 0.0
    one_tone_eq_budget_db: float = 6.0
    strip_tone_octaves: float = 0.333
    reference_balance_spread_db: float = 5.0

    def __post_init__(self):
        _choice("balance_start", self.balance_start, CHOICES["balance_start"])
        if self.balance_start == "checkpoint" and not self.balance_checkpoint:
            raise AutomixError("balance_start: checkpoint needs a balance_checkpoint (a checkpoint file)")
        for name in ("balance_checkpoint_share", "balance_stems_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise AutomixError(f"{name} must be within 0..1, got {getattr(self, name)!r}")
        for name in ("balance_budget_db", "eq_budget_db", "one_tone_eq_budget_db", "strip_tone_octaves"):
            if not getattr(self, name) >= 0:  # NaN too
                raise AutomixError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.reference_balance_spread_db > 0:
            raise AutomixError(
                f"reference_balance_spread_db must be > 0, got {self.reference_balance_spread_db!r}"
            )

    def balance_checkpoint_path(self) -> Path | None:
        """`balance_checkpoint` as a path (a relative one under the repository root), or None."""
        if not self.balance_checkpoint:
            return None
        path = Path(self.balance_checkpoint).expanduser()
        return path if path.is_absolute() else ROOT / path


class OptimiserStage:
    """A stage of the per-song optimiser on a chain (an `AutoMixChain`): its ranges (`space`), sample
    rate and `settings`, the chain's `optimize_settings` where None is given."""

    def __init__(self, chain, settings: OptimizeSettings | None = None):
        self.chain = chain
        self.settings = settings or chain.optimize_settings
        self.space = chain.space
        self.sample_rate = chain.sample_rate


@dataclass(frozen=True)
class PredictSettings:
    """Predict mode's loudness search and master correction (conf/mix.yaml `predict:`).

    Attributes:
        loudness_steps: most master renders that check the trim model's answer (0: take it unrendered).
        loudness_stop_lu: the search stops once a render is this close to the target loudness.
        refine: the predicted master's trim, tilt and width corrected on full renders of the predicted
            bus, as the default mode's refinement does (`automix.refinement.MasterRefinement.refine`, with
            the `optimize:` settings' `refine_steps` and `stop`); False: the predictor's master as it
            is, with the loudness search alone.
        balance: "predicted" (the predictor's settings as they are) or "auto" (a song mixed to a
            reference gets the default mode's "reference" start: neutral strips at the reference's
            balance, `automix.reference_balance`, and a neutral master; the predictor's elsewhere).
        style_balance: a song mixed to a style (no reference): "equal_loudness" (the predicted strips
            with each stem's level moved to equal loudness, `StartBalance.balanced_strips`) or
            "predicted" (the predictor's levels).
        max_strip_compression_db: each strip's compressor takes at most this many dB of its stem's
            loudness (`automix.compression`): a predicted compressor that takes more gets its
            threshold raised, and the stems keep the predicted balance; None: as predicted.
    """

    loudness_steps: int = 4
    loudness_stop_lu: float = 0.25
    balance: str = "auto"
    style_balance: str = "predicted"
    refine: bool = True
    max_strip_compression_db: float | None = 6.0

    def __post_init__(self):
        _choice("balance", self.balance, CHOICES["balance"])
        _choice("style_balance", self.style_balance, CHOICES["style_balance"])
        budget = self.max_strip_compression_db
        if budget is not None and not budget >= 0:  # NaN too
            raise AutomixError(f"max_strip_compression_db must be >= 0 or null, got {budget!r}")


@dataclass(frozen=True)
class MasteringSettings:
    """The master's limits and last loudness step, in both modes (conf/mix.yaml `mastering:`).

    Attributes:
        max_limiting_db: the limiter's peak gain reduction the loudness trim may drive it to, dB; a
            louder target is approached, not chased, and the mix carries a note (docs/design.md,
            *Mastering*).
        final_lufs_lu: the last trim step (`automix.refinement.MasterRefinement.final_trim`) stops this
            close to the target loudness.
        final_trim_steps: most renders of that step.
    """

    max_limiting_db: float = 6.0
    final_lufs_lu: float = 0.05
    final_trim_steps: int = 3


@dataclass(frozen=True)
class MixSettings:
    """Everything conf/mix.yaml holds."""

    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    predict: PredictSettings = field(default_factory=PredictSettings)
    mastering: MasteringSettings = field(default_factory=MasteringSettings)


def settings_from_config(cls, config: Mapping | None, where: str = ""):
    """An instance of the settings dataclass `cls` from a mapping of some of its fields (the rest keep
    their defaults); values are checked against the defaults' kinds.

    Raises:
        AutomixError: an unknown key, or a value of another kind than the default's (a finite number, an
            int, a bool, one of a few names).
    """
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    if not isinstance(config, Mapping):
        raise AutomixError(f"{where or 'settings'}: expected a mapping, got {type(config).__name__}")
    defaults = cls()
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in config.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise AutomixError(f"{name}: unknown setting; known: {', '.join(sorted(known))}")
        default = getattr(defaults, key)
        if isinstance(default, Tolerances):
            values[key] = _tolerances(name, value, default)
        elif dataclasses.is_dataclass(default):
            values[key] = settings_from_config(type(default), value, name)
        elif key == "balance_checkpoint":
            if value is not None and not isinstance(value, str | os.PathLike):
                raise AutomixError(f"{name}: expected a checkpoint path or null, got {value!r}")
            values[key] = None if value is None else str(value)
        elif key == "max_strip_compression_db" and value is None:
            values[key] = None  # no budget
        elif key in CHOICES:
            values[key] = _choice(name, value, CHOICES[key])
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise AutomixError(f"{name}: expected true or false, got {value!r}")
            values[key] = value
        else:
            values[key] = _number(name, value, integer=isinstance(default, int))
    return cls(**values)


def load_mix_settings(config: str | os.PathLike | None = None) -> MixSettings:
    """conf/mix.yaml, with the settings file `config` (the same shape, any subset of its keys; `mix.py
    --config`) merged on top.

    Raises:
        AutomixError: naming the file and the key, for a missing file, bad YAML or a bad setting.
    """
    base = _read(MIX_CONFIG)
    overrides = {} if config is None else _read(Path(config))
    for path, values in ((MIX_CONFIG, base), (config, overrides)):
        try:
            settings_from_config(MixSettings, values)
        except AutomixError as error:
            raise AutomixError(f"{path}: {error}") from None
    return settings_from_config(MixSettings, _merged(base, overrides))


def _read(path: Path) -> dict:
    if not path.is_file():
        raise AutomixError(f"{path}: no such settings file; give a YAML file shaped like conf/mix.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise AutomixError(f"{path}: not valid YAML ({type(error).__name__}); fix the file") from None
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise AutomixError(f"{path}: expected a mapping with sections optimize:, predict: and mastering:")
    return dict(config)


def _merged(base: Mapping, overrides: Mapping) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _number(where: str, value, integer: bool):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AutomixError(f"{where}: expected a finite number, got {value!r}")
    if value < 0:
        raise AutomixError(f"{where}: must be >= 0, got {value!r}")
    if integer:
        if value != int(value):
            raise AutomixError(f"{where}: expected a whole number, got {value!r}")
        return int(value)
    return float(value)


def _choice(where: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise AutomixError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _tolerances(where: str, value, default: Tolerances) -> Tolerances:
    if not isinstance(value, Mapping):
        raise AutomixError(f"{where}: expected a mapping with {', '.join(Tolerances._fields)}")
    unknown = set(value) - set(Tolerances._fields)
    if unknown:
        raise AutomixError(f"{where}.{sorted(unknown)[0]}: unknown; known: {', '.join(Tolerances._fields)}")
    merged = default._asdict() | {k: _number(f"{where}.{k}", v, integer=False) for k, v in value.items()}
    return Tolerances(**merged)
