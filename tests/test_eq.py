"""EQ against independent references: the cookbook's analog prototypes through scipy's bilinear
transform, scipy.signal.sosfreqz for the response and scipy.signal.sosfilt for the time-domain output."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from automix.dsp import filters
from automix.dsp.eq import biquad_eq, four_band_eq

SAMPLE_RATES = (44100, 48000)
# (kind, gain_db, freq_hz, q): every band type, boosts and cuts, low and high corners.
CASES = [
    ("peaking", 9.0, 1000.0, 1.5),
    ("peaking", -12.0, 80.0, 4.0),
    ("peaking", 6.0, 12000.0, 0.5),
    ("low_shelf", 12.0, 100.0, 0.7071),
    ("low_shelf", -6.0, 300.0, 1.0),
    ("high_shelf", 6.0, 8000.0, 0.7071),
    ("high_shelf", -12.0, 3000.0, 0.5),
    ("low_pass", 0.0, 5000.0, 0.7071),
    ("high_pass", 0.0, 40.0, 2.0),
]


def analog_prototype(kind, gain_db, q):
    """The cookbook's s-domain transfer functions (numerator, denominator; highest power first)."""
    amp = 10 ** (gain_db / 40)
    sqrt_a_over_q = math.sqrt(amp) / q
    return {
        "peaking": ([1, amp / q, 1], [1, 1 / (amp * q), 1]),
        "low_shelf": ([amp, amp * sqrt_a_over_q, amp**2], [amp, sqrt_a_over_q, 1]),
        "high_shelf": ([amp**2, amp * sqrt_a_over_q, amp], [1, sqrt_a_over_q, amp]),
        "low_pass": ([0, 0, 1], [1, 1 / q, 1]),
        "high_pass": ([1, 0, 0], [1, 1 / q, 1]),
    }[kind]


def reference_sos(kind, gain_db, freq_hz, q, sample_rate):
    """Bilinear transform with the cutoff prewarped, as the cookbook derives its digital filters."""
    num, den = analog_prototype(kind, gain_db, q)
    omega_analog = 2 * sample_rate * math.tan(math.pi * freq_hz / sample_rate)
    scale = [omega_analog**-2, omega_analog**-1, 1.0]  # s -> s / omega_analog
    b, a = scipy.signal.bilinear(np.multiply(num, scale), np.multiply(den, scale), fs=sample_rate)
    return np.concatenate([b / a[0], a / a[0]])[None, :]


def ours_sos(kind, gain_db, freq_hz, q, sample_rate):
    gain_db, freq_hz, q = (torch.tensor(v, dtype=torch.float64) for v in (gain_db, freq_hz, q))
    if kind in ("low_pass", "high_pass"):
        b, a = getattr(filters, kind)(freq_hz, q, sample_rate)
    else:
        b, a = getattr(filters, kind)(gain_db, freq_hz, q, sample_rate)
    return torch.cat([b, a]).double().numpy()[None, :]


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[2]:g}Hz" for c in CASES])
def test_coefficients_match_bilinear_transform_of_the_analog_prototype(case, sample_rate):
    np.testing.assert_allclose(ours_sos(*case, sample_rate), reference_sos(*case, sample_rate), atol=1e-9)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[2]:g}Hz" for c in CASES])
