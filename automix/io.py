"""Audio files in and out: the only module that reads or writes audio, and the only one that transposes.

soundfile gives and takes `(T, C)` arrays (stempeg, for `.stem.mp4` files, gives `(N, T, C)`);
everything here returns and accepts channels-first `[C, T]` float32 tensors. Writes are atomic: a hidden
temporary file in the destination folder, then `os.replace`, so a reader never sees half a file and a
failed write leaves no debris.
"""

import math
import numbers
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf
import torch

from automix.errors import AutomixError
from automix.loudness import all_finite
from automix.metrics import CANCELS_IN_MONO_MS, stereo_ms_ratio

PathLike = str | os.PathLike
STEREO = 2
DEFAULT_SUBTYPE = "PCM_24"
# What a mix is delivered as: `--format` and `--bit-depth` (soundfile's subtypes).
OUTPUT_FORMATS = ("wav", "flac")
BIT_DEPTHS = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
DITHERED_SUBTYPES = {"PCM_16": 16}  # bits; 24-bit's quantisation (-144 dBFS) is left undithered
WRITE_BLOCK_FRAMES = 2**16  # `save_audio` writes this many frames at a time


def _soundfile(path: PathLike, call: Callable):
    """`call(path)` (a soundfile reader) for an existing, non-empty file, with soundfile's errors as
    one AutomixError line."""
    path = Path(path)
    if path.is_dir():
        raise AutomixError(f"{path}: a folder, not a file; give an audio file")
    if not path.is_file():
        raise AutomixError(f"{path}: no such file; check the path")
    if path.stat().st_size == 0:
        raise AutomixError(f"{path}: the file is empty (0 bytes); give a file with audio in it")
    try:
        return call(path)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as error:
        reason = (getattr(error, "error_string", None) or str(error) or type(error).__name__).rstrip(".")
        raise AutomixError(
            f"{path}: not a readable audio file ({reason}); give a WAV, FLAC, AIFF, OGG or MP3 file"
        ) from error


def _read(path: PathLike) -> tuple[np.ndarray, int]:
    """A whole file as soundfile gives it, `((T, C) float32, sample rate)`, checked as `load_audio`
    says."""
    data, file_rate = _soundfile(path, lambda p: sf.read(p, dtype="float32", always_2d=True))
    n_samples, n_channels = data.shape
    if n_samples == 0:
        raise AutomixError(f"{path}: the file has no samples; give a file with audio in it")
    if n_channels > STEREO:
        raise AutomixError(
            f"{path}: {n_channels} channels, but stems must be mono or stereo; export it as such"
        )
    if not all_finite(torch.from_numpy(data)):
        raise AutomixError(f"{path}: the file has NaN or infinite samples; re-export it")
    return data, file_rate


