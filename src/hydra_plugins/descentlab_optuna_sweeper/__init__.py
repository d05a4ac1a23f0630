"""descentlab's Optuna sweeper plugin: `hydra/sweeper=descentlab_optuna` (see sweeper.py; docs/optuna.md)."""
