"""A reference's balance: the stems' levels whose sum has the reference's long-term spectrum.

docs/design.md, *The per-song optimiser*. A reference mix's long-term 1/3-octave spectrum says more than
its loudness, centroid and width: how loud its low end is against its mids and air, which for stems of
different spectra is a balance. Reference mode starts from the stem levels whose sum matches that
spectrum best (in dB, band by band, at any overall level), held near equal loudness by a penalty on the
moves: a bass stem comes up where the reference's low end is full, a bright pad down where its top is
soft. The penalty grows with what the fit leaves unexplained: a reference of the same music is matched
closely and followed, one of other instruments (another song) is not, and the stems stay near equal
loudness rather than take its spectrum. The start only; the optimiser then holds the balance within its
budget as for any start.
"""

import math

import torch

from automix.balance import BALANCE_N_FFT, band_energies, third_octave_bands

__all__ = ["SPECTRUM_BANDS", "fit_reference_balance", "long_term_spectrum_db"]

# 1/3-octave bands from 25 Hz to 16 kHz (nominal midbands): the bands every rate from 44.1 kHz holds whole.
SPECTRUM_BANDS = 29
# A band more than this far under a spectrum's loudest band counts at this depth: bands with next to no
# energy (a stem's empty octaves, a reference's cut sub) would otherwise steer the fit by their noise.
SPECTRUM_RANGE_DB = 60.0
FIT_ITERATIONS = 100
# The penalty's weight is a fixed point (`_fit`): at most this many fits, stopping once it moves < 1 %.
FIT_ROUNDS = 10
_NEPERS_PER_DB = math.log(10.0) / 10.0  # power dB to natural log, for a stable dB sum (logsumexp)


def long_term_spectrum_db(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Long-term 1/3-octave spectrum: each band's power averaged over STFT frames, dB.

    `automix.balance.band_energies` (both channels' power summed) averaged over frames, for the first
    `SPECTRUM_BANDS` bands (25 Hz to 16 kHz) or as many as the rate holds.

    Args:
        x: `[..., C, T]` audio, C = 1 or 2.
        sample_rate: Hz.

    Returns:
        `[..., K]` dB (10·log10 of the mean band power; −inf for a band with no energy), K ≤ 29.
    """
    n_bands = min(SPECTRUM_BANDS, len(third_octave_bands(sample_rate, BALANCE_N_FFT).centre_hz))
    power = band_energies(x.detach(), sample_rate)[..., :n_bands, :].mean(dim=-1)
    return 10.0 * torch.log10(power)


def _floored(level_db: torch.Tensor) -> torch.Tensor:
    """`[..., K]` dB with each band at least `SPECTRUM_RANGE_DB` under the loudest band."""
    top = level_db.amax(dim=-1, keepdim=True)
    return torch.maximum(level_db, top - SPECTRUM_RANGE_DB)


def fit_reference_balance(
    stem_spectra_db: torch.Tensor, reference_db: torch.Tensor, spread_db: float, audible: torch.Tensor
) -> torch.Tensor:
    """Stem level moves (dB) whose sum's long-term spectrum is closest to the reference's.

    Minimises, over moves gᵢ of the audible stems, mean over bands of (M(b) − R(b) − c)² + λ · mean over
    stems of gᵢ², where M(b) = 10·log10 Σᵢ 10^((Sᵢ(b) + gᵢ)/10) is the moved stems' summed spectrum, R
    the reference's (each floored `SPECTRUM_RANGE_DB` under its loudest band) and c their mean
    difference (the overall level is free). λ = r² / `spread_db`², r² the first term at the fit (the
    mean squared difference the moves leave): a fixed point reached from λ = 0, as in a Gaussian model
    whose prior on the moves has the spread `spread_db` and whose spectral noise is what the fit leaves.
    Each fit is L-BFGS in float64, from g = 0.

    Args:
        stem_spectra_db: `[B, N, K]` each stem's long-term spectrum (`long_term_spectrum_db`) as the
            stems play at the start's balance.
        reference_db: `[B, K']` the reference's; the first min(K, K') bands are compared, less those
            that are −inf in the reference or in every stem.
        spread_db: how far (dB, RMS) a stem is expected to sit from the start; smaller keeps the start.
        audible: `[B, N]` bool, the stems that play (the others get 0 and do not count).

    Returns:
        `[B, N]` moves in dB (0 for stems not audible), float32 on the stems' device.
    """
    n_bands = min(stem_spectra_db.shape[-1], reference_db.shape[-1])
    with torch.inference_mode(False), torch.enable_grad():
        moves = torch.zeros(audible.shape, dtype=torch.float64)  # written in place: not an inference tensor
        for item in range(audible.shape[0]):
            playing = audible[item].cpu()
            spectra = stem_spectra_db[item, playing, :n_bands].detach().cpu().double().clone()
            target = reference_db[item, :n_bands].detach().cpu().double().clone()
            # A band with no FFT bin (25 Hz at 44.1 kHz) or no energy on either side says nothing.
            bands = target.isfinite() & spectra.isfinite().any(dim=0)
            if int(playing.sum()) >= 2 and int(bands.sum()) >= 2:
                moves[item, playing] = _fit(spectra[:, bands], _floored(target[bands]), spread_db)
    return moves.to(dtype=torch.float32, device=audible.device)


def _misfit(spectra_db: torch.Tensor, target_db: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Mean over bands of the squared difference (dB²) between the stems' sum, moved by `gain` `[n]`,
    and the target `[K]`, at the level that fits best."""
    summed = torch.logsumexp((spectra_db + gain[:, None]) * _NEPERS_PER_DB, dim=0) / _NEPERS_PER_DB
    difference = _floored(summed) - target_db
    return (difference - difference.mean()).square().mean()


def _fit(spectra_db: torch.Tensor, target_db: torch.Tensor, spread_db: float) -> torch.Tensor:
    """`fit_reference_balance` for one song: spectra `[n, K]` of the audible stems, the floored target
    `[K]`, float64; the moves `[n]`."""
    spectra_db = torch.maximum(spectra_db, spectra_db.amax() - 2 * SPECTRUM_RANGE_DB)  # no −inf bands
    strength = 0.0
    for _ in range(FIT_ROUNDS):
        gain = _fit_at(spectra_db, target_db, strength)
        refit = float(_misfit(spectra_db, target_db, gain)) / spread_db**2
        if abs(refit - strength) <= 0.01 * refit:
            break
        strength = refit
    return gain


def _fit_at(spectra_db: torch.Tensor, target_db: torch.Tensor, strength: float) -> torch.Tensor:
    """The moves `[n]` that minimise the misfit plus `strength` · their mean square, from 0."""
    gain = torch.zeros(spectra_db.shape[0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([gain], max_iter=FIT_ITERATIONS, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = _misfit(spectra_db, target_db, gain) + strength * gain.square().mean()
        value.backward()
        return value

    optimizer.step(loss)
    return gain.detach()
