"""Train and track: `python train.py -m optimizer=sgd,momentum,adagrad,adam seed=0,1,2 model=mlp_5x100,mlp_2x50`.

A thin Hydra entry point; everything happens in `descentlab.app.run`. Configs live in `conf/`.
"""

import hydra
from omegaconf import DictConfig

from descentlab.cli import guarded_main
from descentlab.config import register_schemas, restrict_targets

register_schemas()
restrict_targets()  # Hydra may instantiate only descentlab classes from a config


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> object:
    from descentlab.app import run

    return run(cfg)


if __name__ == "__main__":
    guarded_main(main)
