"""How far automix lands from a producer's mix (project issue 18, part 1): LMMS demo songs rendered
track by track (`data/make_lmms_multitracks.py`), their sum being the producer's mix.

Only the validation songs of the fixed split (`validation_songs` in the data script) are reported;
`--split train` runs the same on the training songs, for developing a method without looking at them. Each
song gives `--excerpts` non-overlapping excerpts, the loudest windows (BS.1770 integrated loudness) of the
producer's mix on a 5-s grid. Tracks the balance estimate cannot measure apart over the song's excerpts
(the pieces of a drum kit hit together, a part doubled left and right, a faint one:
`automix.balance.measurable_groups`, at most 16, automix's stem limit) are summed into one track first, as
a producer bounces stems; the producer's own mix then reads the estimate's floor ("producer"), and the
same mix through automix's master EQ, its shelves tilted as the refinement tilts them to each style's
centroid ("producer_<style>"), what a style's tone alone costs a mix at the producer's levels, and
automix's style mode handed the producer's tracks as they are and keeping their balance
(`balance_start: stems`, "kept_<style>"), what reaching a style costs a balance a user hands in. Each track
is scrambled by a seeded gain uniform in ±9 dB (the "unmix" protocol of automix-toolkit and Diff-MST), and
the scrambled tracks are mixed by: the plain sum (untouched), the tracks at equal loudness, automix's
style modes' start alone ("start": the strips of the default mode's first step, summed before the
master, `SongOptimizer.start_render`; what the style modes begin from), automix's style mode for each
built-in style (optimize mode, as `mix.py` without --checkpoint), its reference mode
(targets from the producer's mix of the next excerpt, peak at −1 dBTP, as `mix.py --reference`) and its
predict mode (the shipped checkpoint; "predict" to the reference targets, "predict_<style>" to each
style, as `mix.py --mode predict --style`). Each mix is judged against the producer's tracks
and mix: balance error and lost tracks (`automix.balance.balance_error_db`), MR-STFT distance
(`mr_stft_distance`), and for automix's modes the errors to its targets and the promises it breaks (the
default mode's ±0.5 LU / ±100 Hz / ±0.05, `OptimizeSettings.promise`), each either said in the mix's
notes or not: issue 18 asks for the targets met or the miss reported.

`--reference-from other` takes each song's reference from the next song's first excerpt instead (other
music, as a user's reference usually is): how much of reference mode's balance comes from a reference of
the same song. `--reference-from every` mixes each excerpt to each other excerpt of its song in turn (k
excerpts, k − 1 references each): a song's stretches differ in arrangement, and a method that follows
the next excerpt closely can lose with the others.

`--split other` runs on every song under `--root` that is not an LMMS render (by default the tracker
modules of `data/make_tracker_multitracks.py`): more people's mixes to develop on, outside the split.

Run: `python benchmarks/human_mixes.py [--root DIR] [--split valid|train|other] [--excerpts 2] [--seed 0]
[--reference-from same|other|every] [--plot FILE.png]`.
"""

import argparse
import dataclasses
import importlib.util
import math
import statistics
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from automix.balance import balance_error_db, measurable_groups, mr_stft_distance
from automix.controllers import TiltController
from automix.dsp.eq import four_band_eq
from automix.errors import AutomixError
from automix.io import audio_info, read_excerpt
from automix.metrics import integrated_loudness, reconstructed_peak, spectral_centroid, true_peak
from automix.params import ParameterSpace
from automix.renders import MEASURE_UNITS, MEASURES
from automix.settings import Tolerances
from automix.units import db_to_amp

