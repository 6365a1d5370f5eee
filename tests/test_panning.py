"""Pans spread where the width cannot reach a target M/S ratio (automix.panning), and predict mode's
reference start with mono stems."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.signal
import torch

from automix import AutoMixChain, predict_mode
from automix.dsp.stereo import gain, pan
from automix.metrics import channel_balance_db, stereo_ms_ratio
from automix.panning import MAX_SPREAD, channel_powers, ms_ratio_at, pan_layout, spread_pans
from automix.predict_mode import PredictMode
from automix.styles import style_from_reference
from automix.targets import resolve_targets

SR = 44100
SECONDS = 3.0
BANDS = ((40, 150), (300, 1200), (2000, 6000), (6000, 12000))  # darkest first


def band_stems(seed: int, mono: bool) -> torch.Tensor:
    """`[4, 2, T]` band-limited noise, one stem per band of `BANDS`; `mono`: both channels alike."""
    rng = np.random.default_rng(seed)
    stems = []
    for low, high in BANDS:
        sos = scipy.signal.butter(4, (low, high), "bandpass", fs=SR, output="sos")
        noise = scipy.signal.sosfilt(sos, rng.standard_normal((1 if mono else 2, int(SECONDS * SR))))
        stems.append(np.repeat(noise, 2, axis=0) if mono else noise)
    stems = torch.from_numpy(np.stack(stems)).float()
    return stems / stems.square().mean(dim=(-1, -2), keepdim=True).sqrt() * 0.05


def test_the_m_s_ratio_from_cross_powers_is_the_panned_sums():
    """Against the console's own pan and gain and the metric, for stereo and mono stems alike."""
    stems = torch.cat([band_stems(0, mono=False)[:2], band_stems(1, mono=True)[2:]])[None]
    gains = torch.tensor([[0.0, -6.0, 3.0, -2.0]])
    powers = channel_powers(stems, SR)
    for pans in (torch.zeros(1, 4), torch.tensor([[-0.7, 0.2, 0.9, -0.3]])):
        mixed = pan(gain(stems, gain_db=gains), pan=pans).sum(dim=1)
        torch.testing.assert_close(
            ms_ratio_at(powers, gains, pans).float(), stereo_ms_ratio(mixed), rtol=1e-4, atol=1e-6
        )


def test_the_rms_frequency_of_a_tone_is_its_frequency():
    t = torch.arange(int(SR * 1.0)) / SR
    tones = torch.stack([torch.sin(2 * math.pi * f * t).expand(2, -1) for f in (100.0, 1000.0, 8000.0)])
    rms_hz = channel_powers(tones[None], SR).rms_hz[0]
    torch.testing.assert_close(
        rms_hz, torch.tensor([100.0, 1000.0, 8000.0], dtype=torch.float64), rtol=1e-3, atol=0
    )


def test_the_layout_centres_the_darkest_and_the_loudest_stem_and_leans_neither_way():
    rms_hz = torch.tensor([[5000.0, 60.0, 800.0, 2500.0, 300.0, 1500.0]])
    power_db = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 6.0]])
    audible = torch.tensor([[True, True, True, True, False, True]])
    layout = pan_layout(rms_hz, power_db, audible)[0]
    assert layout[1] == 0 and layout[5] == 0 and layout[4] == 0  # darkest, loudest, and one not playing
    torch.testing.assert_close(
        layout.abs()[[2, 3, 0]], torch.tensor([1 / 3, 2 / 3, 1.0], dtype=torch.float64)
    )
    assert layout[0] * layout[3] < 0  # the two brightest on either side
    assert abs(float(layout.sum())) <= 1 / 3 + 1e-9  # equal stems: sides within the nearest one's distance
    # two stems: the brighter one is panned, whichever is louder
    two = pan_layout(rms_hz[:, :2], torch.tensor([[0.0, 10.0]]), audible[:, :2])[0]
    assert two[1] == 0 and two[0].abs() == 1


def test_the_smallest_spread_that_reaches_the_ratio_and_no_spread_where_it_is_reached():
    stems = band_stems(2, mono=True)[None]
    powers = channel_powers(stems, SR)
    gains, centre = torch.zeros(1, 4), torch.zeros(1, 4)
    layout = pan_layout(
        powers.rms_hz, torch.tensor([[0.0, 0.0, 6.0, 0.0]]), torch.ones(1, 4, dtype=torch.bool)
    )
    assert float(ms_ratio_at(powers, gains, centre)) < 1e-6  # mono stems in the centre: a mono mix
    needed = torch.tensor([0.4])
    pans = spread_pans(powers, gains, centre, layout, needed)
    torch.testing.assert_close(ms_ratio_at(powers, gains, pans), needed.double(), rtol=1e-4, atol=0)
    assert (pans[0] == 0).sum() == 2 and pans.abs().max() <= MAX_SPREAD  # darkest and loudest centred
    # a ratio the pans already reach leaves them; one no spread reaches gets the widest
    kept = spread_pans(powers, gains, pans, layout, needed * 0.5)
    torch.testing.assert_close(kept, pans)
    widest = spread_pans(powers, gains, centre, layout, torch.tensor([5.0]))
    torch.testing.assert_close(widest.abs()[widest != 0], torch.full((2,), MAX_SPREAD, dtype=widest.dtype))


