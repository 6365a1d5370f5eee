"""The default mode's promises on songs of recorded instruments: 4-stem, 30-second songs (drums, bass,
other, vocals, as in MUSDB) played by the sampled instruments of a General MIDI SoundFont (FluidR3_GM:
recordings of real drum kits, basses, guitars, keys, strings, voices and horns), rendered a stem at a
time by FluidSynth, then mixed to every style by `mix.py` as a user runs it (default mode), and judged
by the validation suite's independent meters (`automix.validation.measure_mix`: pyloudnorm, the 16x
reconstruction by `scipy.signal.resample`) against ±0.5 LU, ±100 Hz, ±0.05, ≤ −1 dBTP and the stems'
length. Each line adds the limiter's deepest gain reduction (from the mix's analysis) and whether the
loudness is within ±0.1 LU of the target by pyloudnorm as it reads (no bias made up); a mix whose
target the limiting budget kept out of reach says so ("budget").

Neither the synthetic songs of the tests nor anything tuned on them: the parts are composed here from
the seed (tempo, key, progression, sections with and without drums and vocals, a chorus that is
louder), and played by instruments the project never sees otherwise.

Needs FluidSynth and a GM SoundFont (Debian: `apt-get install fluidsynth fluid-soundfont-gm`) and mido.
Run: `python benchmarks/sampled_songs.py [--seeds 0-5] [--soundfont FILE] [--keep DIR] [--max-limiting-db X]`.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido
import numpy as np
import soundfile as sf
import torch
from promises import PYLOUDNORM_BIAS_LU, kept_promises, summary

from automix import load_style_targets
from automix.dsp.console import DEFAULT_CEILING_DBTP

ROOT = Path(__file__).resolve().parents[1]
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SAMPLE_RATE = 44100
SONG_S = 30.0
PRECISE_LU = 0.1  # the mastering promise on loudness, where the limiting budget allows it
TICKS_PER_BEAT = 480
# General MIDI programs (0-based) each stem draws from
BASSES = (33, 34, 35, 38)  # finger, pick, fretless, synth bass
OTHERS = (29, 30, 25, 0, 4, 48, 16)  # overdriven, distortion, steel guitar, piano, e-piano, strings, organ
VOCALS = (52, 53, 65, 56, 73, 40)  # choir aahs, voice oohs, alto sax, trumpet, flute, violin
DRUM_KITS = (0, 16, 8, 32)  # standard, power, room, jazz
KICK, SNARE, HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 42, 46, 49, 51
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (0, 6, 5, 4))


def seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


class Part:
    """One stem's MIDI: notes at beat positions on channels, with program, pan and reverb per channel."""

    def __init__(self, tempo_bpm: float):
        self.tempo_bpm = tempo_bpm
        self.events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)

    def channel(self, channel: int, program: int, pan: int, reverb: int) -> None:
        for message in (
            mido.Message("program_change", channel=channel, program=program),
            mido.Message("control_change", channel=channel, control=10, value=pan),
            mido.Message("control_change", channel=channel, control=91, value=reverb),
        ):
            self.events.append((0, 0, message))

    def note(self, channel: int, pitch: int, beat: float, beats: float, velocity: float) -> None:
        start, end = round(beat * TICKS_PER_BEAT), round((beat + beats) * TICKS_PER_BEAT)
        velocity = int(np.clip(velocity, 1, 127))
        self.events.append(
            (start, 2, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity))
        )
        self.events.append((end, 1, mido.Message("note_off", channel=channel, note=pitch)))

    def save(self, path: Path) -> None:
        track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(self.tempo_bpm))])
        now = 0
        for tick, _, message in sorted(self.events, key=lambda event: event[:2]):
            track.append(message.copy(time=tick - now))
            now = tick
        mido.MidiFile(tracks=[track], ticks_per_beat=TICKS_PER_BEAT).save(path)


