"""Audio I/O: round trips through soundfile, layout, resampling against a closed form, errors, atomic writes.

Fixture files are written with soundfile directly (numpy `(T, C)`), so the module is checked against
an independent writer and reader.
"""

import math
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from automix import io
from automix.errors import AutomixError
from automix.io import (
    atomic_write_text,
    load_audio,
    load_stems,
    resample,
    save_audio,
    stem_names,
    to_stereo,
)

SAMPLE_RATE = 44100


def stereo_test_signal(n_samples: int = 4410, seed: int = 0) -> torch.Tensor:
    """`[2, T]` with different left and right channels, peaks below 0.9."""
    gen = torch.Generator().manual_seed(seed)
    return 0.9 * (2 * torch.rand(2, n_samples, generator=gen, dtype=torch.float64) - 1)


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize(
    ("suffix", "subtype", "tolerance"),
    [
        (".wav", "PCM_24", 2.0**-23),
        (".wav", "PCM_16", 1.5 * 2.0**-15),  # TPDF dither of +-1 LSB, then rounding: +-1.5 LSB
        (".flac", "PCM_24", 2.0**-23),
        (".wav", "FLOAT", 0),
    ],
)
def test_save_then_load_round_trip(tmp_path, suffix, subtype, tolerance):
    x = stereo_test_signal().float()
    path = save_audio(tmp_path / f"out{suffix}", x, SAMPLE_RATE, subtype=subtype)
    loaded, sample_rate = load_audio(path)
    assert sample_rate == SAMPLE_RATE and loaded.shape == x.shape and loaded.dtype == torch.float32
    assert (loaded - x).abs().max() <= tolerance
    info = sf.info(path)
    assert info.subtype == subtype and info.channels == 2 and info.frames == x.shape[-1]


def test_save_writes_channels_first_as_soundfile_columns(tmp_path):
    x = stereo_test_signal()
    save_audio(tmp_path / "out.wav", x, SAMPLE_RATE, subtype="FLOAT")
    data, _ = sf.read(tmp_path / "out.wav", dtype="float64")
    np.testing.assert_allclose(data[:, 0], x[0].float().numpy())
    np.testing.assert_allclose(data[:, 1], x[1].float().numpy())


def test_values_are_written_as_they_are(tmp_path):
    x = torch.tensor([[1.5, -2.0, 0.25]])
    save_audio(tmp_path / "hot.wav", x, SAMPLE_RATE, subtype="FLOAT")
    assert torch.equal(load_audio(tmp_path / "hot.wav")[0], x)


def test_load_8_bit_pcm(tmp_path):
    x = stereo_test_signal().numpy().T  # (T, C) for soundfile
    sf.write(tmp_path / "u8.wav", x, SAMPLE_RATE, subtype="PCM_U8")
    loaded, _ = load_audio(tmp_path / "u8.wav")
    assert loaded.shape == (2, x.shape[0])
    assert np.abs(loaded.numpy() - x.T).max() <= 2.0**-7  # half an 8-bit step is 2^-8


def test_mono_loads_as_one_channel_and_becomes_dual_mono(tmp_path):
    mono = stereo_test_signal()[0].numpy()
    sf.write(tmp_path / "mono.wav", mono, SAMPLE_RATE, subtype="FLOAT")
    loaded, _ = load_audio(tmp_path / "mono.wav")
    assert loaded.shape == (1, mono.size)
    stereo = to_stereo(loaded)
    assert stereo.shape == (2, mono.size) and torch.equal(stereo[0], stereo[1])
    assert torch.equal(stereo[0], loaded[0])
    assert to_stereo(stereo) is stereo
    with pytest.raises(AutomixError, match="3 channels"):
        to_stereo(torch.zeros(3, 10))


