"""Training items: a stem excerpt of a song, augmented, with a sampled target, all drawn from one seed.

A dataset is a song source (a callable `(index, generator) -> stems [N, 2, T]`), a number of items, an
optional `Augmentation` and a `TargetSampler`. Item `index` of a split always draws the same excerpt,
augmentation and target (its generator is seeded from the data seed, the split and the index), so runs
repeat exactly whatever the worker count, and validation items never change.

`MultitrackDataset` items also carry a person's mix of the excerpt: songs whose tracks sum to the person's
mix (`MultitrackSongs`), the augmentation scrambling the tracks (the "unmix"), and the mix and each
track's loudness taken from the tracks before it.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from automix.errors import AutomixError
from automix.io import AudioFileInfo, read_excerpt, read_stem_mp4_excerpt
from automix.loudness import SILENCE_LUFS, integrated_loudness
from automix.metrics import rms_db
from automix.styles import style_from_reference
from automix.synth import STEM_NAMES, synth_stems
from automix.targets import style_vector
from automix.training.augment import Augmentation
from automix.training.targets import TargetSampler

TRAIN_SPLIT, VAL_SPLIT = 0, 1
# An excerpt whose mix is quieter than this (RMS) is redrawn, up to MAX_TRIES times: silence teaches
# nothing about loudness or tone.
SILENCE_DBFS = -50.0
MAX_TRIES = 5
REFERENCE_STREAM = 1_000_003  # seed offset of the draw between a sampled and a reference target
# Streams of a MUSDB18 .stem.mp4: 0 mixture, 1 drums, 2 bass, 3 other, 4 vocals.
MUSDB_STEM_IDS = (1, 2, 3, 4)

SongSource = Callable[[int, torch.Generator], torch.Tensor]


def item_generator(seed: int, split: int, index: int) -> torch.Generator:
    """The generator of one item: seeded from `(seed, split, index)` through numpy's SeedSequence, so
    neighbouring indices and the two splits give unrelated streams."""
    state = np.random.SeedSequence([seed, split, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) % 2**63)


def _uniform(generator: torch.Generator, high: float) -> float:
    return torch.rand((), generator=generator, dtype=torch.float64).item() * high


@dataclass(frozen=True)
class SyntheticSongs:
    """`automix.synth` songs made on the fly: a random subset of its stems, a random excerpt.

    Attributes:
        sample_rate: Hz.
        excerpt_s: seconds per item.
        song_s: seconds of song made, from which the excerpt is taken (>= excerpt_s).
        min_stems: fewest stems of a song (of the synth's four).
    """

    sample_rate: int
    excerpt_s: float
    song_s: float
    min_stems: int = 2

    def __call__(self, index: int, generator: torch.Generator) -> torch.Tensor:
        n_stems = int(torch.randint(self.min_stems, len(STEM_NAMES) + 1, (), generator=generator))
        chosen = sorted(torch.randperm(len(STEM_NAMES), generator=generator)[:n_stems].tolist())
        song_seed = int(torch.randint(2**62, (), generator=generator))
        song, _ = synth_stems(
            max(self.song_s, self.excerpt_s),
            self.sample_rate,
            seed=song_seed,
            stems=tuple(STEM_NAMES[i] for i in chosen),
        )
        n_excerpt = round(self.excerpt_s * self.sample_rate)
        start = int(torch.randint(song.shape[-1] - n_excerpt + 1, (), generator=generator))
        return song[..., start : start + n_excerpt]


@dataclass(frozen=True)
class Song:
    """A multitrack on disk: its name and the header of each stem file."""

    name: str
    stems: tuple[AudioFileInfo, ...]

    @property
    def duration_s(self) -> float:
        return max(stem.duration_s for stem in self.stems)


@dataclass(frozen=True)
class FileSongs:
    """Excerpts of songs on disk, read partially (`automix.io.read_excerpt`).

    Item `index` takes song `index % len(songs)`, so every epoch visits the songs evenly; the excerpt's
    start is random, redrawn (up to MAX_TRIES) while the excerpt's mix is below SILENCE_DBFS. A song with
    more than `max_stems` stems gives a random `max_stems` of them.
    """

    songs: Sequence[Song]
    sample_rate: int
    excerpt_s: float
    max_stems: int

    def __post_init__(self):
        if not self.songs:
            raise AutomixError("no songs to read; check data.root")

    def __call__(self, index: int, generator: torch.Generator) -> torch.Tensor:
        song = self.songs[index % len(self.songs)]
        stems = song.stems
        if len(stems) > self.max_stems:
            chosen = sorted(torch.randperm(len(stems), generator=generator)[: self.max_stems].tolist())
            stems = tuple(stems[i] for i in chosen)
        return self.read(stems, song.duration_s, generator)

    def read(
        self, stems: Sequence[AudioFileInfo], duration_s: float, generator: torch.Generator
    ) -> torch.Tensor:
        """An excerpt `[N, 2, T]` of `stems` at a random start, redrawn while its mix is near silence."""
        latest_start_s = max(0.0, duration_s - self.excerpt_s)
        for _ in range(MAX_TRIES):
            start_s = _uniform(generator, latest_start_s)
            audio = torch.stack([self.read_stem(stem, start_s) for stem in stems])
            if rms_db(audio.sum(dim=0)) > SILENCE_DBFS:
                break
        return audio

    def read_stem(self, stem: AudioFileInfo, start_s: float) -> torch.Tensor:
        return read_excerpt(stem, start_s, self.excerpt_s, self.sample_rate)


@dataclass(frozen=True)
class MultitrackSongs(FileSongs):
    """Excerpts of songs whose tracks sum to a person's mix (`FileSongs`' songs and reads).

    Every track of the excerpt is read; a song with more than `max_stems` tracks gives the loudest
    `max_stems` of the excerpt (BS.1770 integrated loudness), in track order, so the item's tracks are
    the bulk of the person's mix. A track with NaN or infinite samples in the excerpt reads as silence
    there: it is then a silent stem, as a part resting through the excerpt is.
    """

    def __call__(self, index: int, generator: torch.Generator) -> torch.Tensor:
        song = self.songs[index % len(self.songs)]
        return loudest_tracks(
            self.read(song.stems, song.duration_s, generator), self.sample_rate, self.max_stems
        )

    def read_stem(self, stem: AudioFileInfo, start_s: float) -> torch.Tensor:
        try:
            return super().read_stem(stem, start_s)
        except AutomixError:  # read_excerpt's refusal of non-finite samples
            return torch.zeros(2, round(self.excerpt_s * self.sample_rate))


def loudest_tracks(tracks: torch.Tensor, sample_rate: int, max_tracks: int) -> torch.Tensor:
    """The `max_tracks` loudest of `tracks` `[N, C, T]` (integrated loudness), in their order; all of them
    when there are no more. Ties go to the earlier track."""
    if tracks.shape[-3] <= max_tracks:
        return tracks
    order = torch.sort(integrated_loudness(tracks, sample_rate), descending=True, stable=True).indices
    return tracks[order[:max_tracks].sort().values]


@dataclass(frozen=True)
class StemMp4Songs:
    """Excerpts of MUSDB18 `.stem.mp4` files, decoded partially (`automix.io.read_stem_mp4_excerpt`).
    Streams 1-4 (drums, bass, other, vocals); stream 0, the mixture, is left out.

    Attributes:
        songs: `(path, duration_s)` per song.
    """

    songs: Sequence[tuple[str, float]]
    sample_rate: int
    excerpt_s: float

    def __call__(self, index: int, generator: torch.Generator) -> torch.Tensor:
        path, duration_s = self.songs[index % len(self.songs)]
        start_s = _uniform(generator, max(0.0, duration_s - self.excerpt_s))
        return read_stem_mp4_excerpt(path, start_s, self.excerpt_s, self.sample_rate, stem_ids=MUSDB_STEM_IDS)


class MixingDataset(Dataset):
    """Items `{"stems": [N, 2, T], "target": [6]}` (see the module docstring).

    Args:
        songs: the song source.
        n_items: the dataset's length (items per epoch).
        sample_rate: Hz of the stems (for the augmentation's filters).
        seed: the data seed.
        split: TRAIN_SPLIT or VAL_SPLIT (different streams from one seed).
        targets: draws each item's target.
        augmentation: applied to every item, or None.
    """

    def __init__(
        self,
        songs: SongSource,
        n_items: int,
        sample_rate: int,
        *,
        seed: int,
        split: int,
        targets: TargetSampler,
        augmentation: Augmentation | None = None,
    ):
        if n_items < 1:
            raise AutomixError(f"a dataset needs at least 1 item, got {n_items}; raise data.*_items")
        self.songs, self.n_items, self.sample_rate = songs, n_items, sample_rate
        self.seed, self.split = seed, split
        self.targets, self.augmentation = targets, augmentation

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = item_generator(self.seed, self.split, index)
        tracks = self.songs(index, generator)
        stems = (
            tracks if self.augmentation is None else self.augmentation(tracks, self.sample_rate, generator)
        )
        return {"stems": stems.float(), "target": self.targets(generator)} | self.references(tracks)

    def references(self, tracks: torch.Tensor) -> dict[str, torch.Tensor]:
        """What an item carries besides its stems and target, from the tracks before augmentation."""
        return {}


class MultitrackDataset(MixingDataset):
    """`MixingDataset` items of songs whose tracks sum to a person's mix (`MultitrackSongs`), with that mix.

    An item is `stems` `[N, 2, T]` (the tracks scrambled by the augmentation), `target` `[6]`,
    `reference_mix` `[2, T]` (the sum of the tracks before the scramble), `reference_lufs` `[]` (its
    loudness) and `track_lufs` `[N]` (each track's loudness before the scramble; `SILENCE_LUFS` for a
    silent one), loudness by BS.1770. The augmentation must keep every track, in order (no drops), so
    that stem i is track i of the mix. With chance `reference_targets` an item's target is what its
    reference mix measures (`automix.styles.style_from_reference`): mix the tracks like this mix; an
    excerpt whose mix is no reference (silent, or measuring outside the targets' ranges) keeps its sampled
    target.
    """

    def __init__(self, *args, reference_targets: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference_targets = reference_targets

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(index)
        # Its own stream: the chance leaves the excerpt, scramble and sampled target as they were.
        generator = item_generator(self.seed + REFERENCE_STREAM, self.split, index)
        if torch.rand((), generator=generator, dtype=torch.float64) < self.reference_targets:
            try:
                measured = style_from_reference(item["reference_mix"].double(), self.sample_rate)
            except AutomixError:  # no reference (a silent or odd excerpt): the sampled target stays
                return item
            item["target"] = style_vector(measured).to(item["target"].dtype)
        return item

    def references(self, tracks: torch.Tensor) -> dict[str, torch.Tensor]:
        reference_mix = tracks.double().sum(dim=-3)
        return {
            "reference_mix": reference_mix.float(),
            "reference_lufs": integrated_loudness(reference_mix, self.sample_rate).float(),
            "track_lufs": integrated_loudness(tracks, self.sample_rate).float(),
        }


def collate_items(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items, padding stem counts with silent stems: `stems [B, N, 2, T]`, `mask [B, N]` (1 for a
    real stem), `targets [B, 6]`; N is the batch's largest stem count. A person's mix, where the items
    carry one (`MultitrackDataset`), comes as `reference_mix [B, 2, T]`, `reference_lufs [B]` and
    `track_lufs [B, N]`, padded with `SILENCE_LUFS`."""
    n_stems = max(item["stems"].shape[0] for item in items)
    stems = torch.stack(
        [
            torch.nn.functional.pad(item["stems"], (0, 0, 0, 0, 0, n_stems - item["stems"].shape[0]))
            for item in items
        ]
    )
    mask = torch.stack([(torch.arange(n_stems) < item["stems"].shape[0]).float() for item in items])
    batch = {"stems": stems, "mask": mask, "targets": torch.stack([item["target"] for item in items])}
    if "reference_mix" in items[0]:
        for key in ("reference_mix", "reference_lufs"):
            batch[key] = torch.stack([item[key] for item in items])
        batch["track_lufs"] = torch.stack(
            [
                torch.nn.functional.pad(
                    item["track_lufs"], (0, n_stems - item["track_lufs"].shape[0]), value=SILENCE_LUFS
                )
                for item in items
            ]
        )
    return batch


class BatchesDataset(Dataset):
    """Whole batches of several datasets, each batch from one: item k is `collate_items` of
    `batch_sizes[d]` consecutive items of dataset d (items are seeded draws, so neighbours are as random
    as any). Batches of one kind carry the same keys (a person's mix or none) and excerpt length.

    Args:
        datasets: the item datasets.
        batch_sizes: items per batch of each.
        drop_last: leave out each dataset's last, short batch (as training does), unless it is the only one.
    """

    def __init__(self, datasets: Sequence[Dataset], batch_sizes: Sequence[int], drop_last: bool):
        if len(datasets) != len(batch_sizes) or not datasets:
            raise AutomixError("BatchesDataset: one batch size per dataset, and at least one dataset")
        self.batches: list[tuple[Dataset, range]] = []
        for dataset, size in zip(datasets, batch_sizes, strict=True):
            full = len(dataset) - len(dataset) % size if drop_last and len(dataset) >= size else len(dataset)
            self.batches += [(dataset, range(i, min(i + size, full))) for i in range(0, full, size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        dataset, items = self.batches[index]
        return collate_items([dataset[i] for i in items])
