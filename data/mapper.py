"""Turns a dataset record (``VGSplit.get_record``) into the model's input dict: read, augment, resize.

Training augmentation (docs/PROTOCOL.md, "Data"), with ``INPUT.CROP.ENABLED``:

* ``INPUT.CROP.TYPE "detr"`` (the released DETR mapper): a flip with probability 0.5 (``INPUT.RANDOM_FLIP``); then
  with probability 1 - ``INPUT.CROP.PROB`` the plain resize (shorter side a random choice of
  ``INPUT.MIN_SIZE_TRAIN``, longer side at most ``INPUT.MAX_SIZE_TRAIN``), else first a resize of the shorter side to
  a random choice of ``INPUT.CROP.RESIZE_BEFORE_CROP`` (no cap), an absolute crop with height uniform in
  [min(h, SIZE[0]), min(h, SIZE[1])] and, independently, width uniform in [min(w, SIZE[0]), min(w, SIZE[1])], then
  the plain resize.  Boxes whose width or height is at most 1e-5 px afterwards are dropped with their relations
  (the rest re-indexed); the crop is kept even if it leaves no box or no relation.
* ``INPUT.CROP.TYPE "keep_orientation"`` (this project's earlier crop): with probability ``INPUT.CROP.PROB`` an
  absolute crop of the original image with sides in ``INPUT.CROP.SIZE`` (its longer side along the image's longer
  side), then the plain resize, then the flip.  A box the crop leaves empty is dropped with its relations; a crop
  that would remove every box, or every relation of an image that has some, is skipped.

Without the crop both are: the plain resize and the flip.  Test: the shorter side is resized to
``INPUT.MIN_SIZE_TEST`` (longer at most ``MAX_SIZE_TEST``) and every box is kept.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
from torchvision import tv_tensors

from . import transforms as T

__all__ = ["VGDatasetMapper", "read_image", "check_image_format", "CROP_TYPES"]

# INPUT.CROP.TYPE: "detr" (the released DETR mapper) or "keep_orientation" (the crop of the original image that keeps
# its orientation).
CROP_TYPES = ("detr", "keep_orientation")
# detectron2's filter_empty_instances: boxes at most this wide or high after augmentation are dropped.
EMPTY_BOX_THRESHOLD = 1e-5

logger = logging.getLogger(__name__)
_IMAGES_KEY = ("the split's image folder: DATASETS.VISUAL_GENOME.IMAGES, DATASETS.PSG.IMAGES or the IMAGES of its "
               "DATASETS.COCO_RELATIONS entry")


def check_image_format(image_format: str) -> str:
    """``image_format`` if it is a supported ``INPUT.FORMAT`` ("RGB" or "BGR"), else a ValueError naming the key."""
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got '{image_format}'")
    return image_format


def read_image(file_name: str, image_id: int, image_format: str = "RGB") -> torch.Tensor:
    """(3, H, W) uint8 tensor of the EXIF-transposed image in ``image_format`` ("RGB" or "BGR") channel order."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_image_format(image_format)
    try:
        with Image.open(file_name) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            array = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Image {image_id} is missing: {file_name} (looked in {_IMAGES_KEY})"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"Image {image_id}: cannot decode {file_name} (corrupt or not an image): {e}") from None
    image = torch.from_numpy(array.copy()).permute(2, 0, 1)
    if image_format == "BGR":
        image = image.flip(0)
    return image.contiguous()


def _subset(boxes: torch.Tensor, labels: torch.Tensor, relations: torch.Tensor, keep: torch.Tensor):
    """Keep the boxes in ``keep`` and the relations between kept boxes, re-indexed."""
    new_index = torch.cumsum(keep.long(), 0) - 1
    rel_keep = keep[relations[:, 0]] & keep[relations[:, 1]] if len(relations) else keep.new_zeros(0)
    relations = relations[rel_keep].clone()
    relations[:, :2] = new_index[relations[:, :2]]
    return boxes[keep], labels[keep], relations


