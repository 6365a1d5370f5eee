"""Catalogues: many songs through `mix.py --songs DIR ... --output-dir OUT`, on Lightning's predict loop.

Each folder is one song's stems. Every song gets `OUT/<song>.<format>` and `OUT/<song>.json` (the report,
written last: a song whose report exists is done, and a second run skips it), and one line in
`OUT/results.jsonl` (targets, measurements, pass flags, seconds, or the song's error: one bad song never
stops the run). Lightning spreads the songs over `--devices` processes (CPU) or GPUs and `--num-nodes`
machines with DDP (on SLURM, one task per device), each process mixing its own share.
"""

import dataclasses
import fcntl
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.utils.data import DataLoader, Dataset, Sampler

from automix.delivery import MixJob, SongRequest, mix_song
from automix.errors import AutomixError
from automix.io import atomic_write_text, check_output_path, stem_names

RESULTS_FILE = "results.jsonl"
IDLE = -1  # the index a process with no song of its own steps through
# What soundfile reads (libsndfile 1.1+): a song folder's stems are its files of these suffixes.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".w64", ".rf64")


class SongFolders(Dataset):
    """The songs still to mix: item i is `(song name, folder)`."""

    def __init__(self, songs: Sequence[tuple[str, Path]]):
        self.songs = list(songs)

    def __len__(self) -> int:
        return len(self.songs)

    def __getitem__(self, index: int) -> tuple[str, str]:
        if index == IDLE:
            return "", ""
        name, folder = self.songs[index]
        return name, str(folder)


class RankShare(Sampler[int]):
    """Songs `rank, rank + world, ...`: each process its own share, none twice (a DistributedSampler pads
    the list with repeats, and a repeated song would be mixed twice at once)."""

    def __init__(self, n_songs: int, rank: int, world_size: int):
        # A process with no song idles through one step: Lightning refuses an empty share beside others.
        self.indices = list(range(rank, n_songs, world_size)) or [IDLE]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SongBar(TQDMProgressBar):
    """One bar over the songs (of this process's share)."""

    @property
    def predict_description(self) -> str:
        return "Mixing songs"

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self.predict_progress_bar.set_description(self.predict_description)


class CatalogueMixer(L.LightningModule):
    """Mixes one song a predict step and writes its files and its results line."""

    def __init__(self, job: MixJob, output_dir: Path, file_format: str, songs: SongFolders):
        super().__init__()
        self.job, self.output_dir, self.file_format, self.songs = job, output_dir, file_format, songs
        self.chain = job.chain  # a submodule: Lightning moves it to this process's device

    def predict_dataloader(self) -> DataLoader:
        share = RankShare(len(self.songs), self.global_rank, self.trainer.world_size)
        return DataLoader(self.songs, batch_size=None, sampler=share, num_workers=0)

    def predict_step(self, batch, batch_idx: int) -> dict | None:
        name, folder = batch
        if not name:  # an idle step (`RankShare`)
            return None
        record = {"song": name, "folder": folder}
        try:
            paths = song_stems(Path(folder))
            # The chain on this process's device; the song's own stems never overwritten.
            job = dataclasses.replace(self.job, chain=self.chain, protect=(*self.job.protect, *paths))
            request = SongRequest(
                stems=paths,
                output=self.output_dir / f"{name}.{self.file_format}",
                analysis_output=self.output_dir / f"{name}.json",
            )
            record |= results_line(mix_song(job, request, print_notes=False).report)
        except AutomixError as error:
            record |= {"status": "error", "error": str(error)}
        except Exception as error:  # noqa: BLE001 - a bug on one song must not stop the catalogue
            record |= {"status": "error", "error": f"{type(error).__name__}: {error}"}
        append_line(self.output_dir / RESULTS_FILE, record)
        return record


