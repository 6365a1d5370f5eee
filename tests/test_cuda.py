"""The mixer on a CUDA GPU gives what it gives on the CPU: torchcomp's CUDA kernel for the compressors'
ballistics, the FFT filters, the whole chain forward and backward, per-song optimisation, `mix.py
--device cuda` and a Lightning training run on `trainer=gpu`. Skipped where there is no GPU (CI has
none); on one, `pytest tests/test_cuda.py`."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from automix import AutoMixChain, create_training_loss, load_style_targets
from automix.dsp import dynamics, filters
from automix.synth import synth_stems
from automix.validation import measure_mix

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SAMPLE_RATE = 44100
ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.cpu() - reference).norm() / reference.norm())


def scalar(analysis: dict, key: str) -> float:
    return float(analysis[key].detach().cpu())


@pytest.mark.parametrize("route", ["numba CUDA kernels", "CPU kernels"])
def test_ballistics_and_their_gradients_match_the_cpu(route, monkeypatch):
    if route == "CPU kernels":
        monkeypatch.setattr(dynamics, "CUDA_KERNEL_MIN_ROWS", 10**9)
    elif not dynamics.cuda_kernels_work():
        pytest.skip("numba's CUDA kernels do not compile here")
    else:
        monkeypatch.setattr(dynamics, "CUDA_KERNEL_MIN_ROWS", 1)
    torch.manual_seed(0)
    x = torch.rand(3, 20000, dtype=torch.float64)
    zi = torch.rand(3, dtype=torch.float64)
    at, rt = (torch.full((3,), value, dtype=torch.float64) for value in (0.3, 0.01))
    results = {}
    for device in ("cpu", "cuda"):
        inputs = [t.detach().to(device).requires_grad_() for t in (x, zi, at, rt)]
        y = dynamics.ballistics(*inputs)
        (y * torch.linspace(0, 1, y.shape[-1], device=device, dtype=y.dtype)).sum().backward()
        results[device] = [y.detach().cpu(), *(t.grad.cpu() for t in inputs)]
    for value, reference in zip(results["cuda"], results["cpu"], strict=True):
        assert relative_error(value, reference) < 1e-9


def test_eq_with_quadrature_matches_scipy_on_cuda():
    torch.manual_seed(1)
    x = torch.randn(2, 30000, dtype=torch.float64)
    b, a = filters.peaking(torch.tensor([6.0, -4.0]), torch.tensor([900.0, 3000.0]), 1.2, SAMPLE_RATE)
    b, a = b.double().to(CUDA), a.double().to(CUDA)
    pad = dynamics.hilbert_pad_samples(SAMPLE_RATE)
    y, quadrature = filters.biquads_with_quadrature(x.to(CUDA), b, a, SAMPLE_RATE, pad)
    reference = x.numpy()
    for section in range(b.shape[0]):
        reference = scipy.signal.lfilter(b[section].cpu().numpy(), a[section].cpu().numpy(), reference)
    assert relative_error(y, torch.from_numpy(reference)) < 1e-6
    hilbert = np.imag(scipy.signal.hilbert(reference, axis=-1))
    middle = slice(5000, 25000)  # away from the ends, where the whole-signal transforms differ
    assert relative_error(quadrature[..., middle], torch.from_numpy(hilbert[..., middle])) < 1e-3


def test_predict_mode_forward_and_backward_match_the_cpu():
    stems, _ = synth_stems(6.0, SAMPLE_RATE, seed=4)
    loss_fn = create_training_loss(load_style_targets())
    results = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        chain = AutoMixChain(n_stems=4, sample_rate=SAMPLE_RATE).to(device)
        mix, analysis = chain(stems.to(device), style="rnb_ballad", mode="predict")
        loss_fn(analysis, "rnb_ballad").backward()
        gradient = torch.cat([p.grad.flatten() for p in chain.parameters() if p.grad is not None])
        results[device] = (mix.detach().cpu(), analysis, gradient.cpu())
    (mix_gpu, analysis_gpu, grad_gpu), (mix_cpu, analysis_cpu, grad_cpu) = results["cuda"], results["cpu"]
    assert relative_error(mix_gpu, mix_cpu) < 1e-4
    assert abs(scalar(analysis_gpu, "lufs") - scalar(analysis_cpu, "lufs")) < 0.01
    assert abs(scalar(analysis_gpu, "spectral_centroid") - scalar(analysis_cpu, "spectral_centroid")) < 1.0
    assert grad_cpu.norm() > 0 and relative_error(grad_gpu, grad_cpu) < 1e-3


@pytest.mark.parametrize("style", ["rock_punk", "rnb_ballad", "country_pop"])
def test_optimize_mode_on_cuda_reaches_the_promised_tolerances(style):
    stems, _ = synth_stems(8.0, SAMPLE_RATE, seed=11)
    chain = AutoMixChain(n_stems=4, sample_rate=SAMPLE_RATE).to(CUDA)
    mix, _ = chain(stems.to(CUDA), style=style)
    assert mix.device.type == "cuda" and mix.shape == (2, stems.shape[-1])
    measured, target = measure_mix(mix, SAMPLE_RATE), load_style_targets()[style]
    assert abs(measured["lufs"] - target.lufs) <= 0.5
    assert abs(measured["spectral_centroid"] - target.spectral_centroid_hz) <= 100
    assert abs(measured["stereo_ms_ratio"] - target.stereo_ms_ratio) <= 0.05
    assert measured["true_peak_dbtp"] <= -1.0


def test_mix_py_on_cuda_writes_a_validated_mix(tmp_path):
    output = tmp_path / "mix.wav"
    result = subprocess.run(
        [sys.executable, str(ROOT / "mix.py"), "--test-stems", "4", "--style", "country_pop", "--device",
         "cuda", "--output", str(output), "--validate", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(output)
    assert rate == SAMPLE_RATE and audio.shape[1] == 2 and np.isfinite(audio).all()


def test_train_py_on_the_gpu_trainer_writes_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "experiment=smoke", "trainer=gpu", "trainer.max_steps=4",
         f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = run_dir / "checkpoints" / "automix.ckpt"
    chain = AutoMixChain.from_checkpoint(checkpoint, style_targets=load_style_targets())
    assert next(chain.parameters()).device.type == "cpu"  # a GPU-trained checkpoint loads on a CPU machine