def load_audio(path: PathLike, *, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Read an audio file (any format soundfile reads: WAV 8/16/24/32-bit and float, FLAC, AIFF, OGG...).

    Args:
        path: the file.
        sample_rate: Hz to resample to (see `resample`); None keeps the file's rate.

    Returns:
        `([C, T] float32, in [-1, 1] for PCM, sample rate in Hz)`; mono gives `[1, T]` (see `to_stereo`).

    Raises:
        AutomixError: the file is missing, not audio or unreadable, empty, has NaN/Inf samples or more
            than two channels.
    """
    data, file_rate = _read(path)
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    if sample_rate is not None and sample_rate != file_rate:
        return resample(audio, file_rate, sample_rate), sample_rate
    return audio, file_rate


def to_stereo(x: torch.Tensor) -> torch.Tensor:
    """`[..., 1 or 2, T]` -> `[..., 2, T]`: mono becomes dual-mono (the same signal left and right).

    Raises:
        AutomixError: more than two channels, or none.
    """
    n_channels = x.shape[-2]
    if n_channels == STEREO:
        return x
    if n_channels == 1:
        return x.expand(*x.shape[:-2], STEREO, x.shape[-1]).clone()
    raise AutomixError(f"audio has {n_channels} channels; give mono or stereo audio")


def resample(x: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Band-limited polyphase resampling along the last axis (scipy `resample_poly`, Kaiser window).

    For loading files: not differentiable (it goes through numpy).

    Args:
        x: `[..., T]` signal, channels-first.
        orig_sr, target_sr: sample rates, Hz (positive integers; the ratio is reduced by their gcd).

    Returns:
        `[..., ceil(T * target_sr / orig_sr)]`, the dtype and device of `x`.
    """
    if not all(isinstance(rate, numbers.Integral) and rate > 0 for rate in (orig_sr, target_sr)):
        raise AutomixError(f"sample rates must be positive integers, got {orig_sr!r} and {target_sr!r}")
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr == target_sr:
        return x
    # Imported here: scipy.signal is slow to import, and most mixes resample nothing.
    import scipy.signal

    divisor = math.gcd(orig_sr, target_sr)
    up, down = target_sr // divisor, orig_sr // divisor
    resampled = scipy.signal.resample_poly(x.detach().cpu().double().numpy(), up, down, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(resampled)).to(dtype=x.dtype, device=x.device)


def load_stems(
    paths: Sequence[PathLike], sample_rate: int | None = None
) -> tuple[torch.Tensor, int, list[str]]:
    """Load stems as one stereo tensor at one sample rate and one length.

    Mono files become dual-mono; files at another rate are resampled to `sample_rate` (default: the
    highest of the files' rates, so that no stem loses its top octave); shorter stems are padded with
    silence at the end to the longest.

    Args:
        paths: the stem files, in order.
        sample_rate: Hz for all stems; None takes the highest of the files'.

    Returns:
        `([N, 2, T] float32, sample rate in Hz, notes)`: one human-readable note for each change made,
        and for each stem that cancels in mono (`CANCELS_IN_MONO_MS`).

    Raises:
        AutomixError: no paths, or any file `load_audio` refuses.
    """
    if not paths:
        raise AutomixError("no stem files given; give at least one audio file")
    # Headers first, so that the stems are read straight into one tensor: no second copy of them all.
    headers = [_soundfile(path, sf.info) for path in paths]
    notes: list[str] = []
    rates = sorted({header.samplerate for header in headers})
    if sample_rate is None:
        sample_rate = rates[-1]
        if len(rates) > 1:
            listed = ", ".join(str(rate) for rate in rates)
            notes.append(f"the stems' rates differ ({listed} Hz): mixed at {sample_rate} Hz, the highest")
    longest = max(math.ceil(header.frames * sample_rate / header.samplerate) for header in headers)
    stems = torch.zeros(len(paths), STEREO, longest)
    lengths = []
    for index, path in enumerate(paths):
        data, file_rate = _read(path)
        audio = torch.from_numpy(data).T  # [C, T], a view: copied once, into its place below
        if audio.shape[0] == 1:
            notes.append(f"{path}: mono, used as dual-mono")
        if file_rate != sample_rate:
            notes.append(f"{path}: resampled from {file_rate} Hz to {sample_rate} Hz")
            audio = resample(audio, file_rate, sample_rate)
        if audio.shape[-1] > stems.shape[-1]:  # a header that under-counted its frames
            stems = torch.nn.functional.pad(stems, (0, audio.shape[-1] - stems.shape[-1]))
        stems[index, :, : audio.shape[-1]] = audio  # a mono stem fills both channels
        ms_ratio = float(stereo_ms_ratio(stems[index]))
        if ms_ratio > CANCELS_IN_MONO_MS:
            notes.append(
                f"{path}: M/S ratio {ms_ratio:.2f}, its channels largely in opposite polarity: it cancels in "
                "mono (check whether one channel is inverted)"
            )
        lengths.append(audio.shape[-1])
    stems = stems[..., : max(lengths)].contiguous()  # a copy only where a header over-counted
    for path, length in zip(paths, lengths, strict=True):
        if length < stems.shape[-1]:
            missing = stems.shape[-1] - length
            notes.append(f"{path}: padded with {missing / sample_rate:.3f} s of silence to the longest stem")
    return stems, sample_rate, notes


def stem_names(paths: Sequence[PathLike], *, suffixes: bool = True) -> list[str]:
    """One name per stem file, unique: the file's name without its suffix, with as many of its folders in
    front as tell apart files of the same name (`a/drums.wav`, `b/drums.wav` -> "a/drums", "b/drums");
    a file given twice is numbered ("drums", "drums 2"). `suffixes=False`: names kept whole (folders)."""
    folders = [Path(os.path.abspath(path)).parent.parts for path in paths]
    stems = [Path(path).stem if suffixes else Path(os.path.abspath(path)).name for path in paths]
    names = list(stems)
    for stem in set(stems):
        group = [i for i, other in enumerate(stems) if other == stem]
        distinct = len({folders[i] for i in group})
        if distinct < 2:
            continue
        deepest = max(len(folders[i]) for i in group)
        depth = next(d for d in range(1, deepest + 1) if len({folders[i][-d:] for i in group}) == distinct)
        for i in group:
            names[i] = Path(*folders[i][-depth:], stem).as_posix()
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name} {seen[name]}"
    return names


