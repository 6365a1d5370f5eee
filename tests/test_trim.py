"""The master trim's loudness model and search, judged by the rendered master and pyloudnorm."""

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import torch

from automix import trim
from automix.dsp import console, filters
from automix.dsp.console import master_section
from automix.dsp.stereo import gain
from automix.loudness import HopEnergyMeter, integrated_loudness, k_weighting_coefficients, weighted_power
from automix.params import ParameterSpace
from automix.secant import Bracket
from automix.synth import synth_stems

SAMPLE_RATE = 44100
CEILING_DBTP = -1.0
PYLOUDNORM_BIAS_LU = 0.05  # its textbook K-weighting reads ~0.04 LU below ITU's exact filter


def pyloudnorm_lufs(mix: torch.Tensor) -> list[float]:
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    return [meter.integrated_loudness(item.T.double().numpy()) + PYLOUDNORM_BIAS_LU for item in mix]


def master_params(batch: int, **changes) -> dict:
    """Neutral master settings with `changes` (floats) on every item."""
    params = ParameterSpace().neutral(batch)[1]
    return params | {name: torch.full((batch,), value) for name, value in changes.items()}


def song_bus(seconds: float, seed: int, level_db: float = -18.0) -> torch.Tensor:
    """A synthetic song's stems summed, at `level_db` dB of gain: `[1, 2, T]`."""
    stems, _ = synth_stems(seconds, SAMPLE_RATE, seed=seed)
    return gain(stems.sum(0, keepdim=True), gain_db=torch.tensor([level_db]))


def render(bus: torch.Tensor, params: dict, gain_db: torch.Tensor) -> torch.Tensor:
    return master_section(gain(bus, gain_db=gain_db), SAMPLE_RATE, params, ceiling_dbtp=CEILING_DBTP)


COMPRESSING = {"bus_threshold_db": -30.0, "bus_ratio": 2.0, "bus_attack_ms": 5.0, "bus_release_ms": 80.0}


@pytest.mark.parametrize("changes", [{}, COMPRESSING], ids=["neutral", "compressing"])
def test_the_model_follows_the_rendered_master_across_gains(changes):
    """From one render at 0 dB, the modelled loudness at gains from −6 to +12 dB (the limiter taking up
    to several LU, the bus compressor working) stays within 0.15 LU of the rendered master's (pyloudnorm)."""
    bus = song_bus(6.0, seed=3)
    params = master_params(1, **changes)
    model = trim.MasterLoudness(bus, SAMPLE_RATE, params, CEILING_DBTP)
    for gain_db in (-6.0, 0.0, 4.0, 8.0, 12.0):
        gain_db = torch.tensor([gain_db])
        measured = pyloudnorm_lufs(render(bus, params, gain_db))[0]
        assert float(model(gain_db)[0]) == pytest.approx(measured, abs=0.15)


def one_block_lufs(mix: torch.Tensor) -> float:
    """BS.1770's loudness of `[1, 2, T]` as one block over all of it: scipy's IIR K-weighting, the mean
    power summed over the channels."""
    b, a = k_weighting_coefficients(SAMPLE_RATE)
    weighted = scipy.signal.sosfilt(torch.cat([b, a], dim=1).numpy(), mix[0].double().numpy())
    return -0.691 + 10 * np.log10(np.mean(weighted**2, axis=-1).sum())


def test_the_model_of_a_signal_shorter_than_a_block_measures_all_of_it():
    """Under 400 ms, BS.1770 as `integrated_loudness` takes one block over the whole signal (pyloudnorm
    refuses it): so does the model."""
    bus = song_bus(0.3, seed=4)
    params = master_params(1)
    model = trim.MasterLoudness(bus, SAMPLE_RATE, params, CEILING_DBTP)
    for gain_db in (0.0, 10.0):
        gain_db = torch.tensor([gain_db])
        measured = one_block_lufs(render(bus, params, gain_db))
        assert float(model(gain_db)[0]) == pytest.approx(measured, abs=0.15)


def test_the_search_lands_within_tolerance_with_one_render_per_item():
    """A batch of two songs with different targets, one through a compressing bus: the model's first
    answer is rendered once, and that render is within tolerance of each target (pyloudnorm)."""
    bus = torch.cat([song_bus(5.0, seed=1), song_bus(5.0, seed=2, level_db=-20.0)])
    params = master_params(2)
    for name, value in COMPRESSING.items():
        params[name] = torch.tensor([float(params[name]), value])
    target = torch.tensor([-9.0, -12.0])
    start = torch.zeros(2)
    renders = []

    def counted(trim_db):
        renders.append(render(bus, params, trim_db))
        return renders[-1]

    model = trim.MasterLoudness(gain(bus, gain_db=start), SAMPLE_RATE, params, CEILING_DBTP)
    trim_db, mix, lufs = trim.search_trim(counted, model, start, target, steps=4, tolerance_lu=0.25)
    assert len(renders) == 1 and mix is renders[0]
    torch.testing.assert_close(lufs, integrated_loudness(mix, SAMPLE_RATE))  # what it measured
    np.testing.assert_allclose(pyloudnorm_lufs(mix), target.numpy(), atol=0.25)
    assert (trim_db > 0).all()  # both songs had to come up


