"""automix: a differentiable auto-mixing and mastering engine in PyTorch.

`import automix` never imports lightning, hydra or wandb; the training code lives in `automix.training`.
"""

__version__ = "0.1.0"
