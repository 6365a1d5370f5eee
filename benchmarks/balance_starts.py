"""Balances a style mix could start from, against the producers' (project issue 18): equal loudness
(BS.1770, the default mode's start without a reference) and equal partial loudness, on the LMMS songs
of `benchmarks/human_mixes.py`, its excerpts and track groups.

Partial loudness is a simple band model in the spirit of Moore and Glasberg's (and of Ward, Reiss and
Athwal, "Multitrack mixing using a model of loudness and partial loudness", AES 133, 2012): each track's
power E per 1/3-octave band and STFT frame (`automix.balance.band_energies`) gives a specific loudness
(E + M)^α − M^α, M the other tracks' power in that band, α = 0.3; a track's partial loudness is its sum
over bands, averaged over the frames where it is not digitally silent. Fixed-point steps find the gains
that make it equal; each track's move from equal loudness is tried whole, halved and capped at ±3 dB
(the style modes' budget). The starts depend only on the tracks' relative levels, so they are computed
on the producer's tracks themselves (a scramble would be undone exactly); each start's balance error is
`automix.balance.balance_error_db` of the tracks mixed at its gains.

The named-roles start reads what a user's stems are called: each track group's name (its first track's,
as the benchmark names it) is given a role by the first word of a fixed instrument vocabulary it holds
(`ROLES`: kick, snare, cymbal, percussion, bass, lead, keys, fx; anything else "other"), and each role
is moved from equal loudness by the producers' mean level for it about the power-weighted mean of their
excerpt, shrunk toward 0 (`ROLE_SHRINK`), learned from the other songs only (leave one song out).

A development tool: it runs on the training songs unless told otherwise.
Run: `python benchmarks/balance_starts.py [--split train] [--excerpts 2]`.
"""

import argparse
import re
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import human_mixes  # noqa: E402  (the benchmark's songs, excerpts and groups)

from automix.balance import balance_error_db, band_energies  # noqa: E402

SR = human_mixes.SAMPLE_RATE
CAP_DB = 3.0  # the capped start: each track within this of equal loudness (the style modes' budget)
SHARE = 0.5  # the halved start
EXPONENT = 0.3  # specific loudness ∝ power^0.3 (Stevens's law; Zwicker's and Moore's models)
# A frame counts where the track's loudness is within this many dB (in power) of its loudest frame's:
# every frame but digital silence.
PLAYING_DB = 100.0
STEPS = 80
MAX_STEP_DB = 6.0  # the fixed point's largest step per track
# Roles by the words of common instrument names (the first that matches; fixed before any level was read):
# a user's stems are usually named for what plays in them.
ROLES = (
    ("kick", r"kick|bassdrum|bass_drum|\bbd\b|kck"),
    ("snare", r"snare|clap|rim|sidestick|snr"),
    ("cymbal", r"hat|hihat|\bhh\b|ride|crash|cymbal|splash|china"),
    ("percussion", r"perc|tom|conga|bongo|shaker|tamb|wood|cowbell|clave|block|triangle"),
    ("bass", r"bass|\bsub\b|808"),
    ("lead", r"lead|vocal|vox|voice|melody|solo"),
    ("keys", r"pad|chord|string|choir|organ|piano|keys|guitar|gtr|pluck|arp|bell|brass|flute"),
    ("fx", r"noise|fx|sweep|riser|impact|reverse|whoosh|atmo"),
)
# A role's learned move is the sum of its producers' levels over (count + this): few examples, small move.
ROLE_SHRINK = 5.0


