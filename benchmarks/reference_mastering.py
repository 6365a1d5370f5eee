"""Automix's reference mode against matchering 2.0 (the open-source reference mastering tool) on the same
targets and references: the LMMS validation songs' excerpts of `benchmarks/human_mixes.py` (picked,
grouped and gain-scrambled by ±9 dB as there), the reference being the producer's mix of the other
excerpt at −1 dBTP.

Automix mixes the scrambled tracks as a user runs it (`mix.py --stems ... --reference REF`, a subprocess,
timed with its start-up); matchering masters their plain sum (`matchering.process`, timed). Each output,
as written to disk, is measured against the reference: loudness error (pyloudnorm, LU), spectral-centroid
and M/S-ratio errors (`automix.metrics`), its reconstructed peak (`automix.metrics.reconstructed_peak`,
16x band-limited interpolation, dBTP) and its limiter's gain reduction (max and mean over time, dB;
automix's from its analysis JSON, matchering's from its output with and without its limiter).

Needs the validation songs rendered (`python data/make_lmms_multitracks.py --split valid`) and matchering
(`pip install matchering`: GPLv3, a dev extra; automix never imports it); skips cleanly otherwise.
Run: `python benchmarks/reference_mastering.py [--root DIR] [--excerpts 2] [--seed 0] [--plot FILE.png]`.
"""

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyloudnorm
import soundfile as sf
import torch
from human_mixes import (
    EXCERPT_S,
    ROOT,
    SAMPLE_RATE,
    Song,
    at_peak,
    group_name,
    grouped_tracks,
    pick_excerpts,
    read_wav,
    reference_span,
    rendered_songs,
    scramble,
    scramble_gains_db,
    song_groups,
)
from tqdm.auto import tqdm

from automix.io import audio_info
from automix.metrics import reconstructed_peak, spectral_centroid, stereo_ms_ratio
from automix.units import amp_to_db

MIX_SCRIPT = ROOT / "mix.py"
METHODS = ("automix", "matchering")
CEILING_DBTP = -1.0  # the reference's peak, and automix's ceiling


class Features(NamedTuple):
    lufs: float  # pyloudnorm, BS.1770-4
    centroid_hz: float
    ms_ratio: float


class Row(NamedTuple):
    excerpt: str  # song/start
    method: str
    lufs_error: float  # LU, output minus reference
    centroid_error_hz: float
    ms_error: float
    peak_dbtp: float  # reconstructed
    limiting_max_db: float  # NaN where not measured
    limiting_mean_db: float
    seconds: float


def features(audio: torch.Tensor, sample_rate: int) -> Features:
    """Loudness, spectral centroid and M/S ratio of `audio [C, T]`."""
    lufs = pyloudnorm.Meter(sample_rate).integrated_loudness(audio.double().T.numpy())
    return Features(float(lufs), float(spectral_centroid(audio, sample_rate)), float(stereo_ms_ratio(audio)))


def write_wav(path: Path, audio: torch.Tensor, sample_rate: int) -> Path:
    """`audio [C, T]` as a 32-bit float WAV (no clipping, no dither)."""
    sf.write(path, audio.T.numpy(), sample_rate, subtype="FLOAT")
    return path


