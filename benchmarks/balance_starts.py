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

The sounding start reads what each stem sounds like: a ridge regression (`RIDGE`) of the producer's move
from equal loudness on level-free features of the stem (`FEATURES`), fitted within each excerpt (a balance
is relative: features and moves less their power-weighted means), each song weighing the same, on the
other songs only. Its second row adds how many tracks the benchmark summed into the stem: the producers'
levels follow it (a bounced stem of many parts sits over equal loudness), but `mix.py` is not told it.

A development tool: it runs on the training songs unless told otherwise.
Run: `python benchmarks/balance_starts.py [--split train [other]] [--excerpts 2]` (other: the songs of
`human_mixes.py --split other`, e.g. tracker modules; several splits are fitted together).
"""

import argparse
import re
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import human_mixes  # noqa: E402  (the benchmark's songs, excerpts and groups)

from automix.balance import (  # noqa: E402
    BALANCE_N_FFT,
    balance_error_db,
    band_energies,
    third_octave_bands,
)

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
# The sounding start's features of a stem, none of which its level changes.
FEATURES = (
    "log2 centroid / kHz", "share < 120 Hz", "share 120-500 Hz", "share 500-2000 Hz", "share 2-6 kHz",
    "share > 6 kHz", "LUFS - RMS", "crest", "playing share", "level spread", "side / mid", "partial move",
)  # fmt: skip
BAND_EDGES_HZ = (120.0, 500.0, 2000.0, 6000.0)
PLAYING_WITHIN_DB = 30.0  # a frame plays where its power is within this of the stem's loudest frame
# The ridge penalty on standardised features, chosen among 0.01, 0.1 and 1 on the training and tracker
# songs left out one at a time (docs/benchmarks.md, *A start from what the stems sound like*).
RIDGE = 1.0


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


def stem_features(tracks: torch.Tensor, equal_db: torch.Tensor, partial_db: torch.Tensor) -> torch.Tensor:
    """`[N, len(FEATURES)]` float64 level-free features of each stem of `tracks [N, C, T]`: its band
    powers' centroid (octaves about 1 kHz) and shares in five bands (dB), its BS.1770 loudness less its
    RMS (dB, up to one constant: `equal_db` gives the loudness), crest factor (dB), the share of STFT
    frames it plays in, the spread of its playing frames' levels (dB), its side-to-mid power (dB) and its
    move to equal partial loudness `partial_db` (dB)."""
    tracks = tracks.double()
    tiny = torch.finfo(torch.float64).tiny
    power = band_energies(tracks, SR) + tiny  # [N, K, F]
    spectrum = power.mean(dim=-1)
    centre_hz = third_octave_bands(SR, BALANCE_N_FFT).centre_hz.double()
    centroid_hz = (spectrum * centre_hz).sum(-1) / spectrum.sum(-1)
    band = torch.bucketize(centre_hz, torch.tensor(BAND_EDGES_HZ, dtype=torch.float64))
    shares = [spectrum[:, band == k].sum(-1) / spectrum.sum(-1) for k in range(len(BAND_EDGES_HZ) + 1)]
    mean_square = tracks.square().mean(dim=(1, 2)) + tiny
    frame_db = 10.0 * torch.log10(power.sum(dim=1))
    playing = frame_db > frame_db.amax(dim=-1, keepdim=True) - PLAYING_WITHIN_DB
    playing_mean = (frame_db * playing).sum(-1) / playing.sum(-1)
    spread = ((frame_db - playing_mean[:, None]).square() * playing).sum(-1) / playing.sum(-1)
    mid = (tracks[:, 0] + tracks[:, -1]).square().mean(-1) + tiny
    side = (tracks[:, 0] - tracks[:, -1]).square().mean(-1) + tiny
    columns = [
        torch.log2(centroid_hz / 1000.0),
        *(10.0 * torch.log10(share.clamp_min(1e-6)) for share in shares),
        -equal_db - 10.0 * torch.log10(mean_square),
        10.0 * torch.log10(tracks.square().amax(dim=(1, 2)) / mean_square),
        playing.double().mean(-1),
        spread.sqrt(),
        (10.0 * torch.log10(side / mid)).clamp(-40.0, 10.0),
        partial_db.double(),
    ]
    return torch.stack(columns, dim=-1)


def _about_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`values [N, ...]` less their mean weighted by `weights [N]` (which sum to 1)."""
    return values - torch.einsum("n,n...->...", weights, values)


