"""Balances a style mix could start from, against the producers' (project issue 18): equal loudness
(BS.1770, the default mode's start without a reference) and equal partial loudness, on the LMMS songs
of `benchmarks/human_mixes.py`, its excerpts and track groups.

Partial loudness here is a simple band model in the spirit of Moore and Glasberg's (and of Ward, Reiss
and Athwal, "Multitrack mixing using a model of loudness and partial loudness", AES 133, 2012): each
track's power per 1/3-octave band and STFT frame (`automix.balance.band_energies`), flat or B-weighted
(about the 70-phon equal-loudness contour), gives a specific loudness (E + M)^α − M^α, M the other
tracks' power in that band (α = 0.3); a track's loudness is the sum over bands, averaged over the frames
where it is not digitally silent (within 100 dB, in power, of its loudest frame). Fixed-point steps find
the gains that make the tracks' partial loudness equal; each track's move from equal loudness is also
tried halved and capped at ±3 dB. The starts depend only on the tracks' relative levels, so they are
computed on the producer's tracks themselves (a scramble would be undone exactly); each start's balance
error is `automix.balance.balance_error_db` of the tracks mixed at its gains.

A development tool: it runs on the training songs unless told otherwise.
Run: `python benchmarks/balance_starts.py [--split train] [--excerpts 2]`.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import human_mixes  # noqa: E402  (the benchmark's songs, excerpts and groups)

from automix.balance import BALANCE_N_FFT, balance_error_db, band_energies, third_octave_bands  # noqa: E402
from automix.metrics import integrated_loudness  # noqa: E402

SR = human_mixes.SAMPLE_RATE
EXPONENT = 0.3  # specific loudness ∝ power^0.3 (Stevens; Zwicker's model)
PLAYING_DB = 100.0  # a frame counts where the track's power-equivalent loudness is within this of its loudest
STEPS = 60
MAX_STEP_DB = 6.0
CAP_DB = 3.0  # the "capped" start: each track within this of equal loudness (the style modes' budget)


def b_weighting_db(freq_hz: torch.Tensor) -> torch.Tensor:
    """B-weighting (IEC 60651), dB, 0 at 1 kHz."""

    def response(f):
        f2 = f.square()
        return 12194.0**2 * f**3 / ((f2 + 20.6**2) * (f2 + 158.5**2).sqrt() * (f2 + 12194.0**2))

    return 20.0 * torch.log10(response(freq_hz) / response(torch.tensor(1000.0, dtype=freq_hz.dtype)))


def partial_loudness(power: torch.Tensor, gains_db: torch.Tensor) -> torch.Tensor:
    """`[N]` each track's partial loudness (arbitrary units) from band powers `power [N, K, F]` with the
    tracks at `gains_db [N]`."""
    scaled = power * torch.pow(10.0, gains_db / 10.0)[:, None, None]
    total = scaled.sum(dim=0, keepdim=True)
    specific = (total.pow(EXPONENT) - (total - scaled).clamp_min(0.0).pow(EXPONENT)).clamp_min(0.0)
    per_frame = specific.sum(dim=1)  # [N, F]
    playing = per_frame > per_frame.amax(dim=-1, keepdim=True) * 10.0 ** (-PLAYING_DB * EXPONENT / 10.0)
    return (per_frame * playing).sum(-1) / playing.sum(-1).clamp_min(1)


def equal_partial_loudness_db(power: torch.Tensor, audible: torch.Tensor) -> torch.Tensor:
    """`[N]` gains (dB, mean 0 over the audible tracks) that give the audible tracks of `power [N, K,
    F]` equal `partial_loudness`; fixed-point steps, each a track's dB error / α (loudness ∝ power^α),
    halved and at most `MAX_STEP_DB`."""
    gains = torch.zeros(power.shape[0], dtype=power.dtype)
    for _ in range(STEPS):
        level = partial_loudness(power, gains).clamp_min(torch.finfo(power.dtype).tiny)
        mean = level[audible].log().mean().exp()
        step = (10.0 * torch.log10(mean / level) / EXPONENT).clamp(-MAX_STEP_DB, MAX_STEP_DB)
        gains = torch.where(audible, gains + 0.5 * step, gains)
        gains = gains - gains[audible].mean()
    return gains


def starts(tracks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each start's gains (dB) for `tracks [N, C, T]` (silent tracks at −200 dB)."""
    lufs = integrated_loudness(tracks, SR)
    audible = lufs > human_mixes.SILENCE_LUFS
    equal = torch.where(audible, lufs[audible].mean() - lufs, 0.0)
    power = band_energies(tracks, SR) + 1e-20
    centres = third_octave_bands(SR, BALANCE_N_FFT).centre_hz.to(power.dtype)
    gains = {"equal loudness": equal}
    for name, weighting in (("flat", 0.0), ("B-weighted", b_weighting_db(centres))):
        weighted = power * torch.pow(10.0, torch.as_tensor(weighting) / 10.0)[None, ..., None]
        move = equal_partial_loudness_db(weighted, audible) - equal
        move = move - move[audible].mean()
        gains[f"partial, {name}"] = equal + move
        gains[f"partial, {name}, half"] = equal + 0.5 * move
        gains[f"partial, {name}, within ±{CAP_DB:.0f} dB"] = equal + move.clamp(-CAP_DB, CAP_DB)
    return {name: torch.where(audible, value, -200.0) for name, value in gains.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="equal loudness and equal partial loudness vs producers")
    parser.add_argument("--root", type=Path, default=None, help="rendered songs (default: the data script's)")
    parser.add_argument("--split", choices=("valid", "train"), default="train", help="(default: train)")
    parser.add_argument("--excerpts", type=int, default=2, help="excerpts per song (default: 2)")
    args = parser.parse_args(argv)
    songs = human_mixes.rendered_songs(args.root, args.split)
    length = round(human_mixes.EXCERPT_S * SR)
    errors: dict[str, list[float]] = {}
    for song in songs:
        mix = human_mixes.read_wav(song.folder / "mixture.wav")
        excerpt_starts = human_mixes.pick_excerpts(mix, SR, args.excerpts, human_mixes.EXCERPT_S)
        groups = human_mixes.song_groups(song, excerpt_starts, length)
        for start in excerpt_starts:
            tracks = torch.stack([human_mixes.read_wav(path, start, start + length) for path in song.tracks])
            tracks = torch.stack([tracks[group].sum(dim=0) for group in groups]).double()
            line = []
            for name, gains_db in starts(tracks).items():
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
