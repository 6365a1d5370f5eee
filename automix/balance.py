"""How far a mix is from a person's mix of the same tracks: balance error and MR-STFT distance.

docs/design.md, *Contracts*, *Balance error* and *MR-STFT distance*. The "tracks" are the person's
(producer's) tracks as they sit in the person's mix, which is their sum; a track's gain is what the
evaluated mix applied to it relative to the person's mix. These are measurements, not losses: the balance
estimate runs without gradients on float64 CPU copies. `stem_balance_db`, the balance automix keeps while
it optimises (each stem against the stems together), is differentiable.
"""

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import scipy.optimize
import torch

from automix.dsp.filters import rfft
from automix.errors import AutomixError
from automix.loudness import SILENCE_LUFS, all_finite, integrated_loudness, validate_audio
from automix.units import db_to_amp

__all__ = [
    "BalanceReport",
    "TrackBalance",
    "ThirdOctaveBands",
    "band_energies",
    "balance_error_db",
    "coherent_groups",
    "energy_similarity",
    "measurable_groups",
    "track_coherence",
    "estimate_track_gains",
    "mr_stft_distance",
    "third_octave_bands",
]

# IEC 61260-1:2014 §5.2 base-ten fractional-octave bands: exact midband frequencies 1000·G^(x/b) Hz with
# G = 10^(3/10) and b = 3, i.e. 10 bands per decade (a third of an octave within 0.08 %), edges at the
# geometric midpoints between midband frequencies.
IEC_REFERENCE_HZ = 1000.0
THIRD_OCTAVE_BANDS_PER_DECADE = 10
LOWEST_BAND_HZ = 25.0  # nominal midband frequency of the lowest band (exact: 25.12 Hz)
# Balance STFT (contract): periodic Hann window, 4096 samples, hop 2048.
BALANCE_N_FFT = 4096
BALANCE_HOP = 2048
# Tracks whose coherence (`track_coherence`) reaches this add partly in amplitude, not in power: the
# balance estimate treats them as one track (`coherent_groups`).
COHERENCE_THRESHOLD = 0.2
# Tracks whose band energies' cosine similarity (`energy_similarity`) reaches this are as one column to
# the estimate's least squares: it splits their sum between them at random.
SIMILARITY_THRESHOLD = 0.99
# `measurable_groups`: a group is measured apart when the person's own mix reads its gain within this (dB).
MEASURABLE_DB = 1.0
# A lost track counts this far (dB) below the other tracks' weighted mean level (contract: −60 dB).
LOST_DB = -60.0
# A track more than this far (dB) below the other tracks' weighted mean is lost too (issue 18:
# "gain estimate −∞ or > 20 dB down"): the NNLS cannot tell it from the other tracks' leakage.
LOST_THRESHOLD_DB = -20.0
# A track whose power share in the person's mix is below this (−120 dB) is silent: weight 0, not measured.
SILENT_SHARE = 1e-12
# MR-STFT distance (contract): FFT sizes, hop n/4, offset inside log10 |X|, loudness both mixes meet.
MR_STFT_N_FFTS = (512, 2048, 8192)
MR_STFT_HOP_DIVISOR = 4
MR_STFT_LOG_OFFSET = 1e-7
MR_STFT_TARGET_LUFS = -16.0
# Samples of windowed frames transformed at once (~8 MB in float64): bounds memory on a whole song.
STFT_BLOCK_SAMPLES = 2**20


class ThirdOctaveBands(NamedTuple):
    """1/3-octave bands and the rfft bins each one holds (`third_octave_bands`)."""

    centre_hz: torch.Tensor  # [n_bands] exact midband frequencies
    lower_hz: torch.Tensor  # [n_bands] lower edges (inclusive)
    upper_hz: torch.Tensor  # [n_bands] upper edges (exclusive; the last is Nyquist, inclusive)
    matrix: torch.Tensor  # [n_bands, n_bins] 1 where a bin's centre frequency lies in the band, else 0


