"""The tonal stems (bass, chords, lead): notes on the plan's grid, played by wavetable oscillators."""

import math
from dataclasses import dataclass

import torch

from automix.dsp.filters import high_pass, low_pass, peaking
from automix.synth._dsp import (
    BUTTERWORTH_Q,
    FADE_S,
    _filter,
    _midi_to_hz,
    _n_harmonics,
    _oscillate,
    _safe_hz,
    _wavetable,
)
from automix.synth._random import _choice, _uniform
from automix.synth.plan import STEPS_PER_BAR, VELOCITY_SPREAD, _Plan

BASS_LOW_MIDI, BASS_OCTAVE_PROBABILITY = 28, 0.2  # E1
BASS_PATTERNS = ((0, 8), (0, 4, 8, 12), (0, 2, 4, 6, 8, 10, 12, 14), (0, 3, 6, 10, 12), (0, 6, 8, 14))
BASS_HARMONICS, BASS_CUTOFF_HZ, BASS_DECAY_S, BASS_SUSTAIN = 12, (400.0, 900.0), (0.15, 0.5), 0.6
BASS_GATE = (0.6, 0.95)  # fraction of the time to the next note that a note sounds
CHORD_LOW_MIDI, CHORD_HARMONICS, CHORD_DETUNE_CENTS = 53, 10, (6.0, 14.0)  # F3
CHORD_PATTERNS = ((0,), (0, 8), (0, 4, 8, 12), (0, 6, 10), (0, 3, 6, 8, 11, 14))
CHORD_ATTACK_S, CHORD_DECAY_S, CHORD_SUSTAIN = (0.005, 0.04), (0.3, 1.2), 0.35
CHORD_GATE, PAD_GATE = (0.5, 0.9), 0.95  # stabs; one chord a bar
# Each side is its detuned voices plus this much of the other side's: M/S = (1 - b) / (1 + b) = 0.6.
CHORD_BLEED = 0.25
LEAD_RANGE_MIDI, LEAD_HARMONICS, LEAD_PHRASE_BARS = (62, 81), 24, 2
LEAD_SUNG_STEPS, LEAD_NOTE_STEPS, LEAD_MOVES = (20, 24, 28), (2, 2, 4, 4, 6, 8), (-2, -1, -1, 0, 1, 1, 2)
LEAD_REST_PROBABILITY, LEAD_GATE = 0.15, 0.9
LEAD_ATTACK_S, LEAD_DECAY_S, LEAD_SUSTAIN = 0.03, 0.8, 0.7
LEAD_VIBRATO_HZ, LEAD_VIBRATO_CENTS, LEAD_VIBRATO_ONSET_S = (4.5, 6.5), (20.0, 40.0), 0.25
LEAD_FORMANTS = (((900.0, 1400.0), (6.0, 9.0), 2.0), ((2200.0, 3200.0), (6.0, 10.0), 3.0))  # Hz, dB, Q
LEAD_HIGH_PASS_HZ, LEAD_LOW_PASS_HZ = 150.0, 7000.0
LEAD_SLAP_S, LEAD_SLAP_GAIN = (0.011, 0.017), 0.3  # echo delays L, R


@dataclass(frozen=True)
class _Lanes:
    """Per-sample note state: pitch `[V, T]` (MIDI), time since onset, gate length (samples), velocity."""

    midi: torch.Tensor
    since_onset: torch.Tensor
    gate: torch.Tensor
    velocity: torch.Tensor


def _lanes(plan: _Plan, notes: list[tuple[int, float, tuple[int, ...], float]]) -> _Lanes:
    """Notes `(onset step, gate steps, pitches, velocity)`, sorted, as per-sample lanes.

    A note's lane lasts until the next onset; its envelope ends at the gate.
    """
    notes = [note for note in notes if note[0] < plan.n_steps]
    if notes[0][0] > 0:
        notes.insert(0, (0, 0.0, notes[0][2], 0.0))
    sps, n = plan.samples_per_step, plan.n_samples
    starts = torch.tensor([round(note[0] * sps) for note in notes]).clamp(max=n)
    lengths = torch.diff(starts, append=torch.tensor([n]))
    segment = torch.repeat_interleave(torch.arange(len(notes)), lengths)
    return _Lanes(
        midi=torch.tensor([note[2] for note in notes], dtype=torch.float32)[segment].T,
        since_onset=(torch.arange(n) - starts[segment]).float(),
        gate=torch.tensor([note[1] * sps for note in notes])[segment],
        velocity=torch.tensor([note[3] for note in notes])[segment],
    )


