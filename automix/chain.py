"""AutoMixChain: stems in, a mastered mix that hits a style out.

Two ways to set the console, one console:
- predict: one forward pass of the parameter predictor (the amortised path of training and batch jobs; as
  a user gets it, with the master corrected: `automix.predict_mode.PredictMode`);
- optimize (the default): start from the prediction, correct it on the full-length render, and run Adam on
  excerpts of the song only where those corrections cannot finish (`automix.optimize.SongOptimizer`)."""

import contextlib
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from automix import checkpoint, loudness, metrics
from automix.analysis import measure, report
from automix.balance import stem_balance_db
from automix.compression import bypassed_loudness, compression_db
from automix.console_settings import ConsoleSettings, parse_settings, read_settings
from automix.dsp.console import (
    DEFAULT_CEILING_DBTP,
    bus_detector_power,
    channel_strip,
    channel_strip_blocks,
    decay_samples,
    keep_digital_silence,
    master_section,
)
from automix.dsp.eq import four_band_eq
from automix.dsp.filters import check_blockwise, is_long
from automix.dsp.limiter import reconstruction_limit
from automix.dsp.stereo import gain, stereo_width
from automix.errors import AutomixError
from automix.features import N_FEATURES, bus_features, stem_features
from automix.io import to_stereo
from automix.loss import create_training_loss
from automix.loudness import all_finite, loudness_after_gain
from automix.mastering import BUDGET_SLACK_DB, gain_reduction
from automix.optimize import SongOptimizer
from automix.params import ParameterSpace
from automix.predict_mode import PredictMode
from automix.predictor import ParameterPredictor
from automix.settings import MasteringSettings, OptimizeSettings, PredictSettings, settings_from_config
from automix.staging import input_gain_db
from automix.styles import StyleTarget, load_style_targets
from automix.targets import Targets, resolve_targets
from automix.trim import MAX_TRIM_DB, loudness_search, trimmed_power

MAX_STEMS = 16
# A long song rendered block-wise (`render_bus(..., blockwise=True)`) goes through the strips this
# many loudness hops (100 ms) of time at a time (`automix.dsp.console.channel_strip_blocks`).
STRIP_BLOCK_HOPS = 60
# Predict mode renders the kept master at most this many times to keep the limiter within its budget.
BUDGET_RENDERS = 3
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


