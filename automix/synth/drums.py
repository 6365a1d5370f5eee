"""The drum stem: a kick, a snare and hi-hats, synthesised per song and placed on the plan's grid."""

import math

import torch

from automix.dsp.filters import high_pass, low_pass
from automix.synth._dsp import BUTTERWORTH_Q, FADE_S, _filter, _pan_gains, _safe_hz
from automix.synth._random import _choice, _side, _uniform
from automix.synth.plan import STEPS_PER_BAR, STEPS_PER_BEAT, VELOCITY_SPREAD, _Plan

DECAY_SPAN = 6.0  # drum samples last this many decay time constants (-52 dB)
HUMANISE_S = 0.004  # timing jitter of drum hits, +-
KICK_START_HZ, KICK_END_HZ, KICK_SWEEP_S = (110.0, 170.0), (42.0, 58.0), 0.03
KICK_DECAY_S, KICK_CLICK_S, KICK_CLICK_GAIN = (0.12, 0.25), 0.002, 0.1
SNARE_BODY_HZ, SNARE_BODY_DECAY_S = (170.0, 240.0), 0.05
SNARE_NOISE_DECAY_S, SNARE_BAND_HZ, SNARE_BODY_GAIN = (0.1, 0.18), (1200.0, 8000.0), 0.5
HAT_CUTOFF_HZ, HAT_DECAY_S, OPEN_HAT_DECAY_S = (6000.0, 9000.0), (0.012, 0.025), (0.12, 0.2)
DRUM_GAINS = (1.0, 0.8, 0.3, 0.25)  # kick, snare, closed hat, open hat
SNARE_PAN, HAT_PAN = (0.08, 0.2), (0.3, 0.6)  # |pan| ranges, side drawn
KICK_STEPS, SNARE_STEPS, KICK_EXTRA_STEPS = (0, 8), (4, 12), (3, 6, 7, 10, 11, 14)
OPEN_HAT_STEP, FILL_STEPS, FILL_START_VELOCITY = 14, (4, 8), 0.5
HAT_ACCENTS = (1.0, 0.75, 0.55)  # on the beat, on an off-beat 8th, on a 16th