def compose(seed: int) -> tuple[float, dict[str, Part]]:
    """A song's four parts: sections of 4 bars (intro without vocals and often without drums, verses,
    louder choruses with crashes and open hats), one chord a bar."""
    rng = np.random.default_rng(seed)
    tempo = float(rng.uniform(84, 150))
    tonic = int(rng.integers(28, 40))  # the bass's tonic, E1..D#2
    scale = MAJOR if rng.random() < 0.5 else MINOR
    progression = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    n_bars = int(np.ceil(SONG_S * tempo / 240)) + 1
    sections = ["intro"] + [("verse", "chorus")[(bar // 4) % 2] for bar in range(4, n_bars, 4)]
    drums_in_intro = rng.random() < 0.4
    parts = {name: Part(tempo) for name in ("drums", "bass", "other", "vocals")}
    parts["drums"].channel(9, int(rng.choice(DRUM_KITS)), 64, 30)
    parts["bass"].channel(0, int(rng.choice(BASSES)), 64, 15)
    other_program = int(rng.choice(OTHERS))
    spread = int(rng.integers(20, 50))  # a part played twice, panned apart: the stereo of a real stem
    parts["other"].channel(0, other_program, 64 - spread, 50)
    parts["other"].channel(1, other_program, 64 + spread, 50)
    parts["vocals"].channel(0, int(rng.choice(VOCALS)), int(rng.integers(56, 72)), 60)
    straight_eighths = rng.random() < 0.5
    melody = [7]  # the vocal line's scale degree, carried from bar to bar
    for bar in range(n_bars):
        section = sections[bar // 4]
        loud = 1.0 if section == "chorus" else 0.8 if section == "verse" else 0.65
        degree = progression[bar % len(progression)]
        root = tonic + 12 * (degree // 7) + scale[degree % 7]
        start = 4.0 * bar

        def velocity(base: float, loud: float = loud) -> float:
            return base * loud * rng.uniform(0.85, 1.0)

        if section != "intro" or drums_in_intro:
            _drum_bar(
                parts["drums"], rng, start, section, straight_eighths, first=bar % 4 == 0, velocity=velocity
            )
        for step in range(8 if straight_eighths else 4):
            length = 0.5 if straight_eighths else 1.0
            pitch = root + 12 * (step % 4 == 3 and rng.random() < 0.4)
            parts["bass"].note(0, pitch, start + step * length, length * 0.9, velocity(105))
        for channel in (0, 1):
            shift = 0.01 * channel  # the second take a little late
            if other_program in (29, 30):  # power chords in eighths
                for step in range(8):
                    for pitch in (root + 24, root + 31, root + 36):
                        parts["other"].note(channel, pitch, start + step / 2 + shift, 0.45, velocity(100))
            else:  # the chord held through the bar
                for k in (0, 2, 4):
                    pitch = tonic + 24 + 12 * ((degree + k) // 7) + scale[(degree + k) % 7]
                    parts["other"].note(channel, pitch, start + shift, 3.9, velocity(90))
        if section != "intro":
            _vocal_bar(parts["vocals"], rng, start, tonic + 36, scale, melody, velocity)
    return tempo, parts


def _drum_bar(drums: Part, rng, start: float, section: str, straight: bool, *, first: bool, velocity) -> None:
    """Kick on 1 and 3 (sometimes a pickup), snare on 2 and 4, eighths on the hats (the ride in some
    verses, open hats on the chorus's off-beats), a crash opening each section after the intro."""
    for step in range(8):
        beat = start + step / 2
        if step in (0, 4) or (step == 5 and rng.random() < 0.3):
            drums.note(9, KICK, beat, 0.25, velocity(120))
        if step in (2, 6):
            drums.note(9, SNARE, beat, 0.25, velocity(118))
        cymbal = RIDE if section == "verse" and not straight else HAT
        cymbal = OPEN_HAT if section == "chorus" and step % 2 == 1 else cymbal
        drums.note(9, cymbal, beat, 0.25, velocity(95 if step % 2 == 0 else 75))
    if first and section != "intro":
        drums.note(9, CRASH, start, 2.0, velocity(115))


def _vocal_bar(vocals: Part, rng, start: float, tonic: int, scale, melody: list[int], velocity) -> None:
    """A bar of melody: a random walk on the scale in notes of half a beat to two beats, some rests."""
    beat = start
    while beat < start + 4:
        beats = float(rng.choice((0.5, 1.0, 1.0, 1.5, 2.0)))
        melody[0] = int(np.clip(melody[0] + rng.integers(-2, 3), 3, 12))
        if rng.random() < 0.8:
            pitch = tonic + 12 * (melody[0] // 7) + scale[melody[0] % 7]
            vocals.note(0, pitch, beat, beats * 0.95, velocity(100))
        beat += beats


def render(part: Part, folder: Path, name: str, soundfont: Path) -> Path:
    """The part through FluidSynth, cut (or padded) to the song's length, as a 16-bit WAV."""
    midi, wav = folder / f"{name}.mid", folder / f"{name}.wav"
    part.save(midi)
    command = [
        "fluidsynth",
        "-ni",
        "-q",
        "-C",
        "0",
        "-g",
        "0.5",
        "-r",
        str(SAMPLE_RATE),
        "-O",
        "float",
        "-T",
        "wav",
    ]
    subprocess.run([*command, "-F", str(wav), str(soundfont), str(midi)], check=True, capture_output=True)
    audio, _ = sf.read(wav, dtype="float64", always_2d=True)
    n = int(SONG_S * SAMPLE_RATE)
    audio = np.pad(audio[:n], ((0, max(0, n - len(audio))), (0, 0)))
    sf.write(wav, audio / max(1.0, np.abs(audio).max() / 0.99), SAMPLE_RATE, subtype="PCM_16")
    return wav


def main() -> None:
    parser = argparse.ArgumentParser(description="automix: the default mode on songs of sampled instruments")
    parser.add_argument("--seeds", type=seeds, default=seeds("0-5"), help="e.g. 0-5 or 3")
    parser.add_argument("--soundfont", type=Path, default=SOUNDFONT)
    parser.add_argument("--keep", type=Path, default=None, help="keep each song's stems and mixes here")
    parser.add_argument("--max-limiting-db", type=float, help="mix.py's limiting budget (default: its own)")
    args = parser.parse_args()
    if shutil.which("fluidsynth") is None or not args.soundfont.is_file():
        sys.exit("needs fluidsynth and a GM SoundFont: apt-get install fluidsynth fluid-soundfont-gm")
    targets = load_style_targets()
    kept = total = within = 0
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) if args.keep is None else args.keep / f"song{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            tempo, parts = compose(seed)
            stems = [render(part, folder, name, args.soundfont) for name, part in parts.items()]
            for name, style in targets.items():
                out, report = folder / f"mix_{name}.wav", folder / f"mix_{name}.json"
                command = [sys.executable, str(ROOT / "mix.py"), "--stems", *map(str, stems)]
                command += ["--style", name, "--output", str(out), "--analysis-output", str(report)]
                if args.max_limiting_db is not None:
                    command += ["--max-limiting-db", str(args.max_limiting_db)]
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                seconds = time.perf_counter() - start
                audio, rate = sf.read(out, dtype="float64", always_2d=True)
                measured, ok = kept_promises(
                    torch.from_numpy(audio.T.copy()), rate, style, DEFAULT_CEILING_DBTP
                )
                ok = ok and len(audio) == int(SONG_S * SAMPLE_RATE)
                analysis = json.loads(report.read_text())
                limiting = analysis["gain_reduction"]["limiter"]["max_db"]
                pyloudnorm_lufs = measured["lufs"] - PYLOUDNORM_BIAS_LU  # as pyloudnorm reads it
                precise = abs(pyloudnorm_lufs - style.lufs) <= PRECISE_LU
                budget = any("limiting" in note for note in analysis["notes"])
                kept, total, within = kept + ok, total + 1, within + precise
                print(
                    f"song {seed} ({tempo:3.0f} BPM) {name:12} {seconds:5.1f} s {summary(measured, ok)}  "
                    f"limiter {limiting:4.1f} dB  ±{PRECISE_LU} LU {'yes' if precise else 'no'}"
                    + ("  budget" if budget else ""),
                    flush=True,
                )
    print(
        f"{kept} / {total} mixes within ±0.5 LU, ±100 Hz, ±0.05, under the ceiling and as long as the stems; "
        f"{within} / {total} within ±{PRECISE_LU} LU"
    )


if __name__ == "__main__":
    main()