def test_response_matches_sosfreqz_in_magnitude_and_phase(case, sample_rate):
    n_fft = 8192
    sos = reference_sos(*case, sample_rate)
    grid = np.linspace(0, np.pi, n_fft // 2 + 1)  # the rfft bins, DC to Nyquist
    _, expected = scipy.signal.sosfreqz(sos, worN=grid)
    kind, gain_db, freq_hz, q = case
    b, a = torch.from_numpy(sos[:, :3]), torch.from_numpy(sos[:, 3:])
    ours = filters.frequency_response(b, a, n_fft).numpy()
    audible = slice(1, -1)  # DC and Nyquist are zeros of the pass filters: no magnitude in dB, no phase
    magnitude_error_db = 20 * np.log10(np.abs(ours[audible]) / np.abs(expected[audible]))
    assert np.max(np.abs(magnitude_error_db)) < 0.01
    phase_error = np.angle(ours[audible] / expected[audible])
    assert np.max(np.abs(phase_error)) < 1e-3


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[2]:g}Hz" for c in CASES])
def test_time_domain_output_matches_sosfilt(case, sample_rate):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, sample_rate // 2))
    kind, gain_db, freq_hz, q = case
    ours = biquad_eq(torch.from_numpy(x), sample_rate, kind=kind, freq_hz=freq_hz, q=q, gain_db=gain_db)
    expected = scipy.signal.sosfilt(reference_sos(*case, sample_rate), x, axis=-1)
    error_db = 10 * np.log10(np.sum((ours.numpy() - expected) ** 2) / np.sum(expected**2))
    assert error_db < -60


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
def test_four_band_eq_matches_cascade_of_sosfilt_per_stem(sample_rate):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, sample_rate // 4))
    gain_db = np.array([[6, -3, 4, -8], [-12, 12, -6, 3], [0, 0, 0, 0]], dtype=float)
    freq_hz = np.array([[80, 400, 2500, 9000], [200, 900, 5000, 6000], [100, 500, 3000, 8000]], dtype=float)
    q = np.array([[0.7, 1.0, 2.0, 0.7], [0.5, 4.0, 0.7, 1.0], [0.7, 1.0, 1.0, 0.7]])
    ours = four_band_eq(
        torch.from_numpy(x),
        sample_rate,
        gain_db=torch.from_numpy(gain_db),
        freq_hz=torch.from_numpy(freq_hz),
        q=torch.from_numpy(q),
    ).numpy()
    kinds = ("low_shelf", "peaking", "peaking", "high_shelf")
    for stem in range(3):
        sos = np.concatenate(
            [
                reference_sos(kinds[b], gain_db[stem, b], freq_hz[stem, b], q[stem, b], sample_rate)
                for b in range(4)
            ]
        )
        expected = scipy.signal.sosfilt(sos, x[stem], axis=-1)
        error_db = 10 * np.log10(np.sum((ours[stem] - expected) ** 2) / np.sum(expected**2))
        assert error_db < -60
    np.testing.assert_allclose(ours[2], x[2], atol=1e-9)  # 0 dB everywhere is the identity


def test_long_low_frequency_tail_does_not_wrap_around():
    """A 20 Hz high-Q peak rings for seconds; its tail must not fold onto the start of the output."""
    sample_rate = 44100
    impulse = torch.zeros(1, 4096, dtype=torch.float64)
    impulse[0, -1] = 1.0  # the ring starts at the very end of the signal
    out = biquad_eq(impulse, sample_rate, kind="peaking", freq_hz=20.0, q=8.0, gain_db=12.0)
    assert out[0, :-1].abs().max() < 1e-9


def test_a_signal_many_segments_long_matches_sosfilt():
    """Overlap-save: a 30 Hz shelf and a 20 Hz high-pass on 8 s of noise, cut into segments of ~8x the
    cascade's impulse response, give scipy's IIR output at every segment boundary."""
    sample_rate = 44100
    x = np.random.default_rng(4).standard_normal((2, 8 * sample_rate))
    gain_db = torch.tensor([9.0, -4.0, 3.0, -6.0], dtype=torch.float64)
    freq_hz = torch.tensor([30.0, 300.0, 3000.0, 9000.0], dtype=torch.float64)
    q = torch.tensor([0.5, 4.0, 1.0, 0.7], dtype=torch.float64)
    ours = four_band_eq(
        torch.from_numpy(x), sample_rate, gain_db=gain_db, freq_hz=freq_hz, q=q, highpass_hz=20.0
    ).numpy()
    kinds = ("low_shelf", "peaking", "peaking", "high_shelf")
    sos = np.concatenate(
        [
            reference_sos(kinds[b], gain_db[b].item(), freq_hz[b].item(), q[b].item(), sample_rate)
            for b in range(4)
        ]
        + [scipy.signal.butter(2, 20.0, "highpass", fs=sample_rate, output="sos")]
    )
    designs = (filters.low_shelf, filters.peaking, filters.peaking, filters.high_shelf)
    poles = [design(gain_db[b], freq_hz[b], q[b], sample_rate)[1] for b, design in enumerate(designs)]
    poles.append(filters.high_pass(20.0, 2**-0.5, sample_rate)[1])
    n_taps = filters.impulse_response_length(torch.stack(poles), sample_rate)
    assert filters.segment_fft_length(x.shape[-1], n_taps) < x.shape[-1] / 2  # several segments
    expected = scipy.signal.sosfilt(sos, x, axis=-1)
    error_db = 10 * np.log10(np.sum((ours - expected) ** 2) / np.sum(expected**2))
    assert error_db < -100