def partial_loudness(power: torch.Tensor, gains_db: torch.Tensor) -> torch.Tensor:
    """Each track's partial loudness (arbitrary units, ∝ power^α) among the others.

    Args:
        power: `[..., N, K, F]` band powers per track, band and frame (`band_energies`).
        gains_db: `[..., N]` each track's gain (power dB) in the mix.

    Returns:
        `[..., N]` the mean over the track's playing frames of its summed specific loudness.
    """
    scaled = power * torch.pow(10.0, gains_db / 10.0)[..., None, None]
    total = scaled.sum(dim=-3, keepdim=True)
    masker = (total - scaled).clamp_min(0.0)
    per_frame = (total.pow(EXPONENT) - masker.pow(EXPONENT)).clamp_min(0.0).sum(dim=-2)  # [..., N, F]
    loudest = per_frame.amax(dim=-1, keepdim=True)
    playing = per_frame > loudest * 10.0 ** (-PLAYING_DB * EXPONENT / 10.0)
    return (per_frame * playing).sum(-1) / playing.sum(-1).clamp_min(1)


@torch.no_grad()
def equal_partial_loudness_db(
    tracks: torch.Tensor, audible: torch.Tensor, equal_db: torch.Tensor
) -> torch.Tensor:
    """Each track's move (dB) from equal loudness to equal partial loudness.

    Fixed-point steps on the gains, each a track's partial-loudness error in dB (at most `MAX_STEP_DB`),
    `STEPS` of them, in float64. Two tracks' partial loudness ratio moves 0.3 dB (apart in their bands)
    to about 1.3 dB (two equal tracks in the same bands) per dB of gain between them, so each step
    shrinks their difference by a factor between 0.7 and −0.3 and the steps converge (a step of
    error / α would not: two alike tracks would swing about each other).

    Args:
        tracks: `[N, C, T]`.
        audible: `[N]` bool, the tracks that play; the others get 0 and do not mask.
        equal_db: `[N]` the gains (dB) that bring the tracks to equal loudness (BS.1770).

    Returns:
        `[N]` moves in dB about their mean over the audible tracks (0 for the others), float64.
    """
    moves = torch.zeros(len(audible), dtype=torch.float64)
    if int(audible.sum()) < 2:
        return moves
    power = band_energies(tracks[audible].double(), SR) + torch.finfo(torch.float64).tiny  # no log(0)
    power = power * torch.pow(10.0, equal_db[audible].double() / 10.0)[:, None, None]
    gains = torch.zeros(power.shape[0], dtype=torch.float64)
    for _ in range(STEPS):
        level = partial_loudness(power, gains).clamp_min(torch.finfo(torch.float64).tiny)
        error_db = 10.0 * torch.log10(level.log().mean().exp() / level)
        gains = gains + error_db.clamp(-MAX_STEP_DB, MAX_STEP_DB)
        gains = gains - gains.mean()
    moves[audible] = gains
    return moves


def equal_loudness_db(tracks: torch.Tensor) -> torch.Tensor:
    """`[N]` the benchmark's equal-loudness gains (dB) for `tracks [N, C, T]`; silent tracks at −200 dB."""
    amplitude = human_mixes.equal_loudness_gains(tracks, SR)  # 0: silent
    return torch.where(amplitude > 0, 20.0 * torch.log10(amplitude.clamp_min(1e-30)), -200.0)


