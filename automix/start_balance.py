"""Where the per-song optimiser's stems start (`automix.optimize`; docs/design.md, *The per-song optimiser*,
step 1): the balance the start's strips are set to (the predictor's, one loudness, a reference's, a
checkpoint's), the strips' levels moved to it, and their pans spread where the stems are mono. Predict mode
takes a reference's start from here too.
"""

import math

import torch

from automix import panning
from automix.balance import stem_balance_db
from automix.controllers import MIN_MS_FOR_WIDTH, range_bounds
from automix.loudness import SILENCE_LUFS, integrated_loudness
from automix.metrics import spectral_shape, stereo_ms_ratio
from automix.params import ParameterSpace
from automix.reference_balance import fit_reference_balance, long_term_spectrum_db
from automix.settings import OptimiserStage
from automix.styles import CENTROID_RANGE_HZ, MS_RATIO_RANGE
from automix.targets import Targets


class StartBalance(OptimiserStage):
    """The balance a song's strips start from (`OptimizeSettings.balance_start`), and the strips set to it.

    Example::

        start = StartBalance(chain)
        balance_db = start.balance_db(stems, targets, mask, input_gain)  # None: the predictor's
        stem_unit = start.balanced_strips(stem_unit, stem_lufs, balance_db)

    Args:
        chain: the `AutoMixChain` whose ranges, sample rate and predictor are used.
        settings: None takes the chain's `optimize_settings`.
    """

    def balance_source(self, targets: Targets) -> str:
        """Where the start's balance comes from: "predicted" (the predictor's strips as they are),
        "stems", "checkpoint", "reference" or "equal_loudness" (`OptimizeSettings.balance_start`, "auto"
        resolved)."""
        start = self.settings.balance_start
        if start != "auto":
            return start
        if getattr(self.chain, "trained", False):
            return "predicted"
        return "reference" if targets.spectrum_db is not None else self.without_reference()

    def without_reference(self) -> str:
        """The start of a song with no reference where the source is "reference" or "auto":
        `balance_checkpoint`'s balance where one is set, else equal loudness."""
        return "checkpoint" if self.settings.balance_checkpoint else "equal_loudness"

    def song_balance_sources(self, targets: Targets) -> list[str]:
        """Per song, where its start's balance came from (`balance_source`; `without_reference` for a
        song without a reference spectrum where the source is "reference")."""
        source = self.balance_source(targets)
        if source != "reference":
            return [source] * targets.batch_size
        fallback = self.without_reference()
        return ["reference" if known else fallback for known in targets.has_reference.tolist()]

    def balance_db(self, stems, targets: Targets, mask, input_gain) -> torch.Tensor | None:
        """The balance `[B, N]` (`stem_balance_db`, dB) the start's strips are set to, or None to keep
        the predictor's: equal shares, the stems' own balance as handed over, the moves from equal shares
        that match each song's reference spectrum (`without_reference`'s for a song without one), or
        `checkpoint_balance_db`."""
        source = self.balance_source(targets)
        if source == "predicted":
            return None
        if source == "stems":
            return self.stems_balance_db(stems, mask)
        if source != "reference":
            return self.blind_balance_db(source, stems, targets, mask, input_gain)
        has_reference = targets.has_reference.to(stems.device)
        if has_reference.all():
            return self.reference_balance_db(stems, targets.spectrum_db, mask)
        balance_db = self.blind_balance_db(self.without_reference(), stems, targets, mask, input_gain)
        if not has_reference.any():
            return balance_db
        reference_db = self.reference_balance_db(stems, targets.spectrum_db, mask)
        return torch.where(has_reference[:, None], reference_db, balance_db)

    def stems_balance_db(self, stems, mask) -> torch.Tensor:
        """`[B, N]` dB: the balance the stems were handed over at (their own loudness; the input gain is
        common to every stem and leaves it alone)."""
        return stem_balance_db(integrated_loudness(stems, self.sample_rate, blockwise=True), mask)

    def blind_balance_db(self, source: str, stems, targets: Targets, mask, input_gain) -> torch.Tensor:
        """`[B, N]` dB: the balance of a start that needs no reference, "equal_loudness" (zeros) or
        "checkpoint" (`checkpoint_balance_db`), with `balance_stems_share` of it the stems' own
        (`stems_balance_db`): a level a stem was handed over at is a producer's, or a recording's, with
        an error of its own, and a share of it moves the start toward the one balance the stems carry
        (docs/benchmarks.md, *What a blind start would need*)."""
        if source == "equal_loudness":
            balance_db = torch.zeros(stems.shape[:2], device=stems.device)
        else:
            balance_db = self.checkpoint_balance_db(stems, targets, mask, input_gain)
        share = self.settings.balance_stems_share
        if share == 0:
            return balance_db
        # NaN (silent) stems stay NaN: `balanced_strips` leaves them at the stems' mean loudness
        return (1.0 - share) * balance_db + share * self.stems_balance_db(stems, mask).to(balance_db)

    def checkpoint_balance_db(self, stems, targets: Targets, mask, input_gain) -> torch.Tensor:
        """`[B, N]` dB: `balance_checkpoint_share` of the balance `OptimizeSettings.balance_checkpoint`'s
        predictor gives these stems at `own_targets` (NaN where it has no balance: that stem gets the
        stems' mean loudness)."""
        path = self.settings.balance_checkpoint_path()
        balance_chain = (
            type(self.chain)
            .from_checkpoint(path, style_targets=self.chain.style_targets, sample_rate=self.sample_rate)
            .to(stems.device)
        )
        own = self.own_targets(stems, targets, mask)
        prediction = balance_chain.predict(stems, own, mask, 0, input_gain, blockwise=True)
        # `balanced_strips` centres the balance: a scaled one is that share of each stem's move
        return self.settings.balance_checkpoint_share * stem_balance_db(prediction.stem_lufs, mask)

    def own_targets(self, stems, targets: Targets, mask) -> Targets:
        """The targets a balance checkpoint is given: each song's loudness target with the tone and width
        of its stems `[B, N, 2, T]` summed at equal loudness. The balance is the arrangement's: given a
        style's tone and width the predictor would reach them with levels too, and they are the master's."""
        lufs = integrated_loudness(stems, self.sample_rate, blockwise=True)
        audible, mean = _audible_mean(lufs, mask)
        gain = torch.where(audible, torch.pow(10.0, (mean[:, None] - lufs) / 20), 0.0)
        mix = (stems * gain[..., None, None]).sum(1)
        centroid_hz, bands = spectral_shape(mix, self.sample_rate)
        return Targets(
            targets.lufs,
            centroid_hz.clamp(*CENTROID_RANGE_HZ).to(targets.lufs),
            stereo_ms_ratio(mix).clamp(*MS_RATIO_RANGE).to(targets.lufs),
            bands.to(targets.bands),
        )

    def reference_balance_db(self, stems, spectrum_db: torch.Tensor, mask) -> torch.Tensor:
        """`[B, N]` dB: each stem's move from equal loudness that brings the stems' summed long-term
        spectrum closest to the song's reference `spectrum_db` `[B, K]` (`fit_reference_balance`; 0 for
        a song whose row is NaN)."""
        lufs = integrated_loudness(stems, self.sample_rate, blockwise=True)  # [B, N]
        audible, mean = _audible_mean(lufs, mask)
        audible = audible & ~spectrum_db.isnan().all(dim=-1, keepdim=True)  # a NaN row: no reference
        shift_db = torch.where(audible, mean[:, None] - lufs, 0.0)
        at_equal_loudness = long_term_spectrum_db(stems, self.sample_rate) + shift_db[..., None]
        spread_db = self.settings.reference_balance_spread_db
        return fit_reference_balance(at_equal_loudness, spectrum_db, spread_db, audible).to(stems.device)

    def reference_strips(self, stems, targets: Targets, mask, stem_unit, stem_lufs) -> torch.Tensor | None:
        """The strips `stem_unit` `[B, N, n_stem]` with each song mixed to a reference set to the reference
        balance (`reference_balance_db`, `balanced_strips`; `stem_lufs` `[B, N]`: what these strips
        bring the stems to), the others' as they are; None where no song has a reference."""
        has_reference = targets.has_reference
        if not has_reference.any():
            return None
        balance_db = self.reference_balance_db(stems, targets.spectrum_db, mask)
        moved = self.balanced_strips(stem_unit, stem_lufs, balance_db, mask)
        return torch.where(has_reference.to(moved.device)[:, None, None], moved, stem_unit)

    def balanced_strips(
        self, stem_unit: torch.Tensor, stem_lufs: torch.Tensor, balance_db: torch.Tensor, mask=None
    ) -> torch.Tensor:
        """The strips `stem_unit` `[B, N, n_stem]` (normalised) with each audible stem's level moved so
        that the stems, which these strips bring to `stem_lufs` `[B, N]` LUFS, play at the balance
        `balance_db` `[B, N]` about their mean loudness (`moved_levels`; equal values: equal loudness).
        Silent and masked stems keep their level."""
        audible, mean = _audible_mean(stem_lufs, mask)
        known = audible & balance_db.isfinite()
        balance_db = torch.where(known, balance_db, 0.0)
        balance_db = balance_db - balance_db.sum(-1, keepdim=True) / known.sum(-1, keepdim=True).clamp_min(1)
        offset_db = torch.where(audible, mean[:, None] + torch.where(known, balance_db, 0.0) - stem_lufs, 0.0)
        return moved_levels(
            self.space, stem_unit, offset_db + _level_room_db(self.space, stem_unit, offset_db, audible)
        )

    def panned_for_width(
        self, stems, prediction, targets: Targets, input_gain, mask=None
    ) -> torch.Tensor | None:
        """The strips of `prediction` (`AutoMixChain.predict` of stems `[B, N, 2, T]` after the input
        gain `input_gain` `[B]` dB) with the pans of each song whose bus is mono spread (`automix.panning`)
        until the master's width, `handover_width_margin` inside the top of its range, can reach the
        target M/S ratio. Mono stems, centred, give a bus with no side signal for any width to scale,
        and Adam can stay there: one such song ran every attempt at M/S 0 (docs/benchmarks.md, *Mono
        stems*). A narrow bus with some side is left to Adam. None where no song's bus is mono."""
        needed = targets.ms_ratio / (self.space.master["width"].high - self.settings.handover_width_margin)
        bus_ms = stereo_ms_ratio(prediction.bus.detach())  # read off the bus: no cross-powers for most songs
        mono = (bus_ms < MIN_MS_FOR_WIDTH) & (bus_ms < needed)
        if not mono.any():
            return None
        params = self.space.denormalize_stems(prediction.stem_unit.detach())
        image = panning.stereo_image(
            stems, self.sample_rate, params["level_db"], prediction.stem_lufs.detach(), input_gain, mask
        )
        params["pan"] = image.spread(params["pan"], needed)
        spread = self.space.normalize_stems(params).clamp(0.0, 1.0)
        return torch.where(mono[:, None, None].to(spread.device), spread, prediction.stem_unit)


