"""Render LMMS demo projects into multitracks: one stereo WAV per track and the producer's mix.

    apt-get install lmms lmms-common
    python data/make_lmms_multitracks.py --split valid --timeout-s 180    # ~/.cache/automix/lmms
    python data/make_lmms_multitracks.py --split train --out DIR/train    # one root per split

Layout: `<out>/<song>/<NNN_track>.wav` (32-bit float stereo at 44.1 kHz, all of one song's files the same
length) and `<out>/<song>/mixture.wav`, the sum of the kept tracks: LMMS renders each track with the
producer's volume, pan and effects, and two renders of one project differ (random synth phases), so the
producer's mix is the sum of the track renders, not a separate render. A track that comes out NaN,
infinite, silent or with garbage samples (absurd peaks) is skipped with a note; `lmms_render.json`
records the source project, the kept and skipped tracks and the render time.

Sources: the projects directly in lmms-common's `projects/demos` folder. Every other project in LMMS's
`projects` folder (the demos' subfolders included) is held out for independent checks and refused.
`--split` picks the fixed split (`validation_songs`: the demos sorted by name, every 4th for validation).
A song is rendered in a staging folder, `<out>/.staging`, and moved into place when complete; a song
already in `<out>` is skipped, so an interrupted run resumes.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from automix.cli import run_cli
from automix.errors import AutomixError
from automix.io import atomic_write_text, audio_info, load_audio, save_audio, to_stereo
from automix.units import amp_to_db, db_to_amp

SAMPLE_RATE = 44100
SUBTYPE = "FLOAT"  # as LMMS renders them: tracks and their sum may peak above 0 dBFS
PROJECT_SUFFIXES = (".mmpz", ".mmp")
DEMOS_FOLDER = ("projects", "demos")  # lmms-common's folder of the projects that may be rendered
VALID_EVERY = 4  # every 4th demo, sorted by name, is a validation song
SPLITS = ("all", "train", "valid")
SILENT_PEAK_DBFS = -120.0  # a track whose peak is below this is silent
BROKEN_PEAK_DBFS = 24.0  # a track whose peak is above this holds garbage samples (LMMS writes some ~1e26)
MIXTURE = "mixture"
STAGING = ".staging"  # inside <out>: same file system, so the final move is one atomic rename
REPORT = "lmms_render.json"
LMMS_ATTEMPTS = 3  # renders of a project that LMMS may crash in before it is reported failed
TRACK_INDEX_DIGITS = 3  # LMMS's "8_name" -> "008_name", so that the files sort in track order
AUDIO_EXTENSIONS_IN_NAMES = (".wav", ".ogg", ".flac", ".mp3", ".ds", ".sf2", ".gig")  # sample names
UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

Render = Callable[[Path, Path, float], None]
"""`render(project, out_dir, timeout_s)`: writes one WAV per track into `out_dir`; raises AutomixError."""


def default_out() -> Path:
    """`$XDG_CACHE_HOME/automix/lmms` (default `~/.cache/automix/lmms`): outside the repository."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "automix" / "lmms"


# ---- sources: the demos folder, the held-out rule and the split


def parse_demos_folder(dpkg_listing: str) -> Path:
    """The demos folder among the lines of `dpkg -L lmms-common`.

    Raises:
        AutomixError: the listing has no `.../projects/demos` folder.
    """
    for line in dpkg_listing.splitlines():
        path = Path(line.strip())
        if path.parts[-2:] == DEMOS_FOLDER:
            return path
    raise AutomixError(
        "lmms-common lists no projects/demos folder; reinstall it: apt-get install lmms-common"
    )


def dpkg_listing() -> str:
    """`dpkg -L lmms-common`.

    Raises:
        AutomixError: dpkg is missing or lmms-common is not installed.
    """
    try:
        result = subprocess.run(["dpkg", "-L", "lmms-common"], capture_output=True, text=True, check=False)
    except OSError as error:
        raise AutomixError(
            f"cannot run dpkg ({error}); LMMS's demos come from Debian's lmms-common"
        ) from error
    if result.returncode != 0:
        raise AutomixError("lmms-common is not installed; install it: apt-get install lmms lmms-common")
    return result.stdout


