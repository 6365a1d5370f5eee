"""`make demo`: render the project's synthetic stems through the console and measure the master.

Until the mixer (AutoMixChain) exists this renders the chain at its neutral settings
(`ParameterSpace`): the stems are processed and summed, mastered by the true-peak limiter at the
-1 dBTP ceiling, and the result is measured.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from automix import metrics
from automix.dsp.console import render_mix
from automix.errors import AutomixError
from automix.io import atomic_write_text, save_audio
from automix.params import ParameterSpace
from automix.synth import synth_stems

DEMO_SECONDS = 20.0
DEMO_SAMPLE_RATE = 44100


def measure(mix: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """The measurements every mix is judged by, as plain floats."""
    return {
        "lufs": metrics.integrated_loudness(mix, sample_rate).item(),
        "true_peak_dbtp": metrics.true_peak(mix, sample_rate).item(),
        "spectral_centroid_hz": metrics.spectral_centroid(mix, sample_rate).item(),
        "stereo_ms_ratio": metrics.stereo_ms_ratio(mix).item(),
        "loudness_range_lu": metrics.loudness_range(mix, sample_rate).item(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("demo"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        stems, names = synth_stems(DEMO_SECONDS, DEMO_SAMPLE_RATE, seed=args.seed)
        with torch.no_grad():
            mix, _ = render_mix(stems, DEMO_SAMPLE_RATE, *ParameterSpace().neutral(len(names)))
        analysis = {"stems": list(names), "sample_rate": DEMO_SAMPLE_RATE} | measure(mix, DEMO_SAMPLE_RATE)
        save_audio(args.output_dir / "mix.wav", mix, DEMO_SAMPLE_RATE)
        atomic_write_text(args.output_dir / "analysis.json", json.dumps(analysis, indent=2) + "\n")
    except AutomixError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for key, value in analysis.items():
        print(f"{key:>22}: {value if isinstance(value, list | int) else f'{value:.2f}'}")
    print(f"wrote {args.output_dir / 'mix.wav'} and {args.output_dir / 'analysis.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