class VGDatasetMapper:
    """Callable ``mapper(record, rng) -> item`` (the batch item layout of docs/ARCHITECTURE.md).

    ``rng`` (a ``numpy.random.Generator``) makes every random choice of training; test mapping ignores it.
    """

    def __init__(self, cfg, is_train: bool):
        self.is_train = is_train
        self.image_format = check_image_format(cfg.INPUT.FORMAT)
        if is_train:
            self.min_sizes = [int(s) for s in cfg.INPUT.MIN_SIZE_TRAIN]
            self.max_size = int(cfg.INPUT.MAX_SIZE_TRAIN)
            if not self.min_sizes:
                raise ValueError("INPUT.MIN_SIZE_TRAIN must list at least one size")
        else:
            self.min_sizes = [int(cfg.INPUT.MIN_SIZE_TEST)]
            self.max_size = int(cfg.INPUT.MAX_SIZE_TEST)
        self.crop_prob = float(cfg.INPUT.CROP.PROB) if is_train and cfg.INPUT.CROP.ENABLED else 0.0
        self.crop_size = tuple(int(s) for s in cfg.INPUT.CROP.SIZE)
        self.crop_type = cfg.INPUT.CROP.TYPE
        if self.crop_type not in CROP_TYPES:
            raise ValueError(f"INPUT.CROP.TYPE must be one of {CROP_TYPES}, got {self.crop_type!r}")
        self.resize_before_crop = [int(s) for s in cfg.INPUT.CROP.RESIZE_BEFORE_CROP]
        if self.crop_prob > 0 and self.crop_type == "detr" and (
                not self.resize_before_crop or min(self.resize_before_crop) <= 0):
            raise ValueError(f"INPUT.CROP.RESIZE_BEFORE_CROP must list positive sizes, got "
                             f"{list(cfg.INPUT.CROP.RESIZE_BEFORE_CROP)}")
        if self.crop_prob > 0 and (len(self.crop_size) != 2 or not 0 < self.crop_size[0] <= self.crop_size[1]):
            raise ValueError(f"INPUT.CROP.SIZE must be [min, max] with 0 < min <= max, got {list(cfg.INPUT.CROP.SIZE)}")
        self.flip = cfg.INPUT.RANDOM_FLIP if is_train else "none"
        if self.flip not in ("horizontal", "vertical", "none"):
            raise ValueError(f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got '{self.flip}'")
        self._warned_size = False

    def __call__(self, record: dict, rng: Optional[np.random.Generator] = None) -> dict:
        if self.is_train and rng is None:
            raise ValueError("VGDatasetMapper(is_train=True) needs a numpy Generator for its random choices")
        image = read_image(record["file_name"], record["image_id"], self.image_format)
        boxes = torch.as_tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(record["labels"], dtype=torch.int64).reshape(-1)
        relations = torch.as_tensor(record["relations"], dtype=torch.int64).reshape(-1, 3)
        h, w = image.shape[-2:]
        if (h, w) != (record["height"], record["width"]):
            if not self._warned_size:
                logger.warning(
                    "Image %d is %dx%d but image_data.json says %dx%d; boxes are rescaled to the image "
                    "(warned once)", record["image_id"], w, h, record["width"], record["height"])
                self._warned_size = True
            boxes = boxes * torch.tensor([w / record["width"], h / record["height"]] * 2)

        image, boxes = T.as_tv_tensors(image, boxes)
        if self.crop_prob > 0 and self.crop_type == "detr":
            image, boxes, labels, relations = self._detr_augmentation(image, boxes, labels, relations, rng)
            return self._item(record, image, boxes, labels, relations)
        if self.crop_prob > 0 and rng.random() < self.crop_prob:
            window = T.sample_absolute_crop(rng, h, w, self.crop_size)
            cropped_image, cropped_boxes = T.crop(image, boxes, window)
            keep = T.nonempty(cropped_boxes)
            _, _, kept_relations = _subset(cropped_boxes, labels, relations, keep)
            if keep.any() and (len(kept_relations) > 0 or len(relations) == 0):
                boxes, labels, relations = _subset(cropped_boxes, labels, relations, keep)
                boxes, image = tv_tensors.wrap(boxes, like=cropped_boxes), cropped_image
        short = self.min_sizes[int(rng.integers(len(self.min_sizes)))] if self.is_train else self.min_sizes[0]
        size = T.shortest_edge_size(image.shape[-2], image.shape[-1], short, self.max_size)
        image, boxes = T.resize(image, boxes, size)
        if self.flip != "none" and rng.random() < 0.5:
            image, boxes = T.flip(image, boxes, self.flip)
        boxes = T.clamp(boxes)  # rounding of the resize/flip arithmetic may step a hair outside the image
        return self._item(record, image, boxes, labels, relations)

    def _detr_augmentation(self, image, boxes, labels, relations, rng: np.random.Generator):
        """The released DETR mapper: flip, then (with probability ``crop_prob``) resize / absolute-range crop,
        then the multi-scale resize; boxes empty afterwards are dropped with their relations (never undone)."""
        if self.flip != "none" and rng.random() < 0.5:
            image, boxes = T.flip(image, boxes, self.flip)
        if rng.random() < self.crop_prob:
            short = self.resize_before_crop[int(rng.integers(len(self.resize_before_crop)))]
            size = T.shortest_edge_size(image.shape[-2], image.shape[-1], short, max_size=2 ** 62)
            image, boxes = T.resize(image, boxes, size)
            window = T.sample_detr_crop(rng, image.shape[-2], image.shape[-1], self.crop_size)
            image, boxes = T.crop(image, boxes, window)
        short = self.min_sizes[int(rng.integers(len(self.min_sizes)))]
        size = T.shortest_edge_size(image.shape[-2], image.shape[-1], short, self.max_size)
        image, boxes = T.resize(image, boxes, size)
        boxes = T.clamp(boxes)
        keep = T.nonempty(boxes.as_subclass(torch.Tensor), EMPTY_BOX_THRESHOLD)
        if not keep.all():
            kept_boxes, labels, relations = _subset(boxes.as_subclass(torch.Tensor), labels, relations, keep)
            boxes = tv_tensors.wrap(kept_boxes, like=boxes)
        return image, boxes, labels, relations

    def _item(self, record: dict, image, boxes, labels: torch.Tensor, relations: torch.Tensor) -> dict:
        return {
            "image": image.as_subclass(torch.Tensor),
            "height": int(record["height"]),
            "width": int(record["width"]),
            "image_id": int(record["image_id"]),
            "instances": {
                "boxes": boxes.as_subclass(torch.Tensor).to(torch.float32),
                "labels": labels,
                "relations": relations,
            },
        }