def test_overlap_save_gradients_match_finite_differences():
    """Several segments (a 64-sample signal, a 9-tap kernel, FFTs of 16): gradients in x and in the
    response, by torch.autograd.gradcheck."""
    x = torch.randn(2, 64, dtype=torch.float64, requires_grad=True)
    taps = torch.randn(9, dtype=torch.float64)
    response = torch.fft.rfft(taps, n=16).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, r: filters.overlap_save(x, r, 16, 9), (x, response))
    expected = np.stack([np.convolve(row, taps.numpy())[:64] for row in x.detach().numpy()])
    np.testing.assert_allclose(
        filters.overlap_save(x, response, 16, 9).detach().numpy(), expected, atol=1e-12
    )


def test_gradients_reach_every_eq_parameter():
    x = torch.randn(2, 2, 4096, dtype=torch.float64)
    params = {
        "gain_db": torch.tensor([3.0, -2.0, 4.0, -5.0], dtype=torch.float64, requires_grad=True),
        "freq_hz": torch.tensor([120.0, 600.0, 3000.0, 7000.0], dtype=torch.float64, requires_grad=True),
        "q": torch.tensor([0.7, 1.2, 2.0, 0.8], dtype=torch.float64, requires_grad=True),
    }
    four_band_eq(x, 44100, **params).pow(2).mean().backward()
    for name, value in params.items():
        assert torch.isfinite(value.grad).all() and (value.grad != 0).all(), name


# ---------------------------------------------------------------- the FFT machinery's own gradients

# Grid lengths spanning several of frequency_response's blocks of bins, even and odd.
LONG_GRIDS = (3 * filters.RESPONSE_BLOCK_BINS + 98, 2 * filters.RESPONSE_BLOCK_BINS + 1)


@pytest.mark.parametrize("n_fft", LONG_GRIDS)
def test_response_on_long_grids_matches_sosfreqz(n_fft):
    sos = np.concatenate([reference_sos(*case, 44100) for case in CASES[:4]])
    grid = 2 * np.pi * np.arange(n_fft // 2 + 1) / n_fft
    _, expected = scipy.signal.sosfreqz(sos, worN=grid)
    b, a = torch.from_numpy(sos[:, :3]), torch.from_numpy(sos[:, 3:])
    ours = filters.frequency_response(b, a, n_fft).numpy()
    assert np.max(np.abs(20 * np.log10(np.abs(ours) / np.abs(expected)))) < 0.01
    assert np.max(np.abs(np.angle(ours / expected))) < 1e-3


@pytest.mark.parametrize("n_fft", LONG_GRIDS)
def test_response_gradients_match_autograd_through_an_fft(n_fft):
    """The written-out backward against autograd of the textbook evaluation, the product of each
    section's rfft(b) / rfft(a); the high-pass's zero at DC makes the cascade exactly 0 there, where
    the other sections' product must not come from a division."""
    bands = [
        ("peaking", 9.0, 1000.0, 1.5),
        ("high_shelf", 6.0, 8000.0, 0.7071),
        ("low_shelf", -6.0, 300.0, 1.0),
        ("high_pass", 0.0, 20.0, 0.7071),
    ]
    sos = np.concatenate([reference_sos(*band, 44100) for band in bands])
    b = torch.from_numpy(sos[:, :3]).repeat(2, 1, 1).requires_grad_()
    a = torch.from_numpy(sos[:, 3:]).repeat(2, 1, 1).requires_grad_()
    weight = torch.randn(
        2, n_fft // 2 + 1, dtype=torch.complex128, generator=torch.Generator().manual_seed(0)
    )

    def textbook(b, a):
        return (torch.fft.rfft(b, n=n_fft) / torch.fft.rfft(a, n=n_fft)).prod(dim=-2)

    expected = torch.autograd.grad((textbook(b, a) * weight).real.sum(), (b, a))
    ours = torch.autograd.grad((filters.frequency_response(b, a, n_fft) * weight).real.sum(), (b, a))
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9 * want.abs().max().item())


