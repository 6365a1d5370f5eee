"""Lightning data modules: batches `{"stems": [B, N, 2, T], "mask": [B, N], "targets": [B, 6]}`.

- `SyntheticDataModule` (data=synthetic): `automix.synth` songs made on the fly; nothing to download.
- `FolderDataModule` (data=folder): `root/<song>/<stem>.wav`, any stem names and counts.
- `MusdbDataModule` (data=musdb): MUSDB18-HQ (wav) or MUSDB18 (.stem.mp4) through the `musdb` package,
  with its train/valid split, or a seeded split of the songs when that leaves validation empty.
- `MultitrackDataModule` (data=multitrack): folders whose tracks sum to a person's mix; items add that mix
  (`reference_mix`, `reference_lufs`) and each track's loudness in it (`track_lufs`).
- `CombinedDataModule` (data=combined): several of these, each batch from one.

Every module streams random excerpts (partial reads), pads stem counts with a mask, augments the
training items and samples a target per item; the items are seeded (see `automix.training.datasets`).
"""

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from automix.chain import MAX_STEMS
from automix.errors import AutomixError
from automix.io import audio_info
from automix.styles import DEFAULT_STYLES, StyleTarget, styles_from_config
from automix.training.augment import Augmentation
from automix.training.datasets import (
    TRAIN_SPLIT,
    VAL_SPLIT,
    BatchesDataset,
    FileSongs,
    MixingDataset,
    MultitrackDataset,
    MultitrackSongs,
    Song,
    SongSource,
    StemMp4Songs,
    SyntheticSongs,
    collate_items,
)
from automix.training.lmms import held_out_lmms_songs
from automix.training.targets import DEFAULT_TARGET_MIX, TargetSampler

AUDIO_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff")
# The unmix of human-mix training (automix-toolkit's and Diff-MST's protocol): each track's gain uniform in
# +-gain_db dB and a gentle EQ tilt in +-eq_tilt_db dB. Equal to conf/data/multitrack.yaml (tested).
DEFAULT_SCRAMBLE = {"gain_db": 9.0, "eq_tilt_db": 3.0}
# The chance that a human-mix item's target is its own reference mix's measurements (conf/data).
DEFAULT_REFERENCE_TARGETS = 0.5