def reference_at(ms_ratio: float) -> torch.Tensor:
    """`[2, T]` a reference: stereo band noise with its side scaled to `ms_ratio`."""
    mix = band_stems(5, mono=False).sum(dim=0)
    mid, side = (mix[0] + mix[1]) / 2, (mix[0] - mix[1]) / 2
    side = side * ms_ratio * mid.square().mean().sqrt() / side.square().mean().sqrt()
    return torch.stack([mid + side, mid - side])


@pytest.mark.parametrize("to_reference", [True, False])
@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
def test_predict_mode_pans_mono_stems_to_a_wide_ratio(grad_mode, to_reference):
    """To a reference (its start: neutral strips) and to a style of the same numbers (the predictor's
    strips)."""
    chain = AutoMixChain(n_stems=4, sample_rate=SR)
    style = style_from_reference(reference_at(0.6), SR)
    if not to_reference:
        style = dataclasses.replace(style, spectrum_db=None)
    targets = resolve_targets(style, chain.style_targets, 1)
    assert bool(targets.has_reference) == to_reference
    with grad_mode():
        mix, analysis = chain(band_stems(3, mono=True), targets, mode="predict")
    assert abs(float(stereo_ms_ratio(mix)) - 0.6) <= chain.optimize_settings.promise.ms_ratio
    assert not any("M/S" in note for note in analysis["notes"])
    pans = analysis["stem_params"]["pan"]
    assert pans[0] == 0 and (pans.abs() > 0.05).sum() >= 2  # the low stem in the centre, others spread
    assert abs(float(channel_balance_db(mix))) < 1.5
    # wide stems reach it with the width: their pans stay centred
    with grad_mode():
        _, wide = chain(band_stems(3, mono=False), targets, mode="predict")
    torch.testing.assert_close(wide["stem_params"]["pan"], torch.zeros(4), atol=1e-5, rtol=0)


def wide_loses_a_stem(self, mix) -> torch.Tensor:
    """A stand-in for `FoundStems.lost`: the first stem lost in a mix with side signal."""
    lost = torch.zeros(mix.shape[0], len(self.real[0]), dtype=torch.bool)
    lost[:, 0] = stereo_ms_ratio(mix).cpu() > 0.1
    return lost


@pytest.mark.parametrize("declined_by", ["not closer", "a stem lost"])
def test_predict_mode_keeps_its_mix_where_the_spread_one_is_not_closer_or_loses_a_stem(
    monkeypatch, declined_by
):
    """A spread render that keeps no more promises and misses by no less than the mix before it, or in
    which the balance estimate loses a stem it found before, is not taken, and that song is not spread
    again."""
    spreads = []
    spread = PredictMode.panned_for_width

    def counted(self, *args, **kwargs):
        spreads.append(args)
        return spread(self, *args, **kwargs)

    monkeypatch.setattr(PredictMode, "panned_for_width", counted)
    if declined_by == "not closer":
        monkeypatch.setattr(
            predict_mode, "is_closer", lambda new, old: torch.zeros_like(new.miss, dtype=torch.bool)
        )
    else:
        monkeypatch.setattr(predict_mode.FoundStems, "lost", wide_loses_a_stem)
    chain = AutoMixChain(n_stems=4, sample_rate=SR)
    targets = resolve_targets(style_from_reference(reference_at(0.6), SR), chain.style_targets, 1)
    with torch.no_grad():
        mix, analysis = chain(band_stems(3, mono=True), targets, mode="predict")
    assert len(spreads) == 1
    assert float(stereo_ms_ratio(mix)) < 1e-3
    assert any("M/S" in note for note in analysis["notes"])
    torch.testing.assert_close(analysis["stem_params"]["pan"], torch.zeros(4), atol=1e-5, rtol=0)


def test_the_optimisers_start_spreads_the_pans_of_a_mono_song_only():
    """One attempt (the start, then the master's corrections; no Adam): a mono song reaches a
    reference's M/S ratio, which no width reaches from centred pans (the bus has no side), and a wide
    song in the same batch (too wide for it: no pan narrows it) keeps its pans centred."""
    chain = AutoMixChain(n_stems=4, sample_rate=SR, optimize={"steps": 0, "attempts": 1})
    targets = resolve_targets(style_from_reference(reference_at(0.3), SR), chain.style_targets, 2)
    stems = torch.stack([band_stems(3, mono=True), band_stems(3, mono=False)])
    with torch.no_grad():
        mix, analysis = chain(stems, targets)
    assert abs(float(stereo_ms_ratio(mix[0])) - 0.3) <= chain.optimize_settings.promise.ms_ratio
    pans = analysis["stem_params"]["pan"]
    assert pans[0, 0] == 0 and (pans[0].abs() > 0.05).sum() >= 2  # the low stem in the centre
    assert abs(float(channel_balance_db(mix[0]))) < 1.5
    torch.testing.assert_close(pans[1], torch.zeros(4), atol=1e-5, rtol=0)