def _level_room_db(
    space: ParameterSpace, stem_unit: torch.Tensor, offset_db: torch.Tensor, audible
) -> torch.Tensor:
    """`[B, 1]` dB added to every audible stem's level move `offset_db` `[B, N]` so that the moved
    levels fit the level's range where they can (split between its ends where they cannot): the
    stems' common level is the master trim's, and a clamped level would change the balance."""
    level = space.denormalize_stems(stem_unit)["level_db"] + offset_db
    low, high = range_bounds(space.stem["level_db"], level)
    over = torch.where(audible, level - high, -math.inf).amax(-1, keepdim=True).clamp_min(0.0)
    under = torch.where(audible, low - level, -math.inf).amax(-1, keepdim=True).clamp_min(0.0)
    return torch.where((over > 0) & (under > 0), (under - over) / 2, under - over)


def moved_levels(space: ParameterSpace, stem_unit: torch.Tensor, offset_db: torch.Tensor) -> torch.Tensor:
    """The strips `stem_unit` `[B, N, n_stem]` (normalised) with each stem's level moved by `offset_db`
    `[B, N]`, within the level's range. The level is a strip's last gain: its dB are the stem's."""
    params = space.denormalize_stems(stem_unit)
    low, high = range_bounds(space.stem["level_db"], offset_db)
    params["level_db"] = (params["level_db"] + offset_db).clamp(low, high)
    return space.normalize_stems(params).clamp(0.0, 1.0)


def _audible_mean(lufs: torch.Tensor, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The audible stems of `lufs` `[B, N]` (above −70 LUFS, in `mask`) and their mean loudness `[B]`."""
    audible = lufs > SILENCE_LUFS
    if mask is not None:
        audible = audible & (mask > 0)
    return audible, torch.where(audible, lufs, 0.0).sum(-1) / audible.sum(-1).clamp_min(1)
