"""Per-song optimisation: the default way `AutoMixChain` sets its console.

1. Start from the predictor's settings (`AutoMixChain.predict`: its bus, and its trim to the target loudness).
2. Adam on the normalised settings (as logits) against the loss, measured on excerpts of the song: the
   loudest sections, where a mix is judged, processed as a batch and joined for the measurement.
   Stops early when every target is well inside tolerance.
3. Render the whole song without gradients: that render is what the user gets, and excerpts and whole
   songs differ (their centroids by up to ~110 Hz on real material).
4. Correct what remains on the full render: a loudness trim before the master section, the M/S width
   (the ratio scales exactly with it) and a master EQ tilt for the centroid, by secant steps on the
   full render's own measurements, until it is within tolerance.
"""

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from automix import metrics
from automix.analysis import measure
from automix.dsp.console import bus_detector_power
from automix.loudness import loudness_after_gain
from automix.params import logit
from automix.trim import MAX_TRIM_DB, secant_slope

# Refinement tolerances: well inside the promises (±0.5 LU, ±100 Hz, ±0.05).
STOP_LUFS_LU = 0.2
STOP_CENTROID_HZ = 40.0
STOP_MS = 0.02
# Adam on excerpts hands over to the refinement once the refinement can finish the job on the full
# render, where it counts: the centroid this close (the tilt does the rest), and the M/S ratio where the
# width, kept this far inside its range, can scale it to the target. Loudness needs no condition: the
# trim reaches any level.
HANDOVER_CENTROID_HZ = 100.0
HANDOVER_WIDTH_MARGIN = 0.05
MAX_TILT_DB = 6.0  # the shelves move by at most this much each way (the master EQ range clamps too)
MIN_MS_FOR_WIDTH = 1e-3  # a mono mix has no side signal for the width to scale
TILT_PROBE_DB = 1.0  # first tilt step, before a secant slope exists
# Full-render corrections, each after Adam on excerpts but the first: a song the first correction cannot
# finish (a tilt at the end of the master EQ's range, say) gets two more rounds of Adam.
ATTEMPTS = 3


@dataclass(frozen=True)
class OptimizeSettings:
    """Settings of the per-song optimiser (conf/mix.yaml `optimize:`).

    Attributes:
        steps: most Adam steps on the excerpts.
        learning_rate: Adam's step size on the logits of the normalised settings.
        excerpt_s: seconds of each excerpt.
        n_excerpts: excerpts per song (songs shorter than their total are used whole).
        refine_steps: most correction rounds on the full render.
    """

    steps: int = 30
    learning_rate: float = 0.1
    excerpt_s: float = 3.0
    n_excerpts: int = 3
    refine_steps: int = 6


def select_excerpts(stems: torch.Tensor, sample_rate: int, excerpt_s: float, n_excerpts: int) -> torch.Tensor:
    """The loudest non-overlapping excerpts of each song: `[B, N, 2, T] -> [B, K, N, 2, L]`.

    Loudness is the short-term loudness of the unprocessed stem sum; a song no longer than the
    excerpts together is returned whole (K = 1, L = T).
    """
    n_samples = stems.shape[-1]
    length = int(excerpt_s * sample_rate)
    if n_samples <= length * n_excerpts:
        return stems[:, None]
    hop = length // 2
    starts = torch.arange(0, n_samples - length + 1, hop)
    with torch.no_grad():
        power = stems.sum(dim=1).square().mean(dim=-2)  # [B, T] mean-square of the raw sum
        window_power = torch.stack([power[:, s : s + length].mean(-1) for s in starts.tolist()], dim=-1)
    excerpts = []
    for item in range(stems.shape[0]):
        chosen: list[int] = []
        for index in torch.argsort(window_power[item], descending=True).tolist():
            start = int(starts[index])
            if all(abs(start - other) >= length for other in chosen):
                chosen.append(start)
            if len(chosen) == n_excerpts:
                break
        chosen.sort()
        excerpts.append(torch.stack([stems[item, ..., s : s + length] for s in chosen]))
    return torch.stack(excerpts)


def _within(analysis, target, lufs_lu, centroid_hz, ms) -> torch.Tensor:
    return (
        ((analysis["lufs"] - target[:, 0]).abs() <= lufs_lu)
        & ((analysis["spectral_centroid"] - target[:, 1]).abs() <= centroid_hz)
        & ((analysis["stereo_ms_ratio"] - target[:, 2]).abs() <= ms)
    )


