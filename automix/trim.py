"""The master's input trim that brings its output to a loudness.

Everything in the master before the limiter is linear in the trim but the bus compressor, so the
loudness of the limiter's input follows the trim nearly dB for dB; the limiter takes a part of every dB,
a part no feature predicts well. A render of the master (its drive, and the limiter's two passes of 4x
oversampled peak detection) is what counts, but it is the dearest step of predict mode.
`MasterLoudness` models the master's output loudness as the trim changes (the bus compressor and the
limiter at a ~1 ms group rate) from one render of its drive, for a few vector operations a guess;
`search_trim` renders only to check the model's answer and corrects the model by what each render
measured. Where the limiter would take nearly all of a further dB, the trim stops rising: a target the
chain cannot reach without crushing the mix is approached, not chased.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchcomp import ms2coef

from automix.dsp.console import bus_detector_power, compressor_settings, master_drive
from automix.dsp.dynamics import ballistics, per_item, soft_knee_gain_db
from automix.dsp.limiter import (
    DEFAULT_LIMITER_RELEASE_MS,
    DEFAULT_LOOKAHEAD_MS,
    TRUE_PEAK_MARGIN_DB,
    limiter_gain_of_peaks,
)
from automix.dsp.stereo import gain
from automix.loudness import (
    BLOCK_S,
    HopEnergyMeter,
    integrated_loudness,
    integrated_loudness_of_hops,
    window_samples,
)
from automix.secant import MIN_SECANT_STEP, Bracket, SecantStepper
from automix.units import db_to_amp, power_to_db

# The master trim stays within this many dB each way, in predict mode and in the refinement: a silent
# bus stays silent whatever the trim, and a trim searched without bound there grew by 60 dB a round
# until the gain overflowed to inf and 0 · inf made the mix NaN.
MAX_TRIM_DB = 40.0
# The model works on groups of at most this many samples (the largest divisor of the loudness hop):
# ~1 ms, short next to the compressor's and limiter's time constants.
MODEL_GROUP_SAMPLES = 48
# The model's own search: at most this many guesses, stopping once within this much of its target.
MODEL_STEPS = 12
MODEL_TOLERANCE_LU = 0.01
MIN_LOUDNESS_SLOPE = 0.25  # LU per dB: a secant step is at most 4x what it missed
# The trim stops rising where its last dB adds less than this (LU per dB): the limiter then takes over 90 %
# of every further dB, crushing the mix (and brightening it by hundreds of Hz) for a few tenths of a LU.
MIN_USEFUL_SLOPE = 0.1
USEFUL_SEARCH_HEADROOM_LU = 20.0  # the bisection's low end: the limiter idle there (peaks 20 dB lower)
USEFUL_BISECTIONS = 10


class MasterLoudness:
    """Integrated loudness `[B]` of the master section's output as a function of a gain before it,
    modelled on one render of the section's drive (`automix.dsp.console.master_drive`).

    The signal is cut into groups of samples (`MODEL_GROUP_SAMPLES`) and each stage's gain is taken as
    constant over a group. The bus compressor: its detector's level of the bus, averaged over each
    group, moves dB for dB with the gain, and its gain follows from it as in
    `automix.dsp.dynamics.compressor` at the group rate (attack and release in groups); after it the
    EQ, the width and the drive are linear, so the drive scales by the gain and by the compressor's
    gain relative to the one rendered. The limiter: each group's peak is its largest sample magnitude
    over both channels, and the gain follows as in `automix.dsp.limiter.limiter`'s first pass, at the
    group rate. Each group's K-weighted energy of the drive (exact) is scaled by the square of these
    gains: they vary slowly next to the K-weighting's response. Sample peaks read a little under the
    true peaks the limiter detects and its second pass takes a little more, so the model reads up to a
    few tenths of a LU off, nearly the same at every gain; `search_trim` measures and corrects that.

    Args:
        bus: `[B, 2, T]` the master's input at gain 0 dB.
        sample_rate: Hz.
        params: the master's settings (`automix.dsp.console.MASTER_PARAMETERS`), each `[B]`.
        ceiling_dbtp: the limiter's ceiling, dBTP, float or `[B]`.
        detector_power: `[B, T]` the bus compressor's detector power of `bus`
            (`automix.dsp.console.bus_detector_power`) when already known; None: from the bus.
        blockwise: a long bus is processed a block of time at a time (no gradients are recorded).
    """

    def __init__(
        self,
        bus: torch.Tensor,
        sample_rate: int,
        params: dict,
        ceiling_dbtp,
        detector_power=None,
        *,
        blockwise: bool = False,
    ):
        batch, _, n_samples = bus.shape
        self.sample_rate = sample_rate
        window, hop = window_samples(sample_rate, BLOCK_S)
        group = max(d for d in range(1, MODEL_GROUP_SAMPLES + 1) if hop % d == 0)
        self.groups_per_hop = hop // group
        # A signal shorter than one block is measured as one block over all of it (`integrated_loudness`):
        # padded to one with silence, its power is counted over its own length.
        pad = max(window - n_samples, 0)
        self.power_scale = window / min(window, n_samples)
        if detector_power is None:
            detector_power = bus_detector_power(bus, sample_rate, blockwise=blockwise)
        drive = master_drive(bus, sample_rate, params, detector_power, blockwise=blockwise)
        if pad:
            drive = F.pad(drive, (0, pad))
        meter = HopEnergyMeter.of(drive, sample_rate, bins_per_hop=self.groups_per_hop)
        self.group_energy = meter.bin_energy  # [B, groups of whole hops]
        self.group_peak = _per_group(drive.abs().amax(dim=-2), group, torch.amax)
        del drive
        level = _per_group(detector_power, group, torch.mean, length=n_samples + pad)
        self.level_db = power_to_db(level)
        settings = (per_item(v, bus.shape[:1], bus) for v in compressor_settings(params, "bus"))
        threshold_db, ratio, attack_ms, release_ms, _, knee_db = settings
        self.compressor = (threshold_db[:, None], ratio[:, None], knee_db[:, None])
        self.ballistics = tuple(_group_coef(ms, sample_rate, group) for ms in (attack_ms, release_ms))
        self.limiter_window = max(1, round(DEFAULT_LOOKAHEAD_MS * sample_rate / 1000.0 / group))
        release_ms = torch.full((batch,), DEFAULT_LIMITER_RELEASE_MS, dtype=bus.dtype, device=bus.device)
        self.limiter_release = _group_coef(release_ms, sample_rate, group)
        self.ceiling = db_to_amp(per_item(ceiling_dbtp, bus.shape[:1], bus) - TRUE_PEAK_MARGIN_DB)
        self.rendered_compressor_gain = self._compressor_gain(torch.zeros_like(self.ceiling))
        self.unlimited_lufs = self._loudness(self.group_energy)

    def _compressor_gain(self, gain_db: torch.Tensor) -> torch.Tensor:
        target_db = soft_knee_gain_db(self.level_db + gain_db[:, None], *self.compressor)
        attack, release = self.ballistics
        return ballistics(db_to_amp(target_db), torch.ones_like(attack), attack, release)

    def _loudness(self, group_energy: torch.Tensor) -> torch.Tensor:
        hop_energy = group_energy.unflatten(-1, (-1, self.groups_per_hop)).sum(-1)
        return integrated_loudness_of_hops(hop_energy * self.power_scale, self.sample_rate)

    def __call__(self, gain_db: torch.Tensor) -> torch.Tensor:
        """Modelled loudness `[B]` LUFS (float64) of the master's output with a gain `[B]` dB before it."""
        scale = db_to_amp(gain_db)
        compressed = self._compressor_gain(gain_db) / self.rendered_compressor_gain
        ceiling = (self.ceiling / scale)[:, None]  # the peaks at the gain's scale against the ceiling
        limited = limiter_gain_of_peaks(
            self.group_peak * compressed, ceiling, self.limiter_release, self.limiter_window
        )
        total = (compressed * limited)[:, : self.group_energy.shape[-1]].double() * scale.double()[:, None]
        return self._loudness(self.group_energy * total.square())

    def solve(self, target_lufs: torch.Tensor, low_db: torch.Tensor, high_db: torch.Tensor) -> torch.Tensor:
        """The gain `[B]` dB within `[low_db, high_db]` whose modelled loudness is `target_lufs` `[B]`: secant
        steps from the gain that would reach it without the limiter, interpolating between the closest
        guesses once some lie on either side (`Bracket`). Where the limiter would take more than
        1 − `MIN_USEFUL_SLOPE` of the gain's last dB, the gain stops where it takes that much
        (`_useful_limit`): a target out of the limiter's reach is approached, not chased."""
        gain_db = self._reaching(target_lufs, low_db, high_db)
        return self._useful_limit(gain_db, target_lufs).clamp(low_db, high_db)

    def _useful_limit(self, gain_db: torch.Tensor, target_lufs: torch.Tensor) -> torch.Tensor:
        """`gain_db` `[B]` where its last dB still adds `MIN_USEFUL_SLOPE` LU or more; elsewhere the
        gain where it adds that much, by bisection (the slope falls as the limiter works harder) from a
        gain that leaves the peaks `USEFUL_SEARCH_HEADROOM_LU` under the target's level."""
        flat = self._slope(gain_db) < MIN_USEFUL_SLOPE
        if not flat.any():
            return gain_db
        low = (target_lufs - USEFUL_SEARCH_HEADROOM_LU - self.unlimited_lufs).to(gain_db.dtype)
        low, high = torch.minimum(low, gain_db), gain_db
        for _ in range(USEFUL_BISECTIONS):
            middle = (low + high) / 2
            steep = self._slope(middle) >= MIN_USEFUL_SLOPE
            low, high = torch.where(steep, middle, low), torch.where(steep, high, middle)
        return torch.where(flat, low, gain_db)

    def _slope(self, gain_db: torch.Tensor) -> torch.Tensor:
        """LU the gain's last dB adds `[B]`."""
        return self(gain_db) - self(gain_db - 1.0)

    def _reaching(
        self, target_lufs: torch.Tensor, low_db: torch.Tensor, high_db: torch.Tensor
    ) -> torch.Tensor:
        gain_db = (target_lufs - self.unlimited_lufs).to(low_db.dtype).clamp(low_db, high_db)
        bracket = Bracket(target_lufs)
        secant = SecantStepper(1.0, min_slope=MIN_LOUDNESS_SLOPE, max_slope=1.0)
        for _ in range(MODEL_STEPS):
            lufs = self(gain_db).to(gain_db.dtype)
            active = (target_lufs - lufs).abs() > MODEL_TOLERANCE_LU
            if not active.any():
                break
            bracket.add(gain_db, lufs)
            step = bracket.guard(gain_db + secant.step(gain_db, lufs, target_lufs))
            gain_db = torch.where(active, step.clamp(low_db, high_db), gain_db)
        return gain_db