@pytest.mark.parametrize(
    ("x_shape", "response_shape"),
    [((3, 2, 50), (3, 1)), ((2, 50), (3, 1)), ((3, 2, 50), ()), ((3, 1, 2, 50), (3, 2, 1))],
)
@pytest.mark.parametrize("n_fft", [64, 81])
def test_spectral_filter_matches_autograd_through_torch_fft(x_shape, response_shape, n_fft):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*x_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    response = torch.randn(*response_shape, n_fft // 2 + 1, dtype=torch.complex128, generator=gen)
    response.requires_grad_()
    expected = torch.fft.irfft(torch.fft.rfft(x, n=n_fft) * response, n=n_fft)[..., : x.shape[-1]]
    ours = filters.spectral_filter(x, response, n_fft)
    torch.testing.assert_close(ours, expected)
    weight = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
    want = torch.autograd.grad((expected * weight).sum(), (x, response))
    got = torch.autograd.grad((ours * weight).sum(), (x, response))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
def test_biquads_with_quadrature_give_sosfilt_and_scipy_hilbert_of_the_whole_output(sample_rate):
    """The filter's output is sosfilt's; its quadrature is scipy.signal.hilbert's transform of the whole
    output (sosfilt run on past x's end until the filter decays), zero-padded to the same length."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 3000, dtype=torch.float64, generator=gen)
    gain_db, freq_hz, q = [[6.0, -4.0], [120.0, 2500.0], [0.7071, 2.0]]
    b, a = filters.low_shelf(gain_db[0], freq_hz[0], q[0], sample_rate)
    b2, a2 = filters.peaking(gain_db[1], freq_hz[1], q[1], sample_rate)
    b, a = torch.stack([b, b2]), torch.stack([a, a2])
    pad = 500
    y, quadrature = filters.biquads_with_quadrature(x, b, a, sample_rate, pad)
    n_fft = filters.quadrature_response(b, a, sample_rate, x.shape[-1], pad, x.dtype)[1]
    sos = torch.cat([b, a], dim=-1).numpy()
    whole = scipy.signal.sosfilt(sos, np.pad(x.numpy(), ((0, 0), (0, 0), (0, n_fft - x.shape[-1]))))
    expected_quadrature = np.imag(scipy.signal.hilbert(whole))[..., : x.shape[-1]]
    # The impulse response is cut where it has decayed by `IR_DECAY_DB` (-140 dB), as `apply_biquads`'s.
    np.testing.assert_allclose(y.numpy(), whole[..., : x.shape[-1]], atol=1e-7)
    np.testing.assert_allclose(quadrature.numpy(), expected_quadrature, atol=1e-7)


def test_a_float32_render_without_gradients_keeps_a_quiet_passage_to_its_own_precision():
    """A loud burst, then a passage 80 dB quieter: the whole-signal filter's float32 output there is off
    sosfilt's float64 output by about float32's rounding of the passage itself, not by the FFT's rounding
    of the whole signal (white, at ~1e-7 of the burst), which is what a float32 FFT leaves; with a
    gradient recorded, the FFTs stay in float32."""
    sample_rate = 44100
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, sample_rate, dtype=torch.float64, generator=gen)
    x[..., sample_rate // 8 :] *= 1e-4
    b, a = filters.high_shelf(3.0, 4000.0, 0.7071, sample_rate)
    b, a = b[None], a[None]
    expected = scipy.signal.sosfilt(torch.cat([b, a], dim=-1).numpy(), x.numpy(), axis=-1)
    quiet = slice(sample_rate // 4, None)  # past the shelf's decay

    def quiet_error_db(y: torch.Tensor) -> float:
        error = y.detach().double().numpy()[..., quiet] - expected[..., quiet]
        return 10 * np.log10(np.sum(error**2) / np.sum(expected[..., quiet] ** 2))

    with torch.no_grad():
        y, _ = filters.biquads_with_quadrature(x.float(), b.float(), a.float(), sample_rate, 500)
    assert y.dtype == torch.float32
    assert quiet_error_db(y) < -130  # float32's own rounding: about -150 dB
    recorded = x.float().requires_grad_(True)
    y, _ = filters.biquads_with_quadrature(recorded, b.float(), a.float(), sample_rate, 500)
    assert quiet_error_db(y) > -100  # the float32 FFT's noise floor, 80 dB up on the passage


def test_filter_with_quadrature_gradients_match_autograd_through_torch_fft():
    """Both outputs' gradients, in the signal and a broadcast response, as autograd through torch.fft."""
    gen = torch.Generator().manual_seed(5)
    n_fft = 80
    x = torch.randn(3, 2, 50, dtype=torch.float64, generator=gen, requires_grad=True)
    response = torch.randn(3, 1, n_fft // 2 + 1, dtype=torch.complex128, generator=gen, requires_grad=True)
    multiplier = torch.full((n_fft // 2 + 1,), -1j, dtype=torch.complex128)
    multiplier[0] = multiplier[-1] = 0
    spectrum = torch.fft.rfft(x, n=n_fft) * response
    expected = [torch.fft.irfft(s, n=n_fft)[..., :50] for s in (spectrum, spectrum * multiplier)]
    ours = filters.filter_with_quadrature(x, response, n_fft)
    weights = [torch.randn(expected[0].shape, dtype=torch.float64, generator=gen) for _ in range(2)]
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want)

    def loss(outputs):
        return sum((output * weight).sum() for output, weight in zip(outputs, weights, strict=True))

    want = torch.autograd.grad(loss(expected), (x, response))
    got = torch.autograd.grad(loss(ours), (x, response))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    # One output's gradient alone (the other's is None in the backward).
    for output in range(2):
        spectrum = torch.fft.rfft(x, n=n_fft) * response
        expected = torch.fft.irfft(spectrum * (multiplier if output else 1), n=n_fft)[..., :50]
        ours = filters.filter_with_quadrature(x, response, n_fft)[output]
        want = torch.autograd.grad((expected * weights[output]).sum(), (x, response))
        got = torch.autograd.grad((ours * weights[output]).sum(), (x, response))
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)


@pytest.mark.parametrize(("n_samples", "n"), [(50, 64), (50, 81), (90, 64), (64, 64)])
def test_rfft_gradient_matches_torch(n_samples, n):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, n_samples, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(3, n // 2 + 1, dtype=torch.complex128, generator=gen)
    torch.testing.assert_close(filters.rfft(x, n), torch.fft.rfft(x, n=n))
    want = torch.autograd.grad((torch.fft.rfft(x, n=n) * weight).real.sum(), x)[0]
    got = torch.autograd.grad((filters.rfft(x, n) * weight).real.sum(), x)[0]
    torch.testing.assert_close(got, want)


def test_fft_lengths_are_the_smallest_5_smooth_multiples_of_16_at_least_the_signal():
    """Against a brute-force search: the next 5-smooth multiple of `FFT_LENGTH_MULTIPLE`, never an odd
    or twice-odd length (those took torch's CPU FFT 2-3x as long)."""

    def five_smooth(n):
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    multiple = filters.FFT_LENGTH_MULTIPLE
    for n_samples in [*range(1, 3000), 136710, 180810, 445410, 455000]:
        expected = next(n for n in range(multiple, 2 * n_samples + 2 * multiple, multiple)
                        if n >= n_samples and five_smooth(n // multiple))  # fmt: skip
        assert filters.fft_length(n_samples) == expected, n_samples


def test_equal_cascades_in_a_batch_keep_their_own_gradients():
    """Rows with the same coefficients (a song's strips repeated for each of its excerpts) are evaluated
    once, yet each row's gradient is its own: against autograd of the textbook evaluation."""
    sos = np.concatenate([reference_sos(*case, 44100) for case in CASES[:3]])
    other = np.concatenate([reference_sos(*case, 44100) for case in CASES[3:6]])
    rows = np.stack([sos, other, sos, sos])  # rows 0, 2 and 3 are equal
    b = torch.from_numpy(rows[..., :3]).requires_grad_()
    a = torch.from_numpy(rows[..., 3:]).requires_grad_()
    n_fft = 4096
    weight = torch.randn(
        4, n_fft // 2 + 1, dtype=torch.complex128, generator=torch.Generator().manual_seed(1)
    )
    textbook = (torch.fft.rfft(b, n=n_fft) / torch.fft.rfft(a, n=n_fft)).prod(dim=-2)
    expected = torch.autograd.grad((textbook * weight).real.sum(), (b, a))
    ours = filters.frequency_response(b, a, n_fft)
    torch.testing.assert_close(ours, textbook, rtol=1e-9, atol=1e-12)
    got = torch.autograd.grad((ours * weight).real.sum(), (b, a))
    for g, want in zip(got, expected, strict=True):
        torch.testing.assert_close(g, want, rtol=0, atol=1e-9 * want.abs().max().item())
    assert not torch.allclose(got[0][0], got[0][2])  # equal rows, different gradients
