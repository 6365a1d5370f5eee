"""Benchmark: the mixer on a CUDA GPU against the same machine's CPU, measured in one run.

0. the compressors' recursions on GPU tensors: numba's CUDA kernels (one GPU thread a row) against the
   CPU kernels with copies to and from the GPU (`automix.dsp.dynamics.CUDA_KERNEL_MIN_ROWS`);
1. predict mode on 8 stereo stems x 10 s at 44.1 kHz: forward, and forward+backward through the training
   loss, on the CPU and on the GPU in turns;
2. training throughput: a batch of songs (4 stems x 10 s each) forward+backward on the GPU, songs per
   second, for a few batch sizes;
3. per-song optimisation (the default mode) of a 30-s 4-stem song, on the CPU and on the GPU: wall time
   and what the independent meters read;
4. a 4-minute 8-stem song optimised and rendered whole on the GPU: wall time and peak GPU memory.

Run on a machine with a CUDA GPU: `python benchmarks/bench_gpu.py [--repeats N]`.
"""

import argparse
import time
from functools import partial

import torch
from bench_dsp import N_STEMS, SAMPLE_RATE, SECONDS, median_seconds
from bench_mix import eight_stems

from automix import AutoMixChain, create_training_loss, load_style_targets
from automix.dsp import dynamics
from automix.synth import synth_stems
from automix.validation import measure_mix

SONG_STYLE = "rock_punk"
BATCH_SIZES = (8, 32)


def synchronised(fn, device: torch.device):
    """`fn`, returning only once the device's queued kernels have run (a GPU call returns at once)."""

    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def predict_calls(stems: torch.Tensor, device: torch.device) -> dict:
    chain = AutoMixChain(n_stems=stems.shape[-3], sample_rate=SAMPLE_RATE).to(device)
    loss_fn = create_training_loss(load_style_targets())
    stems = stems.to(device)

    def forward():
        with torch.no_grad():
            chain(stems, style=SONG_STYLE, mode="predict")

    def forward_backward():
        chain.zero_grad()
        _, analysis = chain(stems, style=SONG_STYLE, mode="predict")
        loss_fn(analysis, SONG_STYLE).backward()

    return {
        "forward": synchronised(forward, device),
        "forward+backward": synchronised(forward_backward, device),
    }


def ballistics_step(x, zi, at, rt, min_rows: int) -> None:
    dynamics.CUDA_KERNEL_MIN_ROWS = min_rows  # the route `dynamics._on_cpu` takes
    dynamics.ballistics(x, zi, at, rt).sum().backward()


def recursion_routes(repeats: int, gpu: torch.device) -> None:
    """Forward+backward of the gain ballistics on GPU rows, through each route, timed in turns."""
    policy = dynamics.CUDA_KERNEL_MIN_ROWS
    if not dynamics.cuda_kernels_work():
        print("numba's CUDA kernels do not compile here: the recursions run on the CPU")
        return
    print("compressor ballistics forward+backward on the GPU   CUDA kernels   CPU kernels + copies")
    for rows, seconds in ((16, 30.0), (128, 10.0), (16, 240.0)):
        x = torch.rand(rows, round(seconds * SAMPLE_RATE), device=gpu, requires_grad=True)
        zi, at, rt = (torch.full((rows,), value, device=gpu) for value in (0.5, 0.3, 0.001))
        routes = {
            route: synchronised(partial(ballistics_step, x, zi, at, rt, min_rows), gpu)
            for route, min_rows in (("cuda", 1), ("cpu", 10**9))
        }
        times = median_seconds(routes, repeats)
        print(f"  {rows:4} rows x {seconds:5g} s {'':25} {times['cuda']:8.3f} s {times['cpu']:12.3f} s")
    dynamics.CUDA_KERNEL_MIN_ROWS = policy


def optimise_song(stems: torch.Tensor, device: torch.device) -> tuple[float, dict]:
    chain = AutoMixChain(n_stems=stems.shape[0], sample_rate=SAMPLE_RATE).to(device)
    start = time.perf_counter()
    mix, _ = chain(stems.to(device), style=SONG_STYLE)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, measure_mix(mix, SAMPLE_RATE)


def describe(measured: dict) -> str:
    return (f"{measured['lufs']:.2f} LUFS, {measured['spectral_centroid']:.0f} Hz, "
            f"M/S {measured['stereo_ms_ratio']:.3f}, {measured['true_peak_dbtp']:.2f} dBTP")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="automix on a CUDA GPU against the CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--song-seconds", type=float, default=240.0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA GPU here")
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    print(
        f"{torch.cuda.get_device_name(gpu)}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}"
    )

    recursion_routes(args.repeats, gpu)
    stems = eight_stems(SECONDS)
    calls = {
        f"{device.type} {name}": fn
        for device in (cpu, gpu)
        for name, fn in predict_calls(stems, device).items()
    }
    times = median_seconds(calls, args.repeats)
    print(f"\npredict mode, {N_STEMS} stereo stems x {SECONDS:g} s   median s   GPU speed-up")
    for name in ("forward", "forward+backward"):
        t_cpu, t_gpu = times[f"cpu {name}"], times[f"cuda {name}"]
        print(f"  {name:18} CPU {t_cpu:7.3f}   GPU {t_gpu:7.3f}   {t_cpu / t_gpu:6.1f}x")

    print("\ntraining throughput on the GPU (4 stems x 10 s a song, forward+backward)")
    for batch_size in BATCH_SIZES:
        torch.cuda.reset_peak_memory_stats(gpu)
        batch = torch.stack([synth_stems(SECONDS, SAMPLE_RATE, seed=i)[0] for i in range(batch_size)])
        step = predict_calls(batch, gpu)["forward+backward"]
        seconds = median_seconds({"step": step}, args.repeats)["step"]
        peak = torch.cuda.max_memory_allocated(gpu) / 2**30
        print(f"  batch {batch_size:3}: {seconds:6.3f} s a step, {batch_size / seconds:6.1f} songs/s, "
              f"peak GPU memory {peak:.1f} GiB")  # fmt: skip

    song, _ = synth_stems(30.0, SAMPLE_RATE, seed=0)
    optimise_song(song[:, :, : SAMPLE_RATE * 2], gpu)  # warm-up: CUDA kernels, numba's CUDA compile
    print(f"\nper-song optimisation, 30-s 4-stem song, {SONG_STYLE}")
    for device in (cpu, gpu):
        seconds, measured = optimise_song(song, device)
        print(f"  {device.type:4} {seconds:6.1f} s   {describe(measured)}")

    long_song = eight_stems(args.song_seconds, seed=10)
    torch.cuda.reset_peak_memory_stats(gpu)
    seconds, measured = optimise_song(long_song, gpu)
    peak = torch.cuda.max_memory_allocated(gpu) / 2**30
    print(f"\n{args.song_seconds:g}-s {N_STEMS}-stem song on the GPU: {seconds:.1f} s, peak GPU memory "
          f"{peak:.1f} GiB; {describe(measured)}")  # fmt: skip


if __name__ == "__main__":
    main()
