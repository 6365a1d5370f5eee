"""automix: a differentiable auto-mixing and mastering engine in PyTorch.

    from automix import AutoMixChain, load_style_targets, create_training_loss

`import automix` never imports lightning, hydra or wandb; the training code lives in `automix.training`.
"""

__version__ = "0.1.0"

from automix.chain import AutoMixChain  # noqa: E402
from automix.loss import create_training_loss  # noqa: E402
from automix.styles import blend_styles, load_style_targets  # noqa: E402

__all__ = ["AutoMixChain", "blend_styles", "create_training_loss", "load_style_targets", "__version__"]