def _burst(sample_rate: int, decay_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Time axis `[L]` (s) of a drum sample lasting DECAY_SPAN time constants, and its end fade `[L]`."""
    n = max(2, math.ceil(DECAY_SPAN * decay_s * sample_rate))
    t = torch.arange(n) / sample_rate
    return t, ((t[-1] - t) / FADE_S).clamp(max=1.0)


def _kick(gen: torch.Generator, sample_rate: int) -> torch.Tensor:
    t, fade = _burst(sample_rate, decay_s := _uniform(gen, *KICK_DECAY_S))
    start_hz, end_hz = _uniform(gen, *KICK_START_HZ), _uniform(gen, *KICK_END_HZ)
    freq_hz = end_hz + (start_hz - end_hz) * torch.exp(-t / KICK_SWEEP_S)
    body = torch.sin(2 * math.pi * torch.cumsum(freq_hz, 0) / sample_rate) * torch.exp(-t / decay_s)
    click = torch.randn(t.shape, generator=gen) * torch.exp(-t / KICK_CLICK_S)
    return (body + KICK_CLICK_GAIN * click) * fade


def _snare(gen: torch.Generator, sample_rate: int) -> torch.Tensor:
    t, fade = _burst(sample_rate, decay_s := _uniform(gen, *SNARE_NOISE_DECAY_S))
    body = torch.sin(2 * math.pi * _uniform(gen, *SNARE_BODY_HZ) * t) * torch.exp(-t / SNARE_BODY_DECAY_S)
    band = [
        high_pass(_safe_hz(SNARE_BAND_HZ[0], sample_rate), BUTTERWORTH_Q, sample_rate),
        low_pass(_safe_hz(SNARE_BAND_HZ[1], sample_rate), BUTTERWORTH_Q, sample_rate),
    ]
    noise = _filter(torch.randn(t.shape, generator=gen), band, sample_rate) * torch.exp(-t / decay_s)
    return (SNARE_BODY_GAIN * body + noise) * fade


def _hat(gen: torch.Generator, sample_rate: int, decay_range_s: tuple[float, float]) -> torch.Tensor:
    t, fade = _burst(sample_rate, decay_s := _uniform(gen, *decay_range_s))
    cutoff = high_pass(_safe_hz(_uniform(gen, *HAT_CUTOFF_HZ), sample_rate), BUTTERWORTH_Q, sample_rate)
    noise = _filter(torch.randn(t.shape, generator=gen), [cutoff, cutoff], sample_rate)
    return noise * torch.exp(-t / decay_s) * fade


def _drum_events(plan: _Plan, gen: torch.Generator) -> list[tuple[int, int, float]]:
    """Hits `(piece, step, velocity)`; pieces: 0 kick, 1 snare, 2 closed hat, 3 open hat."""
    extras = torch.randperm(len(KICK_EXTRA_STEPS), generator=gen)[: _choice(gen, (0, 1, 2))]
    kick_steps = set(KICK_STEPS) | {KICK_EXTRA_STEPS[i] for i in extras.tolist()}
    hat_every = _choice(gen, (1, 2))
    open_hat = _choice(gen, (False, True))
    events = []
    for bar, amp in enumerate(plan.bar_amp["drums"]):
        fill_from = STEPS_PER_BAR - _choice(gen, FILL_STEPS) if bar in plan.fill_bars else STEPS_PER_BAR
        for step in range(STEPS_PER_BAR):
            at = bar * STEPS_PER_BAR + step
            if step >= fill_from:  # a snare roll rising to the next section
                rise = (step - fill_from + 1) / (STEPS_PER_BAR - fill_from)
                events.append((1, at, amp * (FILL_START_VELOCITY + (1 - FILL_START_VELOCITY) * rise)))
                continue
            if step in kick_steps:
                events.append((0, at, amp))
            if step in SNARE_STEPS:
                events.append((1, at, amp))
            if step % hat_every == 0:
                accent = HAT_ACCENTS[0 if step % STEPS_PER_BEAT == 0 else 1 if step % 2 == 0 else 2]
                events.append((3 if open_hat and step == OPEN_HAT_STEP else 2, at, amp * accent))
    return [event for event in events if event[2] > 0]


def _drums(plan: _Plan, gen: torch.Generator) -> torch.Tensor:
    sr, n = plan.sample_rate, plan.n_samples
    samples = [_kick(gen, sr), _snare(gen, sr), _hat(gen, sr, HAT_DECAY_S), _hat(gen, sr, OPEN_HAT_DECAY_S)]
    samples = [gain * s / s.abs().max() for gain, s in zip(DRUM_GAINS, samples, strict=True)]
    hat_pan = _side(gen, *HAT_PAN)
    pans = [_pan_gains(0.0), _pan_gains(_side(gen, *SNARE_PAN)), _pan_gains(hat_pan), _pan_gains(hat_pan)]
    events = _drum_events(plan, gen)
    jitter = (2 * torch.rand(len(events), generator=gen) - 1) * HUMANISE_S * sr
    spread = 1 - VELOCITY_SPREAD * torch.rand(len(events), generator=gen)
    longest = max(s.numel() for s in samples)
    tracks = torch.zeros(len(samples), n + longest)
    for (piece, step, velocity), shift, scale in zip(events, jitter.tolist(), spread.tolist(), strict=True):
        start = max(0, round(step * plan.samples_per_step + shift))
        if start < n:
            sample = samples[piece]
            tracks[piece, start : start + sample.numel()] += velocity * scale * sample
    return torch.tensor(pans).T @ tracks[:, :n]  # [2, pieces] @ [pieces, T]
