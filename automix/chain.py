"""AutoMixChain: stems in, a mastered mix that hits a style out.

Two ways to set the console, one console:
- predict: one forward pass of the parameter predictor (the amortised path of training and batch jobs);
- optimize (the default): start from the prediction, run Adam on the normalised parameters against the
  loss measured on excerpts of the song, render the whole song, then correct what remains on the full
  render itself (see `automix.optimize`).
"""

import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from automix import __version__, loudness, metrics
from automix.analysis import measure, report
from automix.dsp.console import (
    DEFAULT_CEILING_DBTP,
    bus_detector_power,
    channel_strip,
    channel_strip_blocks,
    master_section,
)
from automix.dsp.filters import check_blockwise, is_long
from automix.dsp.stereo import gain
from automix.errors import AutomixError
from automix.features import N_FEATURES, bus_features, stem_features
from automix.io import to_stereo
from automix.loss import create_training_loss, resolve_targets
from automix.loudness import all_finite, loudness_after_gain
from automix.optimize import OptimizeSettings, optimize_mix
from automix.params import ParameterSpace
from automix.predictor import ParameterPredictor
from automix.staging import input_gain_db
from automix.styles import StyleTarget, load_style_targets
from automix.trim import MAX_TRIM_DB, MasterLoudness, search_trim
from automix.units import db_to_amp

MAX_STEMS = 16
# A long song rendered block-wise (`render_bus(..., blockwise=True)`) goes through the strips this
# many loudness hops (100 ms) of time at a time (`automix.dsp.console.channel_strip_blocks`).
STRIP_BLOCK_HOPS = 60
# Predict mode's loudness correction: at most this many master renders, stopping once within this much.
LOUDNESS_STEPS = 4
LOUDNESS_STOP_LU = 0.25
MODES = ("optimize", "predict")
NEUTRAL_DIVERGENCE_EPS = 1e-6  # settings are kept this far inside (0, 1) for the divergence's logs


def prepare_stems(stems) -> tuple[torch.Tensor, bool]:
    """Stems as `[B, N, 2, T]` float, and whether the input was batched.

    Accepts a list of `[C, T]` tensors of any lengths (zero-padded to the longest), `[N, C, T]` or
    `[B, N, C, T]`; mono becomes dual-mono.

    Raises:
        AutomixError: no stems, more than 2 channels, empty or non-finite audio, too many stems.
    """
    if isinstance(stems, torch.Tensor):
        if stems.ndim not in (3, 4):
            raise AutomixError(f"stems must be [N, C, T] or [B, N, C, T], got shape {tuple(stems.shape)}")
        batched = stems.ndim == 4
        stems = to_stereo(stems if batched else stems[None])
    else:
        items = list(stems)
        if not items:
            raise AutomixError("no stems given: pass at least one [channels, samples] tensor")
        for i, stem in enumerate(items):
            if not isinstance(stem, torch.Tensor) or stem.ndim != 2:
                raise AutomixError(f"stem {i} must be a [channels, samples] tensor")
        length = max(stem.shape[-1] for stem in items)
        padded = [nn.functional.pad(to_stereo(s.float()), (0, length - s.shape[-1])) for s in items]
        stems, batched = torch.stack(padded)[None], False
    if stems.shape[1] == 0 or stems.shape[-1] == 0:
        raise AutomixError(f"stems are empty (shape {tuple(stems.shape)})")
    if stems.shape[1] > MAX_STEMS:
        raise AutomixError(f"at most {MAX_STEMS} stems are supported, got {stems.shape[1]}")
    if not all_finite(stems):
        raise AutomixError("stems contain NaN or infinite samples")
    return stems.float() if not stems.is_floating_point() else stems, batched


class Prediction(NamedTuple):
    """`AutoMixChain.predict`'s result: normalised settings, the master's input trim `[B]` dB, and the
    bus `[B, 2, T]` with the strips' settings in units and the stems' LUFS `[B, N]` (before the trim).
    `mix` is the master's output at that trim when the loudness search rendered it (without
    gradients), else None, and `mix_lufs` its measured loudness `[B]`."""

    stem_unit: torch.Tensor
    master_unit: torch.Tensor
    trim_db: torch.Tensor
    bus: torch.Tensor
    stem_params: dict
    stem_lufs: torch.Tensor
    mix: torch.Tensor | None = None
    mix_lufs: torch.Tensor | None = None


