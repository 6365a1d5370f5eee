"""Sampled style targets: one network learns every style, blends of them and plausible custom ones.

Each training item gets its own target vector `[6]` (the layout of `automix.targets.Targets.tensor`),
drawn from the item's generator: one of the configured styles, a blend of two of them
(`automix.styles.blend_styles`, a uniform amount), or a random plausible target
(`automix.styles.random_style`).
"""

from collections.abc import Mapping

import torch

from automix.errors import AutomixError
from automix.styles import StyleTarget, blend_styles, random_style
from automix.targets import style_vector

# Chances of each kind of target; the defaults equal conf/data/*.yaml `targets:` (tested).
DEFAULT_TARGET_MIX = {"style": 0.4, "blend": 0.3, "random": 0.3}


class TargetSampler:
    """Draws target vectors `[6]` float32.

    Args:
        styles: name -> StyleTarget, the styles to learn (at least one).
        style, blend, random: relative chances of a style as it is, a blend of two styles, a random one.
    """

    def __init__(
        self,
        styles: Mapping[str, StyleTarget],
        *,
        style: float = DEFAULT_TARGET_MIX["style"],
        blend: float = DEFAULT_TARGET_MIX["blend"],
        random: float = DEFAULT_TARGET_MIX["random"],
    ):
        if not styles:
            raise AutomixError("no style targets to train on; give at least one style (conf/style)")
        chances = torch.tensor([style, blend, random], dtype=torch.float64)
        if not (torch.isfinite(chances).all() and (chances >= 0).all() and chances.sum() > 0):
            raise AutomixError(
                f"target chances must be numbers >= 0, not all 0; got style={style}, blend={blend}, "
                f"random={random}"
            )
        self.styles = [styles[name] for name in sorted(styles)]
        self.cumulative = (chances / chances.sum()).cumsum(0).tolist()

    def sample_style(self, generator: torch.Generator) -> StyleTarget:
        """One StyleTarget drawn with `generator`."""
        u = torch.rand((), generator=generator, dtype=torch.float64).item()
        if u < self.cumulative[0]:
            return self.styles[int(torch.randint(len(self.styles), (), generator=generator))]
        if u < self.cumulative[1]:
            pair = torch.randperm(len(self.styles), generator=generator)[:2].tolist()
            first, second = pair if len(pair) == 2 else (pair[0], pair[0])
            amount = torch.rand((), generator=generator, dtype=torch.float64).item()
            return blend_styles(self.styles[first], self.styles[second], amount)
        return random_style(generator)

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        """A target vector `[6]` (balance NaN when the style has none)."""
        return style_vector(self.sample_style(generator))