ROOT = Path(__file__).resolve().parents[1]
DATA_SCRIPT = ROOT / "data" / "make_lmms_multitracks.py"
CHECKPOINT = ROOT / "checkpoints" / "default.ckpt"
SAMPLE_RATE = 44100
EXCERPT_S = 10.0
HOP_S = 5.0  # the grid the excerpts' starts lie on
SCRAMBLE_DB = 9.0  # each track's level scrambled uniformly in ±this (automix-toolkit / Diff-MST "unmix")
TILT_BISECTIONS = 24  # steps of the tilt's bisection (`tilted_to_centroid`): 24 dB / 2^24, far under 0.01 dB
REFERENCE_PEAK_DBTP = -1.0  # the reference excerpt scaled to this true peak, as a mastered file would be
SILENCE_LUFS = -70.0  # BS.1770 absolute gate: a track at or below it is silent
STYLES = ("rock_punk", "rnb_ballad", "country_pop")
PREDICT_STYLES = tuple(f"predict_{style}" for style in STYLES)  # predict mode to each style, no reference
TILTED = tuple(f"producer_{style}" for style in STYLES)  # the producer's mix, its tone tilted to each style
KEPT = tuple(f"kept_{style}" for style in STYLES)  # each style mode keeping the producer's own balance
METHODS = (
    "producer", *TILTED, "untouched", "equal_loudness", "start", *STYLES, *KEPT, "reference", "predict",
    *PREDICT_STYLES,
)  # fmt: skip
AUTOMIX_METHODS = ("start", *STYLES, *KEPT, "reference", "predict", *PREDICT_STYLES)
RENDER_HINT = "python data/make_lmms_multitracks.py --split {split}"


def lmms_data():
    """The data script `data/make_lmms_multitracks.py` as a module (data/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_lmms_multitracks", DATA_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def demo_songs() -> list[str]:
    """The names of all LMMS demo songs (the fixed split is drawn from them).

    Raises:
        AutomixError: lmms-common is not installed.
    """
    data = lmms_data()
    demos = data.parse_demos_folder(data.dpkg_listing())
    return [data.song_name(project) for project in data.discover_projects(demos)]


class Song(NamedTuple):
    name: str
    folder: Path
    tracks: list[Path]  # the track files in track order (mixture.wav left out)


def find_songs(root: Path, names: Iterable[str]) -> tuple[list[Song], list[str]]:
    """The songs `names` rendered under `root` and the names of those not rendered (yet)."""
    found, missing = [], []
    for name in sorted(names):
        folder = root / name
        mixture = folder / "mixture.wav"
        tracks = sorted(path for path in folder.glob("*.wav") if path != mixture)
        if mixture.is_file() and tracks:
            found.append(Song(name, folder, tracks))
        else:
            missing.append(name)
    return found, missing


def read_wav(path: Path, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Samples [start, stop) of a WAV file as a float32 `[2, T]` tensor (mono doubled), through
    `automix.io.read_excerpt`."""
    info = audio_info(path)
    stop = info.n_frames if stop is None else stop
    return read_excerpt(info, start / info.sample_rate, (stop - start) / info.sample_rate, info.sample_rate)


def window_loudness(mix: torch.Tensor, sample_rate: int, excerpt_s: float, hop_s: float) -> torch.Tensor:
    """Integrated loudness (LUFS) of each `excerpt_s` window of `mix [2, T]` starting on the `hop_s` grid
    and lying wholly inside it: `[n_windows]`, window k starting at k·hop_s."""
    length, hop = round(excerpt_s * sample_rate), round(hop_s * sample_rate)
    if mix.shape[-1] < length:
        return torch.empty(0)
    windows = mix.unfold(-1, length, hop).transpose(0, 1)  # [n_windows, 2, length]
    return torch.stack([integrated_loudness(window, sample_rate) for window in windows])


def pick_excerpts(
    mix: torch.Tensor, sample_rate: int, k: int, excerpt_s: float = EXCERPT_S, hop_s: float = HOP_S
) -> list[int]:
    """Start samples of the `k` loudest `excerpt_s` windows of `mix [2, T]` on the `hop_s` grid that do not
    overlap: the loudest first, then the loudest that overlaps none chosen, and so on (ties: the earlier).
    Fewer if the song holds fewer; sorted by time."""
    loudness = window_loudness(mix, sample_rate, excerpt_s, hop_s).tolist()
    length, hop = round(excerpt_s * sample_rate), round(hop_s * sample_rate)
    chosen: list[int] = []
    for index in sorted(range(len(loudness)), key=lambda i: (-loudness[i], i)):
        start = index * hop
        if len(chosen) < k and all(abs(start - other) >= length for other in chosen):
            chosen.append(start)
    return sorted(chosen)


def reference_span(starts: Sequence[int], index: int, n_samples: int, length: int) -> tuple[int, int]:
    """The samples [start, stop) of the producer's mix that excerpt `index` takes its reference targets
    from: the next excerpt (the first after the last); with one excerpt, the half of the song its middle
    is not in."""
    if len(starts) > 1:
        start = starts[(index + 1) % len(starts)]
        return start, start + length
    half = n_samples // 2
    return (half, n_samples) if starts[index] + length // 2 < half else (0, half)


