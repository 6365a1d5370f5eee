"""Per-song optimisation: the default way `AutoMixChain` sets its console.

1. Start from the predictor's settings (`AutoMixChain.predict`: its bus, and its trim to the target loudness).
2. Adam on the normalised settings (as logits) against the loss, measured on excerpts of the song: the
   loudest sections, where a mix is judged, that between them hear every stem play (`select_excerpts`),
   processed as a batch and joined for the measurement. Stops early once the refinement can finish every
   song.
3. Render the whole song without gradients: that render is what the user gets, and excerpts and whole
   songs differ (their centroids by up to ~110 Hz on real material).
4. Correct what remains on the full render: a loudness trim before the master section, the M/S width
   (the ratio scales exactly with it) and a master EQ tilt for the centroid, by secant steps on the
   full render's own measurements, until it is within tolerance. The trim stops rising where the
   limiter takes nearly all of a further dB.
"""

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from automix import metrics
from automix.analysis import measure
from automix.dsp.console import bus_detector_power
from automix.loudness import loudness_after_gain
from automix.params import logit
from automix.staging import input_gain_db
from automix.trim import MAX_TRIM_DB, MIN_LOUDNESS_SLOPE, MIN_SECANT_STEP, MIN_USEFUL_SLOPE, secant_slope

MEASURES = ("lufs", "spectral_centroid", "stereo_ms_ratio")  # the targets' first three, in their order
# What the default mode promises for LUFS, centroid and M/S (`_better` counts the promises a render keeps)
PROMISE = (0.5, 100.0, 0.05)
# and the refinement's tolerances, well inside them.
STOP_LUFS_LU = 0.2
STOP_CENTROID_HZ = 40.0
STOP_MS = 0.02
# Adam on excerpts hands over to the refinement once the refinement can finish the job on the full
# render, where it counts: the centroid this close, with room left in the master EQ's shelves for the
# tilt that does the rest (`_tilt_reaches`), and the M/S ratio where the width, kept this far inside its
# range, can scale it to the target. Loudness needs no condition: the trim reaches any level the limiter
# leaves room for.
HANDOVER_CENTROID_HZ = 100.0
HANDOVER_WIDTH_MARGIN = 0.05
# A width this close to an end of its range, or a tilt with this little room left in the shelves toward
# the target, is pinned there (`_pinned`); the excerpts' aim moves a target by at most this factor either
# way.
PINNED_WIDTH = 1e-3
PINNED_TILT_DB = 0.1
MAX_AIM_RATIO = 1.5
MAX_TILT_DB = 6.0  # the shelves move by at most this much each way (the master EQ range clamps too)
MIN_MS_FOR_WIDTH = 1e-3  # a mono mix has no side signal for the width to scale
MIN_CENTROID_HZ = 1.0  # a silent render reads 0 Hz: ratios and octaves to it are taken from this
TILT_PROBE_DB = 1.0  # first tilt step, before a secant slope exists
TILT_OCTAVES_PER_DB = 0.05  # the centroid's move a dB of tilt, before a secant slope is measured
# A round held the master EQ and the width when they moved no more than this (dB; fraction of the width):
# the loudness it measured then answers to the trim alone.
HELD_EQ_DB = 0.2
HELD_WIDTH = 0.005
# Full-render corrections, each after Adam on excerpts but the first: a song the first correction cannot
# finish (a tilt at the end of the master EQ's range, say) gets two more rounds of Adam.
ATTEMPTS = 3
# A stem plays in an excerpt when its mean square there is within this much of its loudest excerpt's
# (`select_excerpts`): the buried-stem regulariser's margin.
PLAYING_DB = 20.0


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
    """Non-overlapping excerpts of each song that hear every stem play, the loudest that do:
    `[B, N, 2, T] -> [B, K, N, 2, L]`, in time order.

    Each pick is the window (half-overlapping candidates) that adds the most stems not yet heard playing,
    the loudest such (mean square of the unprocessed stem sum); once every stem is heard, the loudest. A
    stem plays in a window when its mean square there is within `PLAYING_DB` of its loudest window's:
    the loudest sections alone can leave out a part that plays elsewhere (drums that stop before a loud
    final chorus), and the loss would then judge, and the settings serve, a song without it. Where the
    picks leave no room for another, it may overlap them. A song no longer than the excerpts together is
    returned whole (K = 1, L = T).
    """
    n_samples = stems.shape[-1]
    length = int(excerpt_s * sample_rate)
    if n_samples <= length * n_excerpts:
        return stems[:, None]
    hop = length // 2
    starts = list(range(0, n_samples - length + 1, hop))
    with torch.no_grad():
        # Each window's energy from its two hops' (a window of odd length is ranked a sample short).
        window_stem_energy = _window_energy(stems, hop, len(starts))  # [B, N, W]
        window_energy = _window_energy(stems.sum(dim=1), hop, len(starts))  # [B, W]
        loudest = window_stem_energy.amax(dim=-1, keepdim=True)
        playing = (window_stem_energy > loudest * 10 ** (-PLAYING_DB / 10)) & (loudest > 0)  # [B, N, W]
    excerpts = []
    for item in range(stems.shape[0]):
        by_loudness = torch.argsort(window_energy[item], descending=True).tolist()
        heard = torch.zeros_like(playing[item, :, 0])
        chosen: list[int] = []
        for _ in range(n_excerpts):
            free = [w for w in by_loudness if all(abs(starts[w] - starts[c]) >= length for c in chosen)]
            # Where earlier picks leave no room, an overlapping one: every song of a batch gets K excerpts.
            free = free or [w for w in by_loudness if w not in chosen]
            new_stems = [int((playing[item, :, w] & ~heard).sum()) for w in free]
            pick = free[new_stems.index(max(new_stems))]  # the loudest of those adding the most
            chosen.append(pick)
            heard |= playing[item, :, pick]
        chosen.sort()
        excerpts.append(torch.stack([stems[item, ..., starts[w] : starts[w] + length] for w in chosen]))
    return torch.stack(excerpts)


