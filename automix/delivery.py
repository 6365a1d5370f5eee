"""A song's stems in, its files out: the master, the JSON report, the processed stems, the settings.

What `mix.py` does for one song (`--stems`) and for each song of a catalogue (`--songs`,
`automix.catalogue`): one `MixJob` says what every song shares, one `SongRequest` where a song's files go.
"""

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from automix.analysis import json_ready
from automix.chain import AutoMixChain
from automix.console_settings import ConsoleSettings, settings_from_analysis, write_settings
from automix.errors import AutomixError
from automix.io import BIT_DEPTHS, atomic_write_text, load_stems, save_audio, stem_names
from automix.styles import StyleTarget

# Analysis keys written to the JSON report in their own sections (parameters, balance, notes).
NOT_DUMPED = (
    "stem_params",
    "master_params",
    "stem_balance_db",
    "balance_start_db",
    "strip_compression_db",
    "notes",
)
STEMS_SUBTYPE = "PCM_24"
STEMS_OVER_FULL_SCALE_SUBTYPE = "FLOAT"  # a processed stem past 0 dBFS would clip in 24-bit PCM
MASTER_FILE = "master.json"


@dataclass(frozen=True)
class MixJob:
    """What every song of a run shares.

    Attributes:
        chain: the chain (on its device).
        style: the targets; None with `console` (the settings file's targets judge the mix).
        mode: "optimize" or "predict" (ignored with `console`).
        console: a settings file's console: rendered with no optimisation; None: mix.
        sample_rate: Hz to mix at; None: the highest of each song's stems'.
        subtype: the master's soundfile subtype (`automix.io.BIT_DEPTHS`).
        progress: show the optimiser's progress bar.
        protect: the input files, never overwritten.
        notes: notes for every song's report (where the targets came from).
    """

    chain: AutoMixChain
    style: StyleTarget | None
    mode: str = "optimize"
    console: ConsoleSettings | None = None
    sample_rate: int | None = None
    subtype: str = BIT_DEPTHS["24"]
    progress: bool = False
    protect: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SongRequest:
    """One song: its stem files (or stems already in memory) and where its outputs go (None: not written).

    Attributes:
        stems: the stem files, in order.
        output: the master (its suffix sets the format).
        analysis_output: the JSON report.
        plot: a picture of the mix (`automix.plots.plot_mix`).
        stems_output: a folder for each stem after its channel strip, and `master.json`.
        save_settings: the settings file (`automix.console_settings`).
        audio: `(stems [N, 2, T], sample rate, names)` instead of reading `stems` (synthetic stems).
    """

    stems: Sequence[Path]
    output: Path
    analysis_output: Path | None = None
    plot: Path | None = None
    stems_output: Path | None = None
    save_settings: Path | None = None
    audio: tuple | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MixResult:
    """A mixed song: the master `[2, T]` (CPU), its analysis, the JSON report and its rate."""

    mix: torch.Tensor
    analysis: dict
    report: dict
    sample_rate: int


def mix_song(job: MixJob, request: SongRequest, *, print_notes: bool = True) -> MixResult:
    """Mix one song and write its files (the master last but one, the report last: a report on disk means
    the song is done).

    Raises:
        AutomixError: the song's stems or settings cannot be used, or a file cannot be written.
    """
    started = time.perf_counter()
    chain, notes = job.chain, list(job.notes)
    if request.audio is None:
        stems, sample_rate, loaded = load_stems(request.stems, job.sample_rate)
        names, notes = stem_names(request.stems), notes + loaded
    else:
        stems, sample_rate, names = request.audio
    device = next(chain.parameters()).device
    chain.sample_rate = sample_rate  # the strips' second render (stems output) runs at the song's rate
    if print_notes:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    if job.console is not None:
        mix, analysis = chain.render_settings(stems.to(device), job.console, names=names, style=job.style)
    else:
        with torch.no_grad() if job.mode == "predict" else torch.enable_grad():
            mix, analysis = chain(stems.to(device), style=job.style, mode=job.mode, progress=job.progress)
    if request.stems_output is not None:
        write_stem_outputs(chain, stems.to(device), analysis, names, request.stems_output, job.protect)
    del stems  # freed before the outputs are written: a 4-minute song's 8 stems are 0.7 GB
    mix = mix.detach().cpu()
    save_audio(request.output, mix, sample_rate, subtype=job.subtype, protect=job.protect)
    if print_notes:
        for note in analysis["notes"]:
            print(f"note: {note}", file=sys.stderr)
    style = job.style if job.style is not None else job.console.targets
    report = mix_report(analysis, names, style, job, sample_rate, notes + analysis["notes"])
    report["seconds"] = time.perf_counter() - started
    if request.save_settings is not None:
        settings = settings_from_analysis(analysis, names, sample_rate, style)
        write_settings(request.save_settings, settings, protect=job.protect)
    if request.plot is not None:
        from automix.plots import plot_mix  # matplotlib: only where a plot is asked for

        plot_mix(request.plot, mix, sample_rate, analysis, names, protect=job.protect)
    if request.analysis_output is not None:
        text = json.dumps(report, indent=2, allow_nan=False) + "\n"
        atomic_write_text(request.analysis_output, text, protect=job.protect)
    return MixResult(mix, analysis, report, sample_rate)