class BusRender(NamedTuple):
    """The strips and their sum: the bus `[B, 2, T]`, the strips' settings in units, the stems'
    loudness `[B, N]` LUFS at the bus and, where asked for, each stem after its strip `[B, N, 2, T]`."""

    bus: torch.Tensor
    stem_params: dict
    stem_lufs: torch.Tensor
    stems: torch.Tensor | None = None


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

    Example::

        chain = AutoMixChain.from_checkpoint("checkpoints/default.ckpt")  # or AutoMixChain()
        mix, analysis = chain(stems, style="rock_punk")  # stems: [N, C, T] at chain.sample_rate
        print(analysis["lufs"], analysis["spectral_centroid"], analysis["stereo_ms_ratio"])

    Args:
        n_stems: kept for the public API; any count from 1 to `MAX_STEMS` works.
        style_targets: style name -> StyleTarget; None loads the defaults.
        sample_rate: Hz of the stems given to `forward`.
        space: parameter ranges; None takes the defaults (equal to conf/dsp/default.yaml).
        hidden_dim, n_layers: predictor size.
        ceiling_dbtp: true-peak ceiling of every output.
        optimize: the per-song optimiser's settings (`automix.settings.OptimizeSettings` or a mapping of
            some of its fields; conf/mix.yaml `optimize:`).
        predict: predict mode's loudness search (`automix.settings.PredictSettings` or a mapping).
        mastering: the limiting budget and the last loudness step (`automix.settings.MasteringSettings`
            or a mapping).
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
        optimize: OptimizeSettings | Mapping | None = None,
        predict: PredictSettings | Mapping | None = None,
        mastering: MasteringSettings | Mapping | None = None,
    ):
        super().__init__()
        self.n_stems = n_stems
        self.style_targets = dict(style_targets or load_style_targets())
        self.sample_rate = sample_rate
        self.space = space or ParameterSpace()
        self.ceiling_dbtp = ceiling_dbtp
        self.predictor = ParameterPredictor(N_FEATURES, self.space, hidden_dim, n_layers)
        self.loss_fn = create_training_loss(self.style_targets, ceiling_dbtp=ceiling_dbtp)
        self.optimize_settings = settings_from_config(OptimizeSettings, optimize, "optimize")
        self.predict_settings = settings_from_config(PredictSettings, predict, "predict")
        self.mastering_settings = settings_from_config(MasteringSettings, mastering, "mastering")
        self.model_config = {"hidden_dim": hidden_dim, "n_layers": n_layers}
        # Set by `from_checkpoint`: the predictor was trained (`OptimizeSettings.balance_start`).
        self.trained = False

    def checkpoint(self) -> dict:
        """Weights, the configuration to rebuild them (plain dicts) and versions: a `torch.save`-able
        dict that loads with `torch.load(weights_only=True)` (`automix.checkpoint`)."""
        return checkpoint.chain_checkpoint(self)

    @classmethod
    def from_checkpoint(cls, path, style_targets: Mapping[str, StyleTarget] | None = None, **kwargs):
        """Rebuild a chain from a checkpoint file written by `checkpoint()` or by training; `kwargs` go
        to the constructor (`automix.checkpoint.load_chain`).

        Raises:
            AutomixError: naming the file, when it is missing, a folder, or not an automix checkpoint.
        """
        chain = checkpoint.load_chain(cls, path, style_targets, **kwargs)
        chain.trained = True
        return chain

    def predict(
        self,
        stems: torch.Tensor,
        targets: Targets,
        mask: torch.Tensor | None = None,
        loudness_steps: int | None = None,
        input_gain: torch.Tensor | None = None,
        *,
        stem_unit: torch.Tensor | None = None,
        neutral_master: torch.Tensor | None = None,
        blockwise: bool = False,
    ) -> Prediction:
        """Predict mode's settings for stems `[B, N, 2, T]`, with gradients.

        Gain staging (`input_gain` `[B]` dB; None: `input_gain_db` of the stems) -> stem features ->
        strip settings -> the bus they make -> a trim that brings the bus to the target
        loudness (closed form) -> the bus's features -> master settings (`automix.predictor`) -> the
        trim corrected on the master's own output (`automix.trim.loudness_search`, without gradients:
        a model of the limiter's loudness, checked by up to `loudness_steps` renders, None: the
        settings'; 0 takes the model's answer unrendered): the limiter takes a part of every dB the
        trim adds, a part no feature predicts well. To the gradient the correction is a constant.
        `stem_unit` `[B, N, n_stem]`: strips given in normalised settings (the predictor proposes the
        master only). `neutral_master` `[B]` bool: songs whose master is the neutral one instead of the
        predictor's. `blockwise`: a long song's full-length renders go a block of time at a time
        (without gradients).
        """
        settings = self.predict_settings
        if loudness_steps is None:
            loudness_steps = settings.loudness_steps
        if input_gain is None:
            input_gain = input_gain_db(stems, self.sample_rate, mask, blockwise=blockwise)
        features = stem_features(stems, self.sample_rate, mask, input_gain)
        predicted, context = self.predictor.predict_stems(features, targets, mask)
        stem_unit = predicted if stem_unit is None else stem_unit
        bus, stem_params, stem_lufs, _ = self.render_bus(
            stems, stem_unit, mask, input_gain, blockwise=blockwise
        )
        bus_lufs = metrics.integrated_loudness(bus, self.sample_rate, blockwise=blockwise)
        trim_db = (targets.lufs - bus_lufs).clamp(-MAX_TRIM_DB, MAX_TRIM_DB)
        master_unit = self.predictor.predict_master(
            context, bus_features(bus, bus_lufs, targets, self.sample_rate)
        )
        if neutral_master is not None:
            _, neutral = self.space.neutral_unit(1, master_unit.dtype, master_unit.device)
            master_unit = torch.where(neutral_master[:, None], neutral, master_unit)
        with torch.no_grad():
            master_params = self.space.denormalize_master(master_unit)
            corrected, mix, mix_lufs = loudness_search(
                self.render_master,
                bus,
                self.sample_rate,
                master_params,
                targets.lufs,
                trim_db.detach(),
                self.ceiling_dbtp,
                steps=loudness_steps,
                tolerance_lu=settings.loudness_stop_lu,
                blockwise=blockwise,
            )
        trim_db = trim_db + (corrected - trim_db.detach())
        return Prediction(stem_unit, master_unit, trim_db, bus, stem_params, stem_lufs, mix, mix_lufs)

    def render_bus(
        self, stems, stem_unit, mask=None, input_gain=None, *, blockwise: bool = False, keep_stems=False
    ) -> BusRender:
        """Channel strips and their sum (`BusRender`); the strips' input gain is `input_gain` `[B]` dB
        (`input_gain_db`), where given. `keep_stems`: the result holds each stem after its strip (not
        with `blockwise`).

        `blockwise`: a long song (`automix.dsp.filters.is_long`) goes through the strips
        `STRIP_BLOCK_HOPS` of time at a time, without gradients (ValueError while one is being recorded):
        memory holds the stems, the bus and one block's processing.
        """
        check_blockwise(blockwise, stems, stem_unit, input_gain)
        stem_params = self.space.denormalize_stems(stem_unit)
        if input_gain is not None:
            stem_params["input_gain_db"] = input_gain[:, None].expand_as(stem_params["level_db"])
        return self.render_strips(stems, stem_params, mask, blockwise=blockwise, keep_stems=keep_stems)

    def render_strips(
        self, stems, stem_params: Mapping, mask=None, *, blockwise: bool = False, keep_stems: bool = False
    ) -> BusRender:
        """`render_bus` from the strips' settings in units (`STEM_PARAMETERS` `[B, N]`, and
        `input_gain_db`)."""
        if keep_stems and blockwise:
            raise ValueError("keep_stems renders the strips whole: not with blockwise")
        if not (blockwise and is_long(stems.shape[-1], self.sample_rate)):
            processed = channel_strip(stems, self.sample_rate, stem_params)
            if mask is not None:
                processed = processed * mask[..., None, None].to(processed.dtype)
            return BusRender(
                processed.sum(dim=1),
                stem_params,
                metrics.integrated_loudness(processed, self.sample_rate),
                processed if keep_stems else None,
            )
        block_samples = STRIP_BLOCK_HOPS * loudness.window_samples(self.sample_rate, loudness.BLOCK_S)[1]
        batch, n_stems, _, n_samples = stems.shape
        bus = stems.new_zeros(batch, 2, n_samples)
        meter = loudness.HopEnergyMeter((batch, n_stems), n_samples, self.sample_rate, stems.device)
        for start, processed in channel_strip_blocks(stems, self.sample_rate, stem_params, block_samples):
            if mask is not None:
                processed = processed * mask[..., None, None].to(processed.dtype)
            bus[..., start : start + processed.shape[-1]] = processed.sum(dim=1)
            meter.add(processed)
        return BusRender(bus, stem_params, meter.integrated_loudness().to(stems.dtype))

    @torch.no_grad()
    def strip_outputs(self, stems, stem_params: Mapping, mask=None) -> torch.Tensor:
        """Each stem after its channel strip `[B, N, 2, T]`, rendered as the kept bus is (a long song a
        block of time at a time): their sum is `render_strips(..., blockwise=True)`'s bus."""
        if not is_long(stems.shape[-1], self.sample_rate):
            processed = channel_strip(stems, self.sample_rate, stem_params)
        else:
            block_samples = STRIP_BLOCK_HOPS * loudness.window_samples(self.sample_rate, loudness.BLOCK_S)[1]
            processed = torch.empty_like(stems)
            for start, block in channel_strip_blocks(stems, self.sample_rate, stem_params, block_samples):
                processed[..., start : start + block.shape[-1]] = block
        return processed if mask is None else processed * mask[..., None, None].to(processed.dtype)

    def render_master(
        self,
        bus,
        master_params: Mapping,
        trim_db=None,
        detector_power=None,
        *,
        blockwise: bool = False,
        reconstruct: bool = True,
        return_gain: bool = False,
    ):
        """Master section on a bus `[B, 2, T]` after an optional trim `[B]` dB -> mix `[B, 2, T]`.

        `detector_power`: `[B, T]` the bus compressor's detector power of the untrimmed bus
        (`automix.dsp.console.bus_detector_power`), when renders of one bus at different trims share it;
        None: from the bus. `blockwise`: a long bus goes through the master a block of time at a time
        (`automix.dsp.console.master_section`), without gradients. `reconstruct`: the limiter checks its
        16x reconstruction (renders that are not kept leave it out); `return_gain`: `(mix, limiter gain
        [B, T])`.
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
            reconstruct=reconstruct,
            return_gain=return_gain,
        )

    def render(
        self, stems, stem_unit, master_unit, mask=None, trim_db=None, join=None, input_gain=None, in_mix=False
    ):
        """Strips (after the input gain `input_gain` `[B]` dB, where given), sum and master:
        `(mix [B, 2, T], analysis with gradients)`.

        `join=(B, K)` treats the batch as K excerpts of each of B songs, rendered separately and joined
        in time for the measurements (mix `[B, 2, K * L]`). `in_mix`: the analysis also holds
        `stem_mix_lufs` (`stem_loudness_in_mix`).
        """
        strips = self.render_bus(stems, stem_unit, mask, input_gain, keep_stems=in_mix)
        return self.finish(
            strips.bus,
            strips.stem_params,
            strips.stem_lufs,
            stem_unit,
            master_unit,
            mask,
            trim_db,
            join,
            processed=strips.stems,
        )

    def stem_loudness_in_mix(self, processed: torch.Tensor, master_params: Mapping) -> torch.Tensor:
        """Each stem's loudness as it plays in the mix: `processed` `[B, N, 2, T]` (after the strips)
        through the master's EQ and M/S width, `[B, N]` LUFS before the trim. The bus compressor and the
        limiter act on the sum and move every stem alike; the EQ and the width do not (a bright or a
        wide stem comes up with a tilt or a wider image), and the mix's balance moves with them."""
        eq = {name: master_params[name][:, None] for name in ("eq_gain_db", "eq_freq_hz", "eq_q")}
        x = four_band_eq(
            processed, self.sample_rate, gain_db=eq["eq_gain_db"], freq_hz=eq["eq_freq_hz"], q=eq["eq_q"]
        )
        x = stereo_width(x, width=master_params["width"][:, None])
        return metrics.integrated_loudness(x, self.sample_rate)

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
        *,
        blockwise: bool = False,
        reconstruct: bool = False,
        processed=None,
    ):
        """The master section on a rendered bus (see `render`): `(mix, analysis)`. A `mix` given is the
        master's output already rendered at these settings: it is measured instead of rendered again,
        its loudness taken from `mix_lufs` where given. `reconstruct`: the limiter checks its 16x
        reconstruction (renders for a loss leave it out). `processed`: each stem after its strip
        `[B, N, 2, T]`, for the analysis's `stem_mix_lufs` (`stem_loudness_in_mix`)."""
        master_params = self.space.denormalize_master(master_unit)
        if mix is None:
            mix = self.render_master(
                bus, master_params, trim_db, blockwise=blockwise, reconstruct=reconstruct
            )
        processing = self.processing_cost(stem_unit, master_unit, mask)
        if trim_db is not None:
            stem_lufs = loudness_after_gain(stem_lufs, trim_db[:, None])  # as the master's input hears them
        stem_mix_lufs = None if processed is None else self.stem_loudness_in_mix(processed, master_params)
        if join is not None:
            n_songs, n_excerpts = join
            mix = mix.reshape(n_songs, n_excerpts, 2, -1).transpose(1, 2).reshape(n_songs, 2, -1)
            stem_lufs = loudness.joined_loudness(stem_lufs.reshape(n_songs, n_excerpts, -1), dim=1)
            if stem_mix_lufs is not None:
                stem_mix_lufs = loudness.joined_loudness(
                    stem_mix_lufs.reshape(n_songs, n_excerpts, -1), dim=1
                )
            processing = processing.reshape(n_songs, n_excerpts).mean(1)
            mask = None if mask is None else mask[::n_excerpts]
        analysis = measure(mix, self.sample_rate, lufs=mix_lufs, blockwise=blockwise) | {
            "stem_lufs": stem_lufs,
            "stem_params": stem_params,
            "master_params": master_params,
            "processing": processing,
        }
        if stem_mix_lufs is not None:
            analysis["stem_mix_lufs"] = stem_mix_lufs
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

    def finish_prediction(
        self, prediction: Prediction, mask=None, *, blockwise: bool = False, kept: bool = True
    ):
        """`(mix, analysis)` of a `predict` result.

        `kept`: the render a user gets: the limiter checks its 16x reconstruction
        (`automix.dsp.limiter.reconstruction_limit`), and without gradients the master renders again at
        the searched trim, the analysis adding `reconstructed_peak_dbtp` and `gain_reduction`
        (`automix.mastering.gain_reduction`). Otherwise (training) the loudness search's last render is
        the mix where no gradient is recorded, and the master renders with gradients where one is.
        """
        p = prediction
        needs_graph = p.bus.requires_grad or p.master_unit.requires_grad
        rendered, lufs, mastered, trim_db = None, None, {}, p.trim_db
        if not (needs_graph or kept):
            rendered, lufs = p.mix, p.mix_lufs
        elif not needs_graph:
            params = self.space.denormalize_master(p.master_unit)
            rendered, trim_db, mastered = self.kept_master(p.bus, params, p.trim_db)
        mix, analysis = self.finish(
            p.bus,
            p.stem_params,
            p.stem_lufs,
            p.stem_unit,
            p.master_unit,
            mask,
            trim_db,
            mix=rendered,
            mix_lufs=lufs,
            blockwise=blockwise,
            reconstruct=kept,
        )
        return mix, analysis | mastered

    @torch.no_grad()
    def kept_master(
        self, bus, master_params: dict, trim_db, *, within_budget: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Predict mode's render of the master on a bus `[B, 2, T]` at a trim `[B]` dB, as a user gets it:
        `(mix, trim, report)`. A render whose limiter reduces peaks past the limiting budget is rendered
        again with the trim lowered by the excess (the limited peaks fall dB for dB with it): the loudness
        is approached, not chased. The mix then goes through the limiter's reconstruction check
        (`automix.dsp.limiter.reconstruction_limit`); the report holds `reconstructed_peak_dbtp` and
        `gain_reduction` (`automix.mastering.gain_reduction`), and `limited_trim_db` `[B]`, what the budget
        took off the trim. `within_budget=False`: one render at the trim given (a settings file's)."""
        budget = self.mastering_settings.max_limiting_db
        power = bus_detector_power(bus, self.sample_rate, blockwise=True)
        start_db, excess = trim_db, None
        for _ in range(BUDGET_RENDERS if within_budget else 1):
            if excess is not None:  # the render before was past the budget
                trim_db = trim_db - excess.clamp_min(0.0)
            mix, limiter_gain = self.render_master(
                bus, master_params, trim_db, power, blockwise=True, reconstruct=False, return_gain=True
            )
            reduction = gain_reduction(
                limiter_gain, trimmed_power(power, trim_db), master_params, self.sample_rate
            )
            excess = reduction["limiter"]["max_db"] - budget
            if not (excess > BUDGET_SLACK_DB).any():
                break
        mix, peak = reconstruction_limit(mix, self.sample_rate, ceiling_dbtp=self.ceiling_dbtp)
        report = {
            "reconstructed_peak_dbtp": peak,
            "gain_reduction": reduction,
            "limited_trim_db": start_db - trim_db,
        }
        return mix, trim_db, report

    @contextlib.contextmanager
    def at_rate(self, sample_rate):
        """The chain at the stems' `sample_rate` for one call; its own rate is back after.

        Raises:
            AutomixError: not a positive whole number of Hz.
        """
        chain_rate, self.sample_rate = self.sample_rate, checked_rate(sample_rate)
        try:
            yield
        finally:
            self.sample_rate = chain_rate

    @torch.no_grad()
    def refuse_silence(self, stems: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Refuse songs `[B, N, 2, T]` whose stems are all silent (no 400 ms block above the absolute
        gate, -70 LUFS): no setting gives them a loudness, and the optimiser would search for a minute.

        Raises:
            AutomixError: naming the song in a batch.
        """
        stem_lufs = metrics.integrated_loudness(stems, self.sample_rate, blockwise=True)
        sounding = stem_lufs > loudness.SILENCE_LUFS
        if mask is not None:
            sounding &= mask.to(stems.device) > 0
        silent = (~sounding.any(-1)).nonzero().flatten().tolist()
        if silent:
            song = f"song {silent[0]}'s stems are" if stems.shape[0] > 1 else "the stems are"
            raise AutomixError(
                f"{song} silent (no 400 ms block above {loudness.SILENCE_LUFS:g} LUFS): there is nothing to "
                "mix; check the files"
            )

    @torch.no_grad()
    def render_settings(
        self,
        stems,
        settings: "ConsoleSettings | Mapping | str | os.PathLike",
        *,
        names: Sequence[str] | None = None,
        style: str | StyleTarget | None = None,
        sample_rate: int | None = None,
    ):
        """Mix stems with a console given in units (a settings file, `automix.console_settings`), with no
        optimisation: the stems a mix was made from and its settings give that mix again.

        Args:
            stems: `[N, C, T]` or a list of `[C, T]`, in the order of `names`; or a mapping name -> `[C, T]`.
            settings: a `ConsoleSettings`, the dict of a settings file, or its path.
            names: the stems' names (default: the settings' order); each must have settings.
            style: what to judge the mix against (default: the settings' targets).
            sample_rate: the stems' rate, Hz (default: the chain's).

        Returns:
            `(mix [2, T], analysis)`, the analysis as `forward` gives it.

        Raises:
            AutomixError: a settings file that does not parse, stems it does not name, no targets.
        """
        if sample_rate is not None and sample_rate != self.sample_rate:
            with self.at_rate(sample_rate):
                return self.render_settings(stems, settings, names=names, style=style)
        if not isinstance(settings, ConsoleSettings):
            settings = (
                parse_settings(settings, self.space)
                if isinstance(settings, Mapping)
                else read_settings(settings, self.space)
            )
        if isinstance(stems, Mapping):
            names, stems = list(stems), list(stems.values())
        settings = settings.ordered(list(settings.names if names is None else names))
        stems, _ = prepare_stems(stems)
        weight, caller_dtype = next(self.parameters()), stems.dtype
        stems = stems.to(weight.device, weight.dtype)
        if style is None and settings.targets is None:
            raise AutomixError("the settings hold no targets to judge the mix by; pass style=")
        targets = resolve_targets(settings.targets if style is None else style, self.style_targets, 1)
        targets = targets.to(weight.device, stems.dtype)
        self.refuse_silence(stems)

        def batch(params: Mapping) -> dict:
            return {key: value.to(weight.device, weight.dtype)[None] for key, value in params.items()}

        stem_params = batch(settings.stem_params)
        stem_params["input_gain_db"] = torch.full_like(stem_params["level_db"], settings.input_gain_db)
        master_params = batch(settings.master_params)
        trim_db = torch.full((1,), settings.master_trim_db, device=weight.device, dtype=weight.dtype)
        bus, stem_params, stem_lufs, _ = self.render_strips(stems, stem_params, blockwise=True)
        bypassed = bypassed_loudness(self, stems, stem_params, stem_lufs, blockwise=True)
        mix, trim_db, mastered = self.kept_master(bus, master_params, trim_db, within_budget=False)
        mix = self.silence_kept(mix, stems, stem_params, master_params)
        analysis = measure(mix, self.sample_rate, blockwise=True) | mastered
        analysis |= {
            "stem_lufs": loudness_after_gain(stem_lufs, trim_db[:, None]),
            "stem_params": stem_params,
            "strip_compression_db": compression_db(bypassed, stem_lufs),
            "master_params": master_params,
            "master_trim_db": trim_db,
            "loudness_range": metrics.loudness_range(mix, self.sample_rate, blockwise=True),
            "notes": [[]],
        }
        if settings.sample_rate != self.sample_rate:
            analysis["notes"][0].append(
                f"settings made at {settings.sample_rate} Hz, rendered at {self.sample_rate} Hz"
            )
        mix, analysis = self.judged(mix, analysis, targets)
        return mix.to(caller_dtype)[0], {k: _first(v) for k, v in analysis.items()}

    def forward(
        self,
        stems,
        style: str | StyleTarget | Sequence | torch.Tensor = "rock_punk",
        mode: str = "optimize",
        *,
        mask: torch.Tensor | None = None,
        progress: bool = False,
        blockwise: bool | None = None,
        sample_rate: int | None = None,
    ):
        """Mix stems to a style.

        Args:
            stems: a list of `[C, T]` tensors, `[N, C, T]`, or a batch `[B, N, C, T]` (C = 1 or 2), at
                `sample_rate`.
            style: a style name, a StyleTarget, one per batch item, `Targets`, or target vectors `[B, 6]`.
            mode: "optimize" (per-song optimisation, the default) or "predict" (one forward pass; keeps
                gradients for training).
            mask: `[B, N]` 1 for real stems (batches with padding stems).
            progress: show a progress bar while optimising.
            blockwise: predict mode renders a long song a block of time at a time, recording no
                gradient (None: where no gradient is being recorded). The default mode's full-length
                renders always do.
            sample_rate: the stems' rate, Hz (e.g. `torchaudio.load`'s second value); None: the chain's
                `sample_rate`. Filters, meters and time constants follow it for this call.

        Returns:
            `(mix, analysis)`: mix `[2, T]` (or `[B, 2, T]` for a batch); analysis with the measured
            `lufs`, `spectral_centroid`, `stereo_ms_ratio`, `true_peak_dbtp`, `band_energy`, the
            targets, errors, pass flags, `quality_score`, and the parameters in units.
        """
        if mode not in MODES:
            raise AutomixError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if sample_rate is not None and sample_rate != self.sample_rate:
            with self.at_rate(sample_rate):
                return self(stems, style, mode, mask=mask, progress=progress, blockwise=blockwise)
        stems, batched = prepare_stems(stems)
        # The chain computes in its parameters' dtype (float32 unless cast); the mix comes back in the
        # caller's (soundfile reads float64, a notebook may hold float16).
        weight, caller_dtype = next(self.parameters()), stems.dtype
        stems = stems.to(weight.device, weight.dtype)
        targets = resolve_targets(style, self.style_targets, stems.shape[0]).to(weight.device, stems.dtype)
        self.refuse_silence(stems, mask)
        if mode == "predict":
            if blockwise is None:
                blockwise = not torch.is_grad_enabled()
            mix, analysis = PredictMode(self)(stems, targets, mask, blockwise=blockwise)
        else:
            mix, analysis = SongOptimizer(self)(stems, targets, mask, progress=progress)
        mix = self.silence_kept(mix, stems, analysis["stem_params"], analysis["master_params"])
        mix, analysis = self.judged(mix, analysis, targets, mask)
        mix = mix.to(caller_dtype)
        if not batched:
            mix = mix[0]
            analysis = {k: _first(v) for k, v in analysis.items()}
        return mix, analysis

    def silence_kept(self, mix, stems, stem_params: Mapping, master_params: Mapping):
        """The mix `[B, 2, T]` at exact 0 where the stems have been digital silence for longer than the
        filters of this console (settings in units) ring (`automix.dsp.console.keep_digital_silence`)."""
        with torch.no_grad():
            decay = decay_samples(self.sample_rate, stem_params, master_params)
        return keep_digital_silence(mix, stems, decay)

    def judged(self, mix, analysis: dict, targets: Targets, mask=None):
        """`(mix, analysis)` with the report against `targets` (`automix.analysis.report`), the stems'
        balance, and a note where the loudness is undefined (after the mode's own notes)."""
        analysis["stem_balance_db"] = stem_balance_db(analysis["stem_lufs"].detach(), mask)
        analysis.setdefault("notes", [[] for _ in range(mix.shape[0])])
        budget = self.mastering_settings.max_limiting_db
        block = loudness.window_samples(self.sample_rate, loudness.BLOCK_S)[0]
        if mix.shape[-1] < block:  # BS.1770 measures none of a mix shorter than one gating block
            seconds = mix.shape[-1] / self.sample_rate
            analysis["lufs"] = torch.full_like(analysis["lufs"], float("nan"))
            for notes in analysis["notes"]:
                notes.append(
                    f"integrated loudness is undefined for {seconds:.3f} s of audio, shorter than BS.1770's "
                    "400 ms gating block; the level was set on the whole mix as one block"
                )
        analysis |= report(analysis, targets, self.ceiling_dbtp, budget)
        analysis |= {"ceiling_dbtp": self.ceiling_dbtp, "max_limiting_db": budget}
        return mix, analysis


def checked_rate(sample_rate) -> int:
    """A sample rate given to the chain, as an int.

    Raises:
        AutomixError: not a positive whole number of Hz.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise AutomixError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


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


def _first(value):
    if isinstance(value, torch.Tensor):
        return value[0] if value.ndim else value
    if isinstance(value, list):  # one entry per song (the notes)
        return value[0]
    if isinstance(value, dict):
        return {k: _first(v) for k, v in value.items()}
    return value
