"""Train the parameter predictor: `python train.py experiment=smoke` (Hydra; see conf/train.yaml).

Examples:
    python train.py experiment=smoke                                  # a minute on a CPU, writes a checkpoint
    python train.py data=musdb data.root=/data/MUSDB18-HQ trainer=gpu logger=wandb
    python train.py experiment=smoke trainer=ddp trainer.accelerator=cpu trainer.devices=2
    python train.py -m experiment=smoke model.hidden_dim=32,64        # a sweep (Hydra multirun)
"""

import sys

import hydra
from omegaconf import DictConfig

from automix.errors import AutomixError
from automix.training.train import register_resolvers, train

register_resolvers()  # conf/paths uses ${automix_root:} before the job starts


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        result = train(cfg)
    except AutomixError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if result["checkpoint"] is not None:
        print(f"checkpoint: {result['checkpoint']}")
    return result["metrics"].get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
