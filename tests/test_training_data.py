"""Training data: seeded items, padding masks, augmentation, sampled targets, and the folder and MUSDB
data modules on folders the tests write (partial reads checked on soundfile's calls)."""

import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from automix import io as audio_io
from automix.errors import AutomixError
from automix.styles import DEFAULT_STYLES, RANDOM_CENTROID_RANGE_HZ, RANDOM_LUFS_RANGE, RANDOM_MS_RATIO_RANGE
from automix.targets import style_vector
from automix.training.augment import Augmentation, tilt
from automix.training.data import FolderDataModule, MusdbDataModule, SyntheticDataModule
from automix.training.datasets import TRAIN_SPLIT, VAL_SPLIT, collate_items, item_generator
from automix.training.targets import DEFAULT_TARGET_MIX, TargetSampler
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100
MUSDB_STREAMS = ("mixture", "drums", "bass", "other", "vocals")  # the stream order of a .stem.mp4
NO_AUGMENTATION = {"gain_db": 0, "eq_tilt_db": 0, "pan": 0, "swap_probability": 0, "drop_probability": 0}


def _write(path: Path, n_frames: int, sample_rate: int, n_channels: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).normal(0, 0.1, (n_frames, n_channels))
    sf.write(path, noise, sample_rate, subtype="PCM_16")


def _record_reads(monkeypatch) -> list[dict]:
    reads = []
    original = audio_io.sf.read

    def read(path, **kwargs):
        reads.append({"path": str(path), **kwargs})
        return original(path, **kwargs)

    monkeypatch.setattr(audio_io.sf, "read", read)
    return reads


# ----------------------------------------------------------------------------------- items and batches


def test_items_are_seeded_by_seed_split_and_index():
    data = SyntheticDataModule(excerpt_s=0.5, song_s=1.0, train_items=4, val_items=2, num_workers=0)
    data.setup()
    first, again = data.train_set[1], data.train_set[1]
    assert torch.equal(first["stems"], again["stems"])
    torch.testing.assert_close(first["target"], again["target"], rtol=0, atol=0, equal_nan=True)
    other = data.train_set[2]["stems"]
    assert first["stems"].shape != other.shape or not torch.equal(first["stems"], other)
    assert not torch.equal(data.val_set[1]["target"][:3], first["target"][:3])
    a, b = item_generator(0, TRAIN_SPLIT, 1), item_generator(0, VAL_SPLIT, 1)
    assert torch.rand(4, generator=a).tolist() != torch.rand(4, generator=b).tolist()


