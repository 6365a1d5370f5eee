"""Benchmark: the console render and the loudness meter against their peers, timed in the same run.

- forward: per-stem strip + master of 8 stereo stems x 10 s at 44.1 kHz, vs pedalboard's chain of the
  same stages (4 biquads, compressor, tanh distortion, gain, pan; bus compressor, 4 biquads, M/S width,
  true-peak BrickwallLimiter);
- forward+backward: the same render, measured (LUFS, centroid, M/S) and differentiated with respect
  to every parameter, vs the same pedalboard forward;
- LUFS: `automix.metrics.integrated_loudness` on 10 s stereo vs `pyloudnorm.Meter.integrated_loudness`.

Prints median times, ratios (ours / peer; below 1 is faster) and the process's peak RSS.
Run: `make bench` or `python benchmarks/bench_dsp.py [--repeats N]`.
"""

import argparse
import resource
import statistics
import time

import numpy as np
import pedalboard
import pyloudnorm
import torch

from automix import metrics
from automix.dsp.console import render_mix
from automix.params import ParameterSpace
from automix.synth import synth_stems

SAMPLE_RATE = 44100
SECONDS = 10.0
N_STEMS = 8
CEILING_DBTP = -1.0


def settings(n_stems: int):
    """One engaged setting of every stage, the same for our console and the pedalboard chain."""
    stem, master = ParameterSpace().neutral(n_stems)
    stem |= {
        "eq_gain_db": torch.tensor([3.0, -2.0, 2.5, 4.0]).expand(n_stems, 4).clone(),
        "comp_threshold_db": torch.full((n_stems,), -24.0),
        "comp_ratio": torch.full((n_stems,), 4.0),
        "comp_attack_ms": torch.full((n_stems,), 10.0),
        "comp_release_ms": torch.full((n_stems,), 120.0),
        "comp_makeup_db": torch.full((n_stems,), 3.0),
        "drive": torch.full((n_stems,), 1.5),
        "level_db": torch.full((n_stems,), -6.0),
        "pan": torch.linspace(-0.6, 0.6, n_stems),
    }
    master |= {
        "bus_threshold_db": torch.tensor(-18.0),
        "bus_ratio": torch.tensor(2.0),
        "eq_gain_db": torch.tensor([1.0, -1.0, 1.5, 2.0]),
        "width": torch.tensor(1.2),
        "limiter_threshold": torch.tensor(0.8),
    }
    return stem, master


def pedalboard_render(stems: np.ndarray, stem: dict, master: dict) -> np.ndarray:
    """The same stages with pedalboard's processors; pan and M/S width in numpy (it has neither)."""
    mix = np.zeros((2, stems.shape[-1]), dtype=np.float32)
    for i, audio in enumerate(stems):
        freqs, qs, gains = stem["eq_freq_hz"][i], stem["eq_q"][i], stem["eq_gain_db"][i]
        board = pedalboard.Pedalboard(
            [
                pedalboard.LowShelfFilter(float(freqs[0]), float(gains[0]), float(qs[0])),
                pedalboard.PeakFilter(float(freqs[1]), float(gains[1]), float(qs[1])),
                pedalboard.PeakFilter(float(freqs[2]), float(gains[2]), float(qs[2])),
                pedalboard.HighShelfFilter(float(freqs[3]), float(gains[3]), float(qs[3])),
                pedalboard.Compressor(
                    float(stem["comp_threshold_db"][i]),
                    float(stem["comp_ratio"][i]),
                    float(stem["comp_attack_ms"][i]),
                    float(stem["comp_release_ms"][i]),
                ),
                pedalboard.Gain(float(stem["comp_makeup_db"][i])),
                pedalboard.Distortion(float(20 * torch.log10(stem["drive"][i]))),
                pedalboard.Gain(float(stem["level_db"][i])),
            ]
        )
        processed = board(audio, SAMPLE_RATE)
        angle = (float(stem["pan"][i]) + 1) * np.pi / 4
        mix += processed * np.array([[np.cos(angle)], [np.sin(angle)]], dtype=np.float32)
    freqs, qs, gains = master["eq_freq_hz"], master["eq_q"], master["eq_gain_db"]
    bus = pedalboard.Pedalboard(
        [
            pedalboard.Compressor(float(master["bus_threshold_db"]), float(master["bus_ratio"])),
            pedalboard.LowShelfFilter(float(freqs[0]), float(gains[0]), float(qs[0])),
            pedalboard.PeakFilter(float(freqs[1]), float(gains[1]), float(qs[1])),
            pedalboard.PeakFilter(float(freqs[2]), float(gains[2]), float(qs[2])),
            pedalboard.HighShelfFilter(float(freqs[3]), float(gains[3]), float(qs[3])),
        ]
    )
    mix = bus(mix, SAMPLE_RATE)
    mid, side = (mix[0] + mix[1]) / 2, (mix[0] - mix[1]) / 2 * float(master["width"])
    mix = np.stack([mid + side, mid - side]) / float(master["limiter_threshold"])
    limiter = pedalboard.BrickwallLimiter(ceiling_db=CEILING_DBTP, true_peak=True)
    return limiter(mix.astype(np.float32), SAMPLE_RATE)


