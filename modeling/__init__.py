"""The IterativeSG scene-graph model: ``build_model(cfg, predicate_counts=None)``."""
from .build import build_model

__all__ = ["build_model"]