class AutoMixChain(nn.Module):
    """The differentiable mixing and mastering chain with its parameter predictor.

    Args:
        n_stems: the stem count the original API names; any count from 1 to 16 works.
        style_targets: style name -> StyleTarget; None loads the defaults.
        sample_rate: Hz of the stems given to `forward`.
        space: parameter ranges; None takes the defaults (equal to conf/dsp/default.yaml).
        hidden_dim, n_layers: predictor size.
        ceiling_dbtp: true-peak ceiling of every output.
        optimize: settings of the per-song optimiser (`automix.optimize.OptimizeSettings` fields).
    """

    def __init__(
        self,
        n_stems: int = 4,
        style_targets: Mapping[str, StyleTarget] | None = None,
        sample_rate: int = 44100,
        *,
        space: ParameterSpace | None = None,
        hidden_dim: int = 128,
        n_layers: int = 2,
        ceiling_dbtp: float = DEFAULT_CEILING_DBTP,
        optimize: Mapping | None = None,
    ):
        super().__init__()
        self.n_stems = n_stems
        self.style_targets = dict(style_targets or load_style_targets())
        self.sample_rate = sample_rate
        self.space = space or ParameterSpace()
        self.ceiling_dbtp = ceiling_dbtp
        self.predictor = ParameterPredictor(N_FEATURES, self.space, hidden_dim, n_layers)
        self.loss_fn = create_training_loss(self.style_targets, ceiling_dbtp=ceiling_dbtp)
        self.optimize_settings = OptimizeSettings(**dict(optimize or {}))
        self.model_config = {"hidden_dim": hidden_dim, "n_layers": n_layers}

    def checkpoint(self) -> dict:
        """Weights, the configuration to rebuild them (plain dicts) and versions: a `torch.save`-able
        dict that loads with `torch.load(weights_only=True)`."""
        return {
            "state_dict": self.predictor.state_dict(),
            "config": {
                "model": dict(self.model_config),
                "dsp": self.space.to_config(),
                "sample_rate": self.sample_rate,
                "ceiling_dbtp": self.ceiling_dbtp,
            },  # fmt: skip
            "versions": {"automix": __version__, "torch": str(torch.__version__)},
        }

    @classmethod
    def from_checkpoint(cls, path, style_targets: Mapping[str, StyleTarget] | None = None, **kwargs):
        """Rebuild a chain from a checkpoint file written by `checkpoint()` (or by training).

        Raises:
            AutomixError: naming the file, when it is missing, a folder, or not an automix checkpoint.
        """
        path = Path(path)
        if path.is_dir():
            raise AutomixError(f"{path}: a folder, not a checkpoint file; give a .ckpt file")
        if not path.is_file():
            raise AutomixError(f"{path}: no such checkpoint file; check the path")
        # torch.save writes a zip archive; anything else would reach the unpickler and fail in many ways.
        if not zipfile.is_zipfile(path):
            raise AutomixError(
                f"{path}: not a PyTorch checkpoint; give one written by train.py or AutoMixChain.checkpoint()"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("automix", state)  # a Lightning checkpoint carries ours under "automix"
            config = state["config"]
            chain = cls(
                style_targets=style_targets,
                sample_rate=int(config.get("sample_rate", 44100)),
                space=ParameterSpace.from_config(config["dsp"]),
                ceiling_dbtp=float(config.get("ceiling_dbtp", DEFAULT_CEILING_DBTP)),
                **dict(config["model"]),
                **kwargs,
            )
            chain.predictor.load_state_dict(state["state_dict"])
        except AutomixError as error:
            raise AutomixError(f"{path}: {error}") from None
        except (
            KeyError,
            RuntimeError,
            TypeError,
            ValueError,
            AttributeError,
            pickle.UnpicklingError,
        ) as error:
            raise AutomixError(
                f"{path}: not an automix checkpoint ({type(error).__name__}: {error}); give one written by "
                "train.py or AutoMixChain.checkpoint()"
            ) from None
        return chain

    def predict(
        self,
        stems: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        loudness_steps: int = LOUDNESS_STEPS,
        input_gain: torch.Tensor | None = None,
    ) -> Prediction:
        """Predict mode's settings for stems `[B, N, 2, T]` and targets `[B, 6]`, with gradients.

        Gain staging (`input_gain` `[B]` dB; None: `input_gain_db` of the stems) -> stem features ->
        strip settings -> the bus they make -> a trim that brings the bus to the target
        loudness (closed form) -> the bus's features -> master settings (`automix.predictor`) -> the
        trim corrected on the master's own output (`automix.trim.search_trim`, without gradients: a
        model of the limiter's loudness, checked by up to `loudness_steps` renders; 0 takes the model's
        answer unrendered): the limiter takes a part of every dB the trim adds, a part no feature
        predicts well. To the gradient the correction is a constant.
        """
        if input_gain is None:
            input_gain = input_gain_db(stems, self.sample_rate, mask)
        features = stem_features(stems, self.sample_rate, mask, input_gain)
        stem_unit, context = self.predictor.predict_stems(features, target, mask)
        bus, stem_params, stem_lufs = self.render_bus(stems, stem_unit, mask, input_gain)
        bus_lufs = metrics.integrated_loudness(bus, self.sample_rate)
        trim_db = (target[:, 0] - bus_lufs).clamp(-MAX_TRIM_DB, MAX_TRIM_DB)
        master_unit = self.predictor.predict_master(
            context, bus_features(bus, bus_lufs, target, self.sample_rate)
        )
        with torch.no_grad():
            corrected, mix, mix_lufs = self._loudness_trim(
                bus, master_unit, target[:, 0], trim_db.detach(), loudness_steps
            )
        trim_db = trim_db + (corrected - trim_db.detach())
        return Prediction(stem_unit, master_unit, trim_db, bus, stem_params, stem_lufs, mix, mix_lufs)

    def _loudness_trim(
        self, bus, master_unit, target_lufs, trim_db, steps: int = LOUDNESS_STEPS
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The trim `[B]` dB that brings the master's output to `target_lufs`, and the master's output at
        that trim with its loudness (None when the last answer went unrendered):
        `automix.trim.search_trim`, its model built on the master's input at `trim_db`."""
        master_params = self.space.denormalize_master(master_unit)
        power = bus_detector_power(bus, self.sample_rate)  # shared by the model and every render
        model = MasterLoudness(
            gain(bus, gain_db=trim_db),
            self.sample_rate,
            master_params,
            self.ceiling_dbtp,
            detector_power=trimmed_power(power, trim_db),
        )
        return search_trim(
            lambda trim: self.render_master(bus, master_params, trim, detector_power=power),
            model,
            trim_db,
            target_lufs,
            steps,
            LOUDNESS_STOP_LU,
        )

    def render_bus(
        self, stems, stem_unit, mask=None, input_gain=None, *, blockwise: bool = False
    ) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """Channel strips and their sum: `(bus [B, 2, T], stem params in units, stem LUFS [B, N])`; the
        strips' input gain is `input_gain` `[B]` dB (`input_gain_db`), where given.

        `blockwise`: a long song (`automix.dsp.filters.is_long`) goes through the strips
        `STRIP_BLOCK_HOPS` of time at a time, without gradients (ValueError while one is being recorded):
        memory holds the stems, the bus and one block's processing.
        """
        check_blockwise(blockwise, stems, stem_unit, input_gain)
        stem_params = self.space.denormalize_stems(stem_unit)
        if input_gain is not None:
            stem_params["input_gain_db"] = input_gain[:, None].expand_as(stem_params["level_db"])
        if not (blockwise and is_long(stems.shape[-1], self.sample_rate)):
            processed = channel_strip(stems, self.sample_rate, stem_params)
            if mask is not None:
                processed = processed * mask[..., None, None].to(processed.dtype)
            return processed.sum(dim=1), stem_params, metrics.integrated_loudness(processed, self.sample_rate)
        block_samples = STRIP_BLOCK_HOPS * loudness.window_samples(self.sample_rate, loudness.BLOCK_S)[1]
        batch, n_stems, _, n_samples = stems.shape
        bus = stems.new_zeros(batch, 2, n_samples)
        meter = loudness.HopEnergyMeter((batch, n_stems), n_samples, self.sample_rate, stems.device)
        for start, processed in channel_strip_blocks(stems, self.sample_rate, stem_params, block_samples):
            if mask is not None:
                processed = processed * mask[..., None, None].to(processed.dtype)
            bus[..., start : start + processed.shape[-1]] = processed.sum(dim=1)
            meter.add(processed)
        return bus, stem_params, meter.integrated_loudness().to(stems.dtype)

    def render_master(
        self, bus, master_params: Mapping, trim_db=None, detector_power=None, *, blockwise: bool = False
    ) -> torch.Tensor:
        """Master section on a bus `[B, 2, T]` after an optional trim `[B]` dB -> mix `[B, 2, T]`.

        `detector_power`: `[B, T]` the bus compressor's detector power of the untrimmed bus
        (`automix.dsp.console.bus_detector_power`), when renders of one bus at different trims share it;
        None: from the bus. `blockwise`: a long bus goes through the master a block of time at a time
        (`automix.dsp.console.master_section`), without gradients.
        """
        if trim_db is not None:
            bus = gain(bus, gain_db=trim_db)
            if detector_power is not None:
                detector_power = trimmed_power(detector_power, trim_db)
        ceiling = self.ceiling_dbtp
        return master_section(
            bus,
            self.sample_rate,
            master_params,
            ceiling_dbtp=ceiling,
            detector_power=detector_power,
            blockwise=blockwise,
        )

    def render(self, stems, stem_unit, master_unit, mask=None, trim_db=None, join=None, input_gain=None):
        """Strips (after the input gain `input_gain` `[B]` dB, where given), sum and master:
        `(mix [B, 2, T], analysis with gradients)`.

        `join=(B, K)` treats the batch as K excerpts of each of B songs, rendered separately and joined
        in time for the measurements (mix `[B, 2, K * L]`).
        """
        bus, stem_params, stem_lufs = self.render_bus(stems, stem_unit, mask, input_gain)
        return self.finish(bus, stem_params, stem_lufs, stem_unit, master_unit, mask, trim_db, join)

    def finish(
        self,
        bus,
        stem_params,
        stem_lufs,
        stem_unit,
        master_unit,
        mask=None,
        trim_db=None,
        join=None,
        mix=None,
        mix_lufs=None,
    ):
        """The master section on a rendered bus (see `render`): `(mix, analysis)`. A `mix` given is the
        master's output already rendered at these settings: it is measured instead of rendered again,
        its loudness taken from `mix_lufs` where given."""
        master_params = self.space.denormalize_master(master_unit)
        if mix is None:
            mix = self.render_master(bus, master_params, trim_db)
        processing = self.processing_cost(stem_unit, master_unit, mask)
        if trim_db is not None:
            stem_lufs = loudness_after_gain(stem_lufs, trim_db[:, None])  # as the master's input hears them
        if join is not None:
            n_songs, n_excerpts = join
            mix = mix.reshape(n_songs, n_excerpts, 2, -1).transpose(1, 2).reshape(n_songs, 2, -1)
            stem_lufs = loudness.joined_loudness(stem_lufs.reshape(n_songs, n_excerpts, -1), dim=1)
            processing = processing.reshape(n_songs, n_excerpts).mean(1)
            mask = None if mask is None else mask[::n_excerpts]
        analysis = measure(mix, self.sample_rate, lufs=mix_lufs) | {
            "stem_lufs": stem_lufs,
            "stem_params": stem_params,
            "master_params": master_params,
            "processing": processing,
        }
        if trim_db is not None:
            analysis["master_trim_db"] = trim_db if join is None else trim_db[:: join[1]]
        if mask is not None:
            analysis["stem_mask"] = mask.to(mix.dtype)
        return mix, analysis

    def processing_cost(self, stem_unit, master_unit, mask=None) -> torch.Tensor:
        """How far `[B]` the normalised settings are from neutral: "as little processing as the target
        allows". The mean over settings of `neutral_divergence`: the strips' (real stems only) plus the
        master's."""
        neutral_stem, neutral_master = self.space.neutral_unit(1, stem_unit.dtype, stem_unit.device)
        stem_cost = neutral_divergence(stem_unit, neutral_stem).mean(-1)
        weight = torch.ones_like(stem_cost) if mask is None else mask.to(stem_cost.dtype)
        stem_cost = (stem_cost * weight).sum(-1) / weight.sum(-1).clamp_min(1.0)
        return stem_cost + neutral_divergence(master_unit, neutral_master).mean(-1)

    def finish_prediction(self, prediction: Prediction, mask=None):
        """`(mix, analysis)` of a `predict` result; without gradients, the search's last render is the mix."""
        p = prediction
        rendered, lufs = (None, None) if torch.is_grad_enabled() else (p.mix, p.mix_lufs)
        return self.finish(
            p.bus,
            p.stem_params,
            p.stem_lufs,
            p.stem_unit,
            p.master_unit,
            mask,
            p.trim_db,
            mix=rendered,
            mix_lufs=lufs,
        )

    def forward(
        self,
        stems,
        style: str | StyleTarget | Sequence | torch.Tensor = "rock_punk",
        mode: str = "optimize",
        *,
        mask: torch.Tensor | None = None,
        progress: bool = False,
    ):
        """Mix stems to a style.

        Args:
            stems: a list of `[C, T]` tensors, `[N, C, T]`, or a batch `[B, N, C, T]` (C = 1 or 2).
            style: a style name, a StyleTarget, one per batch item, or target vectors `[B, 6]`.
            mode: "optimize" (per-song optimisation, the default) or "predict" (one forward pass; keeps
                gradients for training).
            mask: `[B, N]` 1 for real stems (batches with padding stems).
            progress: show a progress bar while optimising.

        Returns:
            `(mix, analysis)`: mix `[2, T]` (or `[B, 2, T]` for a batch); analysis with the measured
            `lufs`, `spectral_centroid`, `stereo_ms_ratio`, `true_peak_dbtp`, `band_energy`, the
            targets, errors, pass flags, `quality_score`, and the parameters in units.
        """
        if mode not in MODES:
            raise AutomixError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        stems, batched = prepare_stems(stems)
        device = next(self.parameters()).device
        stems = stems.to(device)
        target = resolve_targets(style, self.style_targets, stems.shape[0]).to(device, stems.dtype)
        if mode == "predict":
            mix, analysis = self.finish_prediction(self.predict(stems, target, mask), mask)
        else:
            mix, analysis = optimize_mix(self, stems, target, mask, progress=progress)
        analysis |= report(analysis, target, self.ceiling_dbtp)
        if not batched:
            mix = mix[0]
            analysis = {k: _first(v) for k, v in analysis.items()}
        return mix, analysis


def neutral_divergence(unit: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
    """Each normalised setting's distance from its neutral value, both in [0, 1]: the Bernoulli KL
    divergence KL(neutral || unit), 0 at neutral.

    Its gradient with respect to the logit behind a sigmoid output is exactly `unit - neutral`, so a
    setting driven to an end of its range is pulled back as firmly as one near neutral, where a squared
    distance's gradient vanishes with the sigmoid's slope.
    """
    unit = unit.clamp(NEUTRAL_DIVERGENCE_EPS, 1 - NEUTRAL_DIVERGENCE_EPS)
    neutral = neutral.clamp(0.0, 1.0)
    rest = 1 - neutral
    xlogy = torch.special.xlogy
    return xlogy(neutral, neutral) - xlogy(neutral, unit) + xlogy(rest, rest) - xlogy(rest, 1 - unit)


def trimmed_power(power: torch.Tensor, trim_db: torch.Tensor) -> torch.Tensor:
    """A power `[B, T]` after a gain `[B]` dB."""
    return power * db_to_amp(trim_db).square()[:, None]


def _first(value):
    if isinstance(value, torch.Tensor):
        return value[0] if value.ndim else value
    if isinstance(value, dict):
        return {k: _first(v) for k, v in value.items()}
    return value
