"""`python mix.py`: mix stems to a style and master them, with the CLI flags of the public contract
(docs/design.md, *Public API*) and more."""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from automix.analysis import json_ready
from automix.chain import MAX_STEMS, AutoMixChain
from automix.cli import check_seed, run_cli
from automix.errors import AutomixError
from automix.io import (
    atomic_write_text,
    check_audio_output,
    check_output_path,
    load_stems,
    save_audio,
    stem_names,
)
from automix.settings import MixSettings, load_mix_settings
from automix.styles import (
    LOUDNESS_PRESETS,
    get_style,
    load_style_targets,
    style_from_reference_file,
    with_loudness,
)
from automix.synth import STEM_NAMES, synth_stems

DEFAULT_STYLE = "rock_punk"
TEST_STEM_SECONDS = 20.0
TEST_SAMPLE_RATE = 44100
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 384000
MAX_LIMITING_DB = 40.0  # the trim's own range: a larger budget limits nothing more
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default.ckpt"
# Analysis keys written to the JSON report in their own sections (parameters, balance, notes).
NOT_DUMPED = ("stem_params", "master_params", "stem_balance_db", "balance_start_db", "notes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mix.py", description="Mix and master stems to a style's loudness, tone and width."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stems", nargs="+", type=Path, metavar="FILE", help="stem audio files")
    source.add_argument("--test-stems", type=int, metavar="N", help="mix N synthetic stems instead of files")
    parser.add_argument("--style", help=f"style name (default: {DEFAULT_STYLE})")
    parser.add_argument("--output", type=Path, required=True, help="output WAV (24-bit), written atomically")
    parser.add_argument("--validate", action="store_true", help="print measured vs target; exit 1 on a miss")
    parser.add_argument(
        "--analysis-output", type=Path, metavar="FILE.json", help="write the analysis as JSON"
    )
    parser.add_argument("--targets", type=Path, metavar="FILE.yaml", help="custom style targets (YAML)")
    parser.add_argument(
        "--reference", type=Path, metavar="FILE", help="take the targets from a reference mix"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="predictor checkpoint (default: the shipped one in predict mode)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="mix settings overriding conf/mix.yaml (the optimiser's and predict mode's)",
    )
    parser.add_argument(
        "--loudness-target",
        metavar="LUFS|PRESET",
        help=f"deliver at this loudness instead of the style's: LUFS or {', '.join(LOUDNESS_PRESETS)}",
    )
    parser.add_argument(
        "--max-limiting-db",
        type=float,
        metavar="DB",
        help="the limiter's peak gain reduction the loudness may take (default: conf/mix.yaml, 6 dB)",
    )
    parser.add_argument("--mode", choices=("optimize", "predict"), default="optimize")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="spectrum, loudness and stem levels (.png, .svg, .pdf)"
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        metavar="HZ",
        help="mix at this rate (default: the highest of the stems'; others are resampled)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for synthetic stems and the optimiser (0 to 2^32 - 1)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return parser


def checkpoint_for(mode: str, given: Path | None) -> Path | None:
    """The predictor weights a mode uses: the given file, else the shipped checkpoint in predict mode.

    Optimize mode without `--checkpoint` starts from the neutral console: the shipped predictor's
    settings are a slower and less reliable start for the per-song optimisation than the neutral ones
    (README, *The shipped checkpoint*).
    """
    if given is not None:
        return given
    return DEFAULT_CHECKPOINT if mode == "predict" and DEFAULT_CHECKPOINT.exists() else None


def load_chain(checkpoint: Path | None, targets, settings: MixSettings) -> AutoMixChain:
    options = {
        "style_targets": targets,
        "optimize": settings.optimize,
        "predict": settings.predict,
        "mastering": settings.mastering,
    }
    if checkpoint is None:
        return AutoMixChain(**options)
    return AutoMixChain.from_checkpoint(checkpoint, **options)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AutomixError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AutomixError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AutomixError(
                f"--device {name}: there are {torch.cuda.device_count()} CUDA GPUs (cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise AutomixError("--device mps asked for, but MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise AutomixError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or mps")
    return device


def _check_outputs(args, inputs: list[Path]) -> None:
    """Refuse bad output paths before any work, so that no run ends by failing to write."""
    outputs = [path for path in (args.output, args.analysis_output, args.plot) if path is not None]
    check_audio_output(args.output, protect=inputs)
    for index, path in enumerate(outputs):
        check_output_path(path, protect=inputs)
        for other in outputs[:index]:
            if os.path.realpath(path) == os.path.realpath(other):
                raise AutomixError(f"{path}: named for two outputs; give each output its own file")
    if args.plot is not None:
        from automix.plots import plot_format

        plot_format(args.plot)


def summary_rows(analysis: dict) -> list[tuple[str, float, float, bool, str]]:
    rows = [
        ("LUFS", "lufs", "LUFS"),
        ("spectral centroid", "spectral_centroid", "Hz"),
        ("stereo M/S ratio", "stereo_ms_ratio", ""),
    ]
    table = [
        (label, float(analysis[key]), float(analysis["targets"][key]), bool(analysis["passed"][key]), unit)
        for label, key, unit in rows
    ]
    passed, ceiling = analysis["passed"], float(analysis.get("ceiling_dbtp", -1.0))
    table.append(
        ("true peak (4x)", float(analysis["true_peak_dbtp"]), ceiling, bool(passed["true_peak"]), "dBTP")
    )
    if "reconstructed_peak_dbtp" in analysis:
        peak = float(analysis["reconstructed_peak_dbtp"])
        table.append(("true peak (16x)", peak, ceiling, bool(passed["reconstructed_peak"]), "dBTP"))
    if "gain_reduction" in analysis and "limiting" in passed:
        deepest = float(analysis["gain_reduction"]["limiter"]["max_db"])
        table.append(
            ("limiting (max)", deepest, float(analysis["max_limiting_db"]), bool(passed["limiting"]), "dB")
        )
    return table


def _check_arguments(args) -> None:
    """Refuse values no run can use before any file is read."""
    if args.test_stems is not None and not 1 <= args.test_stems <= MAX_STEMS:
        raise AutomixError(f"--test-stems must be 1-{MAX_STEMS}, got {args.test_stems}")
    if args.stems and len(args.stems) > MAX_STEMS:
        raise AutomixError(f"--stems: at most {MAX_STEMS} stems, got {len(args.stems)}; submix some first")
    check_seed(args.seed)
    if args.sample_rate is not None and not MIN_SAMPLE_RATE <= args.sample_rate <= MAX_SAMPLE_RATE:
        raise AutomixError(
            f"--sample-rate must be {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, got {args.sample_rate}"
        )
    if args.max_limiting_db is not None and not 0 <= args.max_limiting_db <= MAX_LIMITING_DB:
        raise AutomixError(
            f"--max-limiting-db must be 0-{MAX_LIMITING_DB:g} dB, got {args.max_limiting_db:g}"
        )
    if args.reference is not None:
        for flag, value in (("--style", args.style), ("--targets", args.targets)):
            if value is not None:
                raise AutomixError(
                    f"--reference gives the targets, so {flag} would be ignored; give one of them"
                )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    device = _device(args.device)
    _check_arguments(args)
    inputs = [
        *(args.stems or []),
        *(p for p in (args.targets, args.reference, args.checkpoint, args.config) if p),
    ]
    _check_outputs(args, inputs)
    targets = load_style_targets(args.targets)
    settings = load_mix_settings(args.config)
    if args.max_limiting_db is not None:
        mastering = dataclasses.replace(settings.mastering, max_limiting_db=args.max_limiting_db)
        settings = dataclasses.replace(settings, mastering=mastering)
    notes: list[str] = []
    # The targets before the stems: a bad style or reference is refused before a long read.
    if args.reference:
        style = style_from_reference_file(args.reference)
        notes.append(f"targets from {args.reference}: {style.lufs:.1f} LUFS, "
                     f"{style.spectral_centroid_hz:.0f} Hz, M/S {style.stereo_ms_ratio:.2f}")  # fmt: skip
    else:
        style = get_style(targets, args.style or DEFAULT_STYLE)
    if args.loudness_target is not None:
        style = with_loudness(style, args.loudness_target)
    if args.stems:
        stems, sample_rate, loaded = load_stems(args.stems, args.sample_rate)
        notes += loaded
        names = stem_names(args.stems)
    else:
        sample_rate = args.sample_rate or TEST_SAMPLE_RATE
        n_songs = -(-args.test_stems // len(STEM_NAMES))
        songs = [synth_stems(TEST_STEM_SECONDS, sample_rate, seed=args.seed + i) for i in range(n_songs)]
        stems = torch.cat([s for s, _ in songs])[: args.test_stems]
        names = [f"{name}{i}" for i, (_, song_names) in enumerate(songs) for name in song_names][
            : args.test_stems
        ]
    torch.manual_seed(args.seed)
    chain = load_chain(checkpoint_for(args.mode, args.checkpoint), targets, settings).to(device)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    with torch.no_grad() if args.mode == "predict" else torch.enable_grad():
        mix, analysis = chain(
            stems.to(device), style=style, mode=args.mode, progress=not args.quiet, sample_rate=sample_rate
        )
    stems = None  # freed before the output is written: a 4-minute song's 8 stems are 0.7 GB
    mix = mix.detach().cpu()
    save_audio(args.output, mix, sample_rate, protect=inputs)
    seconds = time.perf_counter() - started
    for note in analysis["notes"]:
        print(f"note: {note}", file=sys.stderr)
    notes += analysis["notes"]
    report = {
        "style": style.name,
        "mode": args.mode,
        "sample_rate": sample_rate,
        "stems": names,
        "notes": notes,
        "seconds": seconds,
    } | json_ready({k: v for k, v in analysis.items() if k not in NOT_DUMPED})
    report["balance"] = balance_report(analysis, names)
    report["parameters"] = {
        "stems": {
            name: {k: json_ready(v[i]) for k, v in analysis["stem_params"].items()}
            for i, name in enumerate(names)
        },
        "master": json_ready(analysis["master_params"]),
    }
    if args.analysis_output:
        atomic_write_text(
            args.analysis_output, json.dumps(report, indent=2, allow_nan=False) + "\n", protect=inputs
        )
    if args.plot:
        from automix.plots import plot_mix

        plot_mix(args.plot, mix, sample_rate, analysis, names, protect=inputs)
    rows = summary_rows(analysis)
    if not args.quiet or args.validate:
        print(f"{'':18} {'measured':>9} {'target':>9}")
        for label, measured, target, passed, unit in rows:
            mark = ("PASS" if passed else "FAIL") if args.validate else ""
            shown = f"{measured:9.2f}" if math.isfinite(measured) else f"{'undefined':>9}"
            print(f"{label:18} {shown} {target:9.2f} {unit:5} {mark}")
        print(f"wrote {args.output} ({mix.shape[-1] / sample_rate:.1f} s) in {seconds:.1f} s")
    return 1 if args.validate and not all(row[3] for row in rows) else 0


def balance_report(analysis: dict, names: list[str]) -> dict:
    """Per stem: its loudness relative to the stems together (`automix.balance.stem_balance_db`), where
    the optimiser started it and how far it moved, dB; null for a silent stem."""
    start = analysis.get("balance_start_db")
    report = {}
    for i, name in enumerate(names):
        relative = float(analysis["stem_balance_db"][i])
        entry = {"relative_db": relative}
        if start is not None:
            entry |= {"start_db": float(start[i]), "moved_db": relative - float(start[i])}
        report[name] = {k: (None if math.isnan(v) else round(v, 3)) for k, v in entry.items()}
    return report


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