@dataclass
class FullRender:
    """Full-length renders of a batch of songs with what made them: the master's settings and trim, the
    strips' (`strips`: stem_unit, stem_params, stem_lufs) once known, the measurements (`measure`) and
    how far each song missed (`miss` `[B]`: the largest error over the stop tolerances, ≤ 1 within them;
    `broken` `[B]`: how many of the three `PROMISE`s it breaks). `mix` is None where the audio was not
    kept."""

    mix: torch.Tensor | None
    master_params: dict
    trim_db: torch.Tensor
    measured: dict
    miss: torch.Tensor
    broken: torch.Tensor
    strips: tuple | None = None

    @classmethod
    def of(cls, mix, master_params, trim_db, measured, target) -> "FullRender":
        miss = _scaled_errors(measured, target, (STOP_LUFS_LU, STOP_CENTROID_HZ, STOP_MS)).amax(dim=0)
        broken = (_scaled_errors(measured, target, PROMISE) > 1).sum(dim=0)
        return cls(mix, master_params, trim_db, measured, miss, broken)


def _window_energy(x: torch.Tensor, hop: int, n_windows: int) -> torch.Tensor:
    """`[..., C, T] -> [..., n_windows]`: the energy of x over windows of two hops moved a hop at a time,
    summed over channels; by norms of the hops (no squared copy of a song's stems)."""
    hops = x[..., : (n_windows + 1) * hop].unflatten(-1, (n_windows + 1, hop))
    hop_energy = torch.linalg.vector_norm(hops, dim=-1).square().sum(dim=-2)
    return hop_energy[..., :-1] + hop_energy[..., 1:]