def same_song_references(
    starts: Sequence[int], index: int, n_samples: int, length: int, every: bool
) -> list[tuple[int, int]]:
    """The stretches [start, stop) of the producer's mix that excerpt `index` is mixed to in turn: the next
    excerpt (`reference_span`), or with `every` each other excerpt (the next one first)."""
    if not every or len(starts) < 2:
        return [reference_span(starts, index, n_samples, length)]
    order = [starts[(index + step) % len(starts)] for step in range(1, len(starts))]
    return [(start, start + length) for start in order]


def other_song_references(songs: Sequence[Song], excerpts: dict) -> dict:
    """For `--reference-from other`: each song's reference, `(the producer's mix file, start sample)` of
    the first excerpt of the next song with excerpts (in the run's order, the last one's the first's)."""
    kept = [song for song in songs if excerpts[song.name]]
    return {
        song.name: (other.folder / "mixture.wav", excerpts[other.name][0])
        for song, other in zip(kept, kept[1:] + kept[:1], strict=True)
    }


def scramble_gains_db(n_tracks: int, seed: int, song: str, excerpt: int) -> torch.Tensor:
    """`[n_tracks]` gains uniform in ±`SCRAMBLE_DB` dB, fixed by the seed, the song's name and the excerpt."""
    rng = np.random.default_rng([seed, zlib.crc32(song.encode()), excerpt])
    return torch.from_numpy(rng.uniform(-SCRAMBLE_DB, SCRAMBLE_DB, n_tracks))


def scramble(tracks: torch.Tensor, gains_db: torch.Tensor) -> torch.Tensor:
    """`tracks [N, C, T]`, each scaled by its gain in dB."""
    return tracks * db_to_amp(gains_db).to(tracks.dtype)[:, None, None]


def scramble_spread_db(tracks: torch.Tensor, gains_db: torch.Tensor) -> float:
    """The balance error the untouched (scrambled) mix has by construction: the RMS of the scramble gains
    about their mean, both weighted by each track's power share in the producer's mix (`tracks [N, C,
    T]`), as `balance_error_db` defines it. What the estimate of the untouched mix should read."""
    power = tracks.double().square().sum(dim=(-2, -1))
    weights = power / power.sum()
    mean_db = (weights * gains_db).sum()
    return float((weights * (gains_db - mean_db).square()).sum().sqrt())


