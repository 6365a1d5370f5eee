"""LMMS renders in a training folder: which songs training must leave out.

data/make_lmms_multitracks.py renders LMMS's demo songs track by track and fixes their split
(`validation_songs`: the demos sorted by name, every 4th for validation) and the held-out rule (projects
outside the demos folder proper). Its validation songs serve the human-mix benchmark
(benchmarks/human_mixes.py) and its held-out projects independent checks: neither may be trained on, nor
choose a checkpoint. The rule is the script's own, loaded from the repository, not a copy of it.
"""

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import automix
from automix.errors import AutomixError

LMMS_SCRIPT = Path("data") / "make_lmms_multitracks.py"
# The report the script writes into every song folder it renders (its REPORT; a test compares them).
LMMS_REPORT = "lmms_render.json"


def lmms_script():
    """data/make_lmms_multitracks.py as a module (data/ is not a package).

    Raises:
        AutomixError: the script is not there (automix installed without its repository).
    """
    path = Path(automix.__file__).resolve().parents[1] / LMMS_SCRIPT
    if not path.is_file():
        raise AutomixError(
            f"{path}: no such script; LMMS renders are trained on from a checkout of the automix repository"
        )
    spec = importlib.util.spec_from_file_location("make_lmms_multitracks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_project(report: Path) -> Path | None:
    """The project file an LMMS render report names; None where there is no report.

    Raises:
        AutomixError: the report is not the script's JSON.
    """
    if not report.is_file():
        return None
    try:
        return Path(json.loads(report.read_text())["project"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AutomixError(
            f"{report}: not a readable LMMS render report ({error}); render the song again"
        ) from error


def held_out_lmms_songs(root: Path, names: Sequence[str], demos: str | None = None) -> dict[str, str]:
    """`{song: why}` for the song folders `root/<name>` that are LMMS renders (they hold `LMMS_REPORT`) of
    a validation song of the fixed split or of a held-out project.

    Args:
        root: the dataset folder.
        names: its song folders' names.
        demos: LMMS's `projects/demos` folder, whose projects the split is drawn from; None for
            lmms-common's (asked of dpkg). Looked at only when `root` holds an LMMS render.

    Raises:
        AutomixError: the demos folder cannot be found or holds no project, or a report cannot be read.
    """
    projects = {name: render_project(root / name / LMMS_REPORT) for name in names}
    projects = {name: project for name, project in projects.items() if project is not None}
    if not projects:
        return {}
    lmms = lmms_script()
    if demos is None:
        try:
            folder = lmms.parse_demos_folder(lmms.dpkg_listing())
        except AutomixError as error:
            raise AutomixError(
                f"{root} holds LMMS renders, whose validation songs training must leave out, but LMMS's "
                f"demos are not found ({error}); or set data.lmms_demos to LMMS's projects/demos folder"
            ) from None
    else:
        folder = Path(demos).expanduser()
    demo_songs = [lmms.song_name(path) for path in lmms.discover_projects(folder)] if folder.is_dir() else []
    if not demo_songs:
        raise AutomixError(
            f"{folder}: no LMMS projects; data.lmms_demos must be LMMS's projects/demos folder"
        )
    validation, held_out = lmms.validation_songs(demo_songs), lmms.held_out_names(folder)
    why = {}
    for name, project in projects.items():
        if {name, lmms.song_name(project)} & validation:
            why[name] = "an LMMS validation song"
        elif project.name in held_out:
            why[name] = "a held-out LMMS project"
    return why
