"""`synth_song` and `synth_stems`: a planned song rendered stem by stem, each stem peak-normalised."""

import torch

from automix.errors import AutomixError
from automix.synth._random import _generator, _uniform
from automix.synth.drums import _drums
from automix.synth.plan import STEM_NAMES, _plan
from automix.synth.tonal import _bass, _chords, _lead
from automix.units import db_to_amp

STEM_PEAK_RANGE_DB = (-6.0, -1.0)

_RENDERERS = {"drums": _drums, "bass": _bass, "chords": _chords, "lead": _lead}


def synth_song(
    duration_s: float = 10.0,
    sample_rate: int = 44100,
    *,
    tempo_bpm: float | None = None,
    seed: int = 0,
    stems: tuple[str, ...] = STEM_NAMES,
) -> dict[str, torch.Tensor]:
    """A seeded synthetic multitrack song (the `automix.synth` docstring says what each stem is).

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
