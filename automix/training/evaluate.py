"""How well a checkpoint mixes songs it has never seen: the predict-mode figure of the README.

Held-out songs are `automix.synth` songs with seeds from `HELD_OUT_SEED` on (training draws 62-bit
seeds at random, so these are never trained on), all four stems, whole (not excerpts). Each is mixed to
every style in predict mode (or optimize) and measured on the returned mix: loudness by pyloudnorm (an
independent BS.1770-4 meter), the centroid and M/S ratio by `automix.metrics` (docs/design.md,
*Contracts*), the true peak by `automix.metrics.true_peak`. A mix counts when all three are within the
tolerances of the public contract (`automix.loss.TOLERANCES`: ±1 LU, ±200 Hz, ±0.2). It also gives the
mean share of the settings pinned at an end of their range (`ParameterSpace.pinned_share`). Predict mode
is the predictor's pass alone unless `--refine` (the master's correction on full renders that `mix.py`
adds, `PredictSettings.refine`): the figure judges what training made.

Run: `python -m automix.training.evaluate --checkpoint checkpoints/default.ckpt [--songs 20] [--refine]`.
"""

import argparse
import json
import sys
import time
from collections.abc import Sequence

import pyloudnorm
import torch
from tqdm.auto import tqdm

from automix import metrics
from automix.chain import AutoMixChain
from automix.cli import run_cli
from automix.io import atomic_write_text
from automix.loss import TOLERANCES
from automix.synth import synth_stems

HELD_OUT_SEED = 10**6
STYLES = ("rock_punk", "rnb_ballad", "country_pop")
DEFAULT_SONGS = 20
DEFAULT_SECONDS = 10.0


def held_out_songs(n_songs: int, seconds: float, sample_rate: int) -> list[torch.Tensor]:
    """`n_songs` synthetic songs `[4, 2, T]` that training never sees."""
    return [synth_stems(seconds, sample_rate, seed=HELD_OUT_SEED + i)[0] for i in range(n_songs)]


def judge(mix: torch.Tensor, sample_rate: int, target) -> dict:
    """Measured values, errors and pass flags of a mix `[2, T]` against a StyleTarget."""
    meter = pyloudnorm.Meter(sample_rate)
    measured = {
        "lufs": float(meter.integrated_loudness(mix.T.double().numpy())),
        "spectral_centroid": float(metrics.spectral_centroid(mix, sample_rate)),
        "stereo_ms_ratio": float(metrics.stereo_ms_ratio(mix)),
        "true_peak_dbtp": float(metrics.true_peak(mix, sample_rate)),
    }
    targets = {
        "lufs": target.lufs,
        "spectral_centroid": target.spectral_centroid_hz,
        "stereo_ms_ratio": target.stereo_ms_ratio,
    }
    errors = {name: measured[name] - targets[name] for name in TOLERANCES}
    passed = {name: abs(errors[name]) <= tolerance for name, tolerance in TOLERANCES.items()}
    return {"measured": measured, "errors": errors, "passed": passed, "within_all": all(passed.values())}


@torch.no_grad()
def evaluate(
    chain: AutoMixChain,
    *,
    n_songs: int = DEFAULT_SONGS,
    seconds: float = DEFAULT_SECONDS,
    styles: Sequence[str] = STYLES,
    mode: str = "predict",
    progress: bool = False,
) -> dict:
    """Mix `n_songs` held-out songs to every style; `{"summary": ..., "results": [...]}`."""
    songs = held_out_songs(n_songs, seconds, chain.sample_rate)
    results = []
    cases = [(i, style) for i in range(n_songs) for style in styles]
    for index, style in tqdm(cases, desc=f"evaluating ({mode})", disable=not progress):
        start = time.perf_counter()
        mix, analysis = chain(songs[index], style=style, mode=mode)
        result = judge(mix, chain.sample_rate, chain.style_targets[style])
        result["pinned_share"] = float(
            chain.space.pinned_share(analysis["stem_params"], analysis["master_params"])
        )
        results.append({"song": HELD_OUT_SEED + index, "style": style, **result})
        results[-1]["seconds"] = time.perf_counter() - start
    summary = {
        "mixes": len(results),
        "within_all": sum(r["within_all"] for r in results) / len(results),
        **{f"within_{name}": sum(r["passed"][name] for r in results) / len(results) for name in TOLERANCES},
        **{
            f"mean_abs_error_{name}": sum(abs(r["errors"][name]) for r in results) / len(results)
            for name in TOLERANCES
        },
        "pinned_share": sum(r["pinned_share"] for r in results) / len(results),
        "true_peak_ok": sum(r["measured"]["true_peak_dbtp"] <= chain.ceiling_dbtp + 1e-3 for r in results)
        / len(results),
        "mode": mode,
        "seconds_per_song": seconds,
    }
    return {"summary": summary, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="automix: predict-mode accuracy on held-out synthetic songs")
    parser.add_argument("--checkpoint", help="checkpoint file (default: untrained predictor)")
    parser.add_argument("--songs", type=int, default=DEFAULT_SONGS)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--mode", choices=("predict", "optimize"), default="predict")
    parser.add_argument("--refine", action="store_true", help="predict mode's master corrected, as mix.py's")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)
    predict = {"refine": args.refine}
    if args.checkpoint:
        chain = AutoMixChain.from_checkpoint(args.checkpoint, predict=predict)
    else:
        chain = AutoMixChain(predict=predict)
    report = evaluate(chain, n_songs=args.songs, seconds=args.seconds, mode=args.mode, progress=True)
    summary = report["summary"]
    print(f"{summary['mixes']} mixes ({args.songs} held-out songs x {len(STYLES)} styles, {args.mode} mode)")
    for name, tolerance in TOLERANCES.items():
        print(
            f"  {name:18} within ±{tolerance:g}: {summary[f'within_{name}']:6.1%}   "
            f"mean |error| {summary[f'mean_abs_error_{name}']:.3g}"
        )
    within, peak_ok = summary["within_all"], summary["true_peak_ok"]
    print(f"  all three within tolerance: {within:.1%}; true peak under the ceiling: {peak_ok:.1%}")
    print(f"  settings pinned at an end of their range: {summary['pinned_share']:.1%}")
    if args.output:
        atomic_write_text(args.output, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