def equal_loudness_gains(tracks: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """`[N]` amplitude gains that bring each of `tracks [N, C, T]` to the same integrated loudness (the
    mean of the audible tracks'); 0 for a silent track (at or below −70 LUFS), left out of the mix."""
    loudness = integrated_loudness(tracks.double(), sample_rate)
    audible = loudness > SILENCE_LUFS
    if not audible.any():
        raise AutomixError("every track is silent")
    return torch.where(audible, db_to_amp(loudness[audible].mean() - loudness), 0.0)


def equal_loudness(tracks: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """The mix `[C, T]` of `tracks [N, C, T]` at equal loudness (`equal_loudness_gains`)."""
    gains = equal_loudness_gains(tracks, sample_rate).to(tracks.dtype)
    return (tracks * gains[:, None, None]).sum(dim=0)


def tilted_to_centroid(mix: torch.Tensor, centroid_hz: float, sample_rate: int) -> torch.Tensor:
    """`mix [C, T]` through automix's master EQ, its shelves tilted as the refinement tilts them
    (`automix.controllers.TiltController`) until the centroid is `centroid_hz` (bisection: the centroid
    rises with the tilt), or to the tilt's end where that cannot reach it. The producer's levels with a
    style's tone: what the tone alone costs the balance as the estimate reads it."""
    space = ParameterSpace()
    master = space.neutral(1, torch.float64)[1]
    mix = mix.double()
    tilt = TiltController(master["eq_gain_db"], space.master["eq_gain_db"], mix.new_zeros(1))

    def tilted(tilt_db: float) -> torch.Tensor:
        tilt.tilt_db = mix.new_tensor([tilt_db])
        gain_db = tilt.eq_gain_db()[0]
        return four_band_eq(mix, sample_rate, gain_db=gain_db, freq_hz=master["eq_freq_hz"], q=master["eq_q"])

    low, high = -float(tilt.span_db), float(tilt.span_db)
    for _ in range(TILT_BISECTIONS):
        middle = (low + high) / 2
        if float(spectral_centroid(tilted(middle), sample_rate)) < centroid_hz:
            low = middle
        else:
            high = middle
    return tilted((low + high) / 2)


def at_peak(audio: torch.Tensor, sample_rate: int, peak_dbtp: float = REFERENCE_PEAK_DBTP) -> torch.Tensor:
    """`audio [C, T]` scaled so that its true peak (BS.1770-4, dBTP) is `peak_dbtp`."""
    return audio * db_to_amp(peak_dbtp - true_peak(audio.double(), sample_rate)).to(audio.dtype)


class Judgement(NamedTuple):
    """A mix against the producer's: balance error, worst track, lost tracks, MR-STFT distance and, for
    automix's modes, its errors to its own targets (LU, Hz, M/S ratio) and the share of its settings
    pinned at an end of their range (`ParameterSpace.pinned_share`) and the peak of its band-limited
    reconstruction (`automix.metrics.reconstructed_peak`, dBTP); NaN for the other methods. `missed`:
    the targets (loudness, centroid, M/S ratio) an automix mix misses by more than its promise, and
    `unnoted` those of them its analysis's notes do not mention."""

    error_db: float
    worst_db: float
    lost: list[str]
    moved: tuple[str, float]  # the track moved most (name, dB relative to the weighted mean)
    mr_stft: float
    lufs_error: float = math.nan
    centroid_error_hz: float = math.nan
    ms_error: float = math.nan
    pinned: float = math.nan
    peak_dbtp: float = math.nan
    missed: tuple[str, ...] = ()
    unnoted: tuple[str, ...] = ()


def broken_promises(analysis: dict, promise: Tolerances) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`(missed, unnoted)`: the targets an automix `analysis` misses by more than `promise` (an
    undefined measurement misses), and of them those no line of its notes begins with (the optimiser's
    notes name the target first: "loudness -12.3 LUFS for a target of ...")."""
    missed = tuple(
        name
        for measure, (name, _, _), tolerance in zip(MEASURES, MEASURE_UNITS, promise, strict=True)
        if not abs(float(analysis["errors"][measure])) <= tolerance
    )
    notes = analysis.get("notes", [])
    return missed, tuple(name for name in missed if not any(note.startswith(name) for note in notes))


def judge(
    tracks: torch.Tensor,
    producer_mix: torch.Tensor,
    mix: torch.Tensor,
    sample_rate: int,
    names: Sequence[str],
    analysis: dict | None = None,
    promise: Tolerances | None = None,
) -> Judgement:
    """`mix [C, T]` judged against the producer's `tracks [N, C, T]` and their sum `producer_mix [C, T]`;
    `analysis`: automix's, whose errors to its targets are reported, and the promises it breaks where a
    `promise` is given; or `{"errors": {...}}` alone, errors without settings or a master."""
    report = balance_error_db(tracks, mix, sample_rate)
    lost = [name for name, is_lost in zip(names, report.lost.tolist(), strict=True) if is_lost]
    relative = torch.nan_to_num(report.relative_db, nan=0.0)
    most = int(relative.abs().argmax())
    try:
        distance = float(mr_stft_distance(mix.double(), producer_mix.double(), sample_rate))
    except AutomixError:  # a silent mix
        distance = math.nan
    errors = {} if analysis is None else {k: float(v) for k, v in analysis["errors"].items()}
    mastered = analysis if analysis is not None and "pinned_share" in analysis else None  # automix's
    missed, unnoted = ((), ()) if analysis is None or promise is None else broken_promises(analysis, promise)
    return Judgement(
        report.error_db,
        report.worst_db,
        lost,
        (names[most], float(relative[most])),
        distance,
        errors.get("lufs", math.nan),
        errors.get("spectral_centroid", math.nan),
        errors.get("stereo_ms_ratio", math.nan),
        math.nan if mastered is None else mastered["pinned_share"],
        math.nan if mastered is None else float(reconstructed_peak(mix, sample_rate)),
        missed,
        unnoted,
    )


class Row(NamedTuple):
    excerpt: str  # song/excerpt
    method: str
    judgement: Judgement
    seconds: float


class Summary(NamedTuple):
    n: int
    median_db: float
    worst_db: float
    lost: int
    median_mr_stft: float
    median_abs_lufs_error: float
    median_abs_centroid_error_hz: float
    median_abs_ms_error: float
    median_pinned: float
    peak_dbtp: float  # the highest reconstructed peak of the method's mixes
    kept: int  # mixes that keep all three promises
    unnoted: int  # mixes that break one their notes do not mention


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def summarize(rows: Sequence[Row]) -> dict[str, Summary]:
    """Per method (in the order first seen): the median and the worst of the balance error over the
    excerpts, the tracks lost in all, the median MR-STFT distance, the medians of |error| to the
    targets, the highest reconstructed peak, and the mixes that keep every promise and that break one
    without a note."""
    methods = dict.fromkeys(row.method for row in rows)
    table = {}
    for method in methods:
        mine = [row.judgement for row in rows if row.method == method]
        table[method] = Summary(
            len(mine),
            _median([j.error_db for j in mine]),
            max(j.error_db for j in mine),
            sum(len(j.lost) for j in mine),
            _median([j.mr_stft for j in mine]),
            _median([abs(j.lufs_error) for j in mine]),
            _median([abs(j.centroid_error_hz) for j in mine]),
            _median([abs(j.ms_error) for j in mine]),
            _median([j.pinned for j in mine]),
            max((j.peak_dbtp for j in mine if not math.isnan(j.peak_dbtp)), default=math.nan),
            sum(not j.missed for j in mine),
            sum(bool(j.unnoted) for j in mine),
        )
    return table


def format_row(row: Row) -> str:
    j = row.judgement
    line = (
        f"{row.excerpt:34} {row.method:20} balance {j.error_db:5.2f} dB  worst {j.worst_db:5.1f} dB  "
        f"lost {len(j.lost)}  MR-STFT {j.mr_stft:.3f}  moved most {j.moved[0]} {j.moved[1]:+.1f} dB"
    )
    if not math.isnan(j.lufs_error):
        line += (
            f"  errors {j.lufs_error:+.2f} LU {j.centroid_error_hz:+5.0f} Hz M/S {j.ms_error:+.3f}"
            f"  pinned {100 * j.pinned:4.1f} %  {j.peak_dbtp:+.2f} dBTP  {row.seconds:5.1f} s"
        )
    elif not math.isnan(j.centroid_error_hz):  # a tilted producer's mix
        line += f"  centroid {j.centroid_error_hz:+5.0f} Hz"
    if j.missed:
        noted = [f"{name}{' (no note)' if name in j.unnoted else ''}" for name in j.missed]
        line += f"  missed: {', '.join(noted)}"
    if j.lost:
        line += f"  lost: {', '.join(j.lost)}"
    return line


def format_summary(table: dict[str, Summary]) -> str:
    lines = [
        f"{'method':20} {'n':>3} {'median dB':>9} {'worst dB':>8} {'lost':>4} {'MR-STFT':>7} "
        f"{'|LU|':>5} {'|Hz|':>5} {'|M/S|':>6} {'pinned':>6} {'peak':>6} {'kept':>4} {'unnoted':>7}"
    ]
    for method, s in table.items():
        promised = not math.isnan(s.median_abs_lufs_error)  # automix's: promises to keep
        lines.append(
            f"{method:20} {s.n:3d} {s.median_db:9.2f} {s.worst_db:8.2f} {s.lost:4d} {s.median_mr_stft:7.3f} "
            f"{s.median_abs_lufs_error:5.2f} {s.median_abs_centroid_error_hz:5.0f} "
            f"{s.median_abs_ms_error:6.3f} {100 * s.median_pinned:5.1f}% {s.peak_dbtp:+6.2f} "
            + (f"{s.kept:4d} {s.unnoted:7d}" if promised else "")
        )
    return "\n".join(lines)


def plot(path: Path, rows: Sequence[Row]) -> None:
    """Balance error per method: a dot per excerpt, a bar at the median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(rows)
    figure, axes = plt.subplots(figsize=(1.2 * len(table) + 2, 4))
    for x, method in enumerate(table):
        values = [row.judgement.error_db for row in rows if row.method == method]
        axes.scatter(np.full(len(values), x) + np.linspace(-0.15, 0.15, len(values)), values, s=18)
        axes.hlines(table[method].median_db, x - 0.3, x + 0.3, color="black")
    axes.set_xticks(range(len(table)), list(table), rotation=30, ha="right")
    axes.set_ylabel("balance error (dB)")
    axes.set_title("distance to the producer's balance (dots: excerpts, bars: medians)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def song_groups(song: Song, starts: Sequence[int], length: int) -> list[list[int]]:
    """`measurable_groups` of the song's tracks over its excerpts (joined end to end), at most as many
    as automix takes stems."""
    from automix.chain import MAX_STEMS

    excerpts = [
        torch.stack([read_wav(path, start, start + length) for path in song.tracks]) for start in starts
    ]
    return measurable_groups(torch.cat(excerpts, dim=-1), SAMPLE_RATE, MAX_STEMS)


def grouped_tracks(song: Song, start: int, length: int, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """The song's tracks over `[start, start + length)`, each of `groups` summed: `[G, 2, length]`."""
    tracks = torch.stack([read_wav(path, start, start + length) for path in song.tracks])
    return torch.stack([tracks[group].sum(dim=0) for group in groups])


def group_name(names: Sequence[str], group: Sequence[int]) -> str:
    """A group's name: its first track's, with the number of the others joined to it."""
    return names[group[0]] + (f"+{len(group) - 1}" if len(group) > 1 else "")


class Mixers:
    """Automix's chains, made once: the neutral one (style and reference modes), one keeping the stems'
    balance (`balance_start: stems`, the kept style modes) and the shipped checkpoint's (predict mode),
    loaded as `mix.py` loads them."""

    def __init__(
        self,
        methods: Sequence[str],
        sample_rate: int,
        seed: int,
        config: Path | None = None,
        checkpoint: Path = CHECKPOINT,
        dtype: torch.dtype = torch.float32,
    ):
        from automix import load_style_targets
        from automix.cli.mix import load_chain
        from automix.settings import load_mix_settings

        targets, settings = load_style_targets(), load_mix_settings(config)
        self.seed, self.dtype = seed, dtype
        self.promise = settings.optimize.promise
        self.neutral = load_chain(None, targets, settings).to(dtype)
        self.neutral.sample_rate = sample_rate
        self.keeper = None
        if set(KEPT) & set(methods):
            keep = dataclasses.replace(settings.optimize, balance_start="stems")
            self.keeper = load_chain(None, targets, dataclasses.replace(settings, optimize=keep)).to(dtype)
            self.keeper.sample_rate = sample_rate
        self.predictor = None
        if {"predict", *PREDICT_STYLES} & set(methods):
            self.predictor = load_chain(checkpoint, targets, settings).to(dtype)
            self.predictor.sample_rate = sample_rate

    def __call__(self, stems: torch.Tensor, method: str, reference) -> tuple[torch.Tensor, dict]:
        torch.manual_seed(self.seed)
        stems = stems.to(self.dtype)
        predict = method.startswith("predict")
        style = (
            reference
            if method in ("reference", "predict")
            else method.removeprefix("predict_").removeprefix("kept_")
        )
        chain = self.predictor if predict else self.keeper if method in KEPT else self.neutral
        if predict:
            with torch.no_grad():
                mix, analysis = chain(stems, style=style, mode="predict")
        else:
            mix, analysis = chain(stems, style=style, mode="optimize")
        space = chain.space
        analysis["pinned_share"] = float(
            space.pinned_share(analysis["stem_params"], analysis["master_params"])
        )
        return mix.detach(), analysis

    def start(self, stems: torch.Tensor) -> torch.Tensor:
        """`[2, T]` the stems `[N, C, T]` through the style modes' first step alone (the neutral chain's
        `SongOptimizer.start_render`), summed before the master. The start depends on a style only
        through its loudness target (`StartBalance.own_targets`): the first style's is taken."""
        from automix.chain import prepare_stems
        from automix.optimize import SongOptimizer
        from automix.staging import input_gain_db
        from automix.targets import resolve_targets

        chain = self.neutral
        stems, _ = prepare_stems(stems.to(self.dtype))
        targets = resolve_targets(STYLES[0], chain.style_targets, 1).to(stems.device, stems.dtype)
        input_gain = input_gain_db(stems, chain.sample_rate, None, blockwise=True)
        return SongOptimizer(chain).start_render(stems, targets, None, input_gain).bus[0]


def excerpt_mixes(
    song: Song,
    starts: Sequence[int],
    methods: Sequence[str],
    args: argparse.Namespace,
    mixers: Mixers | None,
    bar: tqdm,
    other_reference: tuple[Path, int] | None = None,
) -> list[Row]:
    """Every method's mix of every excerpt of `song`, judged; a line printed per mix. `other_reference`:
    the reference modes' targets from this file's excerpt at this start (`other_song_references`), not
    from the song's own next excerpt."""
    from automix.styles import load_style_targets, style_from_reference

    style_targets = load_style_targets()

    length = round(args.excerpt_s * SAMPLE_RATE)
    n_samples = audio_info(song.folder / "mixture.wav").n_frames
    groups = song_groups(song, starts, length)
    names = [group_name([path.stem for path in song.tracks], group) for group in groups]
    tqdm.write(f"{song.name}: {len(song.tracks)} tracks, measured as {len(groups)}: {', '.join(names)}")
    promise = None if mixers is None else mixers.promise  # the automix mixes' promises
    rows = []
    for index, start in enumerate(starts):
        label = f"{song.name}/{start / SAMPLE_RATE:.0f}s"
        tracks = grouped_tracks(song, start, length, groups)
        producer_mix = tracks.sum(dim=0)
        gains_db = scramble_gains_db(len(names), args.seed, song.name, index)
        scrambled = scramble(tracks, gains_db)
        tqdm.write(
            f"{label}: scrambled by {', '.join(f'{g:+.1f}' for g in gains_db.tolist())} dB; the untouched "
            f"mix's balance error is {scramble_spread_db(tracks, gains_db):.2f} dB by construction"
        )
        # (a row label's suffix, a reference): one mix per reference for the modes that take one
        references: list[tuple[str, object]] = []
        if {"reference", "predict"} & set(methods):
            if other_reference is None:
                every = args.reference_from == "every"
                spans = [
                    (song.folder / "mixture.wav", *span)
                    for span in same_song_references(starts, index, n_samples, length, every)
                ]
            else:
                ref_path, ref_start = other_reference
                spans = [(ref_path, ref_start, ref_start + length)]
            references = [
                (
                    f" to {ref_start / SAMPLE_RATE:.0f}s" if len(spans) > 1 else "",
                    style_from_reference(
                        at_peak(read_wav(ref_path, ref_start, ref_stop), SAMPLE_RATE),
                        SAMPLE_RATE,
                        name=f"{ref_path.parent.name}@{ref_start}",
                    ),
                )
                for ref_path, ref_start, ref_stop in spans
            ]
        for method in methods:
            bar.set_postfix_str(f"{label} {method}")
            for suffix, reference in references if method in ("reference", "predict") else [("", None)]:
                started = time.perf_counter()
                analysis = None
                if method == "producer":
                    mix = producer_mix
                elif method in TILTED:
                    target_hz = style_targets[method.removeprefix("producer_")].spectral_centroid_hz
                    mix = tilted_to_centroid(producer_mix, target_hz, SAMPLE_RATE)
                    off_hz = float(spectral_centroid(mix, SAMPLE_RATE)) - target_hz
                    analysis = {"errors": {"spectral_centroid": off_hz}}
                elif method == "untouched":
                    mix = scrambled.sum(dim=0)
                elif method == "equal_loudness":
                    mix = equal_loudness(scrambled, SAMPLE_RATE)
                elif method == "start":
                    mix = mixers.start(scrambled)
                else:  # the kept style modes take the producer's tracks as they are
                    mix, analysis = mixers(tracks if method in KEPT else scrambled, method, reference)
                seconds = time.perf_counter() - started
                judged = judge(
                    tracks,
                    producer_mix,
                    mix,
                    SAMPLE_RATE,
                    names,
                    analysis,
                    None if method in TILTED else promise,
                )
                row = Row(label + suffix, method, judged, seconds)
                tqdm.write(format_row(row))
                rows.append(row)
            bar.update()
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="automix against the producers' mixes of LMMS demo songs")
    parser.add_argument("--root", type=Path, default=None, help="rendered songs (default: the data script's)")
    parser.add_argument(
        "--split",
        choices=("valid", "train", "other"),
        default="valid",
        help="the songs (default: the validation songs; other: every song under --root but LMMS renders, "
        "by default the tracker modules of data/make_tracker_multitracks.py)",
    )
    parser.add_argument("--excerpts", type=int, default=2, help="excerpts per song (default: 2)")
    parser.add_argument("--excerpt-s", type=float, default=EXCERPT_S, help="seconds (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="scramble gains and the optimiser")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--reference-from",
        choices=("same", "other", "every"),
        default="same",
        help="the reference and predict modes' reference: the next excerpt of the same song (default, "
        "issue 18's protocol), the next song's first excerpt (other music, as a user's reference "
        "usually is) or each other excerpt of the same song in turn",
    )
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="balance error per method")
    parser.add_argument(
        "--float64",
        action="store_true",
        help="automix's chains in float64 (a float32 chain's arithmetic leaves a floor of ~1e-7 of full "
        "scale in digital silence, which the MR-STFT distance's 1e-7 offset reads)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", help="mix settings, as mix.py --config")
    parser.add_argument(
        "--checkpoint", type=Path, default=CHECKPOINT, help="predict mode's (default: the shipped one)"
    )
    return parser


def rendered_songs(root: Path | None, split: str = "valid") -> list[Song]:
    """The songs of the fixed split's `split` ("valid" or "train") rendered under `root` (None: the data
    script's default folder), saying which are missing; empty (with the reason printed) where none is or
    LMMS's demo list is not installed. "other": every song under `root` (None: the tracker script's
    folder) that is not an LMMS render, for developing on multitracks outside the split."""
    if split == "other":
        # data/make_tracker_multitracks.py's default folder, beside the LMMS renders'
        return other_songs((root or lmms_data().default_out().parent / "tracker").expanduser())
    root = (root or lmms_data().default_out()).expanduser()
    try:
        demos = demo_songs()
    except AutomixError as error:
        print(f"skipped: the fixed split needs LMMS's demo list ({error})")
        return []
    validation = lmms_data().validation_songs(demos)
    wanted = validation if split == "valid" else set(demos) - validation
    songs, missing = find_songs(root, wanted) if root.is_dir() else ([], sorted(wanted))
    if not songs:
        print(
            f"skipped: no {split} song rendered under {root}; render them: {RENDER_HINT.format(split=split)}"
        )
    elif missing:
        print(f"note: {split} songs not rendered (left out): {', '.join(missing)}")
    return songs


def other_songs(root: Path) -> list[Song]:
    """Every song folder under `root` holding no LMMS render report (tracker modules, a user's sessions)."""
    lmms_report = lmms_data().REPORT
    names = (
        [p.name for p in sorted(root.iterdir()) if p.is_dir() and not (p / lmms_report).exists()]
        if root.is_dir()
        else []
    )
    songs, _ = find_songs(root, names)
    if not songs:
        print(f"skipped: no song rendered under {root}; render some: python data/make_tracker_multitracks.py")
    return songs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    songs = rendered_songs(args.root, args.split)
    if not songs:
        return 0
    print(f"{args.split} songs: {', '.join(song.name for song in songs)}")
    methods = [method for method in METHODS if method in args.methods]
    excerpts = {}
    for song in songs:
        producer_mix = read_wav(song.folder / "mixture.wav")
        excerpts[song.name] = pick_excerpts(producer_mix, SAMPLE_RATE, args.excerpts, args.excerpt_s)
        del producer_mix
        if not excerpts[song.name]:
            print(f"note: {song.name} is shorter than one excerpt; left out")
    songs = [song for song in songs if excerpts[song.name]]
    mixers = (
        Mixers(
            methods,
            SAMPLE_RATE,
            args.seed,
            args.config,
            args.checkpoint,
            torch.float64 if args.float64 else torch.float32,
        )
        if set(methods) & set(AUTOMIX_METHODS)
        else None
    )
    others = other_song_references(songs, excerpts) if args.reference_from == "other" else {}
    started = time.perf_counter()
    rows = []
    with tqdm(total=sum(map(len, excerpts.values())) * len(methods), unit="mix", file=sys.stderr) as bar:
        for song in songs:
            other = others.get(song.name)
            rows += excerpt_mixes(song, excerpts[song.name], methods, args, mixers, bar, other)
    if not rows:
        print("skipped: no song is as long as one excerpt")
        return 0
    n_excerpts = sum(map(len, excerpts.values()))
    print(f"\nsummary over {n_excerpts} excerpts ({time.perf_counter() - started:.0f} s):")
    print(format_summary(summarize(rows)))
    if args.plot:
        plot(args.plot, rows)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