@pytest.mark.parametrize(("orig_sr", "target_sr"), [(48000, 44100), (22050, 44100), (44100, 32000)])
def test_resample_keeps_a_sine_and_scales_the_length(orig_sr, target_sr):
    freq_hz, n_samples = 1000.0, orig_sr  # one second
    t = torch.arange(n_samples, dtype=torch.float64) / orig_sr
    x = torch.stack([torch.sin(2 * math.pi * freq_hz * t), 0.5 * torch.cos(2 * math.pi * freq_hz * t)])
    y = resample(x, orig_sr, target_sr)
    assert y.shape == (2, math.ceil(n_samples * target_sr / orig_sr)) and y.dtype == x.dtype
    t_new = torch.arange(y.shape[-1], dtype=torch.float64) / target_sr
    expected = torch.stack(
        [torch.sin(2 * math.pi * freq_hz * t_new), 0.5 * torch.cos(2 * math.pi * freq_hz * t_new)]
    )
    interior = slice(target_sr // 20, -target_sr // 20)  # away from the edges' filter transients
    assert (y[:, interior] - expected[:, interior]).abs().max() < 3e-3  # scipy's Kaiser(5) ripple, -50 dB
    spectrum = np.abs(np.fft.rfft(y[0].numpy()))
    assert np.fft.rfftfreq(y.shape[-1], 1 / target_sr)[spectrum.argmax()] == pytest.approx(freq_hz, abs=1.0)


def test_resample_to_the_same_rate_is_the_identity():
    x = stereo_test_signal()
    assert resample(x, SAMPLE_RATE, SAMPLE_RATE) is x


def test_load_audio_resamples_on_request(tmp_path):
    sf.write(tmp_path / "a.wav", stereo_test_signal(4800).numpy().T, 48000, subtype="FLOAT")
    loaded, sample_rate = load_audio(tmp_path / "a.wav", sample_rate=SAMPLE_RATE)
    assert sample_rate == SAMPLE_RATE and loaded.shape == (2, 4410)


def test_load_stems_matches_rates_channels_and_lengths(tmp_path):
    long_stereo = stereo_test_signal(SAMPLE_RATE).numpy()  # 1 s at 44.1 kHz
    short_mono = stereo_test_signal(24000, seed=1)[0].numpy()  # 0.5 s at 48 kHz
    sf.write(tmp_path / "drums.wav", long_stereo.T, SAMPLE_RATE, subtype="FLOAT")
    sf.write(tmp_path / "vocals.flac", short_mono, 48000, subtype="PCM_24")
    paths = [tmp_path / "drums.wav", tmp_path / "vocals.flac"]
    stems, sample_rate, notes = load_stems(paths, sample_rate=SAMPLE_RATE)
    assert stems.shape == (2, 2, SAMPLE_RATE) and sample_rate == SAMPLE_RATE
    np.testing.assert_allclose(stems[0].numpy(), long_stereo.astype(np.float32))
    assert torch.equal(stems[1, 0], stems[1, 1])  # dual-mono
    assert stems[1, :, 22050:].abs().max() == 0  # padded with silence
    assert stems[1, :, :22000].abs().max() > 0.5
    text = "\n".join(notes)
    assert "vocals.flac" in text and "mono" in text and "48000 Hz" in text and "padded" in text
    assert "drums.wav" not in text

    # Without a rate, the highest of the files': no stem loses its top octave.
    stems_48k, rate_48k, notes = load_stems(paths)
    assert rate_48k == 48000 and stems_48k.shape == (2, 2, 48000)
    text = "\n".join(notes)
    assert "drums.wav: resampled from 44100 Hz to 48000 Hz" in text
    assert "the stems' rates differ (44100, 48000 Hz): mixed at 48000 Hz, the highest" in text


def test_load_stems_notes_a_stem_that_cancels_in_mono(tmp_path):
    """A stem with one channel inverted and scaled by 0.9 (numpy's M/S: 19) is noted; a wide stem of
    independent channels (M/S about 1) and an in-phase one are not."""
    rng = np.random.default_rng(0)
    left, right = 0.1 * rng.standard_normal((2, SAMPLE_RATE))
    layouts = {"inverted": (left, -0.9 * left), "wide": (left, right), "centred": (left, 0.8 * left)}
    paths = []
    for name, channels in layouts.items():
        paths.append(tmp_path / f"{name}.wav")
        sf.write(paths[-1], np.stack(channels, axis=1), SAMPLE_RATE, subtype="FLOAT")
    _, _, notes = load_stems(paths)
    mid, side = (left - 0.9 * left) / 2, (left + 0.9 * left) / 2
    assert np.sqrt(np.mean(side**2) / np.mean(mid**2)) == pytest.approx(19.0)
    (note,) = notes
    assert note.startswith(f"{paths[0]}: M/S ratio 19.00") and "cancels in mono" in note


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["drums.wav", "bass.wav"], ["drums", "bass"]),
        (["a/drums.wav", "b/drums.wav", "bass.wav"], ["a/drums", "b/drums", "bass"]),
        (["x/a/drums.wav", "y/a/drums.flac"], ["x/a/drums", "y/a/drums"]),
        (["drums.wav", "drums.wav"], ["drums", "drums 2"]),
    ],
)
def test_stem_names_tell_files_of_the_same_name_apart(tmp_path, monkeypatch, paths, expected):
    monkeypatch.chdir(tmp_path)
    assert stem_names(paths) == expected