def _fields(cls) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def _known(where: str, options: Mapping | None, allowed) -> dict:
    """`options` as a dict, refusing names not in `allowed` (a typo would otherwise pass silently)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AutomixError(f"{where}: unknown {unknown}; the options are {', '.join(allowed)}")
    return options


def _worker_init(_worker_id: int) -> None:
    # Items are seeded explicitly; a worker only needs not to oversubscribe the cores with torch threads.
    torch.set_num_threads(1)


def split_songs(songs: Sequence, valid_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded split `(train, valid)`; valid gets `round(valid_fraction * n)` songs, at least 1 and at
    most n - 1. A single song serves both."""
    if len(songs) < 2:
        return list(songs), list(songs)
    order = torch.randperm(len(songs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = min(len(songs) - 1, max(1, round(valid_fraction * len(songs))))
    return [songs[i] for i in sorted(order[n_valid:])], [songs[i] for i in sorted(order[:n_valid])]


class MixDataModule(L.LightningDataModule):
    """What every data module shares; subclasses give the song sources (`song_sources`) and may give
    another kind of item (`dataset`).

    Args:
        sample_rate: Hz of the batches.
        excerpt_s: seconds per item.
        batch_size: items per batch (per process under DDP).
        num_workers: DataLoader worker processes.
        train_items, val_items: items per training epoch and in the validation set.
        seed: seeds every item (with the split and the index).
        max_stems: most stems of an item (more are subsampled).
        augmentation: `Augmentation` fields for the training items; None for the defaults.
        augment_val: augment the validation items too.
        targets: chances `{style, blend, random}` of each kind of target (`TargetSampler`).
        style_targets: `{name: {lufs, spectral_centroid_hz, stereo_ms_ratio, ...}}` (conf/style shape,
            with or without the `style_targets:` key); None for the built-in styles.
        pin_memory: DataLoader pin_memory (for GPU training).
    """

    dataset: type[MixingDataset] = MixingDataset

    def __init__(
        self,
        *,
        sample_rate: int = 44100,
        excerpt_s: float = 2.0,
        batch_size: int = 8,
        num_workers: int = 2,
        train_items: int = 4096,
        val_items: int = 64,
        seed: int = 0,
        max_stems: int = MAX_STEMS,
        augmentation: Mapping | None = None,
        augment_val: bool = False,
        targets: Mapping | None = None,
        style_targets: Mapping | None = None,
        pin_memory: bool = False,
    ):
        super().__init__()
        if not (1 <= max_stems <= MAX_STEMS):
            raise AutomixError(f"data.max_stems must be 1-{MAX_STEMS}, got {max_stems}")
        if not excerpt_s > 0 or batch_size < 1 or num_workers < 0:
            raise AutomixError("data: need excerpt_s > 0, batch_size >= 1 and num_workers >= 0")
        self.sample_rate, self.excerpt_s = int(sample_rate), float(excerpt_s)
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.train_items, self.val_items, self.seed, self.max_stems = train_items, val_items, seed, max_stems
        self.augmentation = Augmentation(**_known("data.augmentation", augmentation, _fields(Augmentation)))
        self.augment_val = augment_val
        self.styles: Mapping[str, StyleTarget] = (
            styles_from_config(style_targets, "style targets") if style_targets else DEFAULT_STYLES
        )
        chances = DEFAULT_TARGET_MIX | _known("data.targets", targets, DEFAULT_TARGET_MIX)
        self.target_sampler = TargetSampler(self.styles, **chances)
        self.train_set: MixingDataset | None = None
        self.val_set: MixingDataset | None = None

    def song_sources(self) -> tuple[SongSource, SongSource]:
        """`(train source, validation source)`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_songs, val_songs = self.song_sources()
        common = {"sample_rate": self.sample_rate, "seed": self.seed, "targets": self.target_sampler}
        common |= self.dataset_options()
        self.train_set = self.dataset(
            train_songs, self.train_items, split=TRAIN_SPLIT, augmentation=self.augmentation, **common
        )
        self.val_set = self.dataset(
            val_songs,
            self.val_items,
            split=VAL_SPLIT,
            augmentation=self.augmentation if self.augment_val else None,
            **common,
        )

    def dataset_options(self) -> dict:
        """Keyword arguments of `dataset` beyond those every data module passes."""
        return {}

    def _loader(self, dataset: MixingDataset, shuffle: bool) -> DataLoader:
        return make_loader(
            dataset,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            batch_size=self.batch_size,
            drop_last=shuffle and len(dataset) >= self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


def make_loader(
    dataset: Dataset,
    *,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    batch_size: int | None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of items (`batch_size` a count) or of whole batches (`batch_size=None`: the
    dataset collates, `BatchesDataset`)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_items if batch_size is not None else None,
        worker_init_fn=_worker_init,
        persistent_workers=num_workers > 0,
        # Workers start fresh, not forked: a fork after the main process ran numba's parallel
        # loudness meter (training steps before the first validation) crashed the validation worker.
        multiprocessing_context="spawn" if num_workers > 0 else None,
        pin_memory=pin_memory,
    )


class SyntheticDataModule(MixDataModule):
    """`automix.synth` songs made on the fly (data=synthetic); training and validation songs differ.

    Args:
        song_s: seconds of song made per item; the excerpt is taken from it.
        min_stems: fewest of the synth's four stems in a song.
        **kwargs: `MixDataModule` arguments.
    """

    def __init__(self, *, song_s: float = 8.0, min_stems: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.song_s, self.min_stems = song_s, min_stems

    def song_sources(self) -> tuple[SongSource, SongSource]:
        songs = SyntheticSongs(self.sample_rate, self.excerpt_s, self.song_s, self.min_stems)
        return songs, songs  # the split's stream gives each its own songs


class FileDataModule(MixDataModule):
    """Songs on disk, split into training and validation songs (a seeded split).

    Args:
        root: the dataset folder.
        valid_fraction: share of the songs kept for validation in a seeded split.
        **kwargs: `MixDataModule` arguments.
    """

    song_source: type[FileSongs] = FileSongs

    def __init__(self, *, root: str, valid_fraction: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.valid_fraction = valid_fraction
        if not self.root.is_dir():
            raise AutomixError(f"{self.root}: no such folder; set data.root to the dataset folder")

    def _sources(self, train: Sequence[Song], valid: Sequence[Song]) -> tuple[SongSource, SongSource]:
        return tuple(
            self.song_source(songs, self.sample_rate, self.excerpt_s, self.max_stems)
            for songs in (train, valid)
        )


class FolderDataModule(FileDataModule):
    """`root/<song>/<stem>.wav` (data=folder): any stem names, any counts, mono or stereo, any rate.

    Args:
        exclude: file names (without extension, any case) that are not stems, e.g. a mixture.
        **kwargs: `FileDataModule` arguments.
    """

    def __init__(self, *, exclude: Sequence[str] = ("mixture",), **kwargs):
        super().__init__(**kwargs)
        self.exclude = {name.lower() for name in exclude}

    def find_songs(self) -> list[Song]:
        songs = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = sorted(
                p
                for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and p.stem.lower() not in self.exclude
            )
            if files:
                songs.append(Song(folder.name, tuple(audio_info(p) for p in files)))
        if not songs:
            raise AutomixError(
                f"{self.root}: no songs found; expected {self.root}/<song>/<stem>.wav "
                "(for MUSDB18's train/ and test/ folders use data=musdb)"
            )
        return songs

    def song_sources(self) -> tuple[SongSource, SongSource]:
        return self._sources(*split_songs(self.find_songs(), self.valid_fraction, self.seed))


class MultitrackDataModule(FolderDataModule):
    """Songs whose tracks sum to a person's mix (data=multitrack): `root/<song>/<track>.wav` as
    `FolderDataModule` reads them, e.g. LMMS demo songs rendered by data/make_lmms_multitracks.py,
    MUSDB18-HQ's `train/` folder or a user's exported sessions.

        data = MultitrackDataModule(root="~/.cache/automix/lmms", excerpt_s=3.0)
        data.setup()
        item = data.train_set[0]  # stems (scrambled), target, reference_mix, reference_lufs, track_lufs

    An item (`MultitrackDataset`) is an excerpt of a song's tracks (the loudest `max_stems`,
    `MultitrackSongs`), each scrambled by a seeded gain and EQ tilt (the augmentation; validation items
    too: undoing it is the task), with the person's mix of the excerpt (the sum of the same tracks before
    the scramble) and each track's loudness in it.

    A song folder holding `lmms_render.json` is an LMMS render: the fixed split's validation songs
    (`validation_songs` in data/make_lmms_multitracks.py) and held-out projects are left out, with a
    logged note. They serve the human-mix benchmark only: never training, nor choosing a checkpoint.

    Args:
        scramble: `{gain_db, eq_tilt_db}`: each track's gain uniform in +-gain_db dB and EQ tilt uniform
            in +-eq_tilt_db dB (`automix.training.augment.Augmentation`); None for `DEFAULT_SCRAMBLE`.
        lmms_demos: LMMS's `projects/demos` folder, whose projects the fixed split is drawn from; None
            for lmms-common's (asked of dpkg). Read only when the root holds an LMMS render.
        reference_targets: the chance that an item's target is what the person's mix of it measures
            (`MultitrackDataset`) instead of a sampled style: the task reference mode sets.
        **kwargs: `FolderDataModule` arguments, less `augmentation` and `augment_val` (the scramble).
    """

    dataset = MultitrackDataset
    song_source = MultitrackSongs

    def __init__(
        self,
        *,
        scramble: Mapping | None = None,
        lmms_demos: str | None = None,
        reference_targets: float = DEFAULT_REFERENCE_TARGETS,
        **kwargs,
    ):
        scramble = DEFAULT_SCRAMBLE | _known("data.scramble", scramble, DEFAULT_SCRAMBLE)
        # Only gains and tilts: a dropped, panned or swapped track would no longer be the person's.
        augmentation = {"pan": 0.0, "swap_probability": 0.0, "drop_probability": 0.0} | scramble
        super().__init__(augmentation=augmentation, augment_val=True, **kwargs)
        self.lmms_demos = lmms_demos
        if not 0.0 <= reference_targets <= 1.0:
            raise AutomixError(f"data.reference_targets must be a chance in [0, 1], got {reference_targets}")
        self.reference_targets = reference_targets

    def dataset_options(self) -> dict:
        return {"reference_targets": self.reference_targets}

    def find_songs(self) -> list[Song]:
        songs = super().find_songs()
        held_out = held_out_lmms_songs(self.root, [song.name for song in songs], self.lmms_demos)
        if held_out:
            logging.getLogger(__name__).warning(
                "data.root %s: left out %s",
                self.root,
                "; ".join(f"{name} ({why})" for name, why in held_out.items()),
            )
        kept = [song for song in songs if song.name not in held_out]
        if not kept:
            raise AutomixError(
                f"{self.root}: every song is an LMMS validation song or held out; render the training "
                "songs: python data/make_lmms_multitracks.py --split train"
            )
        return kept


class CombinedDataModule(L.LightningDataModule):
    """Several data modules trained on together (data=combined), e.g. synthetic songs for the style
    targets and people's mixes for the balance: each batch comes from one source (`BatchesDataset`;
    their items differ in kind and length), a training epoch holds every source's `train_items` and
    validation every source's `val_items`, in one shuffled order. Each source keeps its own excerpt
    length, batch size, augmentation and split; the workers are this module's.

        data = CombinedDataModule(sources={
            "synthetic": MusdbDataModule(root="data/synthetic_train"),
            "people": MultitrackDataModule(root="~/.cache/automix/lmms", excerpt_s=3.0),
        })

    Args:
        sources: `{name: data module config}` (Hydra `_target_` mappings), or built `MixDataModule`s.
        num_workers: DataLoader worker processes (each makes whole batches).
        pin_memory: DataLoader pin_memory (for GPU training).
        style_targets: passed to every source built from a config (as train.py passes it to `data`).
    """

    def __init__(
        self,
        *,
        sources: Mapping[str, Mapping | MixDataModule],
        num_workers: int = 2,
        pin_memory: bool = False,
        style_targets: Mapping | None = None,
    ):
        super().__init__()
        from hydra.utils import instantiate

        if not sources:
            raise AutomixError("data.sources: name at least one data module")
        if num_workers < 0:
            raise AutomixError(f"data.num_workers must be >= 0, got {num_workers}")
        self.sources: dict[str, MixDataModule] = {}
        for name, source in sources.items():
            if isinstance(source, Mapping):
                if "_target_" not in source:
                    raise AutomixError(f"data.sources.{name}: needs a _target_ (a data module class)")
                source = instantiate(source, style_targets=style_targets, _convert_="all")
            if not isinstance(source, MixDataModule):
                raise AutomixError(f"data.sources.{name}: not a MixDataModule: {type(source).__name__}")
            self.sources[name] = source
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.train_set: BatchesDataset | None = None
        self.val_set: BatchesDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        for source in self.sources.values():
            source.setup(stage)
        sizes = [source.batch_size for source in self.sources.values()]
        self.train_set = BatchesDataset([s.train_set for s in self.sources.values()], sizes, drop_last=True)
        self.val_set = BatchesDataset([s.val_set for s in self.sources.values()], sizes, drop_last=False)

    def _loader(self, dataset: BatchesDataset, shuffle: bool) -> DataLoader:
        return make_loader(
            dataset,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            batch_size=None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


class MusdbDataModule(FileDataModule):
    """MUSDB18-HQ (`is_wav: true`, `root/train/<song>/{mixture,drums,bass,other,vocals}.wav`) or MUSDB18
    (`is_wav: false`, `root/train/<song>.stem.mp4`, needs ffmpeg) through the `musdb` package.

    Uses musdb's own validation tracks; a folder without them (any other MUSDB-layout folder) gets a
    seeded split of its training songs instead.

    Args:
        is_wav: wav folders (MUSDB18-HQ) rather than .stem.mp4 files.
        **kwargs: `FileDataModule` arguments.
    """

    def __init__(self, *, is_wav: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.is_wav = is_wav
        if not (self.root / "train").is_dir():
            raise AutomixError(
                f"{self.root}: no train/ folder; data.root must be the MUSDB18(-HQ) folder holding train/ "
                "(see data/README.md)"
            )

    def _database(self, split: str):
        try:
            import musdb
        except (ImportError, OSError, RuntimeError) as error:
            raise AutomixError(
                f"cannot import musdb ({error}); it needs ffmpeg and ffprobe on PATH: apt-get install ffmpeg"
            ) from error
        return musdb.DB(root=str(self.root), is_wav=self.is_wav, subsets="train", split=split)

    def song_sources(self) -> tuple[SongSource, SongSource]:
        train, valid = self._database("train").tracks, self._database("valid").tracks
        if not valid:
            train, valid = split_songs(train, self.valid_fraction, self.seed)
        if not train:
            raise AutomixError(f"{self.root}/train: no songs found; see data/README.md for the layout")
        if not self.is_wav:
            return tuple(
                StemMp4Songs([(t.path, float(t.duration)) for t in tracks], self.sample_rate, self.excerpt_s)
                for tracks in (train, valid)
            )
        return self._sources(*([self._song(track) for track in tracks] for tracks in (train, valid)))

    @staticmethod
    def _song(track) -> Song:
        sources = sorted(track.sources.values(), key=lambda source: source.stem_id)
        if not sources:
            raise AutomixError(f"{track.path}: no stem files next to it (drums, bass, other, vocals .wav)")
        return Song(track.name, tuple(audio_info(source.path) for source in sources))
