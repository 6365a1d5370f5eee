"""Partial reads of stem files: an excerpt at a time, never a whole file in memory.

Like `automix.io.load_audio` (the project's reader of whole files) but for `frames` from `start` with
soundfile's seeking reads; the output is channels-first `[2, T]` at the training sample rate.
"""

import math
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from automix.errors import AutomixError
from automix.io import STEREO, resample, to_stereo


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

    Mono becomes dual-mono; another sample rate is resampled (`automix.io.resample`); past the file's end
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
    if not torch.isfinite(audio).all():
        raise AutomixError(f"{info.path}: NaN or infinite samples; re-export the stem")
    return audio