def _width_reaches(chain, analysis, width, target) -> torch.Tensor:
    """`[B]` whether the width, kept `HANDOVER_WIDTH_MARGIN` inside its range, can scale each measured
    M/S ratio to the target (it scales exactly with the width)."""
    width_range = chain.space.master["width"]
    needed = width * target[:, 2] / analysis["stereo_ms_ratio"].detach().clamp_min(MIN_MS_FOR_WIDTH)
    margin = HANDOVER_WIDTH_MARGIN
    return (needed >= width_range.low + margin) & (needed <= width_range.high - margin)


def _refinable(chain, analysis, target, n_excerpts) -> torch.Tensor:
    """`[B]` whether the refinement's tilt and width can bring each song's excerpts to the targets."""
    width = analysis["master_params"]["width"][::n_excerpts].detach()
    centroid_ok = (analysis["spectral_centroid"].detach() - target[:, 1]).abs() <= HANDOVER_CENTROID_HZ
    return _width_reaches(chain, analysis, width, target) & centroid_ok


def optimize_mix(chain, stems: torch.Tensor, target: torch.Tensor, mask=None, *, progress: bool = False):
    """Optimise the console of `chain` for stems `[B, N, 2, T]` and targets `[B, 6]`.

    Cheap corrections first: the predicted settings are rendered at full length and corrected there
    (`refine_on_full_render`). Only songs those corrections cannot bring within tolerance (a width or tilt
    at the end of its range, say) go on to Adam on excerpts, followed by another full render and
    correction, for up to `ATTEMPTS` rounds in all.

    Returns:
        `(mix [B, 2, T], analysis)` of the full-length render.
    """
    settings = chain.optimize_settings
    with torch.no_grad():
        # The refinement corrects the loudness on its own renders: no search renders before it.
        prediction = chain.predict(stems, target, mask, loudness_steps=0)
    stem_unit, master_unit, trim_db = prediction.stem_unit, prediction.master_unit, prediction.trim_db
    bus, stem_params, stem_lufs = prediction.bus, prediction.stem_params, prediction.stem_lufs
    del prediction  # its bus is `bus`, freed with it before the next render
    for attempt in range(ATTEMPTS):
        adam_follows = attempt < ATTEMPTS - 1 and settings.steps > 0
        # The start (prediction or neutral) often needs the strips changed: a first render that shows it
        # goes straight to Adam. Later attempts refine in full.
        give_up = adam_follows and attempt == 0
        with torch.no_grad():
            if attempt > 0:
                bus, stem_params, stem_lufs = chain.render_bus(stems, stem_unit, mask)
            master_params = chain.space.denormalize_master(master_unit)
            mix, master_params, trim_db, done = refine_on_full_render(
                chain, bus, master_params, target, trim_db, progress, give_up=give_up
            )
            master_unit = chain.space.normalize_master(master_params).clamp(0, 1)
        if done.all() or not adam_follows:
            break
        bus = mix = None  # freed for Adam's graph: the next attempt renders both again
        stem_unit, master_unit = optimize_on_excerpts(
            chain, stems, target, mask, stem_unit, master_unit, trim_db, progress
        )
    with torch.no_grad():  # a long song is metered a block at a time (`automix.dsp.filters.by_block`)
        measured = measure(mix, chain.sample_rate)
        measured["loudness_range"] = metrics.loudness_range(mix, chain.sample_rate)
    analysis = {
        **measured,
        # at the master's input, after the trim
        "stem_lufs": loudness_after_gain(stem_lufs, trim_db[:, None]),
        "stem_params": stem_params,
        "master_params": master_params,
        "master_trim_db": trim_db,
    }
    return mix, analysis


def optimize_on_excerpts(chain, stems, target, mask, stem_unit, master_unit, trim_db, progress=False):
    """Adam on the logits of the normalised settings against the loss on the songs' loudest excerpts,
    with the trim held; stops early when every song is within the stop tolerances.

    Returns:
        `(stem_unit, master_unit)`, detached.
    """
    settings = chain.optimize_settings
    stem_logits = logit(stem_unit).detach().requires_grad_(True)
    master_logits = logit(master_unit).detach().requires_grad_(True)
    optimizer = torch.optim.Adam([stem_logits, master_logits], lr=settings.learning_rate)
    excerpts = select_excerpts(stems, chain.sample_rate, settings.excerpt_s, settings.n_excerpts)
    batch, n_excerpts = excerpts.shape[:2]
    flat = excerpts.flatten(0, 1)
    flat_mask = None if mask is None else mask.repeat_interleave(n_excerpts, dim=0)
    flat_trim = trim_db.repeat_interleave(n_excerpts, dim=0)
    bar = tqdm(range(settings.steps), desc="optimising mix", disable=not progress, leave=False)
    for _ in bar:
        _, analysis = chain.render(
            flat,
            torch.sigmoid(stem_logits).repeat_interleave(n_excerpts, dim=0),
            torch.sigmoid(master_logits).repeat_interleave(n_excerpts, dim=0),
            flat_mask,
            trim_db=flat_trim,
            join=(batch, n_excerpts),
        )
        loss = chain.loss_fn(analysis, target)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if _refinable(chain, analysis, target, n_excerpts).all():
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.sigmoid(stem_logits).detach(), torch.sigmoid(master_logits).detach()