class BalanceReport(NamedTuple):
    """Balance of a mix against the person's mix of the same tracks (`balance_error_db`).

    Silent tracks (weight 0) read NaN in `relative_db`.
    """

    gains: torch.Tensor  # [N] estimated linear amplitude gains relative to the person's mix
    relative_db: torch.Tensor  # [N] counted gain in dB minus the weighted mean (lost tracks as counted)
    weights: torch.Tensor  # [N] each track's power share in the person's mix (0 for silent tracks)
    lost: torch.Tensor  # [N] bool: the estimate could not find the track
    error_db: float  # weighted RMS of relative_db
    worst_db: float  # largest |relative_db| among tracks with nonzero weight


def third_octave_bands(sample_rate: int, n_fft: int, low_hz: float = LOWEST_BAND_HZ) -> ThirdOctaveBands:
    """1/3-octave bands from `low_hz` to Nyquist and the assignment of rfft bins to them.

    Base-ten bands of IEC 61260-1:2014: midband frequencies 1000·10^(x/10) Hz, edges 1000·10^((x ± ½)/10)
    Hz. The lowest band is the one whose exact midband frequency is nearest `low_hz` (25.12 Hz for
    25 Hz: edges 22.39–28.18 Hz); bands follow up to the one holding Nyquist, whose upper edge is cut
    to Nyquist. The bands tile [lowest edge, Nyquist] without gaps or overlap; a bin belongs to the band
    its centre frequency k·sample_rate/n_fft falls in (lower edges inclusive, Nyquist in the last band),
    bins below the lowest edge to none. A band narrower than a bin may hold no bin (its energy reads 0).

    Args:
        sample_rate: Hz.
        n_fft: FFT length (n_fft // 2 + 1 rfft bins).
        low_hz: nominal midband frequency of the lowest band, Hz.

    Returns:
        `ThirdOctaveBands`, float64 tensors; `matrix` is `[n_bands, n_fft // 2 + 1]`.

    Raises:
        AutomixError: `low_hz` is not between 0 and Nyquist.
    """
    nyquist_hz = sample_rate / 2.0
    if not 0.0 < low_hz < nyquist_hz:
        raise AutomixError(f"low_hz must be between 0 and Nyquist ({nyquist_hz} Hz), got {low_hz}")
    first = round(THIRD_OCTAVE_BANDS_PER_DECADE * math.log10(low_hz / IEC_REFERENCE_HZ))
    # The band holding Nyquist is the last whose lower edge lies below it.
    last = math.ceil(THIRD_OCTAVE_BANDS_PER_DECADE * math.log10(nyquist_hz / IEC_REFERENCE_HZ) + 0.5) - 1
    last = max(last, first)
    index = np.arange(first, last + 1)
    edges_hz = IEC_REFERENCE_HZ * 10.0 ** ((np.arange(first, last + 2) - 0.5) / THIRD_OCTAVE_BANDS_PER_DECADE)
    edges_hz[-1] = nyquist_hz
    bin_hz = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    band = np.searchsorted(edges_hz, bin_hz, side="right") - 1
    band[bin_hz == nyquist_hz] = len(index) - 1
    inside = (band >= 0) & (band < len(index))
    matrix = np.zeros((len(index), len(bin_hz)))
    matrix[band[inside], np.flatnonzero(inside)] = 1.0
    centre_hz = IEC_REFERENCE_HZ * 10.0 ** (index / THIRD_OCTAVE_BANDS_PER_DECADE)
    return ThirdOctaveBands(
        torch.from_numpy(centre_hz),
        torch.from_numpy(edges_hz[:-1].copy()),
        torch.from_numpy(edges_hz[1:].copy()),
        torch.from_numpy(matrix),
    )


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not all_finite(x):
        raise AutomixError(f"NaN or infinite samples in {name}; pass finite audio")