def starts(tracks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each start's gains (dB) for `tracks [N, C, T]` (silent tracks at −200 dB)."""
    equal = equal_loudness_db(tracks)
    audible = equal > -200.0
    equal = torch.where(audible, equal, 0.0)
    move = equal_partial_loudness_db(tracks, audible, equal).to(equal)
    gains = {
        "equal loudness": equal,
        "partial": equal + move,
        "partial, half the move": equal + SHARE * move,
        f"partial, within ±{CAP_DB:.0f} dB": equal + move.clamp(-CAP_DB, CAP_DB),
    }
    return {name: torch.where(audible, value, -200.0) for name, value in gains.items()}


def role_of(name: str) -> str:
    """The role (`ROLES`) a track's name says it plays: its words without the LMMS index, lower case."""
    words = re.sub(r"^\d+_", "", name).lower().replace("-", "_")
    return next((role for role, pattern in ROLES if re.search(pattern, words)), "other")


def producer_moves_db(tracks: torch.Tensor, equal_db: torch.Tensor) -> torch.Tensor:
    """`[N]` each audible track's level in the producer's mix against equal loudness (dB), less their
    mean weighted by the tracks' power shares, as the balance error weighs them."""
    audible = equal_db > -200.0
    power = tracks.square().sum(dim=(1, 2)) * audible
    moves = -equal_db  # the producer's tracks sit at 0 dB; equal loudness moves them by `equal_db`
    return moves - (power * moves).sum() / power.sum()


def role_moves_db(examples: list[tuple[str, str, float]], song: str) -> dict[str, float]:
    """Each role's learned move (dB) from `examples` (song, role, producer's move) of songs other than
    `song`, shrunk toward 0 by `ROLE_SHRINK`; "other" stays at equal loudness."""
    by_role: dict[str, list[float]] = {}
    for other, role, move in examples:
        if other != song and role != "other":
            by_role.setdefault(role, []).append(move)
    return {role: sum(moves) / (len(moves) + ROLE_SHRINK) for role, moves in by_role.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="balances a style mix could start from, against the producers'"
    )
    parser.add_argument("--root", type=Path, default=None, help="rendered songs (default: the data script's)")
    parser.add_argument("--split", choices=("valid", "train"), default="train", help="(default: train)")
    parser.add_argument("--excerpts", type=int, default=2, help="excerpts per song (default: 2)")
    args = parser.parse_args(argv)
    songs = human_mixes.rendered_songs(args.root, args.split)
    length = round(human_mixes.EXCERPT_S * SR)
    errors: dict[str, list[float]] = {}
    excerpts, examples = [], []  # (song, excerpt start, groups, roles); (song, role, producer's move)
    for song in songs:
        mix = human_mixes.read_wav(song.folder / "mixture.wav")
        excerpt_starts = human_mixes.pick_excerpts(mix, SR, args.excerpts, human_mixes.EXCERPT_S)
        groups = human_mixes.song_groups(song, excerpt_starts, length)
        names = [human_mixes.group_name([path.stem for path in song.tracks], group) for group in groups]
        roles = [role_of(name) for name in names]
        print(
            f"{song.name}: {', '.join(f'{n} ({r})' for n, r in zip(names, roles, strict=True))}", flush=True
        )
        for start in excerpt_starts:
            excerpts.append((song, start, groups, roles))
            tracks = human_mixes.grouped_tracks(song, start, length, groups).double()
            equal_db = equal_loudness_db(tracks)
            moves = producer_moves_db(tracks, equal_db)
            examples += [
                (song.name, r, float(m)) for r, m, e in zip(roles, moves, equal_db, strict=True) if e > -200.0
            ]
    for song, start, groups, roles in excerpts:  # read again: every excerpt held at once takes gigabytes
        tracks = human_mixes.grouped_tracks(song, start, length, groups).double()
        learned = role_moves_db(examples, song.name)
        role_move = torch.tensor([learned.get(role, 0.0) for role in roles], dtype=tracks.dtype)
        candidates = starts(tracks)
        candidates["named roles (leave one song out)"] = torch.where(
            candidates["equal loudness"] > -200.0, candidates["equal loudness"] + role_move, -200.0
        )
        line = []
        for name, gains_db in candidates.items():
            mixed = (tracks * torch.pow(10.0, gains_db / 20.0)[:, None, None]).sum(dim=0)
            errors.setdefault(name, []).append(balance_error_db(tracks, mixed, SR).error_db)
            line.append(f"{errors[name][-1]:5.2f}")
        print(f"{song.name}/{start / SR:.0f}s ({len(groups)} groups): {' '.join(line)}", flush=True)
    if errors:
        n_excerpts = len(errors["equal loudness"])
        print(f"\n{'start':34s} balance error median / mean / worst (dB), {n_excerpts} excerpts")
        for name, values in errors.items():
            median, mean = statistics.median(values), statistics.mean(values)
            print(f"{name:34s} {median:.2f} / {mean:.2f} / {max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
