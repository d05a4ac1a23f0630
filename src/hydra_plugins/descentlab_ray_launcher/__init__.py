"""descentlab's Hydra launcher plugin: `hydra/launcher=ray` (see ray_launcher.py). Hydra finds it by scanning the
`hydra_plugins` namespace package, which must stay without an __init__.py."""
