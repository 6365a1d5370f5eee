"""Training: the Lightning module, data modules and `train(cfg)` behind `train.py`.

This subpackage imports lightning (and hydra / wandb where a run asks for them); `import automix` does not
import it. Entry point: `python train.py experiment=smoke` (see conf/train.yaml).
"""
