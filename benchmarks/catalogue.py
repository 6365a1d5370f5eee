"""Songs per minute for a catalogue: `mix.py --songs` (Lightning's predict loop, one process and
`--devices 2` CPU processes) against a shell-style loop of one `mix.py --stems` process per song, on the
same synthetic songs (`automix.synth`, 4 stems each), measured in one run. Each way writes its own output
folder; the times include every process's start-up, as a user's would.

Run: `python benchmarks/catalogue.py [--songs 6] [--seconds 20] [--mode optimize|predict] [--keep DIR]`.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from automix.synth import synth_song

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100
STEMS = ("drums", "bass", "chords", "lead")


def write_songs(folder: Path, n_songs: int, seconds: float) -> list[Path]:
    songs = []
    for seed in range(n_songs):
        song = folder / f"song{seed:03d}"
        song.mkdir(parents=True)
        for name, audio in synth_song(seconds, SAMPLE_RATE, seed=100 + seed, stems=STEMS).items():
            sf.write(song / f"{name}.wav", audio.T.numpy(), SAMPLE_RATE, subtype="PCM_24")
        songs.append(song)
    return songs


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode not in (0, 1):  # 1: a song missed a target, still mixed
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--mode", choices=("optimize", "predict"), default="optimize")
    parser.add_argument("--keep", type=Path, help="keep the songs and outputs here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="automix_catalogue_")) if args.keep is None else args.keep
    songs = write_songs(work / "songs", args.songs, args.seconds)
    mix_py = [sys.executable, str(ROOT / "mix.py"), "--mode", args.mode, "--quiet"]

    def loop() -> float:
        out = work / "loop"
        return sum(
            timed(
                [
                    *mix_py,
                    "--stems",
                    *map(str, sorted(song.glob("*.wav"))),
                    "--output",
                    str(out / f"{song.name}.wav"),
                ]
            )
            for song in songs
        )

    def catalogue(devices: int) -> float:
        out = work / f"catalogue_{devices}"
        return timed(
            [*mix_py, "--songs", *map(str, songs), "--output-dir", str(out), "--devices", str(devices)]
        )

    print(f"{args.songs} songs of {args.seconds:g} s, 4 stems, {args.mode} mode")
    seconds = {
        "loop over mix.py": loop(),
        "mix.py --songs": catalogue(1),
        "mix.py --songs --devices 2": catalogue(2),
    }
    baseline = seconds["loop over mix.py"]
    for name, taken in seconds.items():
        print(f"{name:28} {taken:7.1f} s  {60 * args.songs / taken:6.1f} songs/min  x{baseline / taken:.2f}")
    if args.keep is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
