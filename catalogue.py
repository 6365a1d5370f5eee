"""Mix a catalogue through Hydra and its launchers: `python catalogue.py songs=DIR output_dir=OUT`
(conf/catalogue.yaml); the work is `mix.py --songs` on Lightning's predict loop."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from automix.cli import run_cli
from automix.cli.mix import main as mix_main


@hydra.main(version_base="1.3", config_path="conf", config_name="catalogue")
def main(cfg: DictConfig) -> None:
    root = Path(cfg.songs)
    songs = sorted(str(path) for path in root.iterdir() if path.is_dir()) if root.is_dir() else [str(root)]
    argv = ["--songs", *songs, "--output-dir", str(cfg.output_dir), "--style", str(cfg.style)]
    argv += ["--mode", str(cfg.mode), "--device", str(cfg.device)]
    argv += ["--devices", str(cfg.devices), "--num-nodes", str(cfg.num_nodes), *map(str, cfg.extra)]
    status = run_cli(mix_main, argv)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
