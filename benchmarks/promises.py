"""The default mode's promises on synthetic songs: each 30-second song mixed to every style by
`AutoMixChain` in optimize mode (what `mix.py` runs), judged by the validation suite's independent meters
(`automix.validation.measure_mix`: pyloudnorm, the 16x reconstruction by `scipy.signal.resample`) against
±0.5 LU, ±100 Hz, ±0.05 and ≤ −1 dBTP, with the wall time of each mix.

Run: `python benchmarks/promises.py [--seeds 0-7] [--arrangement full|no_drums|rhythm|band] [--tempo BPM]`.
"""

import argparse
import time

import torch

from automix import AutoMixChain, load_style_targets
from automix.settings import load_mix_settings
from automix.synth import synth_stems
from automix.validation import ARRANGEMENTS, measure_mix

SAMPLE_RATE = 44100
SONG_S = 30.0
PYLOUDNORM_BIAS_LU = 0.05  # its textbook K-weighting reads ~0.04 LU below ITU's exact filter


def seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def kept_promises(mix: torch.Tensor, sample_rate: int, style, ceiling_dbtp: float) -> tuple[dict, bool]:
    """A mix `[2, T]` read by the independent meters (`measure_mix`, pyloudnorm's bias made up), and
    whether it keeps the default mode's promises (conf/mix.yaml `optimize.promise`) to the style, under the
    ceiling."""
    measured = measure_mix(mix, sample_rate)
    measured["lufs"] += PYLOUDNORM_BIAS_LU
    wanted = {"lufs": style.lufs, "spectral_centroid": style.spectral_centroid_hz,
              "stereo_ms_ratio": style.stereo_ms_ratio}  # fmt: skip
    promise = load_mix_settings().optimize.promise
    ok = all(abs(measured[k] - wanted[k]) <= tol for k, tol in zip(wanted, promise, strict=True))
    return measured, ok and measured["true_peak_dbtp"] <= ceiling_dbtp


def summary(measured: dict, ok: bool) -> str:
    return (
        f"{measured['lufs']:7.2f} LUFS {measured['spectral_centroid']:6.0f} Hz  "
        f"M/S {measured['stereo_ms_ratio']:.3f}  {measured['true_peak_dbtp']:.2f} dBTP  "
        + ("PASS" if ok else "FAIL")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="automix: the default mode's promises on synthetic songs")
    parser.add_argument("--seeds", type=seeds, default=seeds("0-7"), help="e.g. 0-7 or 3")
    parser.add_argument("--arrangement", choices=sorted(ARRANGEMENTS), default="full")
    parser.add_argument("--tempo", type=float, default=None, help="BPM (default: each seed's own)")
    args = parser.parse_args()
    targets = load_style_targets()
    kept = total = 0
    for seed in args.seeds:
        stems = synth_stems(
            SONG_S, SAMPLE_RATE, tempo_bpm=args.tempo, seed=seed, stems=ARRANGEMENTS[args.arrangement]
        )[0]
        chain = AutoMixChain(n_stems=stems.shape[0], sample_rate=SAMPLE_RATE, style_targets=targets)
        for name, style in targets.items():
            torch.manual_seed(0)
            start = time.perf_counter()
            mix, _ = chain(stems, style=name)
            seconds = time.perf_counter() - start
            measured, ok = kept_promises(mix, SAMPLE_RATE, style, chain.ceiling_dbtp)
            kept, total = kept + ok, total + 1
            print(f"seed {seed} {name:12} {seconds:5.1f} s  {summary(measured, ok)}", flush=True)
    print(f"{kept} / {total} mixes within ±0.5 LU, ±100 Hz, ±0.05 and under the ceiling")


if __name__ == "__main__":
    main()
