"""Training runs: every config composes; smoke training in-process writes a checkpoint that
`AutoMixChain.from_checkpoint` rebuilds and mixes with; resume; and `train.py` itself in subprocesses
(a run, a 2-process CPU DDP run, a 2-job multirun, a user error), as a user would run them."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pyloudnorm
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from automix import AutoMixChain
from automix.compression import bypassed_loudness, compression_db
from automix.errors import AutomixError
from automix.loss import COMPRESSION_BUDGET_DB, compression_cost
from automix.params import logit
from automix.synth import synth_stems
from automix.targets import Targets
from automix.training.module import AutoMixModule
from automix.training.train import project_root, register_resolvers, train
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SAMPLE_RATE = 44100
EXPERIMENTS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
# The experiments that write the shipped checkpoints, and where.
SHIPPED = {
    "synthetic_checkpoint": ROOT / "checkpoints" / "synthetic.ckpt",
    "default_checkpoint": ROOT / "checkpoints" / "default.ckpt",
}
# In-process runs: the smoke experiment without a progress bar.
NO_PROGRESS = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]
QUICK = ["experiment=smoke", *NO_PROGRESS]


def compose_train(overrides: list[str], output_dir: Path | None = None, hydra_config: bool = False):
    register_resolvers()
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("train", overrides=overrides + extra, return_hydra_config=hydra_config)


def run_train_py(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONWARNINGS": "ignore", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, *NO_PROGRESS],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- configs


# (default_checkpoint sets its combined data's sources: no other data config has them.)
@pytest.mark.parametrize("experiment", [name for name in EXPERIMENTS if name != "default_checkpoint"])
@pytest.mark.parametrize("data", ["synthetic", "folder", "musdb"])
@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp"])
def test_every_experiment_composes_with_every_data_and_trainer(experiment, data, trainer, tmp_path):
    cfg = compose_train([f"experiment={experiment}", f"data={data}", f"trainer={trainer}"], tmp_path)
    assert cfg.data._target_.endswith(
        {"synthetic": "Synthetic", "folder": "Folder", "musdb": "Musdb"}[data] + "DataModule"
    )
    assert cfg.data.sample_rate == cfg.dsp.sample_rate == SAMPLE_RATE
    assert set(cfg.style.style_targets) == {"rock_punk", "rnb_ballad", "country_pop"}
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer" and cfg.trainer.default_root_dir == str(
        tmp_path
    )
    # The run's folder, except for the experiments that write the shipped checkpoints.
    assert cfg.export.path == str(SHIPPED.get(experiment, f"{tmp_path}/checkpoints/automix.ckpt"))


def test_the_shipped_checkpoint_is_the_synthetic_stage_trained_on_both_kinds_of_song(tmp_path):
    cfg = compose_train(["experiment=default_checkpoint"], tmp_path)
    assert cfg.data._target_.endswith("CombinedDataModule")
    assert {name: source._target_.split(".")[-1] for name, source in cfg.data.sources.items()} == {
        "synthetic": "MusdbDataModule",
        "people": "MultitrackDataModule",
    }
    assert cfg.data.sources.synthetic.root == compose_train(["experiment=synthetic_checkpoint"]).data.root
    assert cfg.model.init_checkpoint == str(SHIPPED["synthetic_checkpoint"])
    assert SHIPPED["synthetic_checkpoint"].is_file() and cfg.export.path == str(SHIPPED["default_checkpoint"])


@pytest.mark.parametrize("logger", ["wandb", "csv", "none"])
def test_logger_configs_compose(logger, tmp_path):
    cfg = compose_train([f"logger={logger}"], tmp_path)
    if logger == "none":
        assert cfg.logger is None and cfg.callbacks.lr_monitor is None
    else:
        assert cfg.logger[logger].save_dir == str(tmp_path)
    if logger == "wandb":
        assert cfg.logger.wandb.offline is True


def test_paths_come_from_the_repository_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_train([])
    assert Path(cfg.paths.root_dir) == ROOT == Path(project_root())
    assert Path(cfg.paths.log_dir) == ROOT / "logs"
    assert OmegaConf.to_container(cfg.paths)["output_dir"] == "${hydra:runtime.output_dir}"


def test_hparams_search_is_a_grid_multirun():
    cfg = compose_train(["hparams_search=grid"], hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert set(cfg.hydra.sweeper.params) == {"model.hidden_dim", "model.lr"}


def test_slurm_launcher_config_composes_when_the_plugin_is_installed():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_train(["hydra/launcher=slurm"], hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1


def test_init_checkpoint_starts_training_from_its_predictor_weights(tmp_path):
    trained = AutoMixChain(hidden_dim=32, n_layers=1)
    torch.manual_seed(3)
    for weight in trained.predictor.parameters():
        torch.nn.init.normal_(weight)
    path = tmp_path / "trained.ckpt"
    torch.save(trained.checkpoint(), path)
    module = AutoMixModule(hidden_dim=32, n_layers=1, init_checkpoint=str(path))
    for name, weight in trained.predictor.state_dict().items():
        torch.testing.assert_close(module.chain.predictor.state_dict()[name], weight, rtol=0, atol=0)
    assert module.hparams.init_checkpoint == str(path)
    with pytest.raises(AutomixError, match="another shape") as error:
        AutoMixModule(hidden_dim=64, n_layers=1, init_checkpoint=str(path))
    assert "\n" not in str(error.value)
    with pytest.raises(AutomixError, match="no such checkpoint"):
        AutoMixModule(init_checkpoint=str(tmp_path / "missing.ckpt"))


def test_module_defaults_equal_the_model_config():
    config = yaml.safe_load((CONF / "model" / "default.yaml").read_text())
    assert config.pop("_target_") == "automix.training.module.AutoMixModule"
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(AutoMixModule).parameters.items()
        if name not in ("dsp", "style_targets")
    }
    defaults["betas"], defaults["loss_weights"] = list(defaults["betas"]), defaults["loss_weights"] or {}
    assert defaults == config
    chain = AutoMixChain()
    assert (chain.model_config["hidden_dim"], chain.model_config["n_layers"]) == (
        config["hidden_dim"],
        config["n_layers"],
    )


# ---------------------------------------------------------------------------------- in-process training


def test_a_training_step_sends_gradients_to_the_predictor():
    module = AutoMixModule(hidden_dim=16, n_layers=1)
    stems, _ = synth_stems(1.0, SAMPLE_RATE, seed=4)
    batch = {
        "stems": torch.stack([stems, stems]),
        "mask": torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]]),
        "targets": torch.tensor(
            [[-9.5, 2800, 0.6] + [float("nan")] * 3, [-12.0, 1800, 0.8] + [float("nan")] * 3]
        ),
    }
    targets = Targets.from_tensor(batch["targets"])
    mix, analysis, units = module(batch["stems"], targets, batch["mask"])
    loss = module.loss_fn(analysis, targets)
    loss.backward()
    metrics = module.metrics(analysis, targets, batch["mask"], units, "train")
    assert torch.isfinite(loss) and mix.shape == (2, 2, SAMPLE_RATE)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.chain.predictor.parameters())
    assert 0 <= metrics["train/within_all"] <= 1 and torch.isfinite(torch.stack(list(metrics.values()))).all()
    meter = pyloudnorm.Meter(SAMPLE_RATE)  # an independent meter for the logged loudness error
    lufs = [meter.integrated_loudness(item.detach().double().numpy().T) for item in mix]
    errors_lu = [
        abs(measured - float(target)) for measured, target in zip(lufs, batch["targets"][:, 0], strict=True)
    ]
    assert float(metrics["train/error_lufs_lu"]) == pytest.approx(sum(errors_lu) / 2, abs=0.1)


def test_the_compression_term_is_measured_as_mix_time_measures_it_and_sends_gradients():
    module = AutoMixModule(hidden_dim=16, n_layers=1, loss_weights={"compression": 1.0})
    space = module.chain.space
    hard = dict(space.neutral(1)[0]) | {
        "comp_threshold_db": torch.tensor([-40.0]),
        "comp_ratio": torch.tensor([8.0]),
    }
    with torch.no_grad():  # an untrained predictor proposes its bias: a compressor that works hard
        module.chain.predictor.stem_out.bias.copy_(logit(space.normalize_stems(hard)[0]))
    stems, _ = synth_stems(1.0, SAMPLE_RATE, seed=4)
    stems, mask = stems[None], torch.ones(1, 4)
    targets = Targets.from_tensor(torch.tensor([[-12.0, 1800, 0.8] + [float("nan")] * 3]))
    _, analysis, _ = module(stems, targets, mask)
    taken = analysis["strip_compression_db"]
    cost = compression_cost(taken, mask)
    loss = float(module.loss_fn(analysis, targets).detach())
    assert loss >= float(cost.detach()) > 0  # the term is in the loss, beside the others
    (grad,) = torch.autograd.grad(cost.sum(), module.chain.predictor.stem_out.bias)
    prediction = module.chain.predict(stems, targets, mask)  # mix time's measure, without gradients
    bypassed = bypassed_loudness(module.chain, stems, prediction.stem_params, prediction.stem_lufs, mask)
    torch.testing.assert_close(
        taken.detach(), compression_db(bypassed, prediction.stem_lufs), atol=1e-3, rtol=0
    )
    assert (taken > COMPRESSION_BUDGET_DB).all()
    assert grad.abs().sum() > 0


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """One in-process smoke run: 2 epochs of 2 steps, each ending with a validation."""
    output_dir = tmp_path_factory.mktemp("smoke_run")
    overrides = [*QUICK, "data.train_items=4", "trainer.max_steps=4", "logger=csv", "export.weights=last"]
    result = train(compose_train(overrides, output_dir))
    assert result["checkpoint"] == output_dir / "checkpoints" / "automix.ckpt"
    assert "val/loss" in result["metrics"] and "train/loss" in result["metrics"]
    return output_dir


def test_smoke_training_checkpoint_rebuilds_and_mixes_in_predict_mode(smoke_run):
    exported = smoke_run / "checkpoints" / "automix.ckpt"
    chain = AutoMixChain.from_checkpoint(exported)
    assert chain.model_config == {"hidden_dim": 32, "n_layers": 1}
    lightning_state = torch.load(
        smoke_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert lightning_state["global_step"] == 4
    trained = {k.removeprefix("chain.predictor."): v for k, v in lightning_state["state_dict"].items()}
    for name, value in chain.predictor.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0)
    untrained = AutoMixChain(hidden_dim=32, n_layers=1).predictor.state_dict()
    assert any(
        not torch.equal(untrained[name], value) for name, value in chain.predictor.state_dict().items()
    )
    stems, _ = synth_stems(2.0, SAMPLE_RATE, seed=99)
    with torch.no_grad():
        mix, analysis = chain(stems, style="rnb_ballad", mode="predict")
    assert mix.shape == (2, stems.shape[-1]) and torch.isfinite(mix).all()
    assert float(analysis["true_peak_dbtp"]) <= -1.0 + 1e-3


def test_checkpoints_hold_plain_values_and_the_run_config(smoke_run):
    state = torch.load(smoke_run / "checkpoints" / "automix.ckpt", map_location="cpu", weights_only=True)
    assert set(state["versions"]) >= {"automix", "torch", "lightning"}
    assert state["config"]["train"]["model"]["hidden_dim"] == 32
    assert set(state["config"]["style_targets"]["style_targets"]) == {
        "rock_punk",
        "rnb_ballad",
        "country_pop",
    }
    lightning_state = torch.load(
        smoke_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert lightning_state["hyper_parameters"]["dsp"]["sample_rate"] == SAMPLE_RATE
    assert set(lightning_state["automix"]["state_dict"]) == set(state["state_dict"])
    metrics = (smoke_run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in (
        "train/loss",
        "train/error_lufs_lu",
        "train/within_all",
        "val/within_centroid",
        "val/error_ms_ratio",
    ):
        assert name in metrics, name
    assert any(name.startswith("train_params/stem_level_db") for name in metrics)


@pytest.mark.slow
def test_resume_from_a_lightning_checkpoint_continues_the_step_count(smoke_run, tmp_path):
    # A budget in steps: Lightning 2.6 counts a resumed validation-end checkpoint's epoch twice against
    # max_epochs.
    overrides = [*QUICK, "data.train_items=4", "trainer.max_steps=6", "trainer.max_epochs=10", "logger=none"]
    overrides.append(f"ckpt_path={smoke_run / 'checkpoints' / 'last.ckpt'}")
    train(compose_train(overrides, tmp_path))
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 6


def test_a_missing_data_root_is_a_user_error(tmp_path):
    with pytest.raises(AutomixError, match=r"data\.root"):
        train(compose_train([*QUICK, "data=folder"], tmp_path))
    with pytest.raises(AutomixError, match="no such checkpoint"):
        train(compose_train([*QUICK, f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path))


def test_a_checkpoint_lightning_cannot_resume_is_refused_in_one_line(tmp_path):
    """An exported automix checkpoint (weights only) or a garbage file as `ckpt_path` ended in a Hydra
    traceback (`KeyError: 'pytorch-lightning_version'`, a 44-line unpickling error)."""
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    cases = {
        SHIPPED["default_checkpoint"]: "model.init_checkpoint=",
        tmp_path / "garbage.ckpt": "not a PyTorch checkpoint",
    }
    for path, expected in cases.items():
        with pytest.raises(AutomixError, match=expected) as error:
            train(compose_train([*QUICK, f"ckpt_path={path}"], tmp_path))
        assert "\n" not in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("budget", ["trainer.max_epochs=0", "trainer.max_steps=0"])
def test_a_budget_of_no_training_is_refused_before_any_checkpoint_is_written(tmp_path, budget):
    """`trainer.max_epochs=0` exported untrained weights as the run's checkpoint, with exit 0."""
    with pytest.raises(AutomixError, match=budget.replace(".", r"\.") + " trains nothing"):
        train(compose_train([*QUICK, budget], tmp_path))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_a_run_in_which_no_step_ran_writes_no_checkpoint(tmp_path):
    with pytest.raises(AutomixError, match="no training step ran"):
        train(compose_train([*QUICK, "+trainer.limit_train_batches=0", "logger=none"], tmp_path))
    assert not (tmp_path / "checkpoints" / "automix.ckpt").exists()


