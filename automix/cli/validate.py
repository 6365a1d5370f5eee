"""`python validate.py`: the validation suite (`automix.validation`), with the CLI flags of the public
contract (docs/design.md, *Public API*).

Exit status 0 when every check passes, 1 when any fails, 2 (one line on stderr) for bad input.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from automix.analysis import json_ready
from automix.chain import MODES
from automix.cli import check_seed, run_cli
from automix.cli.mix import checkpoint_for, load_chain
from automix.errors import AutomixError
from automix.io import atomic_write_text, check_output_path
from automix.settings import load_mix_settings
from automix.styles import get_style, load_style_targets
from automix.validation import conformance_cases, environment, mix_cases, run_validation, summarize


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="validate.py",
        description="Mix a matrix of test signals to each style, judge the mixes with independent meters "
        "and check the loudness meter against EBU Tech 3341/3342.",
    )
    parser.add_argument("--verbose", action="store_true", help="per-stage detail under each mix")
    parser.add_argument("--styles", nargs="+", metavar="S", help="styles to mix to (default: all)")
    parser.add_argument("--output", type=Path, metavar="FILE.json", help="write the report, atomically")
    parser.add_argument("--quick", action="store_true", help="noise and a short song only (and conformance)")
    parser.add_argument("--test-filter", metavar="SUBSTR", help="only the cases whose name contains SUBSTR")
    parser.add_argument("--targets", type=Path, metavar="FILE.yaml", help="custom style targets (YAML)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="predictor checkpoint (default: the shipped one in predict mode)",
    )
    parser.add_argument(
        "--mode", nargs="+", choices=MODES, default=["optimize"], help="mixing mode(s) (default: optimize)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the test signals and the optimiser")
    return parser


def _select(cases: list, test_filter: str | None) -> list:
    return [case for case in cases if test_filter is None or test_filter in case.name]


def _cell(metric: dict, digits: int) -> str:
    mark = "" if metric["passed"] else "*"
    return f"{metric['measured']:.{digits}f}{mark}/{metric['target']:.{digits}f}"


def print_table(results: list[dict], verbose: bool) -> None:
    """Measured/target per metric (`*` marks a miss), quality score, seconds and PASS/FAIL per check."""
    mixes = [r for r in results if r["section"] == "mix"]
    if mixes:
        width = max(len(r["name"]) for r in mixes)
        print(
            f"{'mix':{width}}  {'style':11} {'mode':8} {'LUFS':>13} {'centroid Hz':>11} {'M/S':>9} "
            f"{'TP dBTP':>11} {'score':>5} {'time':>6}"
        )
        for r in mixes:
            m = r["metrics"]
            print(
                f"{r['name']:{width}}  {r['style']:11} {r['mode']:8} {_cell(m['lufs'], 2):>13} "
                f"{_cell(m['spectral_centroid'], 0):>11} {_cell(m['stereo_ms_ratio'], 2):>9} "
                f"{_cell(m['true_peak_dbtp'], 2):>11} {r['quality_score']:5.2f} {r['time_s']:5.1f}s "
                f"{'PASS' if r['passed'] else 'FAIL'}"
            )
            if verbose:
                _print_detail(r)
    checks = [r for r in results if r["section"] == "conformance"]
    if checks:
        width = max(len(r["name"]) for r in checks)
        if mixes:
            print()
        print(f"{'conformance':{width}}  {'metric':21} {'measured':>9} {'expected':>9}  {'tolerance':10}")
        for r in checks:
            [(name, m)] = r["metrics"].items()
            tolerance = f"±{m['tolerance']:g} {m['unit']}"
            print(
                f"{r['name']:{width}}  {name:21} {m['measured']:9.2f} {m['target']:9.2f}  "
                f"{tolerance:10} {'PASS' if r['passed'] else 'FAIL'}"
            )


def _print_detail(result: dict) -> None:
    detail, m = result["detail"], result["metrics"]
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in detail["stage_s"].items())
    print(f"    stages: {stages}")
    readings = ", ".join(f"{name} {entry['chain_reading']:.2f}" for name, entry in m.items())
    print(f"    the mixer's own meters: {readings}")
    master = detail["master_params"]
    print(
        f"    master: trim {detail['master_trim_db']:+.2f} dB, EQ "
        + " ".join(f"{g:+.1f}" for g in master["eq_gain_db"])
        + f" dB, width {master['width']:.2f}, bus threshold {master['bus_threshold_db']:.1f} dB"
    )
    stems = detail["stem_params"]
    print(
        "    stems: level "
        + " ".join(f"{v:+.1f}" for v in stems["level_db"])
        + " dB, pan "
        + " ".join(f"{v:+.2f}" for v in stems["pan"])
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_seed(args.seed)
    started = time.perf_counter()
    modes = list(dict.fromkeys(args.mode))
    checkpoints = {mode: checkpoint_for(mode, args.checkpoint) for mode in modes}
    inputs = [path for path in (*checkpoints.values(), args.targets) if path]
    if args.output is not None:
        check_output_path(args.output, protect=inputs)
    targets = load_style_targets(args.targets)
    styles = [get_style(targets, name) for name in dict.fromkeys(args.styles or targets)]
    cases = _select(mix_cases(quick=args.quick), args.test_filter)
    conformance = _select(conformance_cases(), args.test_filter)
    if not cases and not conformance:
        raise AutomixError(
            f"--test-filter {args.test_filter!r} matches no case; case names look like "
            f"{mix_cases(quick=args.quick)[0].name} or {conformance_cases()[0].name}"
        )
    torch.manual_seed(args.seed)
    settings = load_mix_settings()
    chains = {mode: load_chain(checkpoint, targets, settings) for mode, checkpoint in checkpoints.items()}
    results = run_validation(chains, cases, styles, modes, conformance, seed=args.seed)
    summary = summarize(results) | {
        "quick": args.quick,
        "styles": [style.name for style in styles],
        "modes": modes,
        "test_filter": args.test_filter,
        "seed": args.seed,
        "wall_s": time.perf_counter() - started,
    }
    rates = [case.sample_rate for case in [*cases, *conformance]]
    report = {
        "summary": summary,
        "results": results,
        "environment": environment(
            rates, {mode: str(path) if path else None for mode, path in checkpoints.items()}
        ),
    }
    print_table(results, args.verbose)
    score = summary["quality_score_mean"]
    print(
        f"\n{summary['total']} checks: {summary['passed']} passed, {summary['failed']} failed"
        + (f"; mean quality score {score:.2f}" if score is not None else "")
        + f"; {summary['wall_s']:.0f} s"
    )
    if args.output is not None:
        text = json.dumps(json_ready(report), indent=2, allow_nan=False) + "\n"
        atomic_write_text(args.output, text, protect=inputs)
        print(f"wrote {args.output}")
    return 0 if summary["failed"] == 0 else 1


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
