"""Conformance with the published test cases: BS.1770-4 coefficients, EBU Tech 3341 and Tech 3342.

The Tech 3341/3342 loudness signals and their expected readings come from `automix.conformance`
(synthesised from the documents' definitions; `validate.py` uses them too); the true-peak signals are
synthesised here.
"""

import math

import numpy as np
import pytest
import torch

from automix.conformance import (
    TECH_3341_INTEGRATED_CASES,
    TECH_3341_TOLERANCE_LU,
    TECH_3342_CASES,
    TECH_3342_TOLERANCE_LU,
    sine_sequence,
)
from automix.loudness import k_weighting_coefficients
from automix.metrics import (
    integrated_loudness,
    loudness_range,
    momentary_loudness,
    sample_peak,
    short_term_loudness,
    true_peak,
)

SAMPLE_RATES = [44100, 48000]

# ITU-R BS.1770-4, Table 1 (pre-filter) and Table 2 (RLB high-pass), at 48 kHz.
ITU_PREFILTER_B = [1.53512485958697, -2.69169618940638, 1.19839281085285]
ITU_PREFILTER_A = [1.0, -1.69065929318241, 0.73248077421585]
ITU_RLB_B = [1.0, -2.0, 1.0]
ITU_RLB_A = [1.0, -1.99004745483398, 0.99007225036621]

# EBU Tech 3341 (2016) true-peak cases 15-19: (fraction of fs, phase in degrees, true peak dBTP).
# The continuous-time peak of a band-limited sine is its amplitude, so the expected reading is the
# amplitude in dB; cases 16-18 put the samples below it (peak half-way between two samples); case 19
# has samples at exactly ±1.0 (0 dBFS) and a true peak of +3.01 dBTP, which a meter must not clip.
TRUE_PEAK_CASES = {
    15: (1 / 4, 0.0, -6.0),
    16: (1 / 4, 45.0, -6.0),
    17: (1 / 6, 60.0, -6.0),
    18: (1 / 8, 67.5, -6.0),
    19: (1 / 4, 45.0, 20 * math.log10(math.sqrt(2.0))),
}
TRUE_PEAK_TOLERANCE_DB = (-0.4, 0.2)  # EBU Tech 3341 §2.9: +0.2 / -0.4 dB
TRUE_PEAK_FADE_S = 0.010  # EBU's true-peak signals fade in and out over 10 ms
TRUE_PEAK_SIGNAL_S = 1.0


def test_k_weighting_reproduces_itu_table_at_48k():
    b, a = k_weighting_coefficients(48000)
    np.testing.assert_allclose(b.numpy(), [ITU_PREFILTER_B, ITU_RLB_B], rtol=0, atol=1e-8)
    np.testing.assert_allclose(a.numpy(), [ITU_PREFILTER_A, ITU_RLB_A], rtol=0, atol=1e-8)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("case", sorted(TECH_3341_INTEGRATED_CASES))
def test_tech_3341_integrated_loudness(case, sample_rate):
    levels, durations, expected_lufs = TECH_3341_INTEGRATED_CASES[case]
    x = sine_sequence(levels, durations, sample_rate)
    assert integrated_loudness(x, sample_rate).item() == pytest.approx(
        expected_lufs, abs=TECH_3341_TOLERANCE_LU
    )


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
def test_tech_3341_short_term_is_constant_for_a_3_s_period(sample_rate):
    # Tech 3341 case 9: 20 x (1.34 s at -20 dBFS, 1.66 s at -30 dBFS): every 3 s window holds one
    # period, whose power mean is -23.0 LUFS.
    x = sine_sequence([-20.0, -30.0] * 20, [1.34, 1.66] * 20, sample_rate)
    short_term = short_term_loudness(x, sample_rate)
    assert short_term.shape == (round((60.0 - 3.0) * 10) + 1,)
    np.testing.assert_allclose(short_term.numpy(), -23.0, atol=TECH_3341_TOLERANCE_LU)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
def test_tech_3341_momentary_is_constant_for_a_400_ms_period(sample_rate):
    # Tech 3341 case 12: 25 x (0.18 s at -20 dBFS, 0.22 s at -30 dBFS): every 400 ms window holds one
    # period, whose power mean is -22.97 LUFS.
    x = sine_sequence([-20.0, -30.0] * 25, [0.18, 0.22] * 25, sample_rate)
    np.testing.assert_allclose(momentary_loudness(x, sample_rate).numpy(), -23.0, atol=TECH_3341_TOLERANCE_LU)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("case", sorted(TECH_3342_CASES))
def test_tech_3342_loudness_range(case, sample_rate):
    levels, durations, expected_lu = TECH_3342_CASES[case]
    x = sine_sequence(levels, durations, sample_rate)
    assert loudness_range(x, sample_rate).item() == pytest.approx(expected_lu, abs=TECH_3342_TOLERANCE_LU)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("case", sorted(TRUE_PEAK_CASES))
def test_tech_3341_true_peak(case, sample_rate):
    fraction_of_fs, phase_deg, expected_dbtp = TRUE_PEAK_CASES[case]
    n = np.arange(round(TRUE_PEAK_SIGNAL_S * sample_rate))
    tone = np.sin(2 * np.pi * fraction_of_fs * n + np.deg2rad(phase_deg))
    n_fade = round(TRUE_PEAK_FADE_S * sample_rate)
    fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_fade) / n_fade)
    tone[:n_fade] *= fade
    tone[-n_fade:] *= fade[::-1]
    x = torch.from_numpy(10.0 ** (expected_dbtp / 20.0) * np.stack([tone, tone]))

    measured = true_peak(x, sample_rate).item() - expected_dbtp
    assert TRUE_PEAK_TOLERANCE_DB[0] <= measured <= TRUE_PEAK_TOLERANCE_DB[1]
    # The cases are meant to put the sample peak below the true peak (except case 15).
    assert sample_peak(x).item() <= expected_dbtp + 1e-9
