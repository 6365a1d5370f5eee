"""Benchmark: the mixer end to end.

1. predict mode (features -> predictor -> console) on 8 stereo stems x 10 s at 44.1 kHz, forward, and
   forward+backward through the training loss (one training step's work), against pedalboard's chain of
   the same stages timed in the same run;
2. a 4-minute 8-stem synthetic song mixed by the default per-song optimisation and rendered at full
   length, in a fresh process: wall time and that process's peak RSS.

Run: `make bench` or `python benchmarks/bench_mix.py [--repeats N] [--song-seconds S]`.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from bench_dsp import N_STEMS, SAMPLE_RATE, SECONDS, median_seconds, pedalboard_render, settings

from automix import AutoMixChain, create_training_loss, load_style_targets
from automix.synth import synth_stems

SONG_SECONDS = 240.0


def eight_stems(seconds: float, seed: int = 0) -> torch.Tensor:
    """Two synthetic songs' stems side by side: drums, bass, chords, lead twice."""
    return torch.cat([synth_stems(seconds, SAMPLE_RATE, seed=seed + i)[0] for i in range(2)])


def song_run(seconds: float) -> None:
    """Mix one long song and print its figures as JSON (run in its own process for a clean RSS)."""
    stems = eight_stems(seconds, seed=10)
    chain = AutoMixChain(n_stems=N_STEMS, sample_rate=SAMPLE_RATE)
    start = time.perf_counter()
    _, analysis = chain(stems, style="rock_punk")
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "seconds": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "lufs": float(analysis["lufs"]), "centroid_hz": float(analysis["spectral_centroid"]),
        "ms_ratio": float(analysis["stereo_ms_ratio"]), "true_peak_dbtp": float(analysis["true_peak_dbtp"]),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="automix mixer benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--song-seconds", type=float, default=SONG_SECONDS)
    parser.add_argument("--song-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.song_only:
        song_run(args.song_seconds)
        return

    stems = eight_stems(SECONDS)
    chain = AutoMixChain(n_stems=N_STEMS, sample_rate=SAMPLE_RATE)
    loss_fn = create_training_loss(load_style_targets())
    stem_params, master_params = settings(N_STEMS)
    stems_np = stems.numpy()

    def predict_forward():
        with torch.no_grad():
            chain(stems, style="rock_punk", mode="predict")

    def predict_forward_backward():
        chain.zero_grad()
        _, analysis = chain(stems, style="rock_punk", mode="predict")
        loss_fn(analysis, "rock_punk").backward()

    t_peer = median_seconds(lambda: pedalboard_render(stems_np, stem_params, master_params), args.repeats)
    t_fwd = median_seconds(predict_forward, args.repeats)
    t_bwd = median_seconds(predict_forward_backward, args.repeats)
    print(
        f"{N_STEMS} stereo stems x {SECONDS:g} s at {SAMPLE_RATE} Hz; torch threads {torch.get_num_threads()}"
    )
    print(f"{'':40} {'median s':>9} {'ratio':>7}")
    print(f"{'pedalboard chain, forward':40} {t_peer:9.3f}")
    print(f"{'automix predict mode, forward':40} {t_fwd:9.3f} {t_fwd / t_peer:6.2f}x")
    print(f"{'automix predict mode, forward+backward':40} {t_bwd:9.3f} {t_bwd / t_peer:6.2f}x")

    command = [sys.executable, __file__, "--song-only", "--song-seconds", str(args.song_seconds)]
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    print(f"{args.song_seconds:g} s {N_STEMS}-stem song, optimise + full render (rock_punk): "
          f"{result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB; "
          f"{result['lufs']:.2f} LUFS, {result['centroid_hz']:.0f} Hz, M/S {result['ms_ratio']:.2f}, "
          f"{result['true_peak_dbtp']:.2f} dBTP")  # fmt: skip


if __name__ == "__main__":
    main()
