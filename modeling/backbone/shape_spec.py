"""The description of one backbone output: channels and stride (a tuple, so ``(2048, 32)`` compares equal)."""
from typing import NamedTuple


class ShapeSpec(NamedTuple):
    """Channels and stride (input pixels per feature-map cell) of a backbone output."""

    channels: int
    stride: int
