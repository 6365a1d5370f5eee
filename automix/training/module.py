"""The LightningModule: the parameter predictor trained through the differentiable chain.

A batch is stem excerpts with a target per item (`automix.training.data`); the predictor sets the
console from the stems' features and the targets, the chain renders the mix with gradients, and
`automix.loss.create_training_loss` compares its measurements with the targets, and with a person's mix
of the same tracks where the batch carries one (data=multitrack). One network learns every style because
every item brings its own target.
"""

import math
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from automix import __version__
from automix.analysis import report
from automix.chain import AutoMixChain
from automix.compression import bypassed_loudness, compression_db
from automix.errors import AutomixError
from automix.loss import (
    DEFAULT_WEIGHTS,
    TOLERANCES,
    ProducerMix,
    create_training_loss,
    loss_terms,
    track_balance_error,
)
from automix.params import ParameterSpace
from automix.styles import DEFAULT_STYLES, styles_from_config
from automix.targets import Targets

SCHEDULERS = ("cosine", "constant")
# What the logs call each measurement: its error's name and unit.
ERROR_NAMES = {"lufs": "lufs_lu", "spectral_centroid": "centroid_hz", "stereo_ms_ratio": "ms_ratio"}


def plain(value):
    """Mappings and sequences (OmegaConf containers included) as dicts and lists, for hparams and
    checkpoints that load with `torch.load(weights_only=True)`."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


class AutoMixModule(L.LightningModule):
    """Trains `AutoMixChain`'s predictor in predict mode. The defaults equal conf/model/default.yaml.

    Args:
        dsp: parameter ranges, `sample_rate` and `ceiling_dbtp`, shaped like conf/dsp/default.yaml;
            None for the library's defaults.
        style_targets: the styles trained on, shaped like conf/style (kept in the checkpoint); None for
            the built-in styles.
        hidden_dim, n_layers: predictor size.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's betas.
        scheduler: "cosine" (linear warm-up, then cosine decay to `min_lr_ratio * lr` over the run) or
            "constant" (warm-up, then `lr`).
        warmup_steps: optimiser steps of linear warm-up.
        min_lr_ratio: the cosine schedule's final learning rate, as a fraction of `lr`.
        loss_weights: per-term weights over `automix.loss.DEFAULT_WEIGHTS`.
        log_media_every_n_epochs: validation audio and plot (wandb logger, rank 0) every n epochs; 0 never.
        init_checkpoint: an automix checkpoint (`AutoMixChain.checkpoint()`, train.py's export) whose
            predictor weights training starts from (fine-tuning); None starts from random weights.
    """

    def __init__(
        self,
        *,
        dsp: Mapping | None = None,
        style_targets: Mapping | None = None,
        hidden_dim: int = 128,
        n_layers: int = 2,
        lr: float = 1.0e-3,
        weight_decay: float = 1.0e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: str = "cosine",
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.05,
        loss_weights: Mapping | None = None,
        log_media_every_n_epochs: int = 1,
        init_checkpoint: str | None = None,
    ):
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise AutomixError(
                f"unknown model.scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}"
            )
        unknown = sorted(set(loss_weights or {}) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise AutomixError(
                f"unknown model.loss_weights {unknown}; the terms are {sorted(DEFAULT_WEIGHTS)}"
            )
        dsp = plain(dsp) if dsp is not None else None
        style_targets = plain(style_targets) if style_targets is not None else None
        self.save_hyperparameters(
            {
                "dsp": dsp,
                "style_targets": style_targets,
                "hidden_dim": hidden_dim,
                "n_layers": n_layers,
                "lr": lr,
                "weight_decay": weight_decay,
                "betas": list(betas),
                "scheduler": scheduler,
                "warmup_steps": warmup_steps,
                "min_lr_ratio": min_lr_ratio,
                "loss_weights": plain(loss_weights or {}),
                "log_media_every_n_epochs": log_media_every_n_epochs,
                "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
            }
        )
        styles = styles_from_config(style_targets, "style targets") if style_targets else dict(DEFAULT_STYLES)
        dsp = dsp or {}
        chain_options = {"space": ParameterSpace.from_config(dsp) if "stem" in dsp else None}
        if "sample_rate" in dsp:
            chain_options["sample_rate"] = int(dsp["sample_rate"])
        if "ceiling_dbtp" in dsp:
            chain_options["ceiling_dbtp"] = float(dsp["ceiling_dbtp"])
        self.chain = AutoMixChain(
            style_targets=styles, hidden_dim=hidden_dim, n_layers=n_layers, **chain_options
        )
        if init_checkpoint:
            self.load_predictor(init_checkpoint)
        self.loss_weights = DEFAULT_WEIGHTS | dict(loss_weights or {})
        self.loss_fn = create_training_loss(styles, self.loss_weights, self.chain.ceiling_dbtp)

    def load_predictor(self, path) -> None:
        """Start from the predictor weights of the automix checkpoint `path`.

        Raises:
            AutomixError: the file is not an automix checkpoint, or its predictor has another shape.
        """
        trained = AutoMixChain.from_checkpoint(path)
        try:
            self.chain.predictor.load_state_dict(trained.predictor.state_dict())
        except RuntimeError:
            raise AutomixError(
                f"{path}: a predictor of another shape ({trained.model_config}); set model.hidden_dim and "
                "model.n_layers to match, or model.init_checkpoint=null"
            ) from None

    # ------------------------------------------------------------------------------------------ steps

    def forward(self, stems: torch.Tensor, targets: Targets, mask: torch.Tensor | None = None):
        """Predict-mode mix of a batch: `(mix [B, 2, T], analysis, (stem_unit, master_unit))`."""
        prediction = self.chain.predict(stems, targets, mask)
        mix, analysis = self.chain.finish_prediction(prediction, mask, kept=False)
        if self.loss_weights["compression"]:  # the strips rendered again, each compressor's ratio at 1
            bypassed = bypassed_loudness(
                self.chain, stems, prediction.stem_params, prediction.stem_lufs, mask, differentiable=True
            )
            analysis["strip_compression_db"] = compression_db(
                bypassed, prediction.stem_lufs, differentiable=True
            )
        return mix, analysis, (prediction.stem_unit, prediction.master_unit)

    def _step(self, batch: Mapping[str, torch.Tensor], stage: str):
        stems, mask = batch["stems"], batch["mask"]
        targets = Targets.from_tensor(batch["targets"])
        producer = ProducerMix.from_batch(batch)
        mix, analysis, units = self(stems, targets, mask)
        loss = self.loss_fn(analysis, targets, producer, mix)
        training = stage == "train"
        options = {"batch_size": stems.shape[0], "on_step": training, "on_epoch": not training}
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=not training, **options)
        metrics = self.metrics(analysis, targets, mask, units, stage, producer, mix)
        self.log_dict(metrics, sync_dist=not training, **options)
        return loss, mix, analysis

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        loss, _, _ = self._step(batch, "train")
        if not torch.isfinite(loss):
            return None  # Lightning skips the step: one bad batch must not poison the weights
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        # A non-finite gradient (a meter's edge case on one item) would turn every weight into NaN through
        # the optimiser; that step is skipped instead, as mixed-precision training skips overflowing ones.
        grads = [p.grad for p in self.chain.predictor.parameters() if p.grad is not None]
        finite = all(torch.isfinite(grad).all() for grad in grads)
        self.log("train/skipped_step", float(not finite), on_step=True, on_epoch=False, reduce_fx="sum")
        if not finite:
            optimizer.zero_grad(set_to_none=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        _, mix, analysis = self._step(batch, "val")
        every = self.hparams.log_media_every_n_epochs
        if batch_idx == 0 and every and self.current_epoch % every == 0 and not self.trainer.sanity_checking:
            self.log_media(batch, mix, analysis)

    # ---------------------------------------------------------------------------------------- metrics

    @torch.no_grad()
    def metrics(
        self, analysis, targets, mask, units, stage: str, producer: ProducerMix | None = None, mix=None
    ) -> dict[str, torch.Tensor]:
        """Per-target errors, the fraction within `automix.loss.TOLERANCES`, loss terms (those against
        the person's mix where `producer` is given) and parameter statistics of a batch (means over its
        items)."""
        judged = report(analysis, targets, self.chain.ceiling_dbtp)
        values = {}
        for name, label in ERROR_NAMES.items():
            values[f"{stage}/error_{label}"] = judged["errors"][name].abs().mean()
            values[f"{stage}/within_{label.split('_')[0]}"] = judged["passed"][name].float().mean()
        within_all = torch.stack([judged["passed"][name] for name in TOLERANCES]).all(0)
        values[f"{stage}/within_all"] = within_all.float().mean()
        values[f"{stage}/true_peak_ok"] = judged["passed"]["true_peak"].float().mean()
        values[f"{stage}/quality_score"] = judged["quality_score"].mean()
        for name, term in loss_terms(analysis, targets, self.chain.ceiling_dbtp, producer, mix).items():
            values[f"{stage}/term_{name}"] = term.mean()
        if producer is not None:
            balance_db2 = track_balance_error(analysis["stem_lufs"], producer.track_lufs, mask)
            values[f"{stage}/error_track_balance_db"] = balance_db2.sqrt().mean()
        weight = mask.to(analysis["lufs"].dtype)
        for name, value in analysis["stem_params"].items():
            per_stem = value.mean(-1) if value.ndim == weight.ndim + 1 else value  # bands averaged
            values[f"{stage}_params/stem_{name}"] = (per_stem * weight).sum() / weight.sum().clamp_min(1.0)
        for name, value in analysis["master_params"].items():
            values[f"{stage}_params/master_{name}"] = value.mean()
        values[f"{stage}_params/pinned_share"] = self.chain.space.pinned_share(
            analysis["stem_params"], analysis["master_params"], mask
        ).mean()
        _, master_unit = units
        # Spread of the settings across the batch: near 0 when the predictor ignores its inputs.
        values[f"{stage}_params/master_unit_spread"] = (
            master_unit.std(0).mean() if len(master_unit) > 1 else 0.0
        )
        return {key: torch.as_tensor(value, dtype=torch.float32) for key, value in values.items()}

    def log_media(self, batch, mix: torch.Tensor, analysis: Mapping) -> None:
        """The first validation item's mix (wav) and its spectrum plot, to wandb (rank 0 only)."""
        from lightning.pytorch.loggers import WandbLogger

        loggers = [logger for logger in self.loggers if isinstance(logger, WandbLogger)]
        if not loggers or not self.trainer.is_global_zero:
            return
        from automix.io import save_audio
        from automix.plots import plot_mix

        folder = Path(self.trainer.default_root_dir) / "media"
        n_stems = int(batch["mask"][0].sum())
        first = _first_item(
            analysis | report(analysis, Targets.from_tensor(batch["targets"]), self.chain.ceiling_dbtp)
        )
        first["stem_lufs"] = first["stem_lufs"][:n_stems]
        name = f"val_epoch{self.current_epoch:03d}"
        audio = save_audio(folder / f"{name}.wav", mix[0].detach().float().cpu(), self.chain.sample_rate)
        plot = folder / f"{name}.png"
        plot_mix(
            plot,
            mix[0].detach().float().cpu(),
            self.chain.sample_rate,
            first,
            [f"stem {i + 1}" for i in range(n_stems)],
        )
        for logger in loggers:
            logger.log_audio(
                "val/mix", [str(audio)], step=self.global_step, sample_rate=[self.chain.sample_rate]
            )
            logger.log_image("val/spectrum", [str(plot)], step=self.global_step)

    # -------------------------------------------------------------------------------------- optimiser

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.chain.predictor.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas)
        )
        total_steps = self.trainer.estimated_stepping_batches
        cosine = hp.scheduler == "cosine" and math.isfinite(total_steps)
        warmup = max(1, hp.warmup_steps)

        def lr_factor(step: int) -> float:
            if step < hp.warmup_steps:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min(1.0, (step - hp.warmup_steps) / max(1, total_steps - hp.warmup_steps))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------ checkpoints

    def automix_checkpoint(self) -> dict:
        """`AutoMixChain.checkpoint()` plus the styles trained on and the Lightning version: the file
        `AutoMixChain.from_checkpoint` reads."""
        state = self.chain.checkpoint()
        state["config"]["style_targets"] = self.hparams.style_targets
        state["versions"] |= {"automix": __version__, "lightning": L.__version__}
        return state

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every Lightning checkpoint carries the chain's own, so any of them can be exported.
        checkpoint["automix"] = self.automix_checkpoint()


def _first_item(value):
    if isinstance(value, torch.Tensor):
        return value[0].detach().float().cpu() if value.ndim else value.detach().cpu()
    if isinstance(value, Mapping):
        return {key: _first_item(item) for key, item in value.items()}
    return value