def _scaled_errors(measured, target, tolerances) -> torch.Tensor:
    """`[3, B]` the errors in LUFS, centroid and M/S, each over its tolerance: ≤ 1 within it."""
    return torch.stack(
        [(measured[name] - target[:, i]).abs() / tolerances[i] for i, name in enumerate(MEASURES)]
    )


def _better(old: FullRender | None, new: FullRender) -> FullRender:
    """Each song's closer render of the two (the new one on a tie): the secant steps and Adam can end a
    round further from the targets than an earlier one, and the user gets the closest render made: the
    one that keeps more of the three promises (`PROMISE`), then the one with the smaller miss."""
    if old is None:
        return new
    take = (new.broken < old.broken) | ((new.broken == old.broken) & (new.miss <= old.miss))
    if take.all():
        return new
    if not take.any():
        return old
    both = old.mix is not None and new.mix is not None
    return FullRender(
        _choose(take, new.mix, old.mix) if both else None,
        *(_choose(take, a, b) for a, b in zip(
            (new.master_params, new.trim_db, new.measured, new.miss, new.broken, new.strips),
            (old.master_params, old.trim_db, old.measured, old.miss, old.broken, old.strips),
            strict=True,
        )),
    )  # fmt: skip


def _choose(take: torch.Tensor, new, old):
    """`new` where `take` `[B]` holds, else `old`, item by item through tensors `[B, ...]`, dicts and
    tuples of them (None stays None)."""
    if new is None:
        return None
    if isinstance(new, dict):
        return {key: _choose(take, value, old[key]) for key, value in new.items()}
    if isinstance(new, tuple):
        return tuple(_choose(take, a, b) for a, b in zip(new, old, strict=True))
    return torch.where(take.reshape(-1, *([1] * (new.ndim - 1))), new, old)


def _width_reaches(chain, analysis, width, target) -> torch.Tensor:
    """`[B]` whether the width, kept `HANDOVER_WIDTH_MARGIN` inside its range, can scale each measured
    M/S ratio to the target (it scales exactly with the width)."""
    width_range = chain.space.master["width"]
    needed = width * target[:, 2] / analysis["stereo_ms_ratio"].detach().clamp_min(MIN_MS_FOR_WIDTH)
    margin = HANDOVER_WIDTH_MARGIN
    return (needed >= width_range.low + margin) & (needed <= width_range.high - margin)


def _held(before: dict, after: dict) -> torch.Tensor:
    """`[B]` whether the refinement's master EQ and width stayed (within `HELD_EQ_DB`, `HELD_WIDTH`)
    from one round's settings to the next."""
    eq_moved = (after["eq_gain_db"] - before["eq_gain_db"]).abs().amax(dim=-1)
    width_moved = (after["width"] / before["width"] - 1).abs()
    return (eq_moved <= HELD_EQ_DB) & (width_moved <= HELD_WIDTH)


def _tilt_room(chain, eq_gain_db, centroid, target) -> tuple[torch.Tensor, torch.Tensor]:
    """`([B] dB, [B] octaves)`: the tilt left in the master EQ's shelves `eq_gain_db` `[B, 4]` toward
    each target centroid, and the octaves from each centroid `[B]` to it."""
    low, high = chain.space.master["eq_gain_db"].bounds()
    low, high = (torch.as_tensor(v, dtype=eq_gain_db.dtype, device=eq_gain_db.device) for v in (low, high))
    low_shelf, high_shelf = eq_gain_db[:, 0], eq_gain_db[:, -1]
    # The tilt moves the low shelf by -t/2 and the high shelf by +t/2 (`refine_on_full_render`).
    room_up = 2 * torch.minimum(low_shelf - low[0], high[-1] - high_shelf)
    room_down = 2 * torch.minimum(high[0] - low_shelf, high_shelf - low[-1])
    octaves = torch.log2(target[:, 1] / centroid.clamp_min(MIN_CENTROID_HZ))
    return torch.where(octaves > 0, room_up, room_down), octaves