def run_automix(stems: Sequence[Path], reference: Path, folder: Path, seed: int) -> tuple[Path, float, float]:
    """`mix.py --reference` on the stem files, as a user runs it: `(output, limiter max dB, mean dB)`."""
    output, report = folder / "automix.wav", folder / "automix.json"
    command = [sys.executable, str(MIX_SCRIPT), "--stems", *map(str, stems), "--reference", str(reference)]
    command += ["--output", str(output), "--analysis-output", str(report), "--seed", str(seed), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mix.py exited {done.returncode}: {done.stderr.strip()}")
    analysis = json.loads(report.read_text())
    for note in analysis["notes"]:
        if not note.startswith("targets from"):  # the reference's own figures
            tqdm.write(f"  automix note: {note}")
    limiter = analysis["gain_reduction"]["limiter"]
    return output, float(limiter["max_db"]), float(limiter["mean_db"])


def linked_reduction_db(limited: np.ndarray, unlimited: np.ndarray, makeup: float, floor: float):
    """Max and mean gain reduction (dB) of a stereo-linked limiter from its output `limited [T, C]` and
    input `unlimited [T, C]` times `makeup` (a gain after the limiter): one gain scales both channels, so
    it is the ratio of their larger magnitudes; samples whose input is under `floor` are left out."""
    louder = np.abs(unlimited).max(axis=1) * makeup
    audible = louder > floor
    gain = np.abs(limited).max(axis=1)[audible] / louder[audible]
    reduction_db = -amp_to_db(torch.from_numpy(np.minimum(gain, 1.0)))
    return float(reduction_db.max()), float(reduction_db.mean())


def run_matchering(target: Path, reference: Path, folder: Path) -> tuple[Path, float, float]:
    """`matchering.process` of the target file to the reference: `(output (24-bit), limiter max dB, mean
    dB)`. The limiter's gain is read from float copies of the output with and without it, made in the
    same call."""
    import matchering
    from matchering.stage_helpers import normalize_reference

    output, limited, unlimited = (folder / f"matchering{s}.wav" for s in ("", "_float", "_no_limiter"))
    matchering.process(
        target=str(target),
        reference=str(reference),
        results=[
            matchering.pcm24(str(output)),
            matchering.Result(str(limited), "FLOAT"),
            matchering.Result(str(unlimited), "FLOAT", use_limiter=False, normalize=False),
        ],
    )
    config = matchering.Config()
    # matchering limits at its threshold, then scales by the factor that normalized the reference
    _, makeup = normalize_reference(sf.read(reference, always_2d=True)[0], config)
    reduction = linked_reduction_db(sf.read(limited)[0], sf.read(unlimited)[0], makeup, config.min_value)
    return output, *reduction


def measure(excerpt: str, method: str, output: Path, reference: Features, limiting, seconds: float) -> Row:
    """An output file judged against the reference's features."""
    audio = read_wav(output)
    mine = features(audio, SAMPLE_RATE)
    return Row(
        excerpt,
        method,
        mine.lufs - reference.lufs,
        mine.centroid_hz - reference.centroid_hz,
        mine.ms_ratio - reference.ms_ratio,
        float(reconstructed_peak(audio.double(), SAMPLE_RATE)),
        *limiting,
        seconds,
    )


def excerpt_rows(song: Song, starts: Sequence[int], args: argparse.Namespace, bar: tqdm) -> list[Row]:
    """Both methods on every excerpt of `song`, tracks and reference made as `human_mixes` makes them."""
    length = round(args.excerpt_s * SAMPLE_RATE)
    mixture = song.folder / "mixture.wav"
    n_samples = audio_info(mixture).n_frames
    groups = song_groups(song, starts, length)
    names = [group_name([path.stem for path in song.tracks], group) for group in groups]
    tqdm.write(f"{song.name}: {len(song.tracks)} tracks, measured as {len(groups)}: {', '.join(names)}")
    rows = []
    for index, start in enumerate(starts):
        label = f"{song.name}/{start / SAMPLE_RATE:.0f}s"
        bar.set_postfix_str(label)
        tracks = grouped_tracks(song, start, length, groups)
        scrambled = scramble(tracks, scramble_gains_db(len(groups), args.seed, song.name, index))
        ref_start, ref_stop = reference_span(starts, index, n_samples, length)
        reference = at_peak(read_wav(mixture, ref_start, ref_stop), SAMPLE_RATE)
        wanted = features(reference, SAMPLE_RATE)
        with tempfile.TemporaryDirectory(prefix="reference_mastering_") as tmp:
            folder = Path(tmp)
            ref_path = write_wav(folder / "reference.wav", reference, SAMPLE_RATE)
            stems = [write_wav(folder / f"stem{i:02d}.wav", s, SAMPLE_RATE) for i, s in enumerate(scrambled)]
            target = write_wav(folder / "scrambled_sum.wav", scrambled.sum(dim=0), SAMPLE_RATE)
            for method in METHODS:
                started = time.perf_counter()
                if method == "automix":
                    output, *limiting = run_automix(stems, ref_path, folder, args.seed)
                else:
                    output, *limiting = run_matchering(target, ref_path, folder)
                seconds = time.perf_counter() - started
                rows.append(measure(label, method, output, wanted, limiting, seconds))
                tqdm.write(format_row(rows[-1]))
        bar.update()
    return rows


def _db(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{value + 0.0:5.2f}"  # + 0.0: no "-0.00" for no reduction


def format_row(row: Row) -> str:
    return (
        f"{row.excerpt:34} {row.method:10} {row.lufs_error:+6.2f} {row.centroid_error_hz:+6.0f} "
        f"{row.ms_error:+7.3f} {row.peak_dbtp:+7.2f} {_db(row.limiting_max_db)} "
        f"{_db(row.limiting_mean_db)} {row.seconds:6.1f}"
    )


HEADER = (
    f"{'excerpt':34} {'method':10} {'ΔLU':>6} {'ΔHz':>6} {'ΔM/S':>7} {'dBTP':>7} {'GRmax':>5} "
    f"{'GRavg':>5} {'s':>6}"
)
ACCURACY = {"loudness |LU|": "lufs_error", "centroid |Hz|": "centroid_error_hz", "M/S |ratio|": "ms_error"}


def _median(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def summary(rows: Sequence[Row]) -> str:
    """Per method a row of medians (of |error| for the three errors; the outputs over the ceiling counted),
    and which method is ahead on each error's median."""
    lines, medians = [], {}
    for method in METHODS:
        mine = [row for row in rows if row.method == method]
        over = sum(row.peak_dbtp > CEILING_DBTP + 0.005 for row in mine)  # over as printed (2 decimals)
        columns = [
            _median(abs(getattr(r, f)) if f in ACCURACY.values() else getattr(r, f) for r in mine)
            for f in Row._fields[2:]
        ]
        medians[method] = Row(
            f"median |err| of {len(mine)}, {over} over {CEILING_DBTP:g} dBTP", method, *columns
        )
        lines.append(format_row(medians[method]))
    ahead = [f"{k} {min(METHODS, key=lambda m: getattr(medians[m], f))}" for k, f in ACCURACY.items()]
    return "\n".join(lines) + "\nahead on the median: " + "; ".join(ahead)


def plot(path: Path, rows: Sequence[Row]) -> None:
    """The three errors and the reconstructed peak per method: a dot per excerpt, a bar at the median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {**ACCURACY, "reconstructed peak (dBTP)": "peak_dbtp"}
    figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.5))
    for ax, (title, field) in zip(axes, panels.items(), strict=True):
        for x, method in enumerate(METHODS):
            values = [getattr(row, field) for row in rows if row.method == method]
            values = values if field == "peak_dbtp" else [abs(v) for v in values]
            ax.scatter(np.full(len(values), x) + np.linspace(-0.15, 0.15, len(values)), values, s=18)
            ax.hlines(statistics.median(values), x - 0.3, x + 0.3, color="black")
        if field == "peak_dbtp":
            ax.axhline(CEILING_DBTP, color="red", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(METHODS)), METHODS)
        ax.set_title(title, fontsize=10)
    figure.suptitle("to the reference (dots: excerpts, bars: medians)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="automix's reference mode against matchering")
    parser.add_argument("--root", type=Path, default=None, help="rendered songs (default: the data script's)")
    parser.add_argument("--excerpts", type=int, default=2, help="excerpts per song (default: 2)")
    parser.add_argument("--excerpt-s", type=float, default=EXCERPT_S, help="seconds (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="scramble gains and automix's optimiser")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="errors and peaks per method")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("matchering") is None:
        print("skipped: matchering is not installed (pip install matchering; GPLv3, benchmark only)")
        return 0
    songs = rendered_songs(args.root)
    if not songs:
        return 0
    excerpts = {
        song.name: pick_excerpts(
            read_wav(song.folder / "mixture.wav"), SAMPLE_RATE, args.excerpts, args.excerpt_s
        )
        for song in songs
    }
    started = time.perf_counter()
    rows = []
    print(HEADER)
    with tqdm(total=sum(map(len, excerpts.values())), unit="excerpt", file=sys.stderr) as bar:
        for song in songs:
            rows += excerpt_rows(song, excerpts[song.name], args, bar)
    if not rows:
        print("skipped: no song is as long as one excerpt")
        return 0
    print(f"{summary(rows)}\n({time.perf_counter() - started:.0f} s in all)")
    if args.plot:
        plot(args.plot, rows)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
