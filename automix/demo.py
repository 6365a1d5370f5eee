"""Write the demo's stems: a seeded synthetic song, one WAV per stem (`make demo` then mixes them).

python -m automix.demo demo/stems [--seconds 30] [--seed 0]
"""

import argparse
import sys
from pathlib import Path

from automix.cli import run_cli
from automix.io import save_audio
from automix.synth import synth_song

DEMO_SECONDS = 30.0
DEMO_SAMPLE_RATE = 44100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic multitrack song as stem WAV files.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seconds", type=float, default=DEMO_SECONDS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    song = synth_song(args.seconds, DEMO_SAMPLE_RATE, seed=args.seed)
    for name, stem in song.items():
        save_audio(args.folder / f"{name}.wav", stem, DEMO_SAMPLE_RATE)
    print(f"wrote {len(song)} stems ({', '.join(song)}) of {args.seconds:g} s to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
