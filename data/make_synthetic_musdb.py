"""Write a small synthetic dataset in the MUSDB18-HQ layout, to try the training pipeline without a download.

    python data/make_synthetic_musdb.py                      # data/synthetic_musdb: 8 train + 2 test songs
    python train.py experiment=smoke data=musdb data.root=data/synthetic_musdb

Layout (as MUSDB18-HQ): `<root>/{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav`,
16-bit stereo at 44.1 kHz. The stems are `automix.synth` songs (drums -> drums, bass -> bass,
chords -> other, lead -> vocals); the mixture is their sum, the whole song scaled so that it peaks at
-1 dBFS or below. None of the names is one of MUSDB18's validation tracks, so data=musdb uses its seeded
split of the training songs.
"""

import argparse
import sys
from pathlib import Path

import torch

from automix.cli import run_cli
from automix.errors import AutomixError
from automix.io import save_audio
from automix.synth import synth_stems
from automix.units import db_to_amp

DEFAULT_ROOT = Path(__file__).resolve().parent / "synthetic_musdb"
MUSDB_NAMES = {"drums": "drums", "bass": "bass", "chords": "other", "lead": "vocals"}
MIXTURE_PEAK_DBFS = -1.0
SUBTYPE = "PCM_16"  # as MUSDB18-HQ
TEST_SEED_OFFSET = 10_000  # test songs never share a seed with training songs


def write_dataset(
    root: Path,
    n_train: int = 8,
    n_test: int = 2,
    duration_s: float = 30.0,
    sample_rate: int = 44100,
    seed: int = 0,
) -> list[Path]:
    """Write the songs; returns their folders. Existing files with the same names are replaced."""
    if n_train < 1 or n_test < 0 or n_train + n_test > TEST_SEED_OFFSET:
        raise AutomixError(f"need 1-{TEST_SEED_OFFSET} training songs and >= 0 test songs")
    folders = []
    for subset, count, offset in (("train", n_train, 0), ("test", n_test, TEST_SEED_OFFSET)):
        for index in range(count):
            song_seed = seed + offset + index
            stems, names = synth_stems(duration_s, sample_rate, seed=song_seed, stems=tuple(MUSDB_NAMES))
            mixture = stems.sum(dim=0)
            scale = torch.clamp(db_to_amp(MIXTURE_PEAK_DBFS) / mixture.abs().max(), max=1.0)
            folder = root / subset / f"Synth Band {song_seed:05d} - Song {index:03d}"
            save_audio(folder / "mixture.wav", mixture * scale, sample_rate, subtype=SUBTYPE)
            for name, stem in zip(names, stems, strict=True):
                save_audio(folder / f"{MUSDB_NAMES[name]}.wav", stem * scale, sample_rate, subtype=SUBTYPE)
            folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT, help=f"default: {DEFAULT_ROOT}")
    parser.add_argument("--train-songs", type=int, default=8)
    parser.add_argument("--test-songs", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=30.0, help="seconds per song")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = write_dataset(
        args.root, args.train_songs, args.test_songs, args.duration_s, args.sample_rate, args.seed
    )
    print(f"wrote {len(folders)} songs under {args.root}; train with: data=musdb data.root={args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