def _envelope(
    lanes: _Lanes, sample_rate: int, attack_s: float, decay_s: float, sustain: float
) -> torch.Tensor:
    """Attack ramp, exponential decay to `sustain`, FADE_S release ending at the gate; times velocity."""
    t = lanes.since_onset
    attack = (t / (attack_s * sample_rate)).clamp(max=1.0)
    release = ((lanes.gate - t) / (FADE_S * sample_rate)).clamp(0.0, 1.0)
    decay = sustain + (1 - sustain) * torch.exp(-t / (decay_s * sample_rate))
    return lanes.velocity * attack * decay * release


def _velocity(gen: torch.Generator, amp: float) -> float:
    return amp * (1 - VELOCITY_SPREAD * torch.rand((), generator=gen).item())


def _pattern_notes(plan: _Plan, gen: torch.Generator, stem: str, gate_fraction: float, voicing) -> list:
    """Notes on a one-bar onset pattern drawn from BASS_/CHORD_PATTERNS, repeated every bar.

    Each note sounds `gate_fraction` of the way to the next onset; `voicing(bar, step)` gives its pitches.
    """
    pattern = _choice(gen, BASS_PATTERNS if stem == "bass" else CHORD_PATTERNS)
    gaps = [b - a for a, b in zip(pattern, pattern[1:] + (pattern[0] + STEPS_PER_BAR,), strict=True)]
    if len(pattern) == 1:
        gate_fraction = PAD_GATE
    return [
        (bar * STEPS_PER_BAR + step, gap * gate_fraction, voicing(bar, step), _velocity(gen, amp))
        for bar, amp in enumerate(plan.bar_amp[stem])
        for step, gap in zip(pattern, gaps, strict=True)
    ]


def _chord_degree(plan: _Plan, bar: int) -> int:
    return plan.progression[bar % len(plan.progression)]


def _bass(plan: _Plan, gen: torch.Generator) -> torch.Tensor:
    sr = plan.sample_rate

    def voicing(bar: int, step: int) -> tuple[int]:
        root = BASS_LOW_MIDI + (plan.pitch(_chord_degree(plan, bar)) - BASS_LOW_MIDI) % 12
        jump = step > 0 and torch.rand((), generator=gen).item() < BASS_OCTAVE_PROBABILITY
        return (root + 12 * jump,)

    lanes = _lanes(plan, _pattern_notes(plan, gen, "bass", _uniform(gen, *BASS_GATE), voicing))
    square = _uniform(gen, 0.0, 1.0)  # blend: 0 saw, 1 square (odd harmonics only)
    n_harmonics = _n_harmonics(BASS_HARMONICS, float(_midi_to_hz(torch.tensor(BASS_LOW_MIDI + 24.0))), sr)
    table = _wavetable([(1.0 if k % 2 else 1.0 - square) / k for k in range(1, 1 + n_harmonics)])
    tone = _oscillate(_midi_to_hz(lanes.midi[0]), table, sr, 0.0)
    tone = tone * _envelope(lanes, sr, FADE_S, _uniform(gen, *BASS_DECAY_S), BASS_SUSTAIN)
    cutoff = _safe_hz(_uniform(gen, *BASS_CUTOFF_HZ), sr)
    return _filter(tone, [low_pass(cutoff, BUTTERWORTH_Q, sr)], sr).expand(2, -1).clone()