def write_three_channels(path):
    sf.write(path, np.zeros((100, 3)), SAMPLE_RATE)


def write_nan_float(path):
    data = np.zeros((100, 2))
    data[50, 1] = np.nan
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")


def write_no_frames(path):
    sf.write(path, np.zeros((0, 2)), SAMPLE_RATE)


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("missing.wav", None, "no such file"),
        ("text.wav", lambda p: p.write_text("this is not audio\n"), "not a readable audio file"),
        ("zero_bytes.wav", lambda p: p.write_bytes(b""), "empty"),
        ("no_frames.wav", write_no_frames, "no samples"),
        ("three.wav", write_three_channels, "3 channels"),
        ("nan.wav", write_nan_float, "NaN"),
    ],
)
def test_bad_input_files_raise_a_helpful_automix_error(tmp_path, name, make, expected):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(AutomixError, match=expected) as error:
        load_audio(path)
    message = str(error.value)
    assert name in message and ";" in message and "\n" not in message  # what was wrong; what to do
    with pytest.raises(AutomixError):
        load_stems([path])


def test_load_stems_without_paths():
    with pytest.raises(AutomixError, match="no stem files"):
        load_stems([])


def test_save_creates_folders_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "new" / "nested" / "mix.wav"
    save_audio(path, stereo_test_signal(), SAMPLE_RATE)
    assert files_in(path.parent) == ["mix.wav"]
    save_audio(path, 0.5 * stereo_test_signal(), SAMPLE_RATE)  # replaces an earlier output
    assert files_in(path.parent) == ["mix.wav"]
    assert load_audio(path)[0].abs().max() < 0.46


def test_save_refuses_to_overwrite_a_protected_input(tmp_path):
    source = tmp_path / "in.wav"
    sf.write(source, np.full((10, 2), 0.25), SAMPLE_RATE)
    before = source.read_bytes()
    (tmp_path / "link.wav").symlink_to(source)
    os.link(source, tmp_path / "hard.wav")
    for target in [source, tmp_path / "sub" / ".." / "in.wav", tmp_path / "link.wav", tmp_path / "hard.wav"]:
        with pytest.raises(AutomixError, match="refusing to overwrite"):
            save_audio(target, torch.zeros(2, 10), SAMPLE_RATE, protect=[source])
    with pytest.raises(AutomixError, match="refusing to overwrite"):
        atomic_write_text(source, "{}", protect=[str(source)])
    assert source.read_bytes() == before
    assert files_in(tmp_path) == ["hard.wav", "in.wav", "link.wav"]
    save_audio(tmp_path / "out.wav", torch.zeros(2, 10), SAMPLE_RATE, protect=[source])  # others are fine