def save_audio(
    path: PathLike,
    x: torch.Tensor,
    sample_rate: int,
    *,
    subtype: str = DEFAULT_SUBTYPE,
    protect: Iterable[PathLike] = (),
    dither_seed: int = 0,
) -> Path:
    """Write `[C, T]` audio atomically; the format follows the file extension (.wav, .flac, .aiff, ...).

    Samples are written as they are: integer subtypes clip at +-1 (keep peaks below the ceiling before).
    16-bit PCM gets TPDF dither first (`tpdf_dither`), so that its quantisation error is noise
    independent of the signal rather than distortion. Missing parent folders are created.

    Args:
        path: the destination.
        x: `[C, T]` audio (any float dtype or device).
        sample_rate: Hz.
        subtype: soundfile subtype, e.g. "PCM_16", "PCM_24", "FLOAT".
        protect: paths that must not be overwritten (the inputs): writing onto one of them is refused.
        dither_seed: seed of the dither's noise (a file written twice is the same file).

    Returns:
        The path written.

    Raises:
        AutomixError: not `[C, T]`, non-finite samples, an unknown format or subtype, a protected path,
            or the file or its folder cannot be written.
    """
    path, protect = Path(path), list(protect)
    if x.ndim != 2 or x.shape[0] < 1:
        raise AutomixError(f"{path}: audio to save must be [channels, samples], got shape {tuple(x.shape)}")
    audio = x.detach().cpu().float()
    if not all_finite(audio):
        raise AutomixError(f"{path}: refusing to write NaN or infinite samples")
    file_format = check_audio_output(path, subtype=subtype, protect=protect)
    if subtype in DITHERED_SUBTYPES:  # quantised here: libsndfile's own conversion truncates
        frames = dithered_pcm(audio, DITHERED_SUBTYPES[subtype], seed=dither_seed).T
    else:
        frames = audio.numpy().T  # [T, C], a view

    def write(file: IO[bytes]) -> None:
        # A block of frames at a time: soundfile copies what it writes into frame order, and a whole
        # 4-minute mix is 85 MB a copy.
        with sf.SoundFile(
            file, "w", sample_rate, frames.shape[1], subtype=subtype, format=file_format
        ) as out:
            for start in range(0, frames.shape[0], WRITE_BLOCK_FRAMES):
                out.write(frames[start : start + WRITE_BLOCK_FRAMES])

    write_atomically(path, write, protect)
    return path


