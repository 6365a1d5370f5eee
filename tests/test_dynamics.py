"""Compressor and true-peak limiter against closed forms and an independent scipy true-peak meter."""

import gc
import importlib
import math
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import correlate, resample_poly

from automix.dsp import dynamics, filters
from automix.dsp.dynamics import _GainComputer, ballistics, compressor
from automix.dsp.limiter import _detector_branches, _PeakOverPhases, _sliding_max, limiter
from automix.dsp.oversample import polyphase_fir
from automix.units import db_to_amp, power_to_db

SR = 44100
# Slack on the independent true-peak reading: float rounding only (the limiter keeps a margin itself).
TP_SLACK_DB = 0.001


def giannoulis_gain_db(level_db, threshold_db, ratio, knee_db):
    """Soft-knee static gain (Giannoulis, Massberg & Reiss, JAES 2012, eq. 4), written out in numpy."""
    level_db = np.asarray(level_db, dtype=float)
    over = level_db - threshold_db
    above = (1.0 / ratio - 1.0) * over
    if knee_db == 0:
        return np.where(over > 0, above, 0.0)
    knee = (1.0 / ratio - 1.0) * (over + knee_db / 2) ** 2 / (2 * knee_db)
    return np.where(2 * over < -knee_db, 0.0, np.where(2 * over > knee_db, above, knee))


def stereo_tone(freq_hz, amplitude, n_samples, sample_rate=SR):
    """`[..., 2, T]` sine pair (right channel phase-shifted); `amplitude` `[...]` is the peak."""
    t = np.arange(n_samples) / sample_rate
    pair = np.stack([np.sin(2 * np.pi * freq_hz * t), np.sin(2 * np.pi * freq_hz * t + 1.0)])
    return np.asarray(amplitude)[..., None, None] * pair


def rms_db(a):
    return 10 * np.log10(np.mean(np.square(a)))


def true_peak_db(y):
    """Independent 4x true-peak meter: scipy's polyphase resampler, max |.| over all channels."""
    y = np.asarray(y, dtype=np.float64)
    return 20 * np.log10(np.abs(resample_poly(y, 4, 1, axis=-1)).max())


def gain_of(y, x, peak):
    """Per-sample gain applied to x's first channel: y / x where |x| > peak / 2 (`peak` `[T]`, x's local
    peak amplitude; away from zero crossings), interpolated between."""
    y, x = y[0], x[0]
    usable = np.abs(x) > 0.5 * peak
    idx = np.arange(x.size)
    return np.interp(idx, idx[usable], y[usable] / x[usable])


# ---------------------------------------------------------------- compressor