def _tilt_reaches(chain, analysis, eq_gain_db, target) -> torch.Tensor:
    """`[B]` whether each measured centroid is within `HANDOVER_CENTROID_HZ` of the target and the
    master EQ's shelves `eq_gain_db` `[B, 4]` have room left, toward the target, for the tilt that
    closes the gap at `TILT_OCTAVES_PER_DB` (twice it, for the excerpts' own error): a tilt already at
    the end of the shelves' range cannot finish the centroid."""
    centroid = analysis["spectral_centroid"].detach()
    room, octaves = _tilt_room(chain, eq_gain_db, centroid, target)
    needed = 2 * octaves.abs() / TILT_OCTAVES_PER_DB
    return ((centroid - target[:, 1]).abs() <= HANDOVER_CENTROID_HZ) & (room >= needed)


def _pinned(chain, render: FullRender, target) -> torch.Tensor | None:
    """`[B, 2]` the full render's centroid and M/S ratio where they are off by more than the stop
    tolerances with the refinement's correction for them pinned at an end of its range (the tilt; the
    width), NaN elsewhere; None where nothing is."""
    width_range = chain.space.master["width"]
    width, ms = render.master_params["width"], render.measured["stereo_ms_ratio"]
    ms_pinned = (width >= width_range.high - PINNED_WIDTH) | (width <= width_range.low + PINNED_WIDTH)
    ms_pinned &= (ms - target[:, 2]).abs() > STOP_MS
    centroid = render.measured["spectral_centroid"]
    room, _ = _tilt_room(chain, render.master_params["eq_gain_db"], centroid, target)
    centroid_pinned = (room <= PINNED_TILT_DB) & ((centroid - target[:, 1]).abs() > STOP_CENTROID_HZ)
    pinned = torch.stack([centroid_pinned, ms_pinned], dim=-1)
    if not pinned.any():
        return None
    return torch.where(pinned, torch.stack([centroid, ms], dim=-1), torch.nan)


def _refinable(chain, analysis, target, n_excerpts) -> torch.Tensor:
    """`[B]` whether the refinement's tilt and width can bring each song's excerpts to the targets."""
    master = {name: value[::n_excerpts].detach() for name, value in analysis["master_params"].items()}
    width_ok = _width_reaches(chain, analysis, master["width"], target)
    return width_ok & _tilt_reaches(chain, analysis, master["eq_gain_db"], target)


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
    input_gain = input_gain_db(stems, chain.sample_rate, mask)
    with torch.no_grad():
        # The refinement corrects the loudness on its own renders: no search renders before it.
        prediction = chain.predict(stems, target, mask, loudness_steps=0, input_gain=input_gain)
    stem_unit, master_unit, trim_db = prediction.stem_unit, prediction.master_unit, prediction.trim_db
    bus, stem_params, stem_lufs = prediction.bus, prediction.stem_params, prediction.stem_lufs
    del prediction  # its bus is `bus`, freed with it before the next render
    best = None
    for attempt in range(ATTEMPTS):
        adam_follows = attempt < ATTEMPTS - 1 and settings.steps > 0
        # The start (prediction or neutral) often needs the strips changed: a first render that shows it
        # goes straight to Adam. Later attempts refine in full.
        give_up = adam_follows and attempt == 0
        with torch.no_grad():
            if attempt > 0:
                bus, stem_params, stem_lufs = chain.render_bus(stems, stem_unit, mask, input_gain)
            master_params = chain.space.denormalize_master(master_unit)
            render, master_params, trim_db = refine_on_full_render(
                chain, bus, master_params, target, trim_db, progress, give_up=give_up
            )
            master_unit = chain.space.normalize_master(master_params).clamp(0, 1)
        render.strips = (stem_unit, stem_params, stem_lufs)
        best = _better(best, render)
        if (best.miss <= 1).all() or not adam_follows:
            break
        # (the give-up's width was not rendered: its render reads the M/S of another width)
        full = None if give_up else _pinned(chain, render, target)
        bus = render = best.mix = None  # freed for Adam's graph: the next attempt renders again
        stem_unit, master_unit = optimize_on_excerpts(
            chain,
            stems,
            target,
            mask,
            stem_unit,
            master_unit,
            trim_db=trim_db,
            input_gain=input_gain,
            progress=progress,
            full=full,
        )
    stem_unit, stem_params, stem_lufs = best.strips
    with torch.no_grad():
        mix, measured = best.mix, dict(best.measured)
        if mix is None:  # some song's closest render came before the last attempt's: rendered again
            bus, stem_params, stem_lufs = chain.render_bus(stems, stem_unit, mask, input_gain)
            mix = chain.render_master(bus, best.master_params, best.trim_db)
            del bus
            measured = measure(mix, chain.sample_rate)
        # a long song is metered a block at a time (`automix.dsp.filters.by_block`)
        measured["loudness_range"] = metrics.loudness_range(mix, chain.sample_rate)
    analysis = {
        **measured,
        # at the master's input, after the trim
        "stem_lufs": loudness_after_gain(stem_lufs, best.trim_db[:, None]),
        "stem_params": stem_params,
        "master_params": best.master_params,
        "master_trim_db": best.trim_db,
    }
    return mix, analysis