def _stft_blocks(signal: torch.Tensor, n_fft: int, hop: int) -> Iterator[torch.Tensor]:
    """Spectra `[rows, frames, n_fft // 2 + 1]` of `signal [rows, T]`, a block of frames at a time.

    As `automix.metrics`: periodic Hann, unnormalised `rfft` of the windowed frame, `center=False` (frame
    k covers samples [hop·k, hop·k + n_fft), 1 + (T − n_fft) // hop frames; the last < hop samples may be
    left out), a signal shorter than n_fft zero-padded at its end to one frame.
    """
    n_rows, n_samples = signal.shape
    padded = torch.nn.functional.pad(signal, (0, max(n_fft - n_samples, 0)))
    frames = padded.unfold(-1, n_fft, hop)  # a view: [rows, frames, n_fft]
    window = torch.hann_window(n_fft, periodic=True, dtype=signal.dtype, device=signal.device)
    frames_per_block = max(1, STFT_BLOCK_SAMPLES // (n_fft * n_rows))
    for start in range(0, frames.shape[1], frames_per_block):
        yield rfft(frames[:, start : start + frames_per_block] * window)


def band_energies(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Power per 1/3-octave band and STFT frame, both channels' power summed.

    STFT as `automix.metrics` builds it (periodic Hann, `center=False`, see `_stft_blocks`) with n_fft
    `BALANCE_N_FFT` and hop `BALANCE_HOP`; |X|² of the unnormalised rfft summed over each band's bins
    (`third_octave_bands`, 25 Hz up) and over channels.

    Args:
        x: `[..., C, T]` signal, C = 1 or 2.
        sample_rate: Hz.

    Returns:
        `[..., n_bands, n_frames]` power (sum of |X|², no normalisation), in x's dtype.

    Raises:
        AutomixError: x is not `[..., C, T]` audio, or holds NaN/inf.
    """
    n_ch, n_samples = validate_audio(x)
    _check_finite(x, "the signal")
    lead = x.shape[:-2]
    matrix = third_octave_bands(sample_rate, BALANCE_N_FFT).matrix.to(dtype=x.dtype, device=x.device)
    blocks = [
        (spectrum.real.square() + spectrum.imag.square()) @ matrix.T
        for spectrum in _stft_blocks(x.reshape(-1, n_samples), BALANCE_N_FFT, BALANCE_HOP)
    ]
    energy = torch.cat(blocks, dim=1)  # [rows, frames, bands]
    return energy.reshape(*lead, n_ch, *energy.shape[1:]).sum(dim=-3).transpose(-1, -2)


@torch.no_grad()
def track_coherence(tracks: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """How much each pair of tracks adds in amplitude rather than in power, 0 to 1.

    For tracks i, j with STFT X, Y (as `band_energies`: Hann `BALANCE_N_FFT`, hop `BALANCE_HOP`), per
    channel and rfft bin k the magnitude-squared-free coherence γ(k) = |Σₜ X·Y*| / √(Σₜ|X|²·Σₜ|Y|²) over
    frames t, averaged over bins and channels weighted by √(Σₜ|X|²·Σₜ|Y|²). Independent parts read near 0
    (about 1/√frames); one sample triggered in both tracks at the same instants (a layered kick, the
    pieces of a drum kit hit together) reads up to 1. Their sum's band energy then holds the cross term
    2·Re(X·Y*), which the energy model of `estimate_track_gains` cannot express.

    Args:
        tracks: `[N, C, T]` the person's tracks, C = 1 or 2.
        sample_rate: Hz (bins below the lowest 1/3-octave band are not counted, as in `band_energies`).

    Returns:
        `[N, N]` float64 symmetric, 1 on the diagonal (0 for a silent track).
    """
    n_tracks, n_ch, n_samples = tracks.shape
    validate_audio(tracks)
    _check_finite(tracks, "the tracks")
    counted = third_octave_bands(sample_rate, BALANCE_N_FFT).matrix.sum(0) > 0
    cross = torch.zeros(n_ch, n_tracks, n_tracks, int(counted.sum()), dtype=torch.complex128)
    x = tracks.detach().cpu().double().transpose(0, 1)  # [C, N, T]
    for spectra in _stft_blocks(x.reshape(-1, n_samples), BALANCE_N_FFT, BALANCE_HOP):
        spectra = spectra[..., counted].reshape(n_ch, n_tracks, -1, int(counted.sum()))
        cross += torch.einsum("cift,cjft->cijt", spectra, spectra.conj())
    power = cross.diagonal(dim1=1, dim2=2).real.transpose(1, 2)  # [C, N, bins]
    scale = (power[:, :, None] * power[:, None, :]).sqrt()
    coherence = (cross.abs().sum(dim=(0, -1))) / scale.sum(dim=(0, -1)).clamp_min(1e-300)
    return coherence.where(scale.sum(dim=(0, -1)) > 0, 0.0).fill_diagonal_(1.0)


@torch.no_grad()
def energy_similarity(tracks: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Cosine similarity `[N, N]` of the tracks' `band_energies` (bands × frames, flattened): near 1 where
    two tracks' band energies rise and fall alike (a part doubled and panned to both sides), which the
    energy model of `estimate_track_gains` cannot tell apart; 0 for a silent track."""
    energy = band_energies(tracks.detach().cpu().double(), sample_rate).flatten(1)
    unit = energy / torch.linalg.vector_norm(energy, dim=1, keepdim=True).clamp_min(1e-300)
    return (unit @ unit.T).fill_diagonal_(1.0)


def coherent_groups(
    tracks: torch.Tensor,
    sample_rate: int,
    max_groups: int | None = None,
    *,
    coherence_threshold: float = COHERENCE_THRESHOLD,
    similarity_threshold: float = SIMILARITY_THRESHOLD,
) -> list[list[int]]:
    """The tracks in groups the balance estimate can measure apart: tracks that add coherently
    (`track_coherence` ≥ `coherence_threshold`) or whose band energies move alike (`energy_similarity`
    ≥ `similarity_threshold`) are joined, transitively.

    Each pair's affinity is the larger of its coherence and similarity, each over its threshold; pairs of
    affinity ≥ 1 are joined. Where `max_groups` is given and more groups remain, the faintest group (by
    power) joins the group holding the track of highest affinity to it, until that many are left (as a
    producer bounces the small parts into related stems). The balance of a mix is then measured on the
    groups' sums (`torch.stack([tracks[g].sum(0) for g in groups])`): a drum kit whose pieces hit
    together is one instrument to the estimate, as it is one stem in MUSDB18.

    Returns:
        The groups, each a sorted list of track indices, ordered by their first index.
    """
    affinity = torch.maximum(
        track_coherence(tracks, sample_rate) / coherence_threshold,
        energy_similarity(tracks, sample_rate) / similarity_threshold,
    ).numpy()
    n_tracks = len(affinity)
    parent = list(range(n_tracks))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(affinity >= 1.0, 1)), strict=True):
        parent[root(int(j))] = root(int(i))
    power = tracks.detach().cpu().double().square().sum(dim=(-2, -1)).numpy()
    while max_groups is not None and len({root(i) for i in range(n_tracks)}) > max_groups:
        # The faintest group joins the group it is most related to (its highest affinity to any member).
        roots = np.array([root(i) for i in range(n_tracks)])
        faintest = min(set(roots.tolist()), key=lambda r: power[roots == r].sum())
        mine = roots == faintest
        partner = roots[~mine][affinity[mine][:, ~mine].max(axis=0).argmax()]
        parent[faintest] = int(partner)
    members: dict[int, list[int]] = {}
    for i in range(n_tracks):
        members.setdefault(root(i), []).append(i)
    return sorted(members.values())


