"""`python mix.py`: mix stems to a style and master them, with the CLI flags of the public contract
(docs/design.md, *Public API*) and more."""

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import torch

from automix.chain import MAX_STEMS, AutoMixChain
from automix.cli import check_seed, run_cli
from automix.console_settings import read_settings
from automix.delivery import MASTER_FILE, MixJob, SongRequest, mix_song, output_subtype
from automix.errors import AutomixError
from automix.io import BIT_DEPTHS, OUTPUT_FORMATS, check_audio_output, check_output_path
from automix.settings import MixSettings, load_mix_settings
from automix.styles import (
    LOUDNESS_PRESETS,
    StyleTarget,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mix.py", description="Mix and master stems to a style's loudness, tone and width."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stems", nargs="+", type=Path, metavar="FILE", help="stem audio files")
    source.add_argument("--test-stems", type=int, metavar="N", help="mix N synthetic stems instead of files")
    source.add_argument(
        "--songs", nargs="+", type=Path, metavar="DIR", help="a catalogue: each folder one song's stems"
    )
    parser.add_argument("--style", help=f"style name (default: {DEFAULT_STYLE})")
    parser.add_argument(
        "--output",
        type=Path,
        help="the master (.wav or .flac; 24-bit unless --bit-depth), written atomically",
    )
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
    parser.add_argument("--mode", choices=("optimize", "predict"), help="default: optimize")
    delivery = parser.add_argument_group("delivery")
    delivery.add_argument(
        "--format", choices=OUTPUT_FORMATS, help="the master's format (default: --output's)"
    )
    delivery.add_argument(
        "--bit-depth", choices=tuple(BIT_DEPTHS), default="24", help="16 (TPDF-dithered), 24 or 32f (float)"
    )
    delivery.add_argument(
        "--stems-output", type=Path, metavar="DIR", help="each stem after its strip, and master.json"
    )
    delivery.add_argument(
        "--save-settings",
        type=Path,
        metavar="FILE.json",
        help="every setting in units, to edit and render again",
    )
    delivery.add_argument(
        "--settings", type=Path, metavar="FILE.json", help="render with these settings, no optimisation"
    )
    catalogue = parser.add_argument_group("catalogues (--songs)")
    catalogue.add_argument(
        "--output-dir", type=Path, metavar="OUT", help="<song>.wav, <song>.json, results.jsonl"
    )
    catalogue.add_argument("--devices", type=int, help="processes (CPU) or GPUs per node (default 1)")
    catalogue.add_argument("--num-nodes", type=int, help="machines (Lightning DDP; default 1)")
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
    outputs = [path for path in (args.output, args.analysis_output, args.plot, args.save_settings) if path]
    check_audio_output(args.output, subtype=BIT_DEPTHS[args.bit_depth], protect=inputs)
    if args.stems_output is not None:
        check_output_path(args.stems_output / MASTER_FILE, protect=inputs)
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


def _check_arguments(parser: argparse.ArgumentParser, args) -> None:
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
        beside = {"--style": args.style, "--targets": args.targets}
        _refuse_given(beside, "--reference gives the targets, so {flag} would be ignored; give one of them")
    if args.settings is not None:
        # A settings file is the console: nothing is optimised or predicted, no loudness is sought.
        ignored = {
            "--mode": args.mode,
            "--checkpoint": args.checkpoint,
            "--config": args.config,
            "--loudness-target": args.loudness_target,
            "--max-limiting-db": args.max_limiting_db,
        }
        _refuse_given(ignored, "--settings renders without optimisation, so {flag} would be ignored; drop it")
    if args.songs:
        single = {
            "--output": args.output,
            "--analysis-output": args.analysis_output,
            "--plot": args.plot,
            "--stems-output": args.stems_output,
            "--save-settings": args.save_settings,
            "--settings": args.settings,
        }
        _refuse_given(single, "{flag} names one song's file; with --songs, every song goes to --output-dir")
        if args.output_dir is None:
            parser.error("--songs needs --output-dir OUT")
    else:
        if args.output is None:
            parser.error("the following arguments are required: --output")
        catalogue = {
            "--output-dir": args.output_dir,
            "--devices": args.devices,
            "--num-nodes": args.num_nodes,
        }
        _refuse_given(catalogue, "{flag} is for catalogues (--songs DIR ...); give --output for one song")
    for flag, count in (("--devices", args.devices), ("--num-nodes", args.num_nodes)):
        if count is not None and count < 1:
            raise AutomixError(f"{flag} must be at least 1, got {count}")


def _refuse_given(flags: dict, message: str) -> None:
    """Refuse the first of `flags` (flag -> value) that was given: `message` with its `{flag}`."""
    for flag, value in flags.items():
        if value is not None:
            raise AutomixError(message.format(flag=flag))


def master_format(args) -> str:
    """The master's format: `--format`, else `--output`'s suffix (catalogues: wav).

    Raises:
        AutomixError: `--format` and `--output`'s suffix disagree, or 32-bit float in FLAC.
    """
    suffix = args.output.suffix.lower().lstrip(".") if args.output is not None else None
    if suffix is not None and suffix not in OUTPUT_FORMATS:
        listed = " or ".join(f".{name}" for name in OUTPUT_FORMATS)
        raise AutomixError(f"{args.output}: the master is written as {listed}; name the output so")
    file_format = args.format or suffix or "wav"
    if suffix is not None and suffix != file_format:
        raise AutomixError(f"{args.output}: --format {file_format} writes .{file_format}; name the output so")
    output_subtype(args.bit_depth, file_format)
    return file_format


def targets_of(args, targets) -> tuple[StyleTarget | None, list[str]]:
    """The style to aim at (`--reference`, `--style`, `--loudness-target`) and notes on where it came from;
    None with `--settings` and no style given (the file's targets judge the mix)."""
    if args.reference:
        style = style_from_reference_file(args.reference)
        note = (
            f"targets from {args.reference}: {style.lufs:.1f} LUFS, "
            f"{style.spectral_centroid_hz:.0f} Hz, M/S {style.stereo_ms_ratio:.2f}"
        )
        return style, [note]
    if args.settings is not None and args.style is None:
        return None, []
    style = get_style(targets, args.style or DEFAULT_STYLE)
    if args.loudness_target is not None:
        style = with_loudness(style, args.loudness_target)
    return style, []


def build_job(args, device: torch.device, inputs: list[Path], file_format: str, *, progress: bool) -> MixJob:
    """What every song of this run shares: the chain on its device, the targets, the settings file, the
    master's format (`master_format`)."""
    targets = load_style_targets(args.targets)
    settings = load_mix_settings(args.config)
    if args.max_limiting_db is not None:
        mastering = dataclasses.replace(settings.mastering, max_limiting_db=args.max_limiting_db)
        settings = dataclasses.replace(settings, mastering=mastering)
    style, notes = targets_of(args, targets)  # before the stems: a bad style or reference is refused first
    mode = args.mode or "optimize"
    torch.manual_seed(args.seed)
    checkpoint = None if args.settings else checkpoint_for(mode, args.checkpoint)
    chain = load_chain(checkpoint, targets, settings).to(device)
    console = read_settings(args.settings, chain.space) if args.settings else None
    return MixJob(
        chain=chain,
        style=style,
        mode=mode,
        console=console,
        sample_rate=args.sample_rate,
        subtype=output_subtype(args.bit_depth, file_format),
        progress=progress,
        protect=tuple(inputs),
        notes=tuple(notes),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = _device(args.device)
    _check_arguments(parser, args)
    file_format = master_format(args)
    inputs = [
        *(args.stems or []),
        *(p for p in (args.targets, args.reference, args.checkpoint, args.config, args.settings) if p),
    ]
    if args.songs:
        from automix.catalogue import run_catalogue  # Lightning: only for catalogues

        job = build_job(args, device, inputs, file_format, progress=False)
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        return run_catalogue(args, job, args.songs, file_format, accelerator)
    _check_outputs(args, inputs)
    job = build_job(args, device, inputs, file_format, progress=not args.quiet)
    request = SongRequest(
        stems=args.stems or [],
        output=args.output,
        analysis_output=args.analysis_output,
        plot=args.plot,
        stems_output=args.stems_output,
        save_settings=args.save_settings,
        audio=None if args.stems else synthetic_stems(args.test_stems, args.seed, args.sample_rate),
    )
    result = mix_song(job, request)
    seconds = time.perf_counter() - started
    rows = summary_rows(result.analysis)
    if not args.quiet or args.validate:
        print(f"{'':18} {'measured':>9} {'target':>9}")
        for label, measured, target, passed, unit in rows:
            mark = ("PASS" if passed else "FAIL") if args.validate else ""
            shown = f"{measured:9.2f}" if math.isfinite(measured) else f"{'undefined':>9}"
            print(f"{label:18} {shown} {target:9.2f} {unit:5} {mark}")
        length = result.mix.shape[-1] / result.sample_rate
        print(f"wrote {args.output} ({length:.1f} s) in {seconds:.1f} s")
    return 1 if args.validate and not all(row[3] for row in rows) else 0


def synthetic_stems(count: int, seed: int, sample_rate: int | None) -> tuple[torch.Tensor, int, list[str]]:
    """`--test-stems N`: N synthetic stems (songs of `automix.synth` in turn), their rate and names."""
    sample_rate = sample_rate or TEST_SAMPLE_RATE
    n_songs = -(-count // len(STEM_NAMES))
    songs = [synth_stems(TEST_STEM_SECONDS, sample_rate, seed=seed + i) for i in range(n_songs)]
    stems = torch.cat([s for s, _ in songs])[:count]
    names = [f"{name}{i}" for i, (_, song_names) in enumerate(songs) for name in song_names][:count]
    return stems, sample_rate, names


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