def test_collate_pads_stem_counts_with_a_mask():
    items = [
        {"stems": torch.ones(2, 2, 10), "target": torch.zeros(6)},
        {"stems": torch.ones(4, 2, 10), "target": torch.ones(6)},
    ]
    batch = collate_items(items)
    assert batch["stems"].shape == (2, 4, 2, 10) and batch["targets"].shape == (2, 6)
    assert batch["mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["stems"][0, 2:].abs().sum() == 0 and batch["stems"][0, :2].eq(1).all()


def test_synthetic_batches_have_the_configured_shape_and_finite_audio():
    data = SyntheticDataModule(
        excerpt_s=0.5, song_s=1.0, batch_size=3, train_items=3, val_items=2, num_workers=0
    )
    data.setup()
    batch = next(iter(data.train_dataloader()))
    n_stems = batch["stems"].shape[1]
    assert batch["stems"].shape == (3, n_stems, 2, SAMPLE_RATE // 2) and 1 <= n_stems <= 4
    assert torch.isfinite(batch["stems"]).all() and batch["mask"].sum(1).min() >= 1
    assert batch["targets"].shape == (3, 6)


# ------------------------------------------------------------------------------------------ augmentation


def test_augmentation_swaps_channels_and_drops_stems_as_configured():
    stems = torch.randn(5, 2, 1000)
    generator = torch.Generator().manual_seed(0)
    swapped = Augmentation(**(NO_AUGMENTATION | {"swap_probability": 1.0}))(stems, SAMPLE_RATE, generator)
    assert torch.equal(swapped, stems.flip(-2))
    dropped = Augmentation(**(NO_AUGMENTATION | {"drop_probability": 1.0, "min_stems": 2}))(
        stems, SAMPLE_RATE, generator
    )
    assert dropped.shape == (2, 2, 1000)
    assert all(any(torch.equal(stem, original) for original in stems) for stem in dropped)


def test_augmentation_gains_stay_in_range():
    stems = torch.ones(64, 2, 10)
    out = Augmentation(**(NO_AUGMENTATION | {"gain_db": 12.0}))(
        stems, SAMPLE_RATE, torch.Generator().manual_seed(1)
    )
    gains_db = 20 * torch.log10(out[:, 0, 0])
    assert gains_db.abs().max() <= 12.0 and gains_db.max() > 6 and gains_db.min() < -6
    assert torch.allclose(out[:, 0], out[:, 1])  # one gain per stem


def test_tilt_moves_lows_and_highs_by_half_the_tilt_each():
    noise = torch.randn(1, 2, 2**16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tilted = tilt(noise, SAMPLE_RATE, tilt_db=torch.tensor([6.0], dtype=torch.float64))
    freqs = np.fft.rfftfreq(noise.shape[-1], 1 / SAMPLE_RATE)
    ratio_db = 20 * np.log10(np.abs(np.fft.rfft(tilted.numpy())) / np.abs(np.fft.rfft(noise.numpy())))
    assert np.median(ratio_db[..., (freqs > 20) & (freqs < 60)]) == pytest.approx(-3.0, abs=0.3)
    assert np.median(ratio_db[..., freqs > 15000]) == pytest.approx(3.0, abs=0.3)


# -------------------------------------------------------------------------------------------- targets


def test_target_sampler_draws_styles_blends_and_random_targets_in_range():
    generator = torch.Generator().manual_seed(0)
    only_styles = TargetSampler(DEFAULT_STYLES, style=1.0, blend=0.0, random=0.0)
    vectors = {tuple(only_styles(generator)[:3].tolist()) for _ in range(30)}
    assert vectors == {tuple(style_vector(style)[:3].tolist()) for style in DEFAULT_STYLES.values()}
    blends = torch.stack(
        [TargetSampler(DEFAULT_STYLES, style=0, blend=1, random=0)(generator) for _ in range(50)]
    )
    lufs = [style.lufs for style in DEFAULT_STYLES.values()]
    assert min(lufs) <= blends[:, 0].min() and blends[:, 0].max() <= max(lufs)
    randoms = torch.stack(
        [TargetSampler(DEFAULT_STYLES, style=0, blend=0, random=1)(generator) for _ in range(50)]
    )
    for column, (low, high) in enumerate(
        (RANDOM_LUFS_RANGE, RANDOM_CENTROID_RANGE_HZ, RANDOM_MS_RATIO_RANGE)
    ):
        assert low <= randoms[:, column].min() and randoms[:, column].max() <= high


def test_target_sampler_refuses_bad_chances():
    with pytest.raises(AutomixError, match="chances"):
        TargetSampler(DEFAULT_STYLES, style=0, blend=0, random=0)


# ------------------------------------------------------------------------------- config defaults match


def test_data_module_defaults_equal_the_data_config():
    config = yaml.safe_load((ROOT / "conf" / "data" / "synthetic.yaml").read_text())
    data = SyntheticDataModule()
    assert asdict(data.augmentation) == config["augmentation"]
    assert DEFAULT_TARGET_MIX == config["targets"]
    for key in ("excerpt_s", "batch_size", "num_workers", "train_items", "val_items", "seed", "max_stems"):
        assert getattr(data, key) == config[key], key
    assert (data.song_s, data.min_stems, data.augment_val) == (config["song_s"], config["min_stems"], False)
    dsp = yaml.safe_load((ROOT / "conf" / "dsp" / "default.yaml").read_text())
    assert data.sample_rate == dsp["sample_rate"] and config["sample_rate"] == "${dsp.sample_rate}"


# --------------------------------------------------------------------------------------- folders on disk


def test_folder_data_any_stem_names_and_counts_read_partially(tmp_path, monkeypatch):
    _write(tmp_path / "song_a" / "kick.wav", 3 * SAMPLE_RATE, SAMPLE_RATE, 2, 1)
    _write(tmp_path / "song_a" / "Guitar DI.flac", 3 * SAMPLE_RATE, SAMPLE_RATE, 1, 2)  # mono
    _write(tmp_path / "song_a" / "MIXTURE.wav", 3 * SAMPLE_RATE, SAMPLE_RATE, 2, 3)  # excluded
    for index in range(6):
        _write(tmp_path / "song_b" / f"track{index}.wav", 2 * 48000, 48000, 2, 10 + index)  # resampled
    _write(tmp_path / "song_c" / "only.wav", SAMPLE_RATE, SAMPLE_RATE, 2, 20)
    (tmp_path / "not_a_song").mkdir()
    data = FolderDataModule(
        root=str(tmp_path), excerpt_s=0.5, batch_size=3, train_items=3, val_items=1, num_workers=0,
        augmentation=NO_AUGMENTATION, valid_fraction=0.34,
    )  # fmt: skip
    songs = {song.name: len(song.stems) for song in data.find_songs()}
    assert songs == {"song_a": 2, "song_b": 6, "song_c": 1}
    reads = _record_reads(monkeypatch)
    data.setup()
    n_train_songs = len(data.train_set.songs.songs)
    assert n_train_songs == 2 and len(data.val_set.songs.songs) == 1
    batch = next(iter(data.train_dataloader()))
    train_songs = data.train_set.songs.songs
    expected = [songs[train_songs[index % n_train_songs].name] for index in range(3)]  # item i: song i mod n
    assert batch["stems"].shape[-1] == SAMPLE_RATE // 2 and torch.isfinite(batch["stems"]).all()
    assert sorted(batch["mask"].sum(1).int().tolist()) == sorted(expected)
    assert reads and all(read["frames"] <= math.ceil(0.5 * 48000) for read in reads)
    assert not any("MIXTURE" in read["path"] for read in reads)


def test_folder_data_errors_name_the_problem(tmp_path):
    with pytest.raises(AutomixError, match="no such folder"):
        FolderDataModule(root=str(tmp_path / "missing"))
    (tmp_path / "train").mkdir()
    with pytest.raises(AutomixError, match="no songs found"):
        FolderDataModule(root=str(tmp_path)).setup()


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory) -> Path:
    """A MUSDB18-HQ-layout folder: 3 training songs x 4 s (mixture, drums, bass, other, vocals)."""
    root = tmp_path_factory.mktemp("musdb18hq")
    script = load_script("data/make_synthetic_musdb.py", "make_synthetic_musdb")
    script.write_dataset(root, n_train=3, n_test=1, duration_s=4.0)
    return root


def test_musdb_data_on_a_musdb18hq_folder_uses_a_seeded_split(musdb_root, monkeypatch):
    names = {p.name for p in (musdb_root / "train" / next(iter(os.listdir(musdb_root / "train")))).iterdir()}
    assert names == {"mixture.wav", "drums.wav", "bass.wav", "other.wav", "vocals.wav"}
    data = MusdbDataModule(
        root=str(musdb_root), excerpt_s=1.0, batch_size=2, train_items=2, val_items=1, num_workers=0,
        augmentation=NO_AUGMENTATION,
    )  # fmt: skip
    reads = _record_reads(monkeypatch)
    data.setup()
    train, valid = data.train_set.songs.songs, data.val_set.songs.songs
    assert len(train) == 2 and len(valid) == 1 and not {s.name for s in train} & {s.name for s in valid}
    batch = next(iter(data.train_dataloader()))
    assert batch["stems"].shape == (2, 4, 2, SAMPLE_RATE) and batch["mask"].eq(1).all()
    assert all(read["frames"] == SAMPLE_RATE for read in reads)
    assert not any(read["path"].endswith("mixture.wav") for read in reads)
    again = MusdbDataModule(root=str(musdb_root), excerpt_s=1.0, num_workers=0)
    again.setup()
    assert [s.name for s in again.val_set.songs.songs] == [s.name for s in valid]


def test_musdb_data_uses_musdbs_own_validation_tracks(musdb_root, tmp_path):
    root = tmp_path / "musdb"
    shutil.copytree(musdb_root, root)
    first = sorted((root / "train").iterdir())[0]
    first.rename(first.with_name("Actions - One Minute Smile"))  # one of MUSDB18's validation tracks
    data = MusdbDataModule(root=str(root), excerpt_s=1.0, num_workers=0)
    data.setup()
    assert [song.name for song in data.val_set.songs.songs] == ["Actions - One Minute Smile"]
    assert len(data.train_set.songs.songs) == 2


def test_musdb_data_needs_a_train_folder(tmp_path):
    with pytest.raises(AutomixError, match="train/"):
        MusdbDataModule(root=str(tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="MUSDB18 .stem.mp4 needs ffmpeg")
def test_musdb_data_reads_stem_mp4_excerpts(musdb_root, tmp_path):
    stempeg = pytest.importorskip("stempeg")
    (tmp_path / "train").mkdir()
    for song in sorted((musdb_root / "train").iterdir()):
        streams = [sf.read(song / f"{name}.wav", dtype="float32")[0] for name in MUSDB_STREAMS]
        writer = stempeg.StreamsWriter(codec="aac", bitrate=128000)
        stempeg.write_stems(
            str(tmp_path / "train" / f"{song.name}.stem.mp4"), np.stack(streams), 44100, writer=writer
        )
    data = MusdbDataModule(
        root=str(tmp_path), is_wav=False, excerpt_s=1.0, batch_size=2, train_items=2, val_items=1,
        num_workers=0, augmentation=NO_AUGMENTATION,
    )  # fmt: skip
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert batch["stems"].shape == (2, 4, 2, SAMPLE_RATE) and torch.isfinite(batch["stems"]).all()
    peaks = batch["stems"].abs().amax(dim=(-2, -1))  # [B, 4]: streams 1-4, not the mixture repeated
    assert peaks.amax(dim=1).min() > 0.05 and (peaks[:, None, :] != peaks[:, :, None]).sum() == 2 * 4 * 3