def measurable_groups(
    tracks: torch.Tensor, sample_rate: int, max_groups: int | None = None
) -> list[list[int]]:
    """`coherent_groups`, then joined further until the estimate reads the person's own mix right: while
    some group's gain in the tracks' own sum (`estimate_track_gains`) is more than `MEASURABLE_DB` off
    1 (or 0: not found), the worst one joins the group whose band energies are most like its own
    (`energy_similarity`). What is left is what this estimate can measure on these tracks: a person's
    own mix then reads within `MEASURABLE_DB` of 0 dB for every group.

    Args:
        tracks: `[N, C, T]` the person's tracks (a song's excerpts joined end to end, say).
        sample_rate: Hz.
        max_groups: at most this many groups (`coherent_groups`).

    Returns:
        The groups, each a sorted list of track indices, ordered by their first index.
    """
    groups = coherent_groups(tracks, sample_rate, max_groups)
    while len(groups) > 1:
        sums = torch.stack([tracks[group].sum(dim=0) for group in groups])
        off_db = 20.0 * torch.log10(estimate_track_gains(sums, sums.sum(dim=0), sample_rate)).abs()
        off_db = torch.nan_to_num(off_db, nan=0.0, posinf=math.inf)  # a silent group is not measured
        worst = int(off_db.argmax())
        if off_db[worst] <= MEASURABLE_DB:
            break
        similarity = energy_similarity(sums, sample_rate)[worst]
        similarity[worst] = -math.inf
        partner = int(similarity.argmax())
        joined = sorted(groups[worst] + groups[partner])
        groups = sorted([g for k, g in enumerate(groups) if k not in (worst, partner)] + [joined])
    return groups