def is_project(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in PROJECT_SUFFIXES


def discover_projects(demos: Path) -> list[Path]:
    """The project files directly in `demos` (not in its subfolders), sorted by name."""
    return sorted((path for path in demos.iterdir() if is_project(path)), key=lambda path: path.name)


def held_out_names(demos: Path) -> set[str]:
    """File names of the held-out projects: all under LMMS's projects folder but not directly in `demos`."""
    projects_root = demos.resolve().parent
    return {
        path.name
        for path in projects_root.rglob("*")
        if is_project(path) and path.resolve().parent != demos.resolve()
    }


def check_allowed(project: Path, demos: Path, held_out: set[str]) -> None:
    """Refuse a project that is held out: inside LMMS's projects folder but not directly in `demos`, or a
    copy of a held-out project (the same file name).

    Raises:
        AutomixError: the project is missing, not an LMMS project, or held out.
    """
    if not project.is_file():
        raise AutomixError(f"{project}: no such file; check the path")
    if not is_project(project):
        raise AutomixError(f"{project}: not an LMMS project file; give .mmpz or .mmp files")
    resolved, demos = project.resolve(), demos.resolve()
    inside_projects = resolved.is_relative_to(demos.parent)
    if (inside_projects and resolved.parent != demos) or project.name in held_out:
        raise AutomixError(
            f"{project}: held out for independent checks; use only the projects directly in {demos}"
        )


def song_name(project: Path) -> str:
    """The song's folder name: the project's file name without extension, made safe."""
    return safe_name(project.stem)


def validation_songs(songs: Iterable[str]) -> set[str]:
    """The fixed split's validation songs: the songs sorted by name, every 4th (the 4th, 8th, ...)."""
    ordered = sorted(set(songs))
    return set(ordered[VALID_EVERY - 1 :: VALID_EVERY])


def select_split(projects: Sequence[Path], split: str, demo_songs: Iterable[str]) -> list[Path]:
    """The projects of `split`, validation songs first.

    The split is the demos folder's (`validation_songs(demo_songs)`); a project that is not a demo belongs
    to neither split and is kept only by "all".
    """
    if split not in SPLITS:
        raise AutomixError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    demo_songs = set(demo_songs)
    valid = validation_songs(demo_songs)
    selected_valid = [p for p in projects if song_name(p) in valid]
    selected_train = [p for p in projects if song_name(p) in demo_songs - valid]
    rest = [p for p in projects if song_name(p) not in demo_songs]
    return {"valid": selected_valid, "train": selected_train, "all": selected_valid + selected_train + rest}[
        split
    ]


# ---- names


def safe_name(name: str) -> str:
    """Letters, digits, `_` and `-` only; runs of anything else become one `_`; never empty."""
    return UNSAFE.sub("_", name).strip("_") or "track"


def track_name(lmms_file_name: str) -> str:
    """A safe name from LMMS's track file name, e.g. "8_snare_acoustic01.ogg.wav" -> "008_snare_acoustic01".

    LMMS names a track's file `<index>_<track name>.wav`; a sample track's name is often its sample's
    file name, whose extension is dropped.
    """
    name = lmms_file_name.removesuffix(".wav")
    for extension in AUDIO_EXTENSIONS_IN_NAMES:
        name = name.removesuffix(extension)
    index, separator, rest = name.partition("_")
    if separator and index.isdigit():
        name = f"{int(index):0{TRACK_INDEX_DIGITS}d}_{rest}"
    return safe_name(name)


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`... : never one of `taken` nor "mixture" (in any case); adds it to
    `taken`."""
    candidate, number = name, 1
    while candidate.lower() in taken or candidate.lower() == MIXTURE:
        number += 1
        candidate = f"{name}_{number}"
    taken.add(candidate.lower())
    return candidate


# ---- rendered tracks -> the song folder


def read_track(path: Path, sample_rate: int) -> tuple[torch.Tensor | None, str]:
    """A rendered track as stereo `[2, T]`, or `(None, why it is skipped)`: unreadable, NaN or infinite
    samples (`load_audio` refuses them), garbage samples (peak above `BROKEN_PEAK_DBFS`) or silent (peak
    below `SILENT_PEAK_DBFS`)."""
    try:
        audio, _ = load_audio(path, sample_rate=sample_rate)
    except AutomixError as error:
        return None, str(error).removeprefix(f"{path}: ").split(";")[0]  # the reason, not the advice
    peak = audio.abs().max()
    if peak > db_to_amp(BROKEN_PEAK_DBFS):
        return None, f"garbage samples (peak {amp_to_db(peak):.0f} dBFS, above {BROKEN_PEAK_DBFS:+.0f} dBFS)"
    if peak < db_to_amp(SILENT_PEAK_DBFS):
        return None, f"silent (peak below {SILENT_PEAK_DBFS:.0f} dBFS)"
    return to_stereo(audio), ""


@dataclass
class SongTracks:
    """What `write_song` kept and skipped.

    Attributes:
        tracks: kept track file name (no extension) -> LMMS's file name.
        skipped: one note per skipped track.
        duration_s: the song's length.
    """

    tracks: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def _track_order(path: Path) -> tuple[int, str]:
    index = path.name.partition("_")[0]
    return (int(index) if index.isdigit() else sys.maxsize, path.name)


def write_song(raw_dir: Path, song_dir: Path, sample_rate: int = SAMPLE_RATE) -> SongTracks:
    """Check LMMS's rendered tracks in `raw_dir` and write the song: each kept track as stereo float WAV,
    padded with silence at the end to the longest track, and `mixture.wav`, their sum.

    One track at a time is in memory; each raw file is deleted once written.

    Raises:
        AutomixError: no track is kept, or a file cannot be written.
    """
    raw_files = sorted(raw_dir.glob("*.wav"), key=_track_order)
    n_samples = 0
    for path in raw_files:
        try:
            info = audio_info(path)
        except AutomixError:
            continue  # read_track says why below
        n_samples = max(n_samples, round(info.n_frames * sample_rate / info.sample_rate))
    mixture = torch.zeros(2, n_samples, dtype=torch.float64)
    result, taken = SongTracks(duration_s=n_samples / sample_rate), set()
    for path in raw_files:
        audio, reason = read_track(path, sample_rate)
        if audio is None:
            result.skipped.append(f"{path.name}: {reason}")
            continue
        audio = torch.nn.functional.pad(audio, (0, n_samples - audio.shape[-1]))[..., :n_samples]
        name = unique_name(track_name(path.name), taken)
        save_audio(song_dir / f"{name}.wav", audio, sample_rate, subtype=SUBTYPE)
        mixture += audio
        result.tracks[name] = path.name
        path.unlink()
    if not result.tracks:
        raise AutomixError(f"no audible track among {len(raw_files)} rendered ({'; '.join(result.skipped)})")
    save_audio(song_dir / f"{MIXTURE}.wav", mixture.float(), sample_rate, subtype=SUBTYPE)
    return result


# ---- rendering a project, placing the song


def render_with_lmms(project: Path, out_dir: Path, timeout_s: float) -> None:
    """`lmms rendertracks`: one 32-bit float WAV per audible track into `out_dir` (which must exist).

    LMMS's output goes to `out_dir/lmms.log`. On timeout the whole process group is killed. LMMS 1.2's
    renderer crashes at times (a segfault in a few percent of renders of the same project): a render
    ended by a signal is run again, `LMMS_ATTEMPTS` times in all, each within `timeout_s`.

    Raises:
        AutomixError: lmms fails or runs past `timeout_s`.
    """
    command = ["lmms", *(["--allowroot"] if os.geteuid() == 0 else [])]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        # LMMS runs its mixer thread at real-time priority: held to one CPU, it cannot starve the others.
        command = ["taskset", "-c", str(os.cpu_count() - 1), *command]
    command += ["rendertracks", str(project), "-o", f"{out_dir}/", "-f", "wav", "-a", "-s", str(SAMPLE_RATE)]
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}  # no display needed
    log = out_dir / "lmms.log"
    for _ in range(LMMS_ATTEMPTS):
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=environment, start_new_session=True
            )
            try:
                returncode = process.wait(timeout=timeout_s)
            except BaseException:  # a timeout or Ctrl-C: no LMMS left running
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                if sys.exc_info()[0] is subprocess.TimeoutExpired:
                    raise AutomixError(f"lmms ran past --timeout-s {timeout_s:g}") from None
                raise
        if returncode >= 0:  # ended by itself; a signal (a crash) is tried again
            break
    if returncode != 0:
        lines = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()
        raise AutomixError(f"lmms exited with status {returncode} ({lines[-1] if lines else 'no output'})")


@dataclass
class SongReport:
    """One project's outcome: `status` is "rendered", "present" (already in the output) or "failed"."""

    song: str
    project: str
    status: str
    render_s: float = 0.0
    note: str = ""
    tracks: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def make_song(
    project: Path,
    out: Path,
    render: Render,
    timeout_s: float,
    name: Callable[[Path], str] = song_name,
    report_name: str = REPORT,
) -> SongReport:
    """Render one project into `out/<song>` (`name(project)`), atomically: built in `out/.staging`, then
    renamed into place, with its report as `report_name`.

    A song folder already in `out` is left as it is (status "present"). On any failure the staging folder
    is removed and no song folder appears.

    Raises:
        AutomixError: the render or the checks fail, or the files cannot be written.
    """
    song = name(project)
    final = out / song
    if final.exists():
        return SongReport(song, str(project), "present")
    try:
        (out / STAGING).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{song}-", dir=out / STAGING))
    except OSError as error:
        raise AutomixError(f"{out}: cannot create the staging folder ({error}); check the path") from error
    try:
        raw_dir, song_dir = staging / "lmms", staging / song
        raw_dir.mkdir()
        started = time.monotonic()
        render(project, raw_dir, timeout_s)
        render_s = time.monotonic() - started
        tracks = write_song(raw_dir, song_dir)
        report = SongReport(song, str(project), "rendered", render_s, "", **asdict(tracks))
        atomic_write_text(song_dir / report_name, json.dumps(asdict(report), indent=2) + "\n")
        os.rename(song_dir, final)
    except OSError as error:
        raise AutomixError(f"{final}: cannot place the song ({error}); check the folder") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(out / STAGING)
    return report


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (another run is staging a song) or already gone


def make_songs(
    projects: Sequence[Path],
    out: Path,
    render: Render,
    *,
    timeout_s: float,
    budget_s: float | None = None,
    progress: bool = True,
    name: Callable[[Path], str] = song_name,
    report_name: str = REPORT,
) -> list[SongReport]:
    """Render the projects in order; a failed project is reported and the run goes on.

    Args:
        name: a project's song folder name.
        report_name: the report's file name in the song folder.
        budget_s: start no project after this many seconds in all (None: no limit); the projects not
            started are reported as "not started".
    """
    started, reports = time.monotonic(), []
    bar = tqdm(projects, desc="rendering", unit="song", disable=not progress)
    for project in bar:
        bar.set_postfix_str(name(project))
        if budget_s is not None and time.monotonic() - started > budget_s:
            reports.append(SongReport(name(project), str(project), "not started", note="--budget-s"))
            continue
        try:
            report = make_song(project, out, render, timeout_s, name, report_name)
        except AutomixError as error:
            report = SongReport(name(project), str(project), "failed", note=str(error))
        reports.append(report)
        tqdm.write(describe(report), file=sys.stderr)
    return reports


def describe(report: SongReport) -> str:
    """One line for a song's outcome."""
    if report.status == "rendered":
        return (
            f"{report.song}: {len(report.tracks)} tracks kept, {len(report.skipped)} skipped, "
            f"{report.duration_s:.0f} s of audio, rendered in {report.render_s:.0f} s"
            + "".join(f"\n  skipped {note}" for note in report.skipped)
        )
    return f"{report.song}: {report.status}" + (f" ({report.note})" if report.note else "")


def sources(
    projects: Sequence[Path] | None, split: str, listing: Callable[[], str] = dpkg_listing
) -> list[Path]:
    """The projects to render: `projects` (checked against the held-out rule) or the demos, in `split`."""
    demos = parse_demos_folder(listing())
    demo_projects = discover_projects(demos)
    if projects is None:
        projects = demo_projects
    else:
        held_out = held_out_names(demos)
        for project in projects:
            check_allowed(project, demos, held_out)
    return select_split(projects, split, (song_name(p) for p in demo_projects))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help=f"song folders go here (default: {default_out()})"
    )
    parser.add_argument(
        "--split", choices=SPLITS, default="all", help="the demos' fixed split (default: all)"
    )
    parser.add_argument(
        "--projects", type=Path, nargs="+", help="these project files instead of all the demos"
    )
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per project (default: 600)")
    parser.add_argument("--budget-s", type=float, help="start no project after this many seconds in all")
    args = parser.parse_args(argv)
    if shutil.which("lmms") is None:
        raise AutomixError("lmms is not installed; install it: apt-get install lmms lmms-common")
    out = (args.out or default_out()).expanduser()
    projects = sources(args.projects, args.split)
    if not projects:
        raise AutomixError(f"no LMMS projects in split {args.split!r}")
    return render_songs(projects, out, render_with_lmms, timeout_s=args.timeout_s, budget_s=args.budget_s)


def render_songs(projects: Sequence[Path], out: Path, render: Render, **options) -> int:
    """`make_songs` for a command line: a line of counts, exit status 1 where a song failed, 130 on Ctrl-C
    (the finished songs stay)."""
    try:
        reports = make_songs(projects, out, render, **options)
    except KeyboardInterrupt:
        print(f"interrupted; the finished songs stay in {out}, run again to resume", file=sys.stderr)
        return 130
    counts = Counter(report.status for report in reports)
    print(", ".join(f"{n} {status}" for status, n in counts.items()) + f"; songs under {out}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
