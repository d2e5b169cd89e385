"""Training engine: launch, config/CLI set-up, the iteration-based trainer and its hooks, checkpoints, logging.

Submodules are imported explicitly (``from engine.trainer import Trainer``) so that importing ``engine`` stays
cheap and never imports the model or data packages.
"""