def song_stems(folder: Path) -> list[Path]:
    """A song folder's stem files (`AUDIO_SUFFIXES`, not hidden), sorted by name.

    Raises:
        AutomixError: not a folder, or no audio in it.
    """
    if not folder.is_dir():
        raise AutomixError(f"{folder}: not a folder; --songs takes one folder of stems per song")
    paths = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".")
    )
    if not paths:
        raise AutomixError(
            f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}); put the song's stems in it"
        )
    return paths


def results_line(report: dict) -> dict:
    """What a results line keeps of a song's report."""
    keys = ("style", "mode", "lufs", "spectral_centroid", "stereo_ms_ratio", "true_peak_dbtp")
    keys += ("reconstructed_peak_dbtp", "targets", "passed", "notes", "seconds")
    return {"status": "ok", "passed_all": all(report["passed"].values())} | {
        key: report[key] for key in keys if key in report
    }


def append_line(path: Path, record: dict) -> None:
    """Append one JSON line, under an exclusive lock: the processes of a run share the file."""
    line = json.dumps(record, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def compact_results(path: Path) -> dict[str, dict]:
    """Rewrite the results file with one line per song, the newest (a song that failed and was mixed on a
    later run keeps its mix's line), sorted by song; returns them by song."""
    latest: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                latest[record["song"]] = record
    text = "".join(json.dumps(latest[name], allow_nan=False) + "\n" for name in sorted(latest))
    atomic_write_text(path, text)
    return latest


def run_catalogue(args, job: MixJob, folders: Sequence[Path], file_format: str, accelerator: str) -> int:
    """`mix.py --songs`: mix every song not yet done on Lightning's predict loop; rank 0 prints a summary.
    `args`: mix.py's (`output_dir`, `devices`, `num_nodes`, `quiet`); `accelerator`: "cpu" or "gpu".

    Returns:
        0 when every song of the catalogue is mixed, 1 when some failed (their errors are in the results)
        or, with `--validate`, missed a target.
    """
    output_dir = args.output_dir
    check_output_path(output_dir / RESULTS_FILE, protect=job.protect)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = stem_names(folders, suffixes=False)
    todo = [
        (name, folder) for name, folder in zip(names, folders, strict=True) if not song_done(output_dir, name)
    ]
    songs = SongFolders(todo)
    devices, num_nodes = args.devices or 1, args.num_nodes or 1
    if accelerator == "cpu" and devices > 1:
        share_cores(devices)
    for logger in ("lightning.pytorch", "lightning.fabric"):  # no banner lines around the bar
        logging.getLogger(logger).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # a deprecation inside Lightning 2.6
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if devices * num_nodes > 1 else "auto",
        use_distributed_sampler=False,
        callbacks=[SongBar()] if not args.quiet else [],
        enable_progress_bar=not args.quiet,
        enable_model_summary=False,
        logger=False,
    )
    mixer = CatalogueMixer(job, output_dir, file_format, songs)
    if len(songs):
        trainer.predict(mixer, return_predictions=False)
        trainer.strategy.barrier("catalogue")  # every process's lines are in before rank 0 compacts
    if not trainer.is_global_zero:
        return 0
    results = compact_results(output_dir / RESULTS_FILE)
    failed = [name for name in names if results.get(name, {}).get("status") != "ok"]
    missed = [name for name in names if name not in failed and not results[name]["passed_all"]]
    if not args.quiet:
        print(
            f"{len(names) - len(failed)} of {len(names)} songs mixed ({len(names) - len(todo)} done before), "
            f"{len(missed)} missing a target; {len(failed)} failed; results in {output_dir / RESULTS_FILE}"
        )
    return 1 if failed or (args.validate and missed) else 0


def share_cores(processes: int) -> None:
    """Give each of a node's CPU processes its share of the cores: torch and numba each start a thread
    a core in every process, and N processes on N cores' threads run slower than one process."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    torch.set_num_threads(threads)
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def song_done(output_dir: Path, name: str) -> bool:
    """A song is done when its report exists (written after its audio)."""
    return (output_dir / f"{name}.json").is_file()
