"""Training on people's mixes (data=multitrack): items scrambled from tracks that sum to a person's mix, with
that mix and each track's loudness in it; the loss's terms against it; one training step and a Hydra run
on a folder the tests write; an LMMS render's validation songs left out."""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import soundfile as sf
import torch
import yaml

from automix import create_training_loss, load_style_targets
from automix.balance import MR_STFT_LOG_OFFSET, mr_stft_distance
from automix.errors import AutomixError
from automix.loss import (
    DEFAULT_WEIGHTS,
    TRACK_BALANCE_SCALE_DB,
    ProducerMix,
    loss_terms,
    mr_stft_loss,
    track_balance_error,
)
from automix.loudness import SILENCE_LUFS, integrated_loudness
from automix.targets import Targets
from automix.training.data import (
    DEFAULT_SCRAMBLE,
    CombinedDataModule,
    MultitrackDataModule,
    SyntheticDataModule,
)
from automix.training.datasets import collate_items
from automix.training.lmms import LMMS_REPORT, lmms_script
from automix.training.module import AutoMixModule
from automix.training.train import train
from tests.scripts import load_script
from tests.test_training import NO_PROGRESS, QUICK, compose_train, run_train_py

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100
SONG_S = 0.5  # songs as long as an excerpt: every item starts at 0, so the tests know its samples
AMPLITUDES = (0.3, 0.1, 0.05)  # three noise tracks, ~10 and ~16 dB apart
NO_TILT = {"gain_db": 9.0, "eq_tilt_db": 0.0}


def _write_song(folder: Path, tracks: np.ndarray) -> None:
    """Tracks `[N, T, 2]` as float WAVs `NNN_track.wav` and their sum as `mixture.wav` (left out)."""
    folder.mkdir(parents=True)
    for index, track in enumerate(tracks):
        sf.write(folder / f"{index:03d}_track.wav", track, SAMPLE_RATE, subtype="FLOAT")
    sf.write(folder / "mixture.wav", tracks.sum(0), SAMPLE_RATE, subtype="FLOAT")


def _noise_tracks(amplitudes, seed: int, n_samples: int = round(SONG_S * SAMPLE_RATE)) -> np.ndarray:
    """`[N, T, 2]` noise tracks of these RMS amplitudes, low-passed at 2 kHz as music rolls off (white noise
    measures a centroid above 10 kHz, where no mix is aimed)."""
    rng = np.random.default_rng(seed)
    lowpass = scipy.signal.butter(2, 2000, fs=SAMPLE_RATE, output="sos")
    tracks = []
    for amp in amplitudes:
        track = scipy.signal.sosfilt(lowpass, rng.normal(0, 1, (n_samples, 2)), axis=0)
        tracks.append(amp * track / track.std())
    return np.stack(tracks).astype(np.float32)