@pytest.mark.parametrize("freq_hz", [1000.0, 200.0])
@pytest.mark.parametrize("ratio", [1.5, 4.0, 10.0])
@pytest.mark.parametrize("knee_db", [0.0, 6.0, 12.0])
def test_compressor_static_curve_matches_giannoulis(freq_hz, ratio, knee_db):
    threshold_db = -20.0
    levels_db = np.array([-40.0, -28.0, -24.0, -22.0, -20.0, -18.0, -16.0, -12.0, -6.0, -3.0])
    n_samples = SR // 2
    x = stereo_tone(freq_hz, math.sqrt(2) * 10 ** (levels_db / 20), n_samples)  # RMS = level
    y = compressor(
        torch.from_numpy(x),
        SR,
        threshold_db=threshold_db,
        ratio=ratio,
        attack_ms=5.0,
        release_ms=50.0,
        makeup_db=0.0,
        knee_db=knee_db,
    ).numpy()
    settled = slice(n_samples // 2, None)
    measured = [rms_db(y[i, :, settled]) - rms_db(x[i, :, settled]) for i in range(len(levels_db))]
    expected = giannoulis_gain_db(levels_db, threshold_db, ratio, knee_db)
    np.testing.assert_allclose(measured, expected, atol=0.1)


def rise_time_ms(gain, start, sample_rate):
    """10-90 % time of the change of `gain` after sample `start` (from its value before to its final)."""
    before, after = gain[start - 1], gain[-1]
    frac = (gain[start:] - before) / (after - before)
    t10 = np.argmax(frac >= 0.1)
    t90 = np.argmax(frac >= 0.9)
    return (t90 - t10) * 1000.0 / sample_rate


@pytest.mark.parametrize("sample_rate", [44100, 48000])
@pytest.mark.parametrize(("attack_ms", "release_ms"), [(5.0, 50.0), (20.0, 200.0), (50.0, 500.0)])
def test_compressor_attack_and_release_times(sample_rate, attack_ms, release_ms):
    # A 1 kHz tone steps -40 -> -10 dB RMS (attack) or -10 -> -40 dB (release) across a -30 dB threshold.
    quiet, loud = 10 ** (-40 / 20), 10 ** (-10 / 20)
    for step_up, expected_ms in [(True, attack_ms), (False, release_ms)]:
        start = int(0.2 * sample_rate)
        n_samples = start + int(5 * expected_ms * sample_rate / 1000)
        level = np.where(np.arange(n_samples) < start, *((quiet, loud) if step_up else (loud, quiet)))
        x = stereo_tone(1000.0, math.sqrt(2), n_samples, sample_rate) * level
        y = compressor(
            torch.from_numpy(x),
            sample_rate,
            threshold_db=-30.0,
            ratio=4.0,
            attack_ms=attack_ms,
            release_ms=release_ms,
            makeup_db=0.0,
            knee_db=0.0,
        ).numpy()
        measured = rise_time_ms(gain_of(y, x, math.sqrt(2) * level), start, sample_rate)
        assert measured == pytest.approx(expected_ms, rel=0.1)


def test_compressor_ratio_one_is_makeup_only():
    x = torch.randn(3, 2, 4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = compressor(
        x, SR, threshold_db=-40.0, ratio=1.0, attack_ms=1.0, release_ms=10.0, makeup_db=6.0, knee_db=6.0
    )
    torch.testing.assert_close(y, x * 10 ** (6 / 20), rtol=1e-9, atol=0)


def test_compressor_is_linked_and_batched():
    gen = torch.Generator().manual_seed(2)
    x = (
        torch.randn(3, 2, 2, 8192, dtype=torch.float64, generator=gen)
        * torch.tensor([0.1, 0.5])[:, None, None]
    )
    thresholds = torch.tensor([[-30.0, -20.0], [-25.0, -10.0], [-40.0, -15.0]])
    y = compressor(x, SR, threshold_db=thresholds, ratio=4.0, attack_ms=5.0, release_ms=50.0, makeup_db=0.0)
    assert y.shape == x.shape
    gain = y / x
    torch.testing.assert_close(gain[..., 0, :], gain[..., 1, :])  # one gain for both channels
    single = compressor(
        x[2, 1], SR, threshold_db=-15.0, ratio=4.0, attack_ms=5.0, release_ms=50.0, makeup_db=0.0
    )
    torch.testing.assert_close(y[2, 1], single)


def test_compressor_float32_matches_float64():
    x = torch.randn(2, 2, 8192, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.3
    kwargs = dict(threshold_db=-24.0, ratio=6.0, attack_ms=3.0, release_ms=80.0, makeup_db=4.0, knee_db=6.0)
    y64 = compressor(x, SR, **kwargs)
    y32 = compressor(x.float(), SR, **kwargs)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-5)


def swelling_noise(n_samples, seed, dtype=torch.float64):
    """Stereo noise whose level swells and decays across a compressor's threshold and knee."""
    gen = torch.Generator().manual_seed(seed)
    envelope = torch.sin(torch.linspace(0, 3 * math.pi, n_samples, dtype=dtype)).abs() * 0.5 + 0.01
    return torch.randn(2, n_samples, generator=gen, dtype=dtype) * envelope


def test_compressor_gradients_reach_every_parameter():
    x = swelling_noise(8192, seed=1).repeat(2, 1, 1).requires_grad_()
    params = {
        "threshold_db": torch.tensor([-20.0, -30.0]),
        "ratio": torch.tensor([4.0, 2.0]),
        "attack_ms": torch.tensor([5.0, 20.0]),
        "release_ms": torch.tensor([50.0, 200.0]),
        "makeup_db": torch.tensor([3.0, 0.0]),
        "knee_db": torch.tensor([6.0, 12.0]),
    }
    params = {k: v.double().requires_grad_() for k, v in params.items()}
    compressor(x, SR, **params).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, tensor in params.items():
        assert torch.isfinite(tensor.grad).all() and (tensor.grad != 0).all(), name


def test_the_fused_gain_computer_differentiates_as_autograd_does_its_steps():
    """Levels on both sides of and inside every knee (a hard one among them), and below the dB floor:
    the closed-form backward gives autograd's gradients of
    `db_to_amp(soft_knee_gain_db(power_to_db(power), ...))`, and passes gradcheck."""
    torch.manual_seed(0)
    level_db = torch.empty(3, 400, dtype=torch.float64).uniform_(-60.0, 0.0)
    level_db[:, :3] = -300.0  # under `power_to_db`'s floor: gain 1, no gradient
    power = (10 ** (level_db / 10)).requires_grad_()
    settings = [
        torch.tensor(column, dtype=torch.float64)[:, None].requires_grad_()
        for column in ([-30.0, -20.0, -10.0], [4.0, 1.5, 10.0], [6.0, 0.0, 12.0])
    ]
    weights = torch.randn(3, 400, dtype=torch.float64)
    steps = db_to_amp(dynamics.soft_knee_gain_db(power_to_db(power), *settings))
    expected = torch.autograd.grad((steps * weights).sum(), (power, *settings))
    fused = _GainComputer.apply(power, *settings)
    torch.testing.assert_close(fused, steps)
    got = torch.autograd.grad((fused * weights).sum(), (power, *settings))
    for name, a, b in zip(("power", "threshold", "ratio", "knee"), got, expected, strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert torch.autograd.gradcheck(_GainComputer.apply, (power[:, :40], *settings))


def test_compressor_gradcheck():
    sample_rate = 8000
    x = swelling_noise(256, seed=2).unsqueeze(0).requires_grad_()
    params = [
        torch.tensor([v], dtype=torch.float64, requires_grad=True) for v in (-20.0, 4.0, 3.0, 30.0, 2.0, 6.0)
    ]

    def run(x, threshold_db, ratio, attack_ms, release_ms, makeup_db, knee_db):
        return compressor(
            x,
            sample_rate,
            threshold_db=threshold_db,
            ratio=ratio,
            attack_ms=attack_ms,
            release_ms=release_ms,
            makeup_db=makeup_db,
            knee_db=knee_db,
        )

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- limiter


def adversarial(kind, sample_rate, seed=0):
    """Signals that stress a true-peak limiter, `[2, T]` float64."""
    rng = np.random.default_rng(seed)
    n = sample_rate // 2
    t = np.arange(n) / sample_rate
    if kind == "quarter_rate_sine":  # samples at +/-2 (+6 dBFS), true peak 3 dB above them
        sig = 2 * math.sqrt(2) * np.sin(2 * np.pi * sample_rate / 4 * t + np.pi / 4)
        return np.stack([sig, sig])
    if kind in ("square", "square_hot"):
        sig = (2.0 if kind == "square_hot" else 1.0) * np.sign(np.sin(2 * np.pi * 997 * t + 0.1))
        return np.stack([sig, -sig])
    if kind == "drums":  # decaying noise bursts with abrupt onsets, peaks +10 dBFS
        x = np.zeros((2, n))
        for onset in range(0, n - n // 8, n // 7):
            length = n // 8
            decay = np.exp(-np.arange(length) / (0.02 * sample_rate))
            x[:, onset : onset + length] += rng.standard_normal((2, length)) * decay * rng.uniform(0.3, 1)
        return x * 10 ** (10 / 20) / np.abs(x).max()
    if kind == "dense_noise":
        x = rng.standard_normal((2, n))
        return x * 10 ** (6 / 20) / np.abs(x).max()
    raise ValueError(kind)


KINDS = ["quarter_rate_sine", "square", "square_hot", "drums", "dense_noise"]


@pytest.mark.parametrize("sample_rate", [44100, 48000])
@pytest.mark.parametrize("ceiling_dbtp", [-1.0, -0.1])
@pytest.mark.parametrize("kind", KINDS)
def test_limiter_true_peak_never_exceeds_ceiling(sample_rate, ceiling_dbtp, kind):
    x = adversarial(kind, sample_rate)
    y = limiter(torch.from_numpy(x).float(), sample_rate, ceiling_dbtp=ceiling_dbtp)
    assert y.shape == x.shape
    assert true_peak_db(y.numpy()) <= ceiling_dbtp + TP_SLACK_DB


@pytest.mark.parametrize(("lookahead_ms", "release_ms"), [(1.0, 10.0), (0.2, 500.0), (20.0, 50.0)])
def test_limiter_ceiling_holds_for_other_timings(lookahead_ms, release_ms):
    for kind in ("drums", "dense_noise"):
        x = torch.from_numpy(adversarial(kind, SR, seed=3))
        y = limiter(x, SR, ceiling_dbtp=-1.0, lookahead_ms=lookahead_ms, release_ms=release_ms)
        assert true_peak_db(y.numpy()) <= -1.0 + TP_SLACK_DB


def test_limiter_passes_signal_below_ceiling_unchanged():
    x = adversarial("drums", SR)
    x *= 10 ** ((-1.0 - 6.0 - true_peak_db(x)) / 20)  # true peak 6 dB under the ceiling
    x = torch.from_numpy(x).float()
    assert torch.equal(limiter(x, SR, ceiling_dbtp=-1.0), x)


def test_limiter_output_is_time_aligned():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, SR)) * 0.05
    x[:, [5000, 17000, 31000]] = [[1.5, -2.0, 1.8], [1.2, -1.7, 2.1]]  # a few peaks over the ceiling
    y = limiter(torch.from_numpy(x), SR, ceiling_dbtp=-1.0).numpy()
    xcorr = correlate(y[0], x[0], mode="full", method="fft")
    assert np.argmax(xcorr) - (x.shape[-1] - 1) == 0


def test_limiter_steady_hot_tone_sits_at_ceiling():
    # Not attenuated more than needed: a steady +6 dB tone comes out at the ceiling (within 0.05 dB).
    x = stereo_tone(440.0, 2.0, SR // 2)
    y = limiter(torch.from_numpy(x), SR, ceiling_dbtp=-1.0).numpy()
    settled = y[:, SR // 8 : -SR // 8]
    assert -1.05 <= true_peak_db(settled) <= -1.0 + TP_SLACK_DB


def test_limiter_loudness_is_sensible_on_hot_noise():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, SR))
    x *= 10 ** (3 / 20) / np.abs(x).max()
    ceiling = 10 ** (-1 / 20)
    y = limiter(torch.from_numpy(x), SR, ceiling_dbtp=-1.0, release_ms=100.0).numpy()
    # A per-sample brick wall (clipping at the ceiling) is the loudest any ceiling-respecting gain can be.
    ideal_db = rms_db(np.clip(x, -ceiling, ceiling))
    assert ideal_db - 3.0 <= rms_db(y) <= ideal_db
    # And no quieter than a peer look-ahead true-peak limiter with the same settings.
    pedalboard = pytest.importorskip("pedalboard")
    peer = pedalboard.BrickwallLimiter(ceiling_db=-1.0, release_ms=100.0, lookahead_ms=5.0, true_peak=True)
    assert rms_db(y) >= rms_db(peer(x.astype(np.float32), SR)) - 0.1


def test_limiter_float32_matches_float64():
    x = torch.from_numpy(adversarial("drums", SR))
    torch.testing.assert_close(limiter(x.float(), SR).double(), limiter(x, SR), rtol=1e-4, atol=1e-5)


def test_limiter_gradients():
    x = torch.from_numpy(adversarial("drums", SR)[:, : SR // 4]).requires_grad_()
    ceiling = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    release = torch.tensor(60.0, dtype=torch.float64, requires_grad=True)
    limiter(x, SR, ceiling_dbtp=ceiling, release_ms=release).square().mean().backward()
    for name, tensor in [("x", x), ("ceiling", ceiling), ("release", release)]:
        assert torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- properties

SIGNALS = st.sampled_from(["silence", "dc", "full_scale_noise", "quiet_noise", "impulse"])


def probe_signal(kind, seed, n_samples=1024):
    gen = torch.Generator().manual_seed(seed)
    if kind == "silence":
        return torch.zeros(2, n_samples)
    if kind == "dc":
        return torch.ones(2, n_samples) * (1 - 2 * (seed % 2))
    if kind == "impulse":
        x = torch.zeros(2, n_samples)
        x[:, n_samples // 2] = 1.0
        return x
    x = torch.rand(2, n_samples, generator=gen) * 2 - 1
    return x if kind == "full_scale_noise" else x * 1e-6


@settings(max_examples=40, deadline=None)
@given(
    kind=SIGNALS,
    seed=st.integers(0, 2**16),
    threshold_db=st.floats(-40, -6),
    ratio=st.floats(1, 10),
    attack_ms=st.floats(1, 100),
    release_ms=st.floats(10, 1000),
    makeup_db=st.floats(0, 12),
    knee_db=st.floats(0, 12),
)
def test_compressor_finite_for_any_parameters(
    kind, seed, threshold_db, ratio, attack_ms, release_ms, makeup_db, knee_db
):
    x = probe_signal(kind, seed).requires_grad_()
    params = {
        "threshold_db": threshold_db,
        "ratio": ratio,
        "attack_ms": attack_ms,
        "release_ms": release_ms,
        "makeup_db": makeup_db,
        "knee_db": knee_db,
    }
    params = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    y = compressor(x, SR, **params)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for tensor in [x, *params.values()]:
        assert torch.isfinite(tensor.grad).all()


@settings(max_examples=40, deadline=None)
@given(
    kind=SIGNALS,
    seed=st.integers(0, 2**16),
    ceiling_dbtp=st.floats(-6, 0),
    release_ms=st.floats(10, 500),
    gain_db=st.floats(-20, 20),
)
def test_limiter_finite_and_under_ceiling_for_any_parameters(kind, seed, ceiling_dbtp, release_ms, gain_db):
    x = (probe_signal(kind, seed) * 10 ** (gain_db / 20)).requires_grad_()
    ceiling = torch.tensor(ceiling_dbtp, requires_grad=True)
    release = torch.tensor(release_ms, requires_grad=True)
    y = limiter(x, SR, ceiling_dbtp=ceiling, release_ms=release)
    assert torch.isfinite(y).all()
    if y.abs().max() > 0:
        assert true_peak_db(y.detach().numpy()) <= ceiling_dbtp + TP_SLACK_DB
    y.square().mean().backward()
    for tensor in (x, ceiling, release):
        assert torch.isfinite(tensor.grad).all()


# ---------------------------------------------------------------- the limiter's detector, against autograd


def test_sliding_max_matches_max_pool_with_its_gradient():
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(2, 300, dtype=torch.float64, generator=gen).round(decimals=1)  # many ties
    x.requires_grad_()
    weight = torch.randn(2, 300 - 37 + 1, dtype=torch.float64, generator=gen)
    expected = torch.nn.functional.max_pool1d(x.unsqueeze(1), 37, stride=1).squeeze(1)
    ours = _sliding_max(x, 37)
    assert torch.equal(ours, expected)
    want = torch.autograd.grad((expected * weight).sum(), x)[0]
    torch.testing.assert_close(torch.autograd.grad((ours * weight).sum(), x)[0], want)


@pytest.mark.parametrize("kind", ["dense_noise", "quarter_rate_sine"])
@pytest.mark.parametrize("density", [1.0, 0.05])
def test_peak_envelope_sparse_backward_matches_autograd(kind, density):
    """The envelope's written-out backward (phases recomputed where the gradient is nonzero) against
    autograd through the dense computation, ties included (the quarter-rate sine has many)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.from_numpy(adversarial(kind, SR)[:, :400]).unsqueeze(0).requires_grad_()
    branches, left = _detector_branches(x.device, x.dtype)
    weight = torch.randn(1, 400, dtype=torch.float64, generator=gen)
    weight *= torch.rand(1, 400, dtype=torch.float64, generator=gen) < density

    def dense(x):
        phases = polyphase_fir(x, branches, left).abs().unflatten(-1, (2, -1))
        return torch.maximum(phases[..., 0, :], phases[..., 1, :]).amax(dim=(1, 3))

    expected = dense(x)
    ours = _PeakOverPhases.apply(x, branches, left)
    assert torch.equal(ours, expected)
    want = torch.autograd.grad((expected * weight).sum(), x)[0]
    torch.testing.assert_close(torch.autograd.grad((ours * weight).sum(), x)[0], want)


def test_peak_envelope_in_chunks_equals_the_whole_signal_computation():
    """The detector works in time chunks of `PEAK_CHUNK_SAMPLES`; the envelope must not change at the
    chunk edges."""
    from automix.dsp.limiter import PEAK_CHUNK_SAMPLES

    gen = torch.Generator().manual_seed(8)
    n_samples = 2 * PEAK_CHUNK_SAMPLES + 321
    x = torch.randn(2, 2, n_samples, generator=gen) * 0.2
    x[0, 1, PEAK_CHUNK_SAMPLES - 1 : PEAK_CHUNK_SAMPLES + 1] = torch.tensor([0.95, -0.95])
    branches, left = _detector_branches(x.device, x.dtype)
    phases = polyphase_fir(x, branches, left).abs().unflatten(-1, (2, -1))
    expected = torch.maximum(phases[..., 0, :], phases[..., 1, :]).amax(dim=(1, 3))
    torch.testing.assert_close(_PeakOverPhases.apply(x, branches, left), expected, rtol=0, atol=1e-6)


def test_ballistics_with_gradients_are_freed_with_their_output():
    """torchcomp's own autograd node stays alive in a reference cycle the collector cannot see (and with
    it, its inputs and output); the compressor's and the limiter's ballistics must be freed."""
    x = torch.randn(2, 4096, requires_grad=True)
    gain = ballistics(x * 1.0, torch.ones(2), torch.full((2,), 0.1), torch.full((2,), 0.01))
    node = weakref.ref(gain.grad_fn)
    del gain
    gc.collect()
    assert node() is None


@pytest.mark.parametrize("lookahead_ms", [0.02, 5.0])
def test_a_limiter_without_gradients_works_block_by_block_to_the_same_output(monkeypatch, lookahead_ms):
    """Blocks shorter than the signal, the look-ahead and a release (the smoother's state, the moving
    average's past and the detector's reach carried across): the output of the one-pass computation."""
    x = torch.randn(2, 2, 30000, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 0.5
    x[..., 9000:9100] *= 6.0
    whole = limiter(x.requires_grad_(), SR, lookahead_ms=lookahead_ms).detach()
    monkeypatch.setattr(filters, "BLOCKWISE_MIN_SECONDS", 0.1)
    # `automix.dsp.limiter` as an attribute is the function (`automix.dsp` exports it): patch the module.
    monkeypatch.setattr(importlib.import_module("automix.dsp.limiter"), "LIMITER_BLOCK_SAMPLES", 1000)
    with torch.no_grad():
        blocked = limiter(x, SR, lookahead_ms=lookahead_ms, blockwise=True)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-10)  # the running sums round apart


def test_the_numba_kernels_are_compiled_once_into_numba_s_cache(tmp_path):
    """After `cache_compiled_kernels`, a process's first compressor and loudness calls leave the compiled
    kernels in numba's cache (here a fresh folder), for the next process to load instead of compiling."""
    script = (
        "import torch\n"
        "from automix.dsp.dynamics import ballistics, cache_compiled_kernels\n"
        "from automix.loudness import integrated_loudness\n"
        "assert cache_compiled_kernels()\n"
        "x = torch.rand(2, 100)\n"
        "ballistics(x, torch.ones(2), torch.full((2,), 0.1), torch.full((2,), 0.01))\n"
        "integrated_loudness(torch.rand(2, 44100), 44100)\n"
    )
    env = os.environ | {"NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    for kernel in ("compressor_kernel", "two_biquads_kernel"):
        assert list(tmp_path.rglob(f"*{kernel}*.nbi")) and list(tmp_path.rglob(f"*{kernel}*.nbc"))
