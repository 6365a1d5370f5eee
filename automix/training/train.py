"""`train(cfg)`: one training run from a composed Hydra config (conf/train.yaml), as `train.py` runs it.

Builds the data module, the module, the loggers, the callbacks and the trainer from `_target_` entries,
fits (resuming from `ckpt_path` when set), and on rank 0 writes the chain's own checkpoint
(`AutoMixChain.from_checkpoint` reads it; `mix.py --checkpoint` uses it) to `export.path`.
"""

import pickle
import zipfile
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

import automix
from automix.dsp.dynamics import cache_compiled_kernels
from automix.errors import AutomixError
from automix.io import write_atomically
from automix.training.module import AutoMixModule, plain

ROOT_RESOLVER = "automix_root"
LIGHTNING_VERSION_KEY = "pytorch-lightning_version"  # in every checkpoint Lightning writes
EXPORT_WEIGHTS = ("best", "last")


def project_root() -> str:
    """The repository holding conf/ and the automix package (what `${automix_root:}` gives)."""
    return str(Path(automix.__file__).resolve().parents[1])


def register_resolvers() -> None:
    """Make `${automix_root:}` known to OmegaConf (conf/paths uses it); idempotent."""
    if not OmegaConf.has_resolver(ROOT_RESOLVER):
        OmegaConf.register_new_resolver(ROOT_RESOLVER, project_root)


def build(config: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, with a user's error in the built object's arguments raised as itself
    (the AutomixError that Hydra wraps) rather than as Hydra's InstantiationException."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, AutomixError):
            raise error.__cause__ from None
        raise


def _build_all(section: DictConfig | None) -> list:
    """Build every `_target_` entry of a group such as callbacks or logger; null entries are off."""
    if not section:
        return []
    return [build(entry) for entry in section.values() if entry is not None and "_target_" in entry]


def train(cfg: DictConfig) -> dict:
    """Fit the predictor as `cfg` says.

    Returns:
        `{"metrics": {name: float}, "checkpoint": path of the exported automix checkpoint or None}`
        (None on ranks other than 0).

    Raises:
        AutomixError: a mandatory value left unset (e.g. `data.root`), a `ckpt_path` that is not a
            Lightning checkpoint, a budget of 0 epochs or steps, a run in which no step ran, or any user
            error of the data or model configs.
    """
    register_resolvers()
    cache_compiled_kernels()
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise AutomixError(f"config: set {', '.join(missing)} (e.g. on the command line: {missing[0]}=...)")
    if cfg.export.weights not in EXPORT_WEIGHTS:
        raise AutomixError(
            f"export.weights must be one of {', '.join(EXPORT_WEIGHTS)}, got {cfg.export.weights!r}"
        )
    for budget in ("max_epochs", "max_steps"):
        if cfg.trainer.get(budget) == 0:
            raise AutomixError(
                f"trainer.{budget}=0 trains nothing, and the run's checkpoint would hold untrained weights; "
                "give at least 1 (or -1: no limit)"
            )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        check_resume_checkpoint(Path(ckpt_path))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    styles, dsp = plain(cfg.style), plain(cfg.dsp)
    datamodule = build(cfg.data, style_targets=styles, _convert_="all")
    model: AutoMixModule = build(cfg.model, dsp=dsp, style_targets=styles, _convert_="all")
    loggers = _build_all(cfg.get("logger"))
    uses_wandb = any(isinstance(logger, WandbLogger) for logger in loggers)
    try:
        trainer: L.Trainer = build(
            cfg.trainer, callbacks=_build_all(cfg.get("callbacks")), logger=loggers or False
        )
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": plain(cfg)})
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        if trainer.global_step == 0:
            raise AutomixError(
                "no training step ran (no training batch came: check the data and the trainer's batch "
                "limits); no checkpoint was written"
            )
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        checkpoint = export_checkpoint(trainer, model, cfg) if trainer.is_global_zero else None
    finally:
        if uses_wandb:
            import wandb

            wandb.finish()
    return {"metrics": metrics, "checkpoint": checkpoint}


def check_resume_checkpoint(path: Path) -> None:
    """Refuse a `ckpt_path` that Lightning cannot resume from, in one line: a missing file, not a PyTorch
    file, or one without Lightning's training state (an exported automix checkpoint holds weights only:
    `model.init_checkpoint` starts from those)."""
    if not path.is_file():
        raise AutomixError(f"{path}: no such checkpoint to resume from; check ckpt_path")
    # torch.save writes a zip archive; anything else would reach the unpickler and fail in many ways.
    if not zipfile.is_zipfile(path):
        raise AutomixError(f"{path}: not a PyTorch checkpoint; ckpt_path resumes from a run's last.ckpt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError) as error:
        raise AutomixError(f"{path}: not a checkpoint this project wrote ({type(error).__name__})") from None
    if not isinstance(state, dict) or LIGHTNING_VERSION_KEY not in state:
        hint = (
            f"an automix checkpoint (weights only): start from its weights with model.init_checkpoint={path}"
            if isinstance(state, dict) and "config" in state.get("automix", state)
            else "not a Lightning checkpoint"
        )
        raise AutomixError(f"{path}: {hint}; ckpt_path resumes a run from its checkpoints/last.ckpt")


def export_checkpoint(trainer: L.Trainer, model: AutoMixModule, cfg: DictConfig) -> Path:
    """Write the chain's checkpoint to `cfg.export.path`: the weights of the best Lightning checkpoint
    (lowest monitored validation loss) when `export.weights` is "best" and one exists, else the final ones.
    The resolved run config rides along as plain dicts under `config.train`."""
    export = cfg.export
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if export.weights == "best" and best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["automix"]
    else:
        state = model.automix_checkpoint()
    state["config"]["train"] = plain(cfg)
    path = Path(export.path)
    write_atomically(path, lambda file: torch.save(state, file))
    return path