@pytest.mark.slow
def test_wandb_logger_runs_offline_with_media_under_the_run_dir(tmp_path):
    overrides = [*QUICK, "data.train_items=2", "trainer.max_steps=1", "logger=wandb"]
    train(compose_train(overrides, tmp_path))
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "media" / "val_epoch000.wav").is_file() and (
        tmp_path / "media" / "val_epoch000.png"
    ).is_file()
    import wandb

    assert wandb.run is None  # finished


# ------------------------------------------------------------------------------ train.py, as users run it


@pytest.mark.slow
def test_train_py_smoke_writes_its_checkpoint_under_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train_py(
        ["experiment=smoke", "trainer.max_steps=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = run_dir / "checkpoints" / "automix.ckpt"
    assert f"checkpoint: {checkpoint}" in result.stdout
    assert AutoMixChain.from_checkpoint(checkpoint).model_config["hidden_dim"] == 32
    assert not (tmp_path / "logs").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_train_py_ddp_on_two_cpu_processes(tmp_path):
    run_dir = tmp_path / "ddp"
    args = [
        "experiment=smoke",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=2",
    ]
    result = run_train_py([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    assert (run_dir / "checkpoints" / "automix.ckpt").is_file()
    assert result.stdout.count("checkpoint: ") == 1  # rank 0 only
    assert len(list(run_dir.glob("csv/version_*"))) == 1


@pytest.mark.slow
def test_train_py_multirun_runs_two_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "experiment=smoke",
        "model.hidden_dim=16,32",
        "trainer.max_steps=1",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_train_py(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for job, hidden_dim in ((0, 16), (1, 32)):
        state = torch.load(sweep / str(job) / "checkpoints" / "automix.ckpt", weights_only=True)
        assert state["config"]["model"]["hidden_dim"] == hidden_dim


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["data=folder", "data.root={tmp}/none"],
            "{tmp}/none: no such folder; set data.root to the dataset folder",
        ),
        (["ckpt_path={shipped}"], "{shipped}: an automix checkpoint (weights only): start from its weights"),
    ],
    ids=["missing data root", "automix checkpoint as ckpt_path"],
)
def test_train_py_user_error_is_one_line_and_exit_2(tmp_path, overrides, expected):
    def fill(text: str) -> str:
        return text.format(tmp=tmp_path, shipped=SHIPPED["default_checkpoint"])

    args = ["experiment=smoke", *map(fill, overrides), f"hydra.run.dir={tmp_path}"]
    result = run_train_py(args, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {fill(expected)}"), line


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["synthetic_checkpoint", "default_checkpoint"])
def test_the_shipped_checkpoints_experiments_train_and_export(experiment, tmp_path):
    """The documented commands behind checkpoints/*.ckpt, shortened, on tiny datasets of the same layouts:
    each trains on them and exports the chain's checkpoint where `export.path` says."""
    from tests.test_multitrack_data import AMPLITUDES, _noise_tracks, _write_song

    script = load_script("data/make_synthetic_musdb.py", "make_synthetic_musdb")
    script.write_dataset(tmp_path / "data", n_train=3, n_test=0, duration_s=4.0)
    exported = tmp_path / "exported.ckpt"
    items = ["train_items=4", "val_items=2", "batch_size=2"]
    if experiment == "synthetic_checkpoint":
        data = [f"data.root={tmp_path / 'data'}", "data.num_workers=0", *(f"data.{item}" for item in items)]
    else:
        for seed, song in enumerate(("one", "two")):
            _write_song(tmp_path / "songs" / song, _noise_tracks(AMPLITUDES, seed, 2 * SAMPLE_RATE))
        data = [
            f"data.sources.synthetic.root={tmp_path / 'data'}",
            f"data.sources.people.root={tmp_path / 'songs'}",
            "data.sources.people.excerpt_s=1.0",
            "data.num_workers=0",
            *(f"data.sources.{source}.{item}" for source in ("synthetic", "people") for item in items),
        ]
    args = [
        f"experiment={experiment}",
        *data,
        "trainer.max_steps=2",
        f"export.path={exported}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = run_train_py(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert AutoMixChain.from_checkpoint(exported).model_config == {"hidden_dim": 64, "n_layers": 2}


def test_a_step_with_non_finite_gradients_is_skipped():
    """One item whose meters give a NaN gradient must not turn the weights into NaN."""
    module = AutoMixModule(hidden_dim=16, n_layers=1)
    optimizer = torch.optim.AdamW(module.chain.predictor.parameters(), lr=1e-3)
    before = {name: p.detach().clone() for name, p in module.chain.predictor.named_parameters()}
    for p in module.chain.predictor.parameters():
        p.grad = torch.ones_like(p)
    next(module.chain.predictor.parameters()).grad[0] = float("nan")
    module.on_before_optimizer_step(optimizer)
    optimizer.step()
    for name, p in module.chain.predictor.named_parameters():
        assert torch.equal(p, before[name]), name
