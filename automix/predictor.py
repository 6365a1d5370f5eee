"""Set-equivariant parameter predictor: stem features + style targets -> console parameters in [0, 1].

Two stages, as an engineer works: the strips first, then the master on what the strips made.
- Each stem's head sees its own features, a pooled context of all stems (masked mean and max, so the
  stems' order does not matter and any number 1-16 works) and the targets (`predict_stems`).
- The chain renders those strips into the bus; the master head sees the pooled context, the targets
  and the bus's own measurements (`automix.features.bus_features`: peak-to-loudness ratio, centroid
  and M/S relative to the targets), so it sets the tilt, width and limiter drive for this bus rather
  than guessing what the strips will make (`predict_master`).
Sigmoid outputs are denormalised by `automix.params.ParameterSpace`. The output layers start at zero
weight with their bias at the neutral settings, so an untrained predictor proposes the configured
neutral mix whatever the input.
"""

import torch
from torch import nn

from automix.features import N_BUS_FEATURES
from automix.params import ParameterSpace, logit
from automix.targets import Targets

# Targets as the network sees them: (LUFS + 12) / 6, log2(centroid / 2000 Hz), M/S - 0.6, balance.
TARGET_LUFS_CENTRE, TARGET_LUFS_SCALE = -12.0, 6.0
TARGET_CENTROID_CENTRE_HZ = 2000.0
TARGET_MS_CENTRE = 0.6
N_TARGET_FEATURES = 3 + 3 + 1  # lufs, centroid, ms; band balance; 1 if a balance is given


def encode_targets(targets: Targets) -> torch.Tensor:
    """Scale style targets (bands NaN where a style has none) to network inputs `[B, N_TARGET_FEATURES]`."""
    has_bands = targets.has_bands[..., None]
    return torch.cat(
        [
            ((targets.lufs - TARGET_LUFS_CENTRE) / TARGET_LUFS_SCALE)[..., None],
            torch.log2(targets.centroid_hz / TARGET_CENTROID_CENTRE_HZ)[..., None],
            (targets.ms_ratio - TARGET_MS_CENTRE)[..., None],
            torch.where(has_bands, targets.bands, torch.zeros_like(targets.bands)),
            has_bands.to(targets.lufs.dtype),
        ],
        dim=-1,
    )


def _mlp(n_in: int, hidden_dim: int, n_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [nn.Linear(n_in if i == 0 else hidden_dim, hidden_dim), nn.GELU()]
    return nn.Sequential(*layers)


class ParameterPredictor(nn.Module):
    """Predicts normalised console parameters from stem features and style targets.

    Args:
        n_features: features per stem (`automix.features.N_FEATURES`).
        space: the parameter ranges; sets the output sizes and the neutral starting point.
        hidden_dim: width of every hidden layer.
        n_layers: hidden layers in the stem encoder and in each head.
    """

    def __init__(self, n_features: int, space: ParameterSpace, hidden_dim: int = 128, n_layers: int = 2):
        super().__init__()
        self.space = space
        self.encoder = _mlp(n_features, hidden_dim, n_layers)
        context = 2 * hidden_dim + N_TARGET_FEATURES  # pooled mean and max, targets
        self.stem_head = _mlp(hidden_dim + context, hidden_dim, n_layers)
        self.master_head = _mlp(context + N_BUS_FEATURES, hidden_dim, n_layers)
        self.stem_out = nn.Linear(hidden_dim, space.n_stem)
        self.master_out = nn.Linear(hidden_dim, space.n_master)
        stem_unit, master_unit = space.neutral_unit(1, dtype=torch.float32)
        for layer, unit in ((self.stem_out, stem_unit[0]), (self.master_out, master_unit)):
            nn.init.zeros_(layer.weight)
            with torch.no_grad():
                layer.bias.copy_(logit(unit))

    def predict_stems(
        self, features: torch.Tensor, targets: Targets, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The strips' settings.

        Args:
            features: `[B, N, n_features]`.
            targets: the songs' targets (see `encode_targets`).
            mask: `[B, N]`, 1 for real stems; None means all real.

        Returns:
            `(stem_unit [B, N, n_stem] in (0, 1), context [B, n_context])`; the context goes to
            `predict_master`.
        """
        if mask is None:
            mask = features.new_ones(features.shape[:-1])
        weight = mask.to(features.dtype)[..., None]
        hidden = self.encoder(features)
        mean = (hidden * weight).sum(-2) / weight.sum(-2).clamp_min(1.0)
        peak = hidden.masked_fill(weight == 0, float("-inf")).amax(-2)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        context = torch.cat([mean, peak, encode_targets(targets)], dim=-1)
        per_stem = torch.cat([hidden, context[..., None, :].expand(*hidden.shape[:-1], -1)], dim=-1)
        return torch.sigmoid(self.stem_out(self.stem_head(per_stem))), context

    def predict_master(self, context: torch.Tensor, bus_features: torch.Tensor) -> torch.Tensor:
        """The master section's settings `[B, n_master]` in (0, 1), from `predict_stems`'s context and
        the bus's features `[B, N_BUS_FEATURES]`."""
        return torch.sigmoid(self.master_out(self.master_head(torch.cat([context, bus_features], dim=-1))))
