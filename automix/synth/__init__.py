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

from automix.synth._dsp import MIN_SAMPLE_RATE
from automix.synth._dsp import _filter as _filter  # the tests check the block filter against scipy
from automix.synth.noise import NOISE_RMS_DBFS, pink_noise, white_noise
from automix.synth.plan import STEM_NAMES
from automix.synth.song import STEM_PEAK_RANGE_DB, synth_song, synth_stems

__all__ = [
    "MIN_SAMPLE_RATE",
    "NOISE_RMS_DBFS",
    "STEM_NAMES",
    "STEM_PEAK_RANGE_DB",
    "pink_noise",
    "synth_song",
    "synth_stems",
    "white_noise",
]
