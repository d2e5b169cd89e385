"""Pictures people look at: scene graphs drawn beside their image, and training curves."""
from .scene_graph import draw_scene_graph, select_triplets
from .training_curves import plot_training_curves

__all__ = ["draw_scene_graph", "select_triplets", "plot_training_curves"]