def _channels_first(tracks: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(tracks).transpose(-1, -2)


@pytest.fixture
def songs(tmp_path) -> dict[str, np.ndarray]:
    """Two songs of three noise tracks each under tmp_path/songs: name -> tracks `[N, T, 2]`."""
    tracks = {name: _noise_tracks(AMPLITUDES, seed) for seed, name in enumerate(("one", "two"))}
    for name, audio in tracks.items():
        _write_song(tmp_path / "songs" / name, audio)
    return tracks


def _data(root: Path, **options) -> MultitrackDataModule:
    defaults = {"excerpt_s": SONG_S, "batch_size": 2, "train_items": 4, "val_items": 2, "num_workers": 0}
    data = MultitrackDataModule(root=str(root), **(defaults | options))
    data.setup()
    return data


def _song_of(data: MultitrackDataModule, index: int, split: str = "train") -> str:
    dataset = data.train_set if split == "train" else data.val_set
    return dataset.songs.songs[index % len(dataset.songs.songs)].name


# ------------------------------------------------------------------------------------------------ items


def test_the_reference_mix_is_the_sum_of_the_unscrambled_tracks(songs, tmp_path):
    data = _data(tmp_path / "songs")
    for dataset, split in ((data.train_set, "train"), (data.val_set, "val")):
        for index in range(2):
            item = dataset[index]
            tracks = songs[_song_of(data, index, split)]
            expected = torch.from_numpy(tracks.astype(np.float64).sum(0).T).float()
            torch.testing.assert_close(item["reference_mix"], expected, rtol=0, atol=1e-7)
            # The stems are scrambled (validation items too), the mix is not.
            assert not torch.allclose(item["stems"].sum(0), expected, atol=1e-3)


def test_reference_targets_are_what_the_persons_mix_measures_by_an_independent_meter(songs, tmp_path):
    always, never = (
        _data(tmp_path / "songs", reference_targets=1.0),
        _data(tmp_path / "songs", reference_targets=0.0),
    )
    for index in range(2):
        item = always.train_set[index]
        mix = item["reference_mix"].double().numpy().T
        lufs = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(mix)
        assert float(item["target"][0]) == pytest.approx(lufs, abs=0.05)
        mid, side = (mix[:, 0] + mix[:, 1]) / 2, (mix[:, 0] - mix[:, 1]) / 2
        ms_ratio = np.sqrt(np.mean(side**2) / np.mean(mid**2))
        assert float(item["target"][2]) == pytest.approx(ms_ratio, rel=1e-3)
        # the draw leaves the excerpt and its scramble as they were
        torch.testing.assert_close(item["stems"], never.train_set[index]["stems"])
        assert not torch.allclose(item["target"], never.train_set[index]["target"], equal_nan=True)
    with pytest.raises(AutomixError, match="data.reference_targets"):
        MultitrackDataModule(root=str(tmp_path / "songs"), reference_targets=1.5)


def test_a_silent_excerpt_keeps_its_sampled_target_instead_of_a_reference(tmp_path):
    """A song whose only track is silent (LMMS leaves such excerpts): no reference to measure."""
    _write_song(tmp_path / "quiet" / "song", np.zeros((1, round(SONG_S * SAMPLE_RATE), 2), np.float32))
    always, never = (
        _data(tmp_path / "quiet", reference_targets=1.0),
        _data(tmp_path / "quiet", reference_targets=0.0),
    )
    item = always.train_set[0]
    assert float(item["reference_lufs"]) <= SILENCE_LUFS
    torch.testing.assert_close(item["target"], never.train_set[0]["target"], equal_nan=True)


def test_scramble_gains_are_seeded_within_range_and_recoverable(songs, tmp_path):
    data = _data(tmp_path / "songs", scramble=NO_TILT, train_items=8)
    gains_db = []
    for index in range(8):
        item = data.train_set[index]
        assert torch.equal(item["stems"], data.train_set[index]["stems"])  # the same item twice
        ratio = item["stems"].double() / _channels_first(songs[_song_of(data, index)]).double()
        per_track = ratio.flatten(1).mean(1)  # scrambled / original: one gain a track, the same everywhere
        torch.testing.assert_close(ratio, per_track[:, None, None].expand_as(ratio), rtol=1e-6, atol=0)
        gains_db += (20 * torch.log10(per_track)).tolist()
    assert max(abs(gain) for gain in gains_db) <= NO_TILT["gain_db"] + 1e-4
    assert max(gains_db) > 4 and min(gains_db) < -4  # spread over the range, not stuck at 0
    tilted = _data(tmp_path / "songs")  # the default scramble tilts too, seeded the same way
    assert torch.equal(tilted.train_set[3]["stems"], tilted.train_set[3]["stems"])
    assert not torch.equal(tilted.train_set[3]["stems"], tilted.train_set[4]["stems"])


def test_track_and_mix_loudness_match_pyloudnorm_on_the_unscrambled_tracks(songs, tmp_path):
    data = _data(tmp_path / "songs")
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    item = data.train_set[0]
    tracks = songs[_song_of(data, 0)]
    expected = [meter.integrated_loudness(track.astype(np.float64)) for track in tracks]
    np.testing.assert_allclose(item["track_lufs"].numpy(), expected, atol=0.1)
    mix_lufs = meter.integrated_loudness(tracks.astype(np.float64).sum(0))
    assert float(item["reference_lufs"]) == pytest.approx(mix_lufs, abs=0.1)


def test_more_tracks_than_max_stems_keeps_the_loudest_and_mixes_only_them(tmp_path):
    tracks = _noise_tracks((0.05, 0.3, 0.01, 0.2), seed=7)
    _write_song(tmp_path / "songs" / "four", tracks)
    item = _data(tmp_path / "songs", max_stems=2, scramble=NO_TILT).train_set[0]
    kept = tracks[[1, 3]]  # the two loudest, in track order
    assert item["stems"].shape[0] == 2 and item["track_lufs"].shape == (2,)
    expected = torch.from_numpy(kept.astype(np.float64).sum(0).T).float()
    torch.testing.assert_close(item["reference_mix"], expected, rtol=0, atol=1e-7)
    ratio = item["stems"].double() / _channels_first(kept).double()  # the scramble of the kept tracks
    assert ratio.min() > 10 ** (-9.5 / 20) and ratio.max() < 10 ** (9.5 / 20)


def test_nan_and_silent_tracks_are_silent_stems_outside_the_mix(tmp_path):
    tracks = _noise_tracks((0.3, 0.1, 0.1, 0.0), seed=3)
    tracks[2, 100:200] = np.nan  # a broken render
    _write_song(tmp_path / "songs" / "broken", tracks)
    item = _data(tmp_path / "songs").train_set[0]
    assert torch.isfinite(item["stems"]).all() and item["stems"][2:].abs().sum() == 0
    assert item["track_lufs"][2:].tolist() == [SILENCE_LUFS, SILENCE_LUFS]
    expected = torch.from_numpy(tracks[:2].astype(np.float64).sum(0).T).float()
    torch.testing.assert_close(item["reference_mix"], expected, rtol=0, atol=1e-7)


def test_collate_pads_the_track_loudness_with_silence(songs, tmp_path):
    _write_song(tmp_path / "songs" / "duo", _noise_tracks((0.2, 0.2), seed=9))
    dataset = _data(tmp_path / "songs", train_items=6).train_set
    items = sorted((dataset[index] for index in range(6)), key=lambda item: item["stems"].shape[0])
    batch = collate_items([items[0], items[-1], items[-2]])  # two tracks, three, three
    assert [len(item["track_lufs"]) for item in (items[0], items[-1])] == [2, 3]
    assert batch["stems"].shape[:2] == (3, 3)
    assert batch["reference_mix"].shape == (3, 2, round(SONG_S * SAMPLE_RATE))
    assert batch["reference_lufs"].shape == (3,) and batch["track_lufs"].shape == (3, 3)
    padded = batch["mask"] == 0
    assert padded.sum() == 1 and (batch["track_lufs"][padded] == SILENCE_LUFS).all()
    assert (batch["track_lufs"][~padded] > SILENCE_LUFS).all()


def test_multitrack_defaults_equal_the_data_config(songs, tmp_path):
    config = yaml.safe_load((ROOT / "conf" / "data" / "multitrack.yaml").read_text())
    assert config.pop("_target_") == "automix.training.data.MultitrackDataModule"
    data = MultitrackDataModule(root=str(tmp_path / "songs"))
    assert config["scramble"] == DEFAULT_SCRAMBLE
    augmentation = data.augmentation
    assert (augmentation.gain_db, augmentation.eq_tilt_db) == (9.0, 3.0) and data.augment_val
    assert (augmentation.pan, augmentation.swap_probability, augmentation.drop_probability) == (0, 0, 0)
    assert (data.lmms_demos, sorted(data.exclude)) == (config["lmms_demos"], config["exclude"])
    for key in ("excerpt_s", "batch_size", "num_workers", "train_items", "val_items", "seed", "max_stems"):
        assert getattr(data, key) == config[key], key
    assert data.valid_fraction == config["valid_fraction"]
    assert data.reference_targets == config["reference_targets"]
    with pytest.raises(AutomixError, match="data.scramble"):
        MultitrackDataModule(root=str(tmp_path / "songs"), scramble={"pan": 0.3})


# ------------------------------------------------------------------------------------------------- loss


def _shares(lufs: list[float]) -> np.ndarray:
    power = 10 ** (np.array(lufs) / 10)
    return power / power.sum()


def test_track_balance_is_zero_at_the_producers_balance_and_grows_with_a_tracks_offset():
    track_lufs = torch.tensor([[-20.0, -23.0, -30.0, SILENCE_LUFS, SILENCE_LUFS]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])  # a silent track and a padding stem
    # The chain's stems 7 dB louder than the producer's tracks (a trim), the silent ones anywhere.
    stem_lufs = track_lufs + 7.0
    stem_lufs[0, 3:] = torch.tensor([-40.0, -10.0])
    assert float(track_balance_error(stem_lufs, track_lufs, mask)) == pytest.approx(0.0, abs=1e-9)
    # One track 3 dB off: d = (3, 0, 0), weighted mean 3·w1, so Σ wᵢ(dᵢ − mean)² = 9·w1·(1 − w1).
    w = _shares([-20.0, -23.0, -30.0])
    for track in range(3):
        off = stem_lufs.clone()
        off[0, track] += 3.0
        expected = 9 * w[track] * (1 - w[track])
        assert float(track_balance_error(off, track_lufs, mask)) == pytest.approx(expected, rel=1e-5)
    # A batch, and the term as the loss weighs it.
    batch_stems, batch_tracks = torch.cat([stem_lufs, off]), track_lufs.expand(2, -1)
    analysis = _analysis(batch_stems, mask.expand(2, -1))
    producer = ProducerMix(batch_tracks, torch.zeros(2, 2, 8), torch.full((2,), -20.0))
    terms = loss_terms(analysis, _targets(2), producer=producer)
    expected = [0.0, 9 * w[2] * (1 - w[2]) / TRACK_BALANCE_SCALE_DB**2]
    np.testing.assert_allclose(terms["track_balance"].numpy(), expected, rtol=1e-5, atol=1e-9)
    assert "mr_stft" not in terms  # that one needs the chain's mix


def _targets(batch: int) -> Targets:
    return Targets.from_tensor(torch.tensor([[-12.0, 2000.0, 0.5] + [math.nan] * 3] * batch))


def _analysis(stem_lufs: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    batch = stem_lufs.shape[0]
    return {
        "lufs": torch.full((batch,), -12.0),
        "spectral_centroid": torch.full((batch,), 2000.0),
        "stereo_ms_ratio": torch.full((batch,), 0.5),
        "band_energy": torch.full((batch, 3), 1 / 3),
        "true_peak_dbtp": torch.full((batch,), -1.0),
        "stem_lufs": stem_lufs,
        "stem_mask": mask,
    }


def test_the_loss_without_a_producers_mix_is_as_before():
    analysis = _analysis(torch.tensor([[-20.0, -25.0]]), torch.ones(1, 2))
    assert not {"track_balance", "mr_stft"} & set(loss_terms(analysis, _targets(1)))
    loss_fn = create_training_loss(load_style_targets())
    assert float(loss_fn(analysis, _targets(1))) == pytest.approx(0.0, abs=1e-9)
    assert DEFAULT_WEIGHTS["track_balance"] > 0 and DEFAULT_WEIGHTS["mr_stft"] > 0


def test_mr_stft_loss_is_the_measurement_at_its_floor_and_differentiable(monkeypatch):
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, SAMPLE_RATE // 2, generator=generator, dtype=torch.float64)
    y = torch.randn(2, 2, SAMPLE_RATE // 2, generator=generator, dtype=torch.float64)
    y[1] = torch.nn.functional.avg_pool1d(y[1:2], 9, stride=1, padding=4)[0]  # a darker mix
    x_lufs, y_lufs = integrated_loudness(x, SAMPLE_RATE), integrated_loudness(y, SAMPLE_RATE)
    measured = mr_stft_distance(x, y, SAMPLE_RATE)
    monkeypatch.setattr("automix.loss.MR_STFT_FLOOR", MR_STFT_LOG_OFFSET)
    torch.testing.assert_close(mr_stft_loss(x, x_lufs, y, y_lufs), measured, rtol=1e-6, atol=0)
    monkeypatch.undo()
    # Level-free: a mix against itself 12 dB quieter reads 0.
    assert mr_stft_loss(x, x_lufs, x / 4, x_lufs - 12.04).abs().max() < 1e-3
    gain = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    darker = x * (1 + gain[:, None, None]) + 0.5 * torch.roll(x, 1, dims=-1) * gain[:, None, None]
    mr_stft_loss(darker, integrated_loudness(darker, SAMPLE_RATE), y, y_lufs).sum().backward()
    assert torch.isfinite(gain.grad).all() and gain.grad.abs().min() > 0


# ----------------------------------------------------------------------------------------------- training


def test_one_training_step_sends_the_producers_terms_to_the_strip_settings(songs, tmp_path):
    data = _data(tmp_path / "songs")
    batch = next(iter(data.train_dataloader()))
    module = AutoMixModule(hidden_dim=16, n_layers=1)
    targets = Targets.from_tensor(batch["targets"])
    producer = ProducerMix.from_batch(batch)
    mix, analysis, units = module(batch["stems"], targets, batch["mask"])
    terms = loss_terms(analysis, targets, module.chain.ceiling_dbtp, producer, mix)
    assert terms["track_balance"].min() > 0 and terms["mr_stft"].min() > 0  # scrambled: off the producer's
    strip_out = module.chain.predictor.stem_out.weight
    (balance_grad,) = torch.autograd.grad(terms["track_balance"].sum(), strip_out, retain_graph=True)
    assert torch.isfinite(balance_grad).all() and balance_grad.abs().sum() > 0
    loss = module.loss_fn(analysis, targets, producer, mix)
    loss.backward()
    grads = [p.grad for p in module.chain.predictor.parameters()]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)
    metrics = module.metrics(analysis, targets, batch["mask"], units, "train", producer, mix)
    assert {"train/term_track_balance", "train/term_mr_stft", "train/error_track_balance_db"} <= set(metrics)
    balance_db = float(metrics["train/error_track_balance_db"])
    assert balance_db == pytest.approx(
        float(terms["track_balance"].detach().sqrt().mean()) * TRACK_BALANCE_SCALE_DB
    )


def test_train_with_data_multitrack_logs_the_producers_terms(songs, tmp_path):
    overrides = [
        *QUICK,
        "data=multitrack",
        f"data.root={tmp_path / 'songs'}",
        f"data.excerpt_s={SONG_S}",
        "data.train_items=2",
        "data.val_items=2",
        "trainer.max_epochs=1",
        "logger=csv",
    ]
    result = train(compose_train(overrides, tmp_path / "run"))
    assert result["checkpoint"] == tmp_path / "run" / "checkpoints" / "automix.ckpt"
    for name in ("train/term_track_balance", "val/term_track_balance", "val/term_mr_stft"):
        assert name in result["metrics"] and math.isfinite(result["metrics"][name]), name


def _synthetic(**options) -> SyntheticDataModule:
    defaults = {"excerpt_s": 0.25, "song_s": 0.5, "batch_size": 2, "train_items": 5, "val_items": 3}
    return SyntheticDataModule(num_workers=0, **(defaults | options))


def test_combined_batches_each_come_whole_from_one_source(songs, tmp_path):
    people, synthetic = _data(tmp_path / "songs", train_items=4), _synthetic()
    data = CombinedDataModule(sources={"synthetic": synthetic, "people": people}, num_workers=0)
    data.setup()
    # Training drops each source's short last batch (5 items in 2s: 2 batches); validation keeps it.
    assert (len(data.train_set), len(data.val_set)) == (2 + 2, 2 + 1)
    seen = {"synthetic": 0, "people": 0}
    for batch in data.train_dataloader():
        source = "people" if "reference_mix" in batch else "synthetic"
        seen[source] += 1
        excerpt_s = SONG_S if source == "people" else 0.25
        assert batch["stems"].shape[0] == 2 and batch["stems"].shape[-1] == round(excerpt_s * SAMPLE_RATE)
    assert seen == {"synthetic": 2, "people": 2}
    # A batch is its source's items, as that source's own loader would collate them.
    first_people = next(k for k, (dataset, _) in enumerate(data.val_set.batches) if dataset is people.val_set)
    expected = collate_items([people.val_set[0], people.val_set[1]])
    for key, value in data.val_set[first_people].items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, equal_nan=True)


def test_combined_data_refuses_no_sources_and_a_source_that_is_not_a_data_module():
    with pytest.raises(AutomixError, match="at least one"):
        CombinedDataModule(sources={})
    with pytest.raises(AutomixError, match="sources.bad: needs a _target_"):
        CombinedDataModule(sources={"bad": {"root": "x"}})
    with pytest.raises(AutomixError, match="sources.bad: not a MixDataModule"):
        CombinedDataModule(sources={"bad": {"_target_": "collections.OrderedDict"}})


def test_train_with_data_combined_learns_from_both_kinds_of_batch(songs, tmp_path):
    """data=combined as configured (synthetic songs in MUSDB layout beside people's mixes)."""
    load_script("data/make_synthetic_musdb.py", "make_synthetic_musdb").write_dataset(
        tmp_path / "synth", n_train=3, n_test=0, duration_s=2.0
    )
    items = ["train_items=2", "val_items=2", "batch_size=2", f"excerpt_s={SONG_S}"]
    overrides = [
        *NO_PROGRESS,
        "data=combined",
        "data.num_workers=0",
        f"data.sources.synthetic.root={tmp_path / 'synth'}",
        f"data.sources.people.root={tmp_path / 'songs'}",
        *(f"data.sources.{source}.{item}" for source in ("synthetic", "people") for item in items),
        "model.hidden_dim=32",
        "model.n_layers=1",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
    ]
    result = train(compose_train(overrides, tmp_path / "run"))
    assert result["checkpoint"].is_file()
    # The people's terms come from their batches; the loss averages both kinds.
    for name in ("train/term_track_balance", "val/term_mr_stft", "val/loss", "val/term_lufs"):
        assert name in result["metrics"] and math.isfinite(result["metrics"][name]), name


@pytest.mark.slow
def test_train_py_runs_the_multitrack_experiment(songs, tmp_path):
    """With a data worker: the validation's worker starts after training steps ran numba's meter in the
    main process (a forked one died there)."""
    args = [
        "experiment=multitrack_checkpoint",
        f"data.root={tmp_path / 'songs'}",
        f"data.excerpt_s={SONG_S}",
        "data.train_items=4",
        "data.val_items=2",
        "data.batch_size=2",
        "data.num_workers=1",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = run_train_py(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "automix.ckpt").is_file()


# ----------------------------------------------------------------------------------- LMMS's held-out songs


@pytest.fixture
def lmms_demos(tmp_path) -> Path:
    """A stand-in for lmms-common's projects folder: 8 demos (the 4th and 8th by name are validation
    songs) and a held-out project in projects/shorties."""
    demos = tmp_path / "lmms" / "projects" / "demos"
    demos.mkdir(parents=True)
    for name in "ABCDEFGH":
        (demos / f"{name}.mmpz").touch()
    (demos.parent / "shorties").mkdir()
    (demos.parent / "shorties" / "Short.mmpz").touch()
    return demos


def _write_render(root: Path, song: str, project: Path, seed: int) -> None:
    _write_song(root / song, _noise_tracks((0.2, 0.1), seed))
    (root / song / LMMS_REPORT).write_text(json.dumps({"song": song, "project": str(project)}))


def test_lmms_validation_songs_and_held_out_projects_are_never_trained_on(lmms_demos, tmp_path, caplog):
    lmms = lmms_script()
    assert LMMS_REPORT == lmms.REPORT
    assert lmms.validation_songs("ABCDEFGH") == {"D", "H"}
    root = tmp_path / "renders"
    for seed, song in enumerate("ABDH"):
        _write_render(root, song, lmms_demos / f"{song}.mmpz", seed)
    _write_render(root, "Short", lmms_demos.parent / "shorties" / "Short.mmpz", 5)
    _write_render(root, "renamed", lmms_demos / "D.mmpz", 6)  # a validation song under another name
    _write_song(root / "own_session", _noise_tracks((0.2, 0.1), 7))  # not an LMMS render
    with caplog.at_level(logging.WARNING, logger="automix.training.data"):
        data = _data(root, lmms_demos=str(lmms_demos), valid_fraction=0.34)
    trained = {song.name for song in data.train_set.songs.songs + data.val_set.songs.songs}
    assert trained == {"A", "B", "own_session"}
    assert all(
        name in caplog.text for name in ("D (an LMMS validation", "H (", "renamed (", "Short (a held-out")
    )
    for song in ("A", "B", "own_session"):
        for path in (root / song).iterdir():
            path.unlink()
        (root / song).rmdir()
    with pytest.raises(AutomixError, match="every song is an LMMS validation song or held out"):
        _data(root, lmms_demos=str(lmms_demos))
    with pytest.raises(AutomixError, match="no LMMS projects"):
        _data(root, lmms_demos=str(tmp_path / "elsewhere"))
