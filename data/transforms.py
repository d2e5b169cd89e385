"""Geometric transforms of an image together with its boxes (torchvision ``transforms.v2`` on ``tv_tensors``).

The random *choices* (crop window, short side, flip) are made by the caller with its own ``numpy`` generator, so a
training batch is a function of the seed and the iteration only; these functions are deterministic.
"""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

__all__ = [
    "as_tv_tensors",
    "shortest_edge_size",
    "sample_absolute_crop",
    "sample_detr_crop",
    "crop",
    "resize",
    "flip",
    "clamp",
    "nonempty",
]


def as_tv_tensors(
    image: torch.Tensor, boxes: np.ndarray | torch.Tensor
) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    """Wrap a (3, H, W) uint8 image and (N, 4) xyxy boxes in its pixels."""
    h, w = image.shape[-2:]
    return tv_tensors.Image(image), tv_tensors.BoundingBoxes(
        torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=(h, w)
    )


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """Output (height, width) with the shorter side ``short`` unless the longer one would exceed ``max_size``
    (detectron2's ResizeShortestEdge rounding)."""
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sample_absolute_crop(
    rng: np.random.Generator, height: int, width: int, size_range: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width): two sides uniform in ``size_range``, capped by the image.

    The longer of the two sides goes along the image's longer side (width for a square image), so a crop never
    turns a landscape image into a portrait one: the aspect-ratio groups of the batch sampler stay valid.
    """
    lo, hi = int(size_range[0]), int(size_range[1])
    short, long = sorted(int(v) for v in rng.integers(lo, hi + 1, size=2))
    crop_h, crop_w = (long, short) if height > width else (short, long)
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return top, left, crop_h, crop_w


def sample_detr_crop(
    rng: np.random.Generator, height: int, width: int, size_range: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) as DETR's absolute-range crop (detectron2 ``RandomCrop``
    "absolute_range", which the released code uses): height uniform in [min(h, lo), min(h, hi)] and, drawn
    independently, width uniform in [min(w, lo), min(w, hi)] (integers, bounds included), at a uniform position.
    The crop may change the image's orientation."""
    lo, hi = int(size_range[0]), int(size_range[1])
    crop_h = int(rng.integers(min(height, lo), min(height, hi) + 1))
    crop_w = int(rng.integers(min(width, lo), min(width, hi) + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return top, left, crop_h, crop_w


def crop(image: tv_tensors.Image, boxes: tv_tensors.BoundingBoxes, window: tuple[int, int, int, int]):
    """Cut ``window`` (top, left, height, width) out of the image; boxes are shifted and clamped to it."""
    top, left, h, w = window
    return F.crop(image, top, left, h, w), F.clamp_bounding_boxes(F.crop(boxes, top, left, h, w))


def resize(image: tv_tensors.Image, boxes: tv_tensors.BoundingBoxes, size: tuple[int, int]):
    """Bilinear (antialiased) resize to ``size`` = (height, width); boxes scale along."""
    return F.resize(image, list(size), antialias=True), F.resize(boxes, list(size))


def flip(image: tv_tensors.Image, boxes: tv_tensors.BoundingBoxes, direction: str):
    """Mirror image and boxes; ``direction`` is "horizontal" or "vertical"."""
    if direction == "horizontal":
        return F.horizontal_flip(image), F.horizontal_flip(boxes)
    if direction == "vertical":
        return F.vertical_flip(image), F.vertical_flip(boxes)
    raise ValueError(f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got '{direction}'")


def clamp(boxes: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
    """Boxes clamped to [0, width] x [0, height] of their canvas."""
    h, w = boxes.canvas_size
    out = boxes.as_subclass(torch.Tensor).clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return tv_tensors.wrap(out, like=boxes)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Mask of boxes whose width and height exceed ``threshold`` (detectron2's ``Boxes.nonempty``)."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)