def optimize_on_excerpts(
    chain, stems, target, mask, stem_unit, master_unit, *, trim_db, input_gain, progress=False, full=None
):
    """Adam on the logits of the normalised settings `stem_unit`, `master_unit` against the loss on the
    songs' loudest excerpts, with the trim `trim_db` and the input gain `input_gain` `[B]` held; stops
    early once the refinement can finish every song (`_refinable`).

    `full` `[B, 2]` (`_pinned`): the centroid and M/S ratio of each song's full render at these settings
    where the refinement's tilt or width could not bring it to the target, else NaN. There the excerpts
    aim at the target times what they read against the full render at the start: Adam aiming them at
    the target itself hands over where the full render, brighter or narrower than its loudest sections,
    is out of the tilt's or the width's reach again.

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
    flat_gain = input_gain.repeat_interleave(n_excerpts, dim=0)
    bar = tqdm(range(settings.steps), desc="optimising mix", disable=not progress, leave=False)
    aim = target
    for step in bar:
        _, analysis = chain.render(
            flat,
            torch.sigmoid(stem_logits).repeat_interleave(n_excerpts, dim=0),
            torch.sigmoid(master_logits).repeat_interleave(n_excerpts, dim=0),
            flat_mask,
            trim_db=flat_trim,
            join=(batch, n_excerpts),
            input_gain=flat_gain,
        )
        if step == 0 and full is not None:
            read = torch.stack([analysis[name].detach() for name in MEASURES[1:]], dim=-1)
            floor = full.new_tensor([MIN_CENTROID_HZ, MIN_MS_FOR_WIDTH])
            ratio = (read / torch.maximum(full, floor)).clamp(1 / MAX_AIM_RATIO, MAX_AIM_RATIO)
            aim = target.clone()
            aim[:, 1:3] = torch.where(torch.isnan(full), target[:, 1:3], target[:, 1:3] * ratio)
        loss = chain.loss_fn(analysis, aim)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if _refinable(chain, analysis, aim, n_excerpts).all():
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
        `(render, master_params, trim_db)`: each song's closest render (`FullRender` with its audio,
        rendered again where a later round's was further off), and the settings and trim to go on from:
        the closest render's, or those the give-up asks for.
    """
    eq_range, width_range = chain.space.master["eq_gain_db"], chain.space.master["width"]
    eq_low, eq_high = (torch.as_tensor(v, dtype=bus.dtype, device=bus.device) for v in eq_range.bounds())
    base_eq, width = master_params["eq_gain_db"], master_params["width"]
    tilt_db = torch.zeros_like(trim_db)
    tilt_shape = torch.tensor([-0.5, 0.0, 0.0, 0.5], dtype=bus.dtype, device=bus.device)
    history = best = None
    trim_cap = torch.full_like(trim_db, MAX_TRIM_DB)
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
        if best is not None:
            best.mix = None  # one render's audio in memory at a time: rendered again if it stays the closest
        mix = chain.render_master(bus, params, trim_db, detector_power=power)
        measured = measure(mix, chain.sample_rate)
        render = FullRender.of(mix, params, trim_db, measured, target)
        best, done = _better(best, render), render.miss <= 1
        mix = render = None
        if done.all():
            break
        ms_done = (measured["stereo_ms_ratio"] - target[:, 2]).abs() <= STOP_MS
        out_of_reach = ~done & ~ms_done & ~_width_reaches(chain, measured, width, target)
        first_round = history is None
        log_centroid = torch.log2(measured["spectral_centroid"].clamp_min(MIN_CENTROID_HZ))
        centroid_error = torch.log2(target[:, 1]) - log_centroid
        if history is None:
            trim_slope = torch.ones_like(trim_db)
            tilt_step = TILT_PROBE_DB * torch.sign(centroid_error)
        else:
            prev_trim, prev_lufs, prev_tilt, prev_log_centroid, prev_params = history
            # Only a round that moved the trim alone tells the loudness's slope against it: a narrower
            # width or a tilt toward the bass, in the same round, takes or adds loudness of its own.
            # Other rounds step as if a dB of trim were a LU. A step is at most 4x the miss: on the
            # limiter's plateau the slope is low and the loudness falls faster below it (a rhythm song's
            # 0.11 LU/dB sent its trim 6.5 dB down, 2 LU past the target).
            held = _held(prev_params, params)
            trim_slope = secant_slope(trim_db - prev_trim, measured["lufs"] - prev_lufs, default=1.0)
            trim_slope = torch.where(
                held, trim_slope.clamp_min(MIN_LOUDNESS_SLOPE), torch.ones_like(trim_slope)
            )
            # Where the limiter took over 90 % of the last dB the trim rose (or more: under deep limiting
            # a song's loudness can fall as the trim rises), the trim rises no further than the louder
            # render's, as in predict mode (`automix.trim.MIN_USEFUL_SLOPE`).
            rise = trim_db - prev_trim
            stalled = (rise > MIN_SECANT_STEP) & (measured["lufs"] - prev_lufs < MIN_USEFUL_SLOPE * rise)
            stalled &= held
            louder_trim = torch.where(measured["lufs"] >= prev_lufs, trim_db, prev_trim)
            trim_cap = torch.where(stalled, torch.minimum(trim_cap, louder_trim), trim_cap)
            tilt_slope = secant_slope(
                tilt_db - prev_tilt, log_centroid - prev_log_centroid, default=TILT_OCTAVES_PER_DB
            )
            tilt_step = centroid_error / tilt_slope
        history = (trim_db, measured["lufs"], tilt_db, log_centroid, params)
        active = (~done).to(bus.dtype)
        trim_db = trim_db + active * (target[:, 0] - measured["lufs"]) / trim_slope
        trim_db = torch.minimum(trim_db.clamp(-MAX_TRIM_DB, MAX_TRIM_DB), trim_cap)
        tilt_db = (tilt_db + active * tilt_step).clamp(-2 * MAX_TILT_DB, 2 * MAX_TILT_DB)
        ms_ratio = target[:, 2] / measured["stereo_ms_ratio"].clamp_min(MIN_MS_FOR_WIDTH)
        width = torch.where(done, width, (width * ms_ratio).clamp(width_range.low, width_range.high))
        if give_up and first_round and out_of_reach.any():
            # Adam starts from the loudness and the width (as far as its range goes) this render asks for.
            return best, params | {"width": width}, trim_db
    if best.mix is None:  # an earlier round's render was closer than the last one
        best.mix = chain.render_master(bus, best.master_params, best.trim_db, detector_power=power)
    return best, best.master_params, best.trim_db