def _check_tracks_and_mix(tracks: torch.Tensor, mix: torch.Tensor) -> None:
    _check_tracks(tracks)
    _check_mix(mix, tracks.shape)


def _check_tracks(tracks: torch.Tensor) -> None:
    if tracks.ndim != 3:
        raise AutomixError(f"expected tracks shaped [N, channels, samples], got shape {tuple(tracks.shape)}")
    validate_audio(tracks)
    _check_finite(tracks, "the tracks")


def _check_mix(mix: torch.Tensor, tracks_shape: torch.Size) -> None:
    if mix.ndim != 2:
        raise AutomixError(f"expected a mix shaped [channels, samples], got shape {tuple(mix.shape)}")
    validate_audio(mix)
    if tracks_shape[-2] != mix.shape[-2]:
        raise AutomixError(
            f"the tracks have {tracks_shape[-2]} channels and the mix {mix.shape[-2]}; "
            "make both stereo (dual-mono for mono)"
        )
    if tracks_shape[-1] != mix.shape[-1]:
        raise AutomixError(
            f"the tracks have {tracks_shape[-1]} samples and the mix {mix.shape[-1]}; "
            "pass the same stretch of time (pad or trim to one length)"
        )
    _check_finite(mix, "the mix")


@torch.no_grad()
def estimate_track_gains(tracks: torch.Tensor, mix: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Each track's effective amplitude gain in a mix, by non-negative least squares on band energies.

    docs/design.md, *Balance error*: with E the `band_energies` (1/3-octave bands × STFT frames, channels
    summed), solve min ‖E(mix) − Σ wᵢ·E(trackᵢ)‖² over wᵢ ≥ 0 (`scipy.optimize.nnls`, plain least
    squares, every band × frame cell one row), then gᵢ = √wᵢ. Each column is divided by its norm before
    the solve and the solution by it after: the same minimiser (a positive change of variables), better
    conditioned. The tracks as they sit in the person's mix (their sum) read gᵢ ≈ 1.

    Args:
        tracks: `[N, C, T]` the person's tracks, C = 1 or 2.
        mix: `[C, T]` the mix to measure, same C and T.
        sample_rate: Hz.

    Returns:
        `[N]` float64 (CPU) linear gains ≥ 0; 0 where the track is not found, NaN for a track whose band
        energies are all exactly 0 (silent in the analysed frames and bands: its gain cannot be measured).

    Raises:
        AutomixError: bad shapes, mismatched channels or lengths, NaN/inf samples.
    """
    _check_tracks_and_mix(tracks, mix)
    return TrackBalance(tracks, sample_rate).gains(mix)


class TrackBalance:
    """The balance estimate of many mixes of the same tracks (`estimate_track_gains`, `balance_error_db`):
    the tracks' band energies and power shares are measured once, a track at a time (one float64 copy of
    a track in memory, not of all of them).

    Example::

        balance = TrackBalance(tracks, sample_rate)  # [N, C, T]
        balance.report(mix).lost  # [N] bool, as balance_error_db(tracks, mix, sample_rate).lost

    Args:
        tracks: `[N, C, T]` the tracks as they sit in the mix they are measured against.
        sample_rate: Hz.
        levels: `[N]` amplitude gains that put the tracks where they sit (their energies and powers scaled
            by the square), or None: as given.
    """

    def __init__(self, tracks: torch.Tensor, sample_rate: int, levels: torch.Tensor | None = None):
        _check_tracks(tracks)
        self.shape, self.sample_rate = tracks.shape, sample_rate
        squared = [1.0] * len(tracks) if levels is None else levels.detach().cpu().double().square().tolist()
        energies, power = [], []
        for track, square in zip(tracks.detach(), squared, strict=True):
            track = track.cpu().double()
            energies.append(band_energies(track, sample_rate).reshape(-1) * square)
            power.append(track.square().sum() * square)
        self.design = torch.stack(energies).T.numpy()  # [bands·frames, N]
        self.power = torch.stack(power)

    @torch.no_grad()
    def gains(self, mix: torch.Tensor) -> torch.Tensor:
        """`[N]` `estimate_track_gains` of the tracks in `mix` `[C, T]`."""
        _check_mix(mix, self.shape)
        design = self.design
        mix_energy = band_energies(mix.detach().cpu().double(), self.sample_rate).reshape(-1)
        norms = np.linalg.norm(design, axis=0)
        audible = norms > 0
        gains = np.full(design.shape[1], np.nan)
        if audible.any():
            scaled, _ = scipy.optimize.nnls(design[:, audible] / norms[audible], mix_energy.numpy())
            gains[audible] = np.sqrt(scaled / norms[audible])
        return torch.from_numpy(gains)

    @torch.no_grad()
    def report(
        self, mix: torch.Tensor, *, lost_db: float = LOST_DB, lost_threshold_db: float = LOST_THRESHOLD_DB
    ) -> BalanceReport:
        """`balance_error_db` of `mix` `[C, T]`."""
        return _report(self.gains(mix), self.power, lost_db, lost_threshold_db)

    @torch.no_grad()
    def lost(self, mix: torch.Tensor, lost_thresholds_db: Sequence[float]) -> torch.Tensor:
        """`[len(lost_thresholds_db), N]` bool: `report(mix, lost_threshold_db=t).lost` for each threshold
        t, the gains estimated once."""
        gains = self.gains(mix)
        return torch.stack([_report(gains, self.power, LOST_DB, t).lost for t in lost_thresholds_db])


@torch.no_grad()
def balance_error_db(
    tracks: torch.Tensor,
    mix: torch.Tensor,
    sample_rate: int,
    *,
    lost_db: float = LOST_DB,
    lost_threshold_db: float = LOST_THRESHOLD_DB,
) -> BalanceReport:
    """Balance error of a mix against the person's mix of the same tracks, in dB.

    docs/design.md, *Balance error*. Steps:

    1. gᵢ = `estimate_track_gains(tracks, mix)`; Gᵢ = 20·log10(gᵢ) dB (−∞ for gᵢ = 0).
    2. Weights: wᵢ = Pᵢ / Σ Pⱼ with Pᵢ = Σ over channels and samples of trackᵢ² (the track's power share
       in the person's mix, the tracks' sum, taken from the tracks). A track is silent if wᵢ <
       `SILENT_SHARE` or it has no energy in the bands (gᵢ NaN): its weight is set to 0 (the others'
       renormalised), it is neither lost nor counted, and reads NaN in `relative_db`.
    3. Lost: a non-silent track with gᵢ = 0, or more than 20 dB down: Gᵢ < Rᵢ + `lost_threshold_db`,
       Rᵢ being the weighted mean of Gⱼ over the other kept tracks (non-silent, not lost; a track is
       not its own reference, else a heavy track 30 dB down would drag the mean with it). Start with
       the tracks with gᵢ = 0 lost; each pass adds every kept track below its threshold; repeat until
       a pass adds none (at most N passes; the loudest track is never lost).
    4. A lost track counts as R + `lost_db`, R being the weighted mean of Gⱼ over the kept tracks:
       −60 dB below the level of the tracks found, so the error does not depend on the mix's overall
       level.
    5. relative_dbᵢ = counted Gᵢ − Σ wⱼ·counted Gⱼ; error_db = √(Σ wᵢ·relative_dbᵢ²); worst_db =
       max |relative_dbᵢ| over tracks with wᵢ > 0.

    Args:
        tracks: `[N, C, T]` the person's tracks as they sit in the person's mix.
        mix: `[C, T]` the mix to measure, same C and T.
        sample_rate: Hz.
        lost_db: level a lost track counts at, dB relative to R.
        lost_threshold_db: a track below Rᵢ + this (dB) is lost.

    Returns:
        `BalanceReport`; the person's own mix (`tracks.sum(0)`) reads error_db ≈ 0.

    Raises:
        AutomixError: bad shapes, mismatched channels or lengths, NaN/inf samples, every track silent,
            or no track found in the mix.
    """
    _check_tracks_and_mix(tracks, mix)
    return TrackBalance(tracks, sample_rate).report(mix, lost_db=lost_db, lost_threshold_db=lost_threshold_db)


def _report(
    gains: torch.Tensor, power: torch.Tensor, lost_db: float, lost_threshold_db: float
) -> BalanceReport:
    """`balance_error_db`'s steps 2–5 from the tracks' gains `[N]` and powers `[N]` (float64)."""
    if not power.sum() > 0:
        raise AutomixError("every track is silent; pass the tracks of the person's mix")
    share = power / power.sum()
    measured = (share >= SILENT_SHARE) & torch.isfinite(gains)
    if not measured.any():
        raise AutomixError(
            "no track has energy in the bands (above 22 Hz); pass the tracks of the person's mix"
        )
    weights = torch.where(measured, share, 0.0)
    weights = weights / weights.sum()
    found = measured & (gains > 0)
    if not found.any():
        raise AutomixError("none of the tracks was found in the mix; pass a mix made from these tracks")
    gain_db = 20.0 * torch.log10(torch.where(found, gains, 1.0))
    lost = measured & ~found
    while True:  # the lost set only grows, so this ends within N passes; the loudest track is never lost
        kept_weights = torch.where(measured & ~lost, weights, 0.0)
        others_weight = kept_weights.sum() - kept_weights
        others_sum_db = (kept_weights * gain_db).sum() - kept_weights * gain_db
        has_others = others_weight > 0
        others_db = others_sum_db / torch.where(has_others, others_weight, 1.0)
        below = (kept_weights > 0) & has_others & (gain_db < others_db + lost_threshold_db)
        if not below.any():
            break
        lost = lost | below
    reference_db = (kept_weights * gain_db).sum() / kept_weights.sum()
    counted_db = torch.where(lost, reference_db + lost_db, gain_db)
    mean_db = (weights[measured] * counted_db[measured]).sum()
    relative_db = torch.where(measured, counted_db - mean_db, torch.nan)
    error_db = float((weights[measured] * relative_db[measured].square()).sum().sqrt())
    worst_db = float(relative_db[weights > 0].abs().max())
    return BalanceReport(gains, relative_db, weights, lost, error_db, worst_db)


def stem_balance_db(stem_lufs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each stem's loudness relative to the stems together, dB (differentiable).

    Lᵢ − 10·log10(Σⱼ 10^(Lⱼ/10)) over the audible stems j (above −70 LUFS and in `mask`): a stem's share
    of the stems' summed loudness power, 0 dB for a lone stem, −3 dB for two equally loud ones. A change
    of every stem's level by the same dB leaves it unchanged.

    Args:
        stem_lufs: `[..., N]` the stems' integrated loudness, LUFS.
        mask: `[..., N]` 1 for real stems, or None.

    Returns:
        `[..., N]`, NaN for silent or masked stems.
    """
    audible = stem_lufs > SILENCE_LUFS
    if mask is not None:
        audible = audible & (mask > 0)
    power = torch.where(audible, torch.pow(10.0, stem_lufs.clamp_min(SILENCE_LUFS) / 10.0), 0.0)
    total_db = 10.0 * torch.log10(power.sum(dim=-1, keepdim=True).clamp_min(1e-30))
    return torch.where(audible, stem_lufs - total_db, torch.nan)


