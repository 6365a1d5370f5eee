"""Benchmark: the mixer end to end.

1. predict mode (features -> predictor -> console) on 8 stereo stems x 10 s at 44.1 kHz, forward, and
   forward+backward through the training loss (one training step's work), against pedalboard's chain of
   the same stages timed in the same run; then predict mode forward as `mix.py` runs it, the master
   corrected on full renders (`PredictSettings.refine`);
2. a 4-minute 8-stem synthetic song written to WAV files, then mixed by `mix.py` as a user would
   (default mode: per-song optimisation, full-length render, 24-bit WAV out): wall time and the peak RSS
   of that process (the synthesis is not part of it).

Run: `make bench` or `python benchmarks/bench_mix.py [--repeats N] [--song-seconds S]`.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_dsp import N_STEMS, SAMPLE_RATE, SECONDS, median_seconds, pedalboard_render, settings

from automix import AutoMixChain, create_training_loss, load_style_targets
from automix.io import save_audio
from automix.memory import retain_freed_memory
from automix.synth import synth_stems

SONG_SECONDS = 240.0
ROOT = Path(__file__).resolve().parents[1]


def eight_stems(seconds: float, seed: int = 0) -> torch.Tensor:
    """Two synthetic songs' stems side by side: drums, bass, chords, lead twice."""
    return torch.cat([synth_stems(seconds, SAMPLE_RATE, seed=seed + i)[0] for i in range(2)])


def song_run(seconds: float) -> dict:
    """Write a song's 8 stems as WAV files, mix them with `mix.py` in its own process: its wall time, its
    peak RSS and what it measured."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        stems = eight_stems(seconds, seed=10)
        paths = [
            save_audio(folder / f"stem{index}.wav", stem, SAMPLE_RATE, subtype="FLOAT")
            for index, stem in enumerate(stems)
        ]
        del stems  # the child's peak RSS counts what it shares with this process when it starts
        command = [sys.executable, str(ROOT / "mix.py"), "--stems", *map(str, paths), "--style", "rock_punk"]
        command += ["--output", str(folder / "mix.wav"), "--analysis-output", str(folder / "analysis.json")]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        analysis = json.loads((folder / "analysis.json").read_text())
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": elapsed, "peak_rss_mb": peak_rss_mb, **analysis}


def main() -> None:
    parser = argparse.ArgumentParser(description="automix mixer benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--song-seconds", type=float, default=SONG_SECONDS)
    args = parser.parse_args()
    # First, while this process is small: a child's peak RSS includes this process's memory at the fork.
    song = song_run(args.song_seconds)
    retain_freed_memory()  # as mix.py does (`automix.cli.run_cli`); pedalboard keeps its own buffers

    stems = eight_stems(SECONDS)
    # The peer's stages: the predictor's pass and the loudness search, without mix.py's master correction.
    chain = AutoMixChain(n_stems=N_STEMS, sample_rate=SAMPLE_RATE, predict={"refine": False})
    refined = AutoMixChain(n_stems=N_STEMS, sample_rate=SAMPLE_RATE)
    loss_fn = create_training_loss(load_style_targets())
    stem_params, master_params = settings(N_STEMS)
    stems_np = stems.numpy()

    def predict_forward():
        with torch.no_grad():
            chain(stems, style="rock_punk", mode="predict")

    def refined_forward():
        with torch.no_grad():
            refined(stems, style="rock_punk", mode="predict")

    def predict_forward_backward():
        chain.zero_grad()
        _, analysis = chain(stems, style="rock_punk", mode="predict")
        loss_fn(analysis, "rock_punk").backward()

    times = median_seconds(
        {
            "peer": lambda: pedalboard_render(stems_np, stem_params, master_params),
            "fwd": predict_forward,
            "bwd": predict_forward_backward,
            "refined": refined_forward,
        },
        args.repeats,
    )
    t_peer, t_fwd, t_bwd = times["peer"], times["fwd"], times["bwd"]
    print(
        f"{N_STEMS} stereo stems x {SECONDS:g} s at {SAMPLE_RATE} Hz; torch threads {torch.get_num_threads()}"
    )
    print(f"{'':40} {'median s':>9} {'ratio':>7}")
    print(f"{'pedalboard chain, forward':40} {t_peer:9.3f}")
    print(f"{'automix predict mode, forward':40} {t_fwd:9.3f} {t_fwd / t_peer:6.2f}x")
    print(f"{'automix predict mode, forward+backward':40} {t_bwd:9.3f} {t_bwd / t_peer:6.2f}x")
    t_refined = times["refined"]
    print(f"{'  with the master corrected (mix.py)':40} {t_refined:9.3f} {t_refined / t_peer:6.2f}x")

    print(f"{args.song_seconds:g} s {N_STEMS}-stem song, mix.py (optimise + full render, rock_punk): "
          f"{song['seconds']:.1f} s, peak RSS {song['peak_rss_mb']:.0f} MB; "
          f"{song['lufs']:.2f} LUFS, {song['spectral_centroid']:.0f} Hz, "
          f"M/S {song['stereo_ms_ratio']:.2f}, {song['true_peak_dbtp']:.2f} dBTP")  # fmt: skip


if __name__ == "__main__":
    main()