def search_trim(
    render: Callable[[torch.Tensor], torch.Tensor],
    model: MasterLoudness,
    model_trim_db: torch.Tensor,
    target_lufs: torch.Tensor,
    steps: int,
    tolerance_lu: float,
    *,
    blockwise: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The trim `[B]` dB that brings the master's output to `target_lufs` `[B]`, that output and its
    measured loudness `[B]` (metered a block at a time with `blockwise`).

    The model (of the master's input at `model_trim_db`) answers first; each render of the master at the
    answer (`render`: trim `[B]` -> output `[B, 2, T]`) measures what the model missed there, and the
    model, moved by that, answers again, until every item is within `tolerance_lu` or `steps` renders
    were made. With 0 steps, or when the last answer went unrendered, the output and its loudness are
    None.
    """
    low, high = -MAX_TRIM_DB - model_trim_db, MAX_TRIM_DB - model_trim_db
    trim_db = model_trim_db + model.solve(target_lufs, low, high)
    bracket = Bracket(target_lufs)
    for _ in range(steps):
        mix = render(trim_db)
        lufs = integrated_loudness(mix, model.sample_rate, blockwise=blockwise)
        active = (target_lufs - lufs).abs() > tolerance_lu  # per item: a batch gives what each alone would
        if not active.any():
            return trim_db, mix, lufs
        bracket.add(trim_db, lufs)
        offset = lufs - model(trim_db - model_trim_db).to(lufs.dtype)
        answer = bracket.guard(model_trim_db + model.solve(target_lufs - offset, low, high))
        answer = torch.where(active, answer.clamp(-MAX_TRIM_DB, MAX_TRIM_DB), trim_db)
        if torch.equal(answer, trim_db):
            return trim_db, mix, lufs  # out of reach within the trim's range: a render would be the same
        trim_db = answer
    return trim_db, None, None


def loudness_search(
    render_master: Callable[..., torch.Tensor],
    bus: torch.Tensor,
    sample_rate: int,
    master_params: dict,
    target_lufs: torch.Tensor,
    trim_db: torch.Tensor,
    ceiling_dbtp,
    *,
    steps: int,
    tolerance_lu: float,
    blockwise: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Predict mode's trim `[B]` dB that brings the master's output to `target_lufs` `[B]`, with that
    output and its loudness (None when the last answer went unrendered): `search_trim` with its model
    built on the master's input `bus` `[B, 2, T]` at `trim_db`.

    `render_master(bus, master_params, trim_db, detector_power=...)` renders the master section
    (`automix.chain.AutoMixChain.render_master`); every render and the model share the bus
    compressor's detector power. `blockwise`: a long bus is rendered and metered a block of time at a
    time (no gradients are recorded here).
    """
    power = bus_detector_power(bus, sample_rate, blockwise=blockwise)
    model = MasterLoudness(
        gain(bus, gain_db=trim_db),
        sample_rate,
        master_params,
        ceiling_dbtp,
        detector_power=trimmed_power(power, trim_db),
        blockwise=blockwise,
    )
    return search_trim(
        lambda trim: render_master(
            bus, master_params, trim, detector_power=power, blockwise=blockwise, reconstruct=False
        ),
        model,
        trim_db,
        target_lufs,
        steps,
        tolerance_lu,
        blockwise=blockwise,
    )


def trimmed_power(power: torch.Tensor, trim_db: torch.Tensor) -> torch.Tensor:
    """A power `[B, T]` after a gain `[B]` dB."""
    return power * db_to_amp(trim_db).square()[:, None]


def _per_group(x: torch.Tensor, group: int, reduce, length: int | None = None) -> torch.Tensor:
    """`[B, T] -> [B, ceil(length / group)]`: `reduce` over each group of samples of x zero-padded to
    `length` (None: T) and on to whole groups."""
    length = x.shape[-1] if length is None else length
    x = F.pad(x, (0, length - x.shape[-1] + (-length % group)))
    return reduce(x.unflatten(-1, (-1, group)), dim=-1)


def _group_coef(time_ms: torch.Tensor, sample_rate: int, group: int) -> torch.Tensor:
    """A one-pole's coefficient per sample for a 10-90 % time (`torchcomp.ms2coef`), per group instead
    (computed in float64, returned in `time_ms`'s dtype: the kernel compiles per dtype)."""
    return (1 - (1 - ms2coef(time_ms.double(), sample_rate)) ** group).to(time_ms.dtype)


def limiter_stalled(rise_db: torch.Tensor, gain_lu: torch.Tensor) -> torch.Tensor:
    """`[B]` whether a trim that rose by `rise_db` gained under `MIN_USEFUL_SLOPE` LU a dB of it
    (`gain_lu`, which may be negative under deep limiting): the limiter takes nearly all of it."""
    return (rise_db > MIN_SECANT_STEP) & (gain_lu < MIN_USEFUL_SLOPE * rise_db)