def _at_target_loudness(x: torch.Tensor, sample_rate: int, name: str) -> torch.Tensor:
    """x scaled to `MR_STFT_TARGET_LUFS` (BS.1770-4, `integrated_loudness`), per batch item."""
    lufs = integrated_loudness(x, sample_rate)
    if bool((lufs <= SILENCE_LUFS).any()):
        raise AutomixError(
            f"{name} is silent (no 400 ms block above {SILENCE_LUFS} LUFS); the MR-STFT distance compares "
            "audible mixes"
        )
    return x * db_to_amp(MR_STFT_TARGET_LUFS - lufs)[..., None, None]


def _log_magnitude_distance(x_mid: torch.Tensor, y_mid: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Mean over frames and bins of |log10(|X| + ε) − log10(|Y| + ε)| of `[rows, T]` signals: `[rows]`."""
    hop = n_fft // MR_STFT_HOP_DIVISOR
    total, count = 0.0, 0
    for x_spec, y_spec in zip(_stft_blocks(x_mid, n_fft, hop), _stft_blocks(y_mid, n_fft, hop), strict=True):
        x_log = torch.log10(x_spec.abs() + MR_STFT_LOG_OFFSET)
        y_log = torch.log10(y_spec.abs() + MR_STFT_LOG_OFFSET)
        total = total + (x_log - y_log).abs().sum(dim=(-2, -1))
        count += x_spec.shape[-2] * x_spec.shape[-1]
    return total / count


def mr_stft_distance(
    x: torch.Tensor, y: torch.Tensor, sample_rate: int, *, n_ffts: Sequence[int] = MR_STFT_N_FFTS
) -> torch.Tensor:
    """Multi-resolution STFT distance between two mixes (log magnitudes of the mid signal).

    docs/design.md, *MR-STFT distance*: each mix is scaled to −16 LUFS (`integrated_loudness`), M =
    (L + R) / 2 (a mono channel as is); for each FFT size n in `n_ffts` (512, 2048, 8192) the STFT with a
    periodic Hann window and hop n/4 (`center=False`, unnormalised rfft, as `automix.metrics`), the mean
    over frames and bins of |log10(|X| + 1e−7) − log10(|Y| + 1e−7)|; the result is the mean over sizes.
    0 for identical mixes and for a mix against itself at another gain; symmetric.

    Args:
        x: `[..., C, T]` one mix, C = 1 or 2.
        y: the other, the same shape.
        sample_rate: Hz.
        n_ffts: FFT sizes to average over.

    Returns:
        `[...]` distance (log10 units), in x's dtype.

    Raises:
        AutomixError: bad or mismatched shapes, NaN/inf samples, or a silent mix (no 400 ms block above
            −70 LUFS: its loudness, hence its level at −16 LUFS, is undefined).
    """
    validate_audio(x)
    validate_audio(y)
    if x.shape != y.shape:
        raise AutomixError(
            f"the mixes differ in shape: {tuple(x.shape)} and {tuple(y.shape)}; pass the same channels "
            "and length"
        )
    _check_finite(x, "x")
    _check_finite(y, "y")
    n_samples = x.shape[-1]
    x_mid = _at_target_loudness(x, sample_rate, "x").mean(dim=-2).reshape(-1, n_samples)
    y_mid = _at_target_loudness(y, sample_rate, "y").mean(dim=-2).reshape(-1, n_samples)
    terms = torch.stack([_log_magnitude_distance(x_mid, y_mid, n_fft) for n_fft in n_ffts])
    return terms.mean(dim=0).reshape(x.shape[:-2])
