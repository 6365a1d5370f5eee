"""Seeded synthetic multitrack songs and noise stems, for tests, demos and smoke training.

A song is a 16th-note grid at one tempo in one key (major or natural minor): a four-chord progression
with one chord a bar, sections of 4 or 8 bars in which stems drop out and change level, and a drum
fill at the end of each section. Four stereo stems, each with its own spectrum, dynamics and width:

- drums: pitch-swept sine kick (centred), noise-and-tone snare (band-passed, slightly off-centre),
  high-passed noise hi-hats (8ths or 16ths, panned to one side, some open).
- bass: a saw/square blend one to two octaves above E1, low-passed, following the chord roots; mono.
- chords: three or four harmonic voices per chord in the octave above F3, each voice two oscillators
  detuned up and down, one mostly left and one mostly right, so L and R decorrelate (M/S near 0.6).
- lead: a monophonic melody with vibrato, formant-like peaks at 1-3 kHz, phrases of two bars that end
  in a rest (silent gaps), a short stereo slap echo.

Everything is drawn from `torch.Generator`s seeded from `seed` (the song's structure and each stem
from their own stream, so asking for fewer stems leaves the others unchanged); output is float32 on
the CPU, each stem peaking between -6 and -1 dBFS.
"""

import math
import numbers
from dataclasses import dataclass

import torch

from automix.dsp.filters import apply_biquads, high_pass, impulse_response_length, low_pass, peaking
from automix.errors import AutomixError
from automix.units import db_to_amp

STEM_NAMES = ("drums", "bass", "chords", "lead")
MIN_SAMPLE_RATE = 8000
NOISE_RMS_DBFS = -20.0
STEM_PEAK_RANGE_DB = (-6.0, -1.0)

# Song structure
TEMPO_RANGE_BPM = (80.0, 160.0)
STEPS_PER_BEAT = 4  # sixteenth notes
STEPS_PER_BAR = 4 * STEPS_PER_BEAT
SECTION_BARS = (4, 8)
STEM_KEEP_PROBABILITY = 0.7  # chance that a stem plays in a section after the first
MIN_ACTIVE_STEMS = 2
SECTION_GAIN_RANGE_DB = (-4.0, 0.0)
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (0, 6, 5, 6), (1, 4, 0, 0))
TONIC_MIDI = 60  # the key's tonic is drawn from C4..B4
A4_MIDI, A4_HZ = 69, 440.0

# Sound design
MAX_FILTER_FRACTION = 0.45  # of the sample rate: filters and harmonics stay below Nyquist
FILTER_BLOCK = 2**16  # samples; longer signals are filtered block by block
BUTTERWORTH_Q = 1 / math.sqrt(2)
TABLE_SIZE = 4096  # samples of one wavetable cycle
DECAY_SPAN = 6.0  # drum samples last this many decay time constants (-52 dB)
FADE_S = 0.005  # fade at the ends of drum samples and notes, against clicks
HUMANISE_S = 0.004  # timing jitter of drum hits, +-
VELOCITY_SPREAD = 0.15  # random velocity reduction of a hit or note, up to
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

_SEED_STRIDE = 1009  # streams: 0 structure, 1-4 the stems, then the noises
_WHITE_STREAM, _PINK_STREAM = 5, 6


@dataclass(frozen=True)
class _Plan:
    """A song's structure: grid, key, progression and per-bar stem levels (0 = out)."""

    n_samples: int
    sample_rate: int
    tempo_bpm: float
    tonic_midi: int
    scale: tuple[int, ...]
    progression: tuple[int, ...]
    bar_amp: dict[str, tuple[float, ...]]
    fill_bars: frozenset[int]

    @property
    def samples_per_step(self) -> float:
        return self.sample_rate * 60.0 / (self.tempo_bpm * STEPS_PER_BEAT)

    @property
    def n_steps(self) -> int:
        return math.ceil(self.n_samples / self.samples_per_step)

    def pitch(self, degree: int) -> int:
        """MIDI note of a scale degree (0 = tonic; may exceed 6)."""
        return self.tonic_midi + 12 * (degree // 7) + self.scale[degree % 7]


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * _SEED_STRIDE + stream) % 2**63)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=gen).item()