def _chords(plan: _Plan, gen: torch.Generator) -> torch.Tensor:
    sr = plan.sample_rate
    n_voices = _choice(gen, (3, 4))  # triads or sevenths

    def voicing(bar: int, step: int) -> tuple[int, ...]:
        tones = [plan.pitch(_chord_degree(plan, bar) + 2 * v) for v in range(n_voices)]
        return tuple(sorted(CHORD_LOW_MIDI + (m - CHORD_LOW_MIDI) % 12 for m in tones))

    lanes = _lanes(plan, _pattern_notes(plan, gen, "chords", _uniform(gen, *CHORD_GATE), voicing))
    n_harmonics = _n_harmonics(CHORD_HARMONICS, float(_midi_to_hz(torch.tensor(CHORD_LOW_MIDI + 12.0))), sr)
    table = _wavetable([1.0 / k**2 for k in range(1, 1 + n_harmonics)])
    detune = _uniform(gen, *CHORD_DETUNE_CENTS)
    up, down = torch.zeros(plan.n_samples), torch.zeros(plan.n_samples)
    for voice in range(n_voices):
        base_hz = _midi_to_hz(lanes.midi[voice])
        phases = torch.rand(2, generator=gen).tolist()
        up += _oscillate(base_hz * 2 ** (detune / 1200), table, sr, phases[0])
        down += _oscillate(base_hz * 2 ** (-detune / 1200), table, sr, phases[1])
    attack_s, decay_s = _uniform(gen, *CHORD_ATTACK_S), _uniform(gen, *CHORD_DECAY_S)
    envelope = _envelope(lanes, sr, attack_s, decay_s, CHORD_SUSTAIN)
    return torch.stack([up + CHORD_BLEED * down, down + CHORD_BLEED * up]) * envelope


def _lead_notes(plan: _Plan, gen: torch.Generator) -> list[tuple[int, float, tuple[int, ...], float]]:
    low, high = LEAD_RANGE_MIDI
    pitches = [m for m in range(low, high + 1) if (m - plan.tonic_midi) % 12 in plan.scale]
    index = len(pitches) // 2
    phrase_steps = LEAD_PHRASE_BARS * STEPS_PER_BAR
    notes = []
    for phrase in range(0, plan.n_steps, phrase_steps):
        sung, step = _choice(gen, LEAD_SUNG_STEPS), 0
        while step < sung and phrase + step < plan.n_steps:
            length = min(_choice(gen, LEAD_NOTE_STEPS), sung - step)
            rest = step > 0 and torch.rand((), generator=gen).item() < LEAD_REST_PROBABILITY
            if not rest:
                amp = plan.bar_amp["lead"][(phrase + step) // STEPS_PER_BAR]
                notes.append((phrase + step, length * LEAD_GATE, (pitches[index],), _velocity(gen, amp)))
                index = min(max(index + _choice(gen, LEAD_MOVES), 0), len(pitches) - 1)
            step += length
    return notes


def _lead(plan: _Plan, gen: torch.Generator) -> torch.Tensor:
    sr = plan.sample_rate
    lanes = _lanes(plan, _lead_notes(plan, gen))
    vibrato_hz, depth_cents = _uniform(gen, *LEAD_VIBRATO_HZ), _uniform(gen, *LEAD_VIBRATO_CENTS)
    song_time = torch.arange(plan.n_samples) / sr
    onset_ramp = (lanes.since_onset / (LEAD_VIBRATO_ONSET_S * sr)).clamp(max=1.0)
    cents = depth_cents * onset_ramp * torch.sin(2 * math.pi * vibrato_hz * song_time)
    freq_hz = _midi_to_hz(lanes.midi[0]) * torch.pow(2.0, cents / 1200)
    top_hz = float(_midi_to_hz(torch.tensor(float(LEAD_RANGE_MIDI[1])))) * 2 ** (LEAD_VIBRATO_CENTS[1] / 1200)
    table = _wavetable([1.0 / k**1.2 for k in range(1, 1 + _n_harmonics(LEAD_HARMONICS, top_hz, sr))])
    voice = _oscillate(freq_hz, table, sr, 0.0) * _envelope(
        lanes, sr, LEAD_ATTACK_S, LEAD_DECAY_S, LEAD_SUSTAIN
    )
    sections = [
        high_pass(LEAD_HIGH_PASS_HZ, BUTTERWORTH_Q, sr),
        low_pass(_safe_hz(LEAD_LOW_PASS_HZ, sr), BUTTERWORTH_Q, sr),
    ]
    for freq_range, gain_range, q in LEAD_FORMANTS:
        sections.append(peaking(_uniform(gen, *gain_range), _safe_hz(_uniform(gen, *freq_range), sr), q, sr))
    voice = _filter(voice, sections, sr)
    delayed = [torch.nn.functional.pad(voice, (round(d * sr), 0))[: plan.n_samples] for d in LEAD_SLAP_S]
    return torch.stack([voice + LEAD_SLAP_GAIN * delayed[0], voice + LEAD_SLAP_GAIN * delayed[1]])