def dithered_pcm(x: torch.Tensor, bits: int, *, seed: int = 0) -> np.ndarray:
    """`x` as integer PCM of `bits` bits (16: int16), after triangular (TPDF) dither of +-1 LSB: the
    difference of two independent uniform noises of 1 LSB, which makes the quantisation error's mean and
    variance independent of the signal (Lipshitz, Wannamaker & Vanderkooy, "Quantization and Dither: A
    Theoretical Survey", JAES 1992). Rounded to the nearest step, LSB = 2^-(bits - 1) of full scale; the
    total error has a power of LSB^2 / 4 (dither LSB^2 / 6, rounding LSB^2 / 12): -96.3 dBFS at 16 bits.

    Args:
        x: `[..., T]` float audio in [-1, 1] (clipped to the format's range).
        bits: 16 (int16) here; the array's integer type follows.
        seed: the noise's seed (the same audio gives the same file).

    Returns:
        `[..., T]` integers, as soundfile writes them verbatim to a PCM subtype of `bits` bits.
    """
    steps = 2.0 ** (bits - 1)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((2, *x.shape), generator=generator, dtype=torch.float64)
    scaled = (x.double() * steps + noise[0] - noise[1]).round().clamp(-steps, steps - 1)
    return scaled.numpy().astype(np.dtype(f"int{bits}"))


def atomic_write_text(path: PathLike, text: str, *, protect: Iterable[PathLike] = ()) -> Path:
    """Write UTF-8 text (a JSON report, say) atomically, creating missing parent folders.

    Raises:
        AutomixError: a protected path, or the file or its folder cannot be written.
    """
    path = Path(path)
    write_atomically(path, lambda file: file.write(text.encode("utf-8")), protect)
    return path


def write_atomically(
    path: Path, write: Callable[[IO[bytes]], object], protect: Iterable[PathLike] = ()
) -> None:
    """Create the folder, write a hidden temporary file next to `path` with `write`, then rename it.

    The temporary file is opened exclusively (with the usual umask permissions) and removed on failure.
    """
    check_output_path(path, protect=protect)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "x+b") as file:  # soundfile may read back headers
            created = True
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError, sf.SoundFileError) as error:
        raise AutomixError(f"{path}: cannot write ({error}); check the folder and free space") from error
    finally:
        if created:
            temporary.unlink(missing_ok=True)


def check_audio_output(
    path: PathLike, *, subtype: str = DEFAULT_SUBTYPE, protect: Iterable[PathLike] = ()
) -> str:
    """Check, before any work, that `save_audio` could write `path`; see `check_output_path`.

    Returns:
        The soundfile format the extension names, e.g. "WAV".

    Raises:
        AutomixError: an unknown format, one that cannot store `subtype`, or any `check_output_path` problem.
    """
    path = Path(path)
    file_format = path.suffix.lstrip(".").upper()
    if file_format not in sf.available_formats():
        raise AutomixError(f"{path}: unknown audio format; use one of .wav, .flac, .aiff")
    if not sf.check_format(file_format, subtype):
        raise AutomixError(
            f"{path}: {file_format} cannot store subtype {subtype}; "
            "use .wav, .flac or .aiff, or another subtype"
        )
    check_output_path(path, protect=protect)
    return file_format


def check_output_path(path: PathLike, *, protect: Iterable[PathLike] = ()) -> None:
    """Check, without creating anything, that `write_atomically` could write `path`.

    Lets a command refuse a bad output path before minutes of work rather than after.

    Raises:
        AutomixError: `path` is one of `protect` (also through a symlink, `..` or a hard link), is a
            folder, or its folder cannot be created or written.
    """
    path = Path(path)
    for protected in protect:
        if _same_file(path, Path(protected)):
            raise AutomixError(
                f"{path}: refusing to overwrite the input file {protected}; choose another output"
            )
    if path.is_dir():
        raise AutomixError(f"{path}: cannot write it, it is a folder; give a file name")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise AutomixError(
            f"{path}: cannot write it, {existing} is a file, not a folder; choose another path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AutomixError(
            f"{path}: cannot write it, the folder {existing} is read-only; choose another path"
        )


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or (hard links) the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# ---- partial reads (training streams excerpts; never a whole file in memory)