def median_seconds(fns: dict, repeats: int) -> dict:
    """Median wall time of each function, name -> seconds. The functions take turns, one call each a
    round, so a change in the machine's load over the run (other tenants of a shared host) reaches all
    of them alike and leaves their ratios fair."""
    for fn in fns.values():
        fn()  # warm-up: numba compilation, FFT plans, allocator
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description="automix DSP benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    songs = [synth_stems(SECONDS, SAMPLE_RATE, seed=seed)[0] for seed in range(N_STEMS // 4)]
    stems = torch.cat(songs)[:N_STEMS].contiguous()
    stem_params, master_params = settings(N_STEMS)
    stems_np = stems.numpy()

    def ours_forward():
        with torch.no_grad():
            return render_mix(stems, SAMPLE_RATE, stem_params, master_params)[0]

    def ours_forward_backward():
        leaves = {k: v.clone().requires_grad_(True) for k, v in stem_params.items()}
        master = {k: v.clone().requires_grad_(True) for k, v in master_params.items()}
        mix, _ = render_mix(stems, SAMPLE_RATE, leaves, master)
        loss = (
            metrics.integrated_loudness(mix, SAMPLE_RATE)
            + metrics.spectral_centroid(mix, SAMPLE_RATE) / 1000
            + metrics.stereo_ms_ratio(mix)
        )
        loss.backward()

    def peer_forward():
        return pedalboard_render(stems_np, stem_params, master_params)

    mix = ours_forward()
    peer_mix = peer_forward()
    mix_np = mix.numpy()
    meter = pyloudnorm.Meter(SAMPLE_RATE)

    rss_before = peak_rss_mb()
    chain_times = median_seconds(
        {"peer": peer_forward, "fwd": ours_forward, "bwd": ours_forward_backward}, args.repeats
    )
    meter_times = median_seconds(
        {
            "peer": lambda: meter.integrated_loudness(mix_np.T),
            "ours": lambda: metrics.integrated_loudness(mix, SAMPLE_RATE),
        },
        args.repeats,
    )
    t_peer, t_pyln = chain_times["peer"], meter_times["peer"]
    rows = [
        ("pedalboard chain, forward", t_peer, None),
        ("automix console, forward", chain_times["fwd"], chain_times["fwd"] / t_peer),
        ("automix console, forward+backward", chain_times["bwd"], chain_times["bwd"] / t_peer),
        ("pyloudnorm integrated loudness", t_pyln, None),
        ("automix integrated_loudness", meter_times["ours"], meter_times["ours"] / t_pyln),
    ]

    print(
        f"{N_STEMS} stereo stems x {SECONDS:g} s at {SAMPLE_RATE} Hz; torch threads {torch.get_num_threads()}"
    )
    print(f"{'':36} {'median s':>9} {'ratio':>7}")
    for name, seconds, ratio in rows:
        print(f"{name:36} {seconds:9.3f} {'' if ratio is None else f'{ratio:6.2f}x':>7}")
    ours_tp = metrics.true_peak(mix, SAMPLE_RATE).item()
    peer_tp = metrics.true_peak(torch.from_numpy(peer_mix), SAMPLE_RATE).item()
    print(f"true peak out: automix {ours_tp:.2f} dBTP, pedalboard {peer_tp:.2f} dBTP")
    print(f"peak RSS: {rss_before:.0f} MB before the timed renders, {peak_rss_mb():.0f} MB at the end")


if __name__ == "__main__":
    main()