def test_a_silent_bus_gets_a_bounded_trim_and_a_silent_render():
    """Silence stays silent at any trim: the search stops at the trim's bound instead of rendering the
    same answer again."""
    bus = torch.zeros(1, 2, SAMPLE_RATE)
    params = master_params(1)
    start = torch.zeros(1)
    model = trim.MasterLoudness(bus, SAMPLE_RATE, params, CEILING_DBTP)
    trim_db, mix, _ = trim.search_trim(
        lambda t: render(bus, params, t), model, start, torch.tensor([-10.0]), steps=2, tolerance_lu=0.25
    )
    assert trim_db == trim.MAX_TRIM_DB  # as far as it goes, and no further
    assert mix is not None and not mix.any()  # rendered there once: the answer did not move


def test_a_long_signal_is_modelled_block_by_block_alike(monkeypatch):
    """Asked for it, a long bus's detector and drive run a block at a time (1 s blocks here): the model
    answers as on the whole signal."""
    bus = song_bus(5.0, seed=6)
    params = master_params(1, **COMPRESSING)
    whole = trim.MasterLoudness(bus, SAMPLE_RATE, params, CEILING_DBTP)
    monkeypatch.setattr(filters, "BLOCKWISE_MIN_SECONDS", 1.0)
    monkeypatch.setattr(console, "MASTER_BLOCK_SAMPLES", SAMPLE_RATE)
    with torch.no_grad():
        blocks = trim.MasterLoudness(bus, SAMPLE_RATE, params, CEILING_DBTP, blockwise=True)
        for gain_db in (0.0, 6.0):
            gain_db = torch.tensor([gain_db])
            assert float(blocks(gain_db)[0]) == pytest.approx(float(whole(gain_db)[0]), abs=0.01)


def test_the_bracket_interpolates_where_a_proposal_leaves_it():
    bracket = Bracket(torch.tensor([-11.0, -11.0]))
    proposal = torch.tensor([5.0, 1.5])
    torch.testing.assert_close(bracket.guard(proposal), proposal)  # nothing on either side yet
    bracket.add(torch.tensor([0.0, 0.0]), torch.tensor([-12.0, -12.0]))
    bracket.add(torch.tensor([2.0, 2.0]), torch.tensor([-10.0, -10.0]))
    # regula falsi between (0 dB, −12 LUFS) and (2 dB, −10 LUFS) for −11 LUFS: 1 dB
    torch.testing.assert_close(bracket.guard(proposal), torch.tensor([1.0, 1.5]))


def test_energy_bins_of_a_hop_sum_to_the_hop():
    """A meter with several bins a hop: each bin is the K-weighted power summed over its samples
    (`weighted_power` of the whole signal), and they add up to the hop energies of a one-bin meter."""
    x = torch.randn(2, 3 * SAMPLE_RATE // 2, dtype=torch.float64)
    binned = HopEnergyMeter.of(x, SAMPLE_RATE, bins_per_hop=98)
    hops = HopEnergyMeter.of(x, SAMPLE_RATE)
    power = weighted_power(x, SAMPLE_RATE)
    n_bins = binned.bin_energy.shape[-1]
    expected = power[: n_bins * 45].reshape(n_bins, 45).sum(-1)
    torch.testing.assert_close(binned.bin_energy, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(binned.energy, hops.energy, rtol=1e-12, atol=1e-12)


def test_a_target_beyond_the_limiter_s_reach_is_approached_not_chased():
    """Dense noise to −3 LUFS: past some gain the limiter takes nearly every further dB. The answer stops
    where the model's last dB still adds `MIN_USEFUL_SLOPE` LU; the rendered master there (pyloudnorm) is
    within half a LU of what 10 dB more would give, and far from the target."""
    noise = torch.randn(1, 2, 4 * SAMPLE_RATE, generator=torch.Generator().manual_seed(0)) * 0.05
    params = master_params(1)
    model = trim.MasterLoudness(noise, SAMPLE_RATE, params, CEILING_DBTP)
    bound = torch.tensor([trim.MAX_TRIM_DB])
    gain_db = model.solve(torch.tensor([-3.0]), -bound, bound)
    assert float(model(gain_db) - model(gain_db - 1.0)) >= trim.MIN_USEFUL_SLOPE
    assert float(model(gain_db + 0.1) - model(gain_db - 0.9)) < trim.MIN_USEFUL_SLOPE
    at, further = (pyloudnorm_lufs(render(noise, params, gain_db + d))[0] for d in (0.0, 10.0))
    assert further - at < 0.5
    assert at < -3.0 - 2.0