@dataclass(frozen=True)
class AudioFileInfo:
    """What an excerpt read needs to know about a file (its header only).

    Attributes:
        path: the file.
        n_frames: samples per channel.
        sample_rate: Hz.
        n_channels: 1 or 2.
    """

    path: str
    n_frames: int
    sample_rate: int
    n_channels: int

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate


def audio_info(path: str | os.PathLike) -> AudioFileInfo:
    """Read a file's header.

    Raises:
        AutomixError: not a readable audio file, empty, or more than two channels.
    """
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as error:
        raise AutomixError(f"{path}: not a readable audio file ({error}); give WAV or FLAC stems") from error
    if info.frames == 0:
        raise AutomixError(f"{path}: the file has no samples; remove it or give a file with audio")
    if info.channels > STEREO:
        raise AutomixError(f"{path}: {info.channels} channels, but stems must be mono or stereo")
    return AudioFileInfo(str(path), int(info.frames), int(info.samplerate), int(info.channels))


def read_excerpt(info: AudioFileInfo, start_s: float, duration_s: float, sample_rate: int) -> torch.Tensor:
    """`duration_s` seconds from `start_s` of a file as `[2, round(duration_s * sample_rate)]` float32.

    Mono becomes dual-mono; another sample rate is resampled (`resample`); past the file's end
    is silence.
    """
    n_out = round(duration_s * sample_rate)
    start = min(max(0, round(start_s * info.sample_rate)), info.n_frames)
    n_frames = math.ceil(duration_s * info.sample_rate)
    data, _ = sf.read(info.path, start=start, frames=n_frames, dtype="float32", always_2d=True)
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    audio = torch.nn.functional.pad(to_stereo(audio), (0, n_frames - audio.shape[-1]))
    if info.sample_rate != sample_rate:
        audio = resample(audio, info.sample_rate, sample_rate)
    audio = torch.nn.functional.pad(audio, (0, max(0, n_out - audio.shape[-1])))[..., :n_out]
    if not all_finite(audio):
        raise AutomixError(f"{info.path}: NaN or infinite samples; re-export the stem")
    return audio


def read_stem_mp4_excerpt(
    path: PathLike, start_s: float, duration_s: float, sample_rate: int, *, stem_ids: Sequence[int]
) -> torch.Tensor:
    """`duration_s` seconds from `start_s` of streams `stem_ids` of a `.stem.mp4` (MUSDB18) file.

    Decoded partially by ffmpeg through stempeg, imported here on first use (it refuses to import without
    ffmpeg and ffprobe on PATH), resampled by ffmpeg to `sample_rate`; past the file's end is silence.

    Returns:
        `[len(stem_ids), C, round(duration_s * sample_rate)]` float32, C the file's channels.

    Raises:
        AutomixError: stempeg cannot be imported (ffmpeg missing), or the file cannot be decoded.
    """
    try:
        import stempeg
    except (ImportError, OSError, RuntimeError) as error:
        raise AutomixError(
            f"cannot import stempeg ({error}); .stem.mp4 files need ffmpeg and ffprobe on PATH: "
            "apt-get install ffmpeg"
        ) from error
    try:
        audio, _ = stempeg.read_stems(
            str(path),
            start=start_s,
            duration=duration_s,
            stem_id=list(stem_ids),
            always_3d=True,
            dtype=np.float32,
            sample_rate=sample_rate,
        )
    except (Warning, RuntimeError, OSError) as error:  # stempeg raises Warning when ffprobe fails
        lines = str(error).strip().splitlines()  # ffprobe's own complaint comes last
        reason = lines[-1].strip() if lines else type(error).__name__
        raise AutomixError(
            f"{path}: cannot decode the .stem.mp4 file ({reason}); check or re-download it"
        ) from error
    stems = torch.from_numpy(np.ascontiguousarray(audio.transpose(0, 2, 1)))  # [N, T, C] -> [N, C, T]
    n_out = round(duration_s * sample_rate)
    return torch.nn.functional.pad(stems, (0, max(0, n_out - stems.shape[-1])))[..., :n_out]