def refine_on_full_render(chain, bus, master_params, target, trim_db, progress=False, give_up=False):
    """Secant corrections on the full render: trim (LUFS), width (M/S, which scales exactly with it) and a
    master EQ tilt (centroid, on log frequency), starting from `trim_db` `[B]`. Songs already within the
    stop tolerances are left as they are. With `give_up`, a first render on which some song's M/S ratio
    needs a width out of range ends the refinement there, with the trim and the width it asks for (not
    rendered): Adam on excerpts has to change the strips first (each full render of a long song costs
    seconds).

    Returns:
        `(mix, master_params, trim_db, done)` of the last render; `done` `[B]` marks songs within the stop
        tolerances.
    """
    eq_range, width_range = chain.space.master["eq_gain_db"], chain.space.master["width"]
    eq_low, eq_high = (torch.as_tensor(v, dtype=bus.dtype, device=bus.device) for v in eq_range.bounds())
    base_eq, width = master_params["eq_gain_db"], master_params["width"]
    tilt_db = torch.zeros_like(trim_db)
    tilt_shape = torch.tensor([-0.5, 0.0, 0.0, 0.5], dtype=bus.dtype, device=bus.device)
    history = None
    power = bus_detector_power(bus, chain.sample_rate)  # every round's bus compressor hears the same bus
    rounds = tqdm(
        range(chain.optimize_settings.refine_steps + 1), desc="refining", disable=not progress, leave=False
    )
    for _ in rounds:
        params = dict(master_params)
        params["eq_gain_db"] = torch.minimum(
            torch.maximum(base_eq + tilt_db[:, None] * tilt_shape, eq_low), eq_high
        )
        params["width"] = width
        mix = None  # the last round's, freed before the new render
        mix = chain.render_master(bus, params, trim_db, detector_power=power)
        measured = measure(mix, chain.sample_rate)
        done = _within(measured, target, STOP_LUFS_LU, STOP_CENTROID_HZ, STOP_MS)
        if done.all():
            break
        ms_done = (measured["stereo_ms_ratio"] - target[:, 2]).abs() <= STOP_MS
        out_of_reach = ~done & ~ms_done & ~_width_reaches(chain, measured, width, target)
        first_round = history is None
        log_centroid = torch.log2(measured["spectral_centroid"].clamp_min(1.0))
        centroid_error = torch.log2(target[:, 1]) - log_centroid
        if history is None:
            trim_slope = torch.ones_like(trim_db)
            tilt_step = TILT_PROBE_DB * torch.sign(centroid_error)
        else:
            prev_trim, prev_lufs, prev_tilt, prev_log_centroid = history
            trim_slope = secant_slope(trim_db - prev_trim, measured["lufs"] - prev_lufs, default=1.0)
            tilt_slope = secant_slope(tilt_db - prev_tilt, log_centroid - prev_log_centroid, default=0.05)
            tilt_step = centroid_error / tilt_slope
        history = (trim_db, measured["lufs"], tilt_db, log_centroid)
        active = (~done).to(bus.dtype)
        trim_db = (trim_db + active * (target[:, 0] - measured["lufs"]) / trim_slope).clamp(
            -MAX_TRIM_DB, MAX_TRIM_DB
        )
        tilt_db = (tilt_db + active * tilt_step).clamp(-2 * MAX_TILT_DB, 2 * MAX_TILT_DB)
        ms_ratio = target[:, 2] / measured["stereo_ms_ratio"].clamp_min(MIN_MS_FOR_WIDTH)
        width = torch.where(done, width, (width * ms_ratio).clamp(width_range.low, width_range.high))
        if give_up and first_round and out_of_reach.any():
            # Adam starts from the loudness and the width (as far as its range goes) this render asks for.
            params["width"] = width
            break
    return mix, params, trim_db, done
