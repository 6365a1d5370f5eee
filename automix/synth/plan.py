"""Song structure: tempo, key, chord progression, sections and per-bar stem levels, drawn from the seed."""

import math
from dataclasses import dataclass

import torch

from automix.errors import AutomixError
from automix.synth._dsp import _n_samples
from automix.synth._random import _choice, _generator, _uniform

STEM_NAMES = ("drums", "bass", "chords", "lead")
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
VELOCITY_SPREAD = 0.15  # random velocity reduction of a hit or note, up to


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
