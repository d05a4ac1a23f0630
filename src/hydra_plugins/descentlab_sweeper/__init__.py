"""descentlab's Hydra sweeper plugin: `hydra/sweeper=descentlab` (see sweeper.py), the default of `conf/config.yaml`."""