def _choice(gen: torch.Generator, options: tuple):
    return options[int(torch.randint(len(options), (), generator=gen))]


def _n_samples(duration_s: float, sample_rate: int) -> int:
    if not (isinstance(sample_rate, numbers.Integral) and sample_rate >= MIN_SAMPLE_RATE):
        raise AutomixError(f"sample_rate must be an integer >= {MIN_SAMPLE_RATE} Hz, got {sample_rate!r}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise AutomixError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    return max(1, round(duration_s * sample_rate))


def _plan(duration_s: float, sample_rate: int, tempo_bpm: float | None, seed: int) -> _Plan:
    n_samples = _n_samples(duration_s, sample_rate)
    gen = _generator(seed, 0)
    drawn_bpm = float(round(_uniform(gen, *TEMPO_RANGE_BPM)))  # drawn always: the rest stays the same
    if tempo_bpm is not None and not (math.isfinite(tempo_bpm) and tempo_bpm > 0):
        raise AutomixError(f"tempo_bpm must be a positive number, got {tempo_bpm!r}")
    tempo_bpm = drawn_bpm if tempo_bpm is None else float(tempo_bpm)
    tonic = TONIC_MIDI + int(torch.randint(12, (), generator=gen))
    scale = _choice(gen, (MAJOR_SCALE, MINOR_SCALE))
    progression = _choice(gen, PROGRESSIONS)
    samples_per_step = sample_rate * 60.0 / (tempo_bpm * STEPS_PER_BEAT)  # as _Plan.samples_per_step
    n_bars = math.ceil(math.ceil(n_samples / samples_per_step) / STEPS_PER_BAR)
    bar_amp: dict[str, list[float]] = {name: [] for name in STEM_NAMES}
    fill_bars = []
    while len(bar_amp[STEM_NAMES[0]]) < n_bars:
        first = not bar_amp[STEM_NAMES[0]]
        n_section = _choice(gen, SECTION_BARS)
        keep = torch.rand(len(STEM_NAMES), generator=gen) < STEM_KEEP_PROBABILITY
        if first or int(keep.sum()) < MIN_ACTIVE_STEMS:
            keep[:] = True
        gains_db = SECTION_GAIN_RANGE_DB[0] + torch.rand(len(STEM_NAMES), generator=gen) * (
            SECTION_GAIN_RANGE_DB[1] - SECTION_GAIN_RANGE_DB[0]
        )
        for name, on, gain_db in zip(STEM_NAMES, keep.tolist(), gains_db.tolist(), strict=True):
            bar_amp[name] += [10.0 ** (gain_db / 20.0) if on else 0.0] * n_section
        fill_bars.append(len(bar_amp[STEM_NAMES[0]]) - 1)
    return _Plan(
        n_samples=n_samples,
        sample_rate=int(sample_rate),
        tempo_bpm=tempo_bpm,
        tonic_midi=tonic,
        scale=scale,
        progression=progression,
        bar_amp={name: tuple(amps[:n_bars]) for name, amps in bar_amp.items()},
        fill_bars=frozenset(bar for bar in fill_bars if bar < n_bars - 1),
    )


def _safe_hz(freq_hz: float, sample_rate: int) -> float:
    return min(freq_hz, MAX_FILTER_FRACTION * sample_rate)


def _filter(x: torch.Tensor, sections: list, sample_rate: int) -> torch.Tensor:
    """`x` `[T]` through a cascade of `(b, a)` biquads, exactly (zero initial state).

    Long signals go block by block (overlap-add of each block's zero-padded, exactly filtered output):
    one FFT of a whole four-minute song is slower than many small ones.
    """
    b = torch.stack([section[0] for section in sections])
    a = torch.stack([section[1] for section in sections])
    n_samples = x.shape[-1]
    if n_samples <= FILTER_BLOCK:
        return apply_biquads(x.unsqueeze(-2), b, a, sample_rate).squeeze(-2)
    tail = impulse_response_length(a, sample_rate)
    block = max(FILTER_BLOCK, tail)
    n_blocks = math.ceil(n_samples / block)
    blocks = torch.nn.functional.pad(x, (0, n_blocks * block - n_samples)).reshape(n_blocks, 1, block)
    filtered = apply_biquads(torch.nn.functional.pad(blocks, (0, tail)), b, a, sample_rate).squeeze(-2)
    out = torch.zeros(n_blocks + 1, block)
    out[:-1] += filtered[:, :block]
    out[1:, :tail] += filtered[:, block:]
    return out.flatten()[:n_samples]


def _pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power (sin/cos) gains of a pan position in [-1, 1]."""
    angle = (pan + 1.0) * math.pi / 4.0
    return math.cos(angle), math.sin(angle)


def _side(gen: torch.Generator, low: float, high: float) -> float:
    """A pan position with |pan| in [low, high], left or right."""
    return _uniform(gen, low, high) * _choice(gen, (-1.0, 1.0))


def _midi_to_hz(midi: torch.Tensor) -> torch.Tensor:
    return A4_HZ * torch.pow(2.0, (midi - A4_MIDI) / 12.0)


# ---- drums -------------------------------------------------------------------------------------


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


# ---- tonal stems -------------------------------------------------------------------------------


def _wavetable(amplitudes: list[float]) -> torch.Tensor:
    """One cycle `[TABLE_SIZE + 1]` (wrapped end) of a sum of harmonics with the given amplitudes."""
    phase = 2 * math.pi * torch.arange(TABLE_SIZE + 1, dtype=torch.float64) / TABLE_SIZE
    harmonic = torch.arange(1, len(amplitudes) + 1, dtype=torch.float64)
    table = (
        torch.tensor(amplitudes, dtype=torch.float64)[:, None] * torch.sin(harmonic[:, None] * phase)
    ).sum(0)
    return (table / table.abs().max()).float()


def _n_harmonics(wanted: int, top_hz: float, sample_rate: int) -> int:
    return max(1, min(wanted, int(MAX_FILTER_FRACTION * sample_rate / top_hz)))


def _oscillate(freq_hz: torch.Tensor, table: torch.Tensor, sample_rate: int, phase: float) -> torch.Tensor:
    """Wavetable oscillator `[T]` following `freq_hz` `[T]`, from `phase` (cycles).

    The phase accumulates in float64: float32 would drift audibly within a minute.
    """
    cycles = torch.cumsum(freq_hz / sample_rate, 0, dtype=torch.float64) + phase
    position = torch.frac(cycles).float().mul_(TABLE_SIZE)
    index = position.long().clamp_(max=TABLE_SIZE - 1)
    return torch.lerp(table[index], table[index + 1], position.sub_(index))


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


_RENDERERS = {"drums": _drums, "bass": _bass, "chords": _chords, "lead": _lead}


# ---- public ------------------------------------------------------------------------------------


def synth_song(
    duration_s: float = 10.0,
    sample_rate: int = 44100,
    *,
    tempo_bpm: float | None = None,
    seed: int = 0,
    stems: tuple[str, ...] = STEM_NAMES,
) -> dict[str, torch.Tensor]:
    """A seeded synthetic multitrack song (see the module docstring for what each stem is).

    Args:
        duration_s: length, seconds (any positive value; the grid is cut at the end).
        sample_rate: Hz, at least MIN_SAMPLE_RATE.
        tempo_bpm: beats per minute; None draws 80-160 from the seed. The rest of the song does not
            depend on it, so the same seed at another tempo is the same song, faster or slower.
        seed: the song; the same arguments give the same samples.
        stems: which of STEM_NAMES, in the order wanted. A stem does not depend on which others are asked for.

    Returns:
        `{name: [2, T]}` float32 stereo stems, T = round(duration_s * sample_rate), in the order of
        `stems`, each peaking between -6 and -1 dBFS.

    Raises:
        AutomixError: an unknown or repeated stem name, or a non-positive duration, sample rate or tempo.
    """
    unknown = [name for name in stems if name not in STEM_NAMES]
    if unknown or len(set(stems)) != len(stems) or not stems:
        raise AutomixError(f"stems must be distinct names from {STEM_NAMES}, got {tuple(stems)!r}")
    plan = _plan(duration_s, sample_rate, tempo_bpm, seed)
    song = {}
    for name in stems:
        gen = _generator(seed, 1 + STEM_NAMES.index(name))
        peak_amp = db_to_amp(_uniform(gen, *STEM_PEAK_RANGE_DB))
        stem = _RENDERERS[name](plan, gen)
        peak = stem.abs().max()
        song[name] = stem * (peak_amp / peak) if peak > 0 else stem
    return song


def synth_stems(
    duration_s: float = 10.0,
    sample_rate: int = 44100,
    *,
    tempo_bpm: float | None = None,
    seed: int = 0,
    stems: tuple[str, ...] = STEM_NAMES,
) -> tuple[torch.Tensor, list[str]]:
    """`synth_song` stacked: `([N, 2, T] float32 stems, their N names)`; arguments as `synth_song`."""
    song = synth_song(duration_s, sample_rate, tempo_bpm=tempo_bpm, seed=seed, stems=stems)
    return torch.stack(list(song.values())), list(song)


def _noise_shape(n_stems: int, duration_s: float, sample_rate: int) -> tuple[int, int, int]:
    if not (isinstance(n_stems, int) and n_stems >= 1):
        raise AutomixError(f"n_stems must be a positive integer, got {n_stems!r}")
    return n_stems, 2, _n_samples(duration_s, sample_rate)


def _set_rms(x: torch.Tensor, rms_dbfs: float) -> torch.Tensor:
    rms = x.square().mean(dim=-1, keepdim=True).sqrt()
    return x * (10.0 ** (rms_dbfs / 20.0) / rms.clamp_min(torch.finfo(x.dtype).tiny))


def white_noise(
    n_stems: int,
    duration_s: float,
    sample_rate: int = 44100,
    *,
    seed: int = 0,
    rms_dbfs: float = NOISE_RMS_DBFS,
) -> torch.Tensor:
    """Gaussian white noise stems `[n_stems, 2, T]` float32, independent L/R, each channel at `rms_dbfs` RMS.

    At the default -20 dBFS, minutes of noise peak near -5 dBFS (5.5 sigma): far from clipping.
    """
    shape = _noise_shape(n_stems, duration_s, sample_rate)
    return _set_rms(torch.randn(shape, generator=_generator(seed, _WHITE_STREAM)), rms_dbfs)


def pink_noise(
    n_stems: int,
    duration_s: float,
    sample_rate: int = 44100,
    *,
    seed: int = 0,
    rms_dbfs: float = NOISE_RMS_DBFS,
) -> torch.Tensor:
    """Pink (1/f power, -3.01 dB/octave) noise stems `[n_stems, 2, T]` float32, independent L/R.

    Gaussian white noise shaped in the frequency domain by |H(f)| = f^-1/2 on every FFT bin (DC removed),
    so the expected power spectrum is exactly 1/f; each channel is then set to `rms_dbfs` RMS.
    """
    shape = _noise_shape(n_stems, duration_s, sample_rate)
    white = torch.randn(shape, generator=_generator(seed, _PINK_STREAM), dtype=torch.float64)
    spectrum = torch.fft.rfft(white)
    bins = torch.arange(spectrum.shape[-1], dtype=torch.float64)
    shaping = torch.where(bins > 0, bins.clamp_min(1.0).rsqrt(), torch.zeros_like(bins))
    pink = torch.fft.irfft(spectrum * shaping, n=shape[-1])
    return _set_rms(pink, rms_dbfs).float()