def test_a_failed_write_removes_the_temporary_file(tmp_path, monkeypatch):
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", fail)
    with pytest.raises(AutomixError, match="disk full"):
        save_audio(tmp_path / "mix.wav", torch.zeros(2, 10), SAMPLE_RATE)
    with pytest.raises(AutomixError, match="disk full"):
        atomic_write_text(tmp_path / "report.json", "{}")
    assert files_in(tmp_path) == []


def test_save_refuses_what_it_cannot_write(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(AutomixError, match="cannot write"):
        save_audio(tmp_path / "file" / "mix.wav", torch.zeros(2, 10), SAMPLE_RATE)  # parent is a file
    with pytest.raises(AutomixError, match="NaN"):
        save_audio(tmp_path / "mix.wav", torch.tensor([[0.0, math.nan]]), SAMPLE_RATE)
    with pytest.raises(AutomixError, match="unknown audio format"):
        save_audio(tmp_path / "mix.xyz", torch.zeros(2, 10), SAMPLE_RATE)
    with pytest.raises(AutomixError, match="subtype"):
        save_audio(tmp_path / "mix.flac", torch.zeros(2, 10), SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AutomixError, match="channels, samples"):
        save_audio(tmp_path / "mix.wav", torch.zeros(1, 2, 10), SAMPLE_RATE)
    assert files_in(tmp_path) == ["file"]


def test_atomic_write_text(tmp_path):
    path = atomic_write_text(tmp_path / "reports" / "song.json", '{"lufs": -9.5}\n')
    assert path.read_text(encoding="utf-8") == '{"lufs": -9.5}\n'
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}" and files_in(path.parent) == ["song.json"]


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason=".stem.mp4 needs ffmpeg")


@needs_ffmpeg
def test_stem_mp4_excerpt_is_channels_first_in_stream_order(tmp_path):
    stempeg = pytest.importorskip("stempeg")
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    silent = np.zeros_like(tone)
    streams = np.stack(  # [N, T, C]: stream 0 (a mixture, skipped) both sides, 1 left only, 2 right only
        [np.stack([tone, tone], -1), np.stack([tone, silent], -1), np.stack([silent, tone], -1)]
    ).astype(np.float32)
    path = tmp_path / "song.stem.mp4"
    stempeg.write_stems(str(path), streams, SAMPLE_RATE, writer=stempeg.StreamsWriter(codec="aac"))
    stems = io.read_stem_mp4_excerpt(path, 0.5, 1.0, SAMPLE_RATE, stem_ids=(1, 2))
    assert stems.shape == (2, 2, SAMPLE_RATE) and stems.dtype == torch.float32
    rms = stems.square().mean(dim=-1).sqrt()  # [stream, channel]; the tone's RMS is 0.35
    assert rms[0, 0] > 0.3 and rms[1, 1] > 0.3 and rms[0, 1] < 0.01 and rms[1, 0] < 0.01, rms
    tail = io.read_stem_mp4_excerpt(path, 1.5, 1.0, SAMPLE_RATE, stem_ids=(1, 2))
    assert tail.shape == (2, 2, SAMPLE_RATE) and (tail[..., round(0.6 * SAMPLE_RATE) :] == 0).all()


@needs_ffmpeg
@pytest.mark.parametrize(("name", "content"), [("missing.stem.mp4", None), ("bad.stem.mp4", "not audio")])
def test_unreadable_stem_mp4_is_an_automix_error(tmp_path, name, content):
    pytest.importorskip("stempeg")
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(AutomixError, match="cannot decode") as error:
        io.read_stem_mp4_excerpt(tmp_path / name, 0.0, 1.0, SAMPLE_RATE, stem_ids=(1,))
    assert name in str(error.value) and "\n" not in str(error.value)


def test_stem_mp4_without_stempeg_is_an_automix_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "stempeg", None)  # as when stempeg refuses to import without ffmpeg
    with pytest.raises(AutomixError, match="apt-get install ffmpeg"):
        io.read_stem_mp4_excerpt("song.stem.mp4", 0.0, 1.0, SAMPLE_RATE, stem_ids=(1,))