def mix_report(
    analysis: dict, names: list[str], style: StyleTarget, job: MixJob, sample_rate: int, notes: list[str]
) -> dict:
    """The JSON report of a mixed song: measurements, targets, errors, pass flags, balance, notes and
    every parameter in units (null for an undefined measurement)."""
    report = {
        "style": style.name,
        "mode": "settings" if job.console is not None else job.mode,
        "sample_rate": sample_rate,
        "stems": names,
        "notes": notes,
    } | json_ready({k: v for k, v in analysis.items() if k not in NOT_DUMPED})
    report["balance"] = balance_report(analysis, names)
    report["parameters"] = {
        "stems": {
            name: {k: json_ready(v[i]) for k, v in analysis["stem_params"].items()}
            for i, name in enumerate(names)
        },
        "master": json_ready(analysis["master_params"]),
    }
    return report


def balance_report(analysis: dict, names: list[str]) -> dict:
    """Per stem: its loudness relative to the stems together (`automix.balance.stem_balance_db`), where
    the optimiser started it and how far it moved, and the loudness its strip's compressor takes
    (`automix.compression`), dB; null for a silent stem."""
    start, compression = analysis.get("balance_start_db"), analysis.get("strip_compression_db")
    report = {}
    for i, name in enumerate(names):
        relative = float(analysis["stem_balance_db"][i])
        entry = {"relative_db": relative}
        if start is not None:
            entry |= {"start_db": float(start[i]), "moved_db": relative - float(start[i])}
        if compression is not None:
            entry["compression_db"] = float(compression[i]) if math.isfinite(relative) else math.nan
        report[name] = {k: (None if math.isnan(v) else round(v, 3)) for k, v in entry.items()}
    return report


def write_stem_outputs(
    chain: AutoMixChain, stems: torch.Tensor, analysis: dict, names: list[str], folder: Path, protect=()
) -> list[Path]:
    """Each stem `[N, 2, T]` after its channel strip (at the settings in `analysis`, a song's) as
    `folder/<name>.wav`, the length of the mix, and `folder/master.json`: the master's settings and trim.
    The files add up to the master's input bus before the trim (24-bit PCM: within -140 dBFS each; 32-bit
    float where a stem peaks past full scale, which PCM would clip).

    Returns:
        The stem files, in order.
    """
    stem_params = {key: value[None] for key, value in analysis["stem_params"].items()}
    processed = chain.strip_outputs(stems[None], stem_params)[0].cpu()
    subtype = STEMS_SUBTYPE if processed.abs().max() < 1 else STEMS_OVER_FULL_SCALE_SUBTYPE
    paths = [folder / f"{name}.wav" for name in names]
    for path, audio in zip(paths, processed, strict=True):
        save_audio(path, audio, chain.sample_rate, subtype=subtype, protect=protect)
    settings = settings_from_analysis(analysis, names, chain.sample_rate)
    master = {key: settings[key] for key in ("schema_version", "automix_version", "sample_rate")}
    master |= {
        "ceiling_dbtp": settings["ceiling_dbtp"],
        "master_trim_db": settings["master_trim_db"],
        "master": settings["master"],
        "stem_files": [
            path.name if path.parent == folder else str(path.relative_to(folder)) for path in paths
        ],
        "stem_subtype": subtype,
    }
    write_settings(folder / MASTER_FILE, master, protect=protect)
    return paths


def output_subtype(bit_depth: str, file_format: str) -> str:
    """The soundfile subtype of `--bit-depth` in `--format`.

    Raises:
        AutomixError: 32-bit float in FLAC (FLAC stores integers only).
    """
    subtype = BIT_DEPTHS[bit_depth]
    if file_format == "flac" and subtype == "FLOAT":
        raise AutomixError("--bit-depth 32f: FLAC stores 16 or 24-bit integers; use --format wav for float")
    return subtype