def fit_sounding_moves(examples: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]], song: str):
    """Ridge coefficients `[D]` (dB per feature unit) for the moves of `examples` (song, features `[n, D]`,
    producer's moves `[n]`, power shares `[n]` summing to 1: one per excerpt) of songs other than `song`,
    each song weighing the same; features standardised under the `RIDGE` penalty."""
    kept = [example for example in examples if example[0] != song]
    excerpts_of = {}
    for other, *_ in kept:
        excerpts_of[other] = excerpts_of.get(other, 0) + 1
    features = torch.cat([_about_mean(x, w) for _, x, _, w in kept])
    moves = torch.cat([_about_mean(y, w) for _, _, y, w in kept])
    weights = torch.cat([w / excerpts_of[other] for other, _, _, w in kept])
    scale = (weights @ features.square() / weights.sum()).sqrt().clamp_min(1e-9)
    z = features / scale
    normal = z.T @ (weights[:, None] * z) + RIDGE * weights.sum() * torch.eye(z.shape[1], dtype=z.dtype)
    return torch.linalg.solve(normal, z.T @ (weights * moves)) / scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="balances a style mix could start from, against the producers'"
    )
    parser.add_argument("--root", type=Path, default=None, help="rendered songs (default: each split's)")
    parser.add_argument(
        "--split", nargs="+", choices=("valid", "train", "other"), default=["train"], help="(default: train)"
    )
    parser.add_argument("--excerpts", type=int, default=2, help="excerpts per song (default: 2)")
    args = parser.parse_args(argv)
    songs = [
        song for split in dict.fromkeys(args.split) for song in human_mixes.rendered_songs(args.root, split)
    ]
    length = round(human_mixes.EXCERPT_S * SR)
    errors: dict[str, list[float]] = {}
    # (song, excerpt start, groups, roles, the starts, the stems' features with their tracks per stem);
    # (song, role, producer's move)
    excerpts, examples = [], []
    sounding: dict[bool, list] = {False: [], True: []}  # without and with the tracks per stem
    for song in songs:
        mix = human_mixes.read_wav(song.folder / "mixture.wav")
        if mix.shape[-1] < length:
            continue
        excerpt_starts = human_mixes.pick_excerpts(mix, SR, args.excerpts, human_mixes.EXCERPT_S)
        groups = human_mixes.song_groups(song, excerpt_starts, length)
        names = [human_mixes.group_name([path.stem for path in song.tracks], group) for group in groups]
        roles = [role_of(name) for name in names]
        print(
            f"{song.name}: {', '.join(f'{n} ({r})' for n, r in zip(names, roles, strict=True))}", flush=True
        )
        sizes = torch.log2(torch.tensor([len(group) for group in groups], dtype=torch.float64))
        for start in excerpt_starts:
            tracks = human_mixes.grouped_tracks(song, start, length, groups).double()
            candidates = starts(tracks)
            equal_db = candidates["equal loudness"]
            features = torch.cat(
                [stem_features(tracks, equal_db, candidates["partial"] - equal_db), sizes[:, None]], dim=-1
            )
            excerpts.append((song, start, groups, roles, candidates, features))
            moves = producer_moves_db(tracks, equal_db)
            examples += [
                (song.name, r, float(m)) for r, m, e in zip(roles, moves, equal_db, strict=True) if e > -200.0
            ]
            audible = equal_db > -200.0
            if int(audible.sum()) >= 2:
                power = tracks[audible].square().sum(dim=(1, 2))
                for with_sizes in sounding:
                    x = features[audible] if with_sizes else features[audible, :-1]
                    sounding[with_sizes].append((song.name, x, moves[audible], power / power.sum()))
    coefficients = {}  # (song, with the tracks per stem) -> ridge coefficients fitted on the other songs
    for song, start, groups, roles, candidates, features in excerpts:  # the audio read again: every
        tracks = human_mixes.grouped_tracks(song, start, length, groups).double()  # excerpt held takes GBs
        learned = role_moves_db(examples, song.name)
        role_move = torch.tensor([learned.get(role, 0.0) for role in roles], dtype=tracks.dtype)
        equal = candidates["equal loudness"]
        audible = equal > -200.0
        candidates["named roles (leave one song out)"] = torch.where(audible, equal + role_move, -200.0)
        if audible.sum() >= 2 and len({example[0] for example in sounding[False]}) > 1:
            for with_sizes, label in ((False, "sounding"), (True, "sounding + tracks per stem")):
                key = (song.name, with_sizes)
                if key not in coefficients:
                    coefficients[key] = fit_sounding_moves(sounding[with_sizes], song.name)
                x = features if with_sizes else features[:, :-1]
                move = torch.where(audible, x @ coefficients[key], 0.0)
                candidates[f"{label} (leave one song out)"] = torch.where(audible, equal + move, -200.0)
        line = []
        for name, gains_db in candidates.items():
            mixed = (tracks * torch.pow(10.0, gains_db / 20.0)[:, None, None]).sum(dim=0)
            errors.setdefault(name, []).append(balance_error_db(tracks, mixed, SR).error_db)
            line.append(f"{errors[name][-1]:5.2f}")
        print(f"{song.name}/{start / SR:.0f}s ({len(groups)} groups): {' '.join(line)}", flush=True)
    if errors:
        n_excerpts = len(errors["equal loudness"])
        print(f"\n{'start':48s} balance error median / mean / worst (dB), {n_excerpts} excerpts")
        for name, values in errors.items():
            median, mean = statistics.median(values), statistics.mean(values)
            print(f"{name:48s} {median:.2f} / {mean:.2f} / {max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
