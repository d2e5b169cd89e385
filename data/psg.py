"""Panoptic Scene Graph (PSG, Yang et al. ECCV 2022) as a box-level scene-graph benchmark: ``PSG_train``/``PSG_test``.

``DATASETS.PSG.JSON`` is OpenPSG's ``psg.json``; ``DATASETS.PSG.IMAGES`` the COCO root its ``file_name`` entries
are relative to (``train2017/…``, ``val2017/…``).  The file holds ``thing_classes`` + ``stuff_classes`` (the
object vocabulary, in that order: 80 + 53 = 133 classes), ``predicate_classes`` (56), ``test_image_ids`` and
``data``: one entry per image with ``image_id``, ``file_name``, ``width``, ``height``, ``annotations`` (one
``bbox`` [x1, y1, x2, y2] pixels and 0-based ``category_id`` per segment) and ``relations`` ([subject, object,
predicate] rows indexing ``annotations``, predicates 0-based).

Protocol (OpenPSG's "bbox" scene graph use of PSG, docs/DATASETS.md):

* every segment's box is an object (things and stuff, crowd segments included: relations index them);
* images without relations are dropped; ``PSG_test`` = the images of ``test_image_ids``, ``PSG_train`` the rest;
* ``PSG_train`` keeps one predicate per ordered pair, drawn at every load; ``PSG_test`` drops exact duplicate
  (subject, object, predicate) rows and keeps the rest;
* no non-overlap filter (PSG's relations between disjoint things and stuff are part of the benchmark);
* boxes are clamped to the image as VG150's are for ``TEST.SGG_PROTOCOL`` (data/visual_genome.py).

The evaluator is the VG150 one (R, mR, ng-R, zR @20/50/100); the zero-shot set is the test triplets unseen in
``PSG_train``.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from .coco_relations import (CocoRelations, SceneGraphSplit, _identity, _offsets, build_split, cached,
                             check_model_sizes, read_json)
from .visual_genome import _gt_clip_margin

logger = logging.getLogger(__name__)

__all__ = ["PSG_SPLITS", "read_psg", "load_psg_split", "psg_vocabulary"]

PSG_SPLITS = ("PSG_train", "PSG_test")
_KEY = "DATASETS.PSG."


def _fail(path: str, message: str) -> ValueError:
    return ValueError(f"{_KEY}JSON {path}: {message}")


def _string_list(data: dict, key: str, path: str) -> list:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"'{key}' must be a list of names")
    return value


def psg_vocabulary(data, path: str) -> tuple:
    """``(class names, predicate names)``: thing + stuff classes, predicates."""
    if not isinstance(data, dict):
        raise _fail(path, "the top level must be a JSON object")
    classes = _string_list(data, "thing_classes", path) + _string_list(data, "stuff_classes", path)
    predicates = _string_list(data, "predicate_classes", path)
    if not classes or not predicates:
        raise _fail(path, "the class and predicate lists must not be empty")
    return classes, predicates


def _image_id(value, path: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _fail(path, f"image_id {value!r} is not an integer (PSG uses COCO ids)") from None


def read_psg(path: str, test: bool) -> CocoRelations:
    """The images of one PSG split as arrays (test: exact duplicate relation rows removed)."""
    data = read_json(path, _KEY + "JSON")
    classes, predicates = psg_vocabulary(data, path)
    entries, test_ids = data.get("data"), data.get("test_image_ids")
    if not isinstance(entries, list) or not isinstance(test_ids, list):
        raise _fail(path, "'data' and 'test_image_ids' must be lists")
    test_ids = {_image_id(v, path) for v in test_ids}
    image_ids, file_names, widths, heights, boxes, labels, relations = [], [], [], [], [], [], []
    num_boxes, num_rels = [], []
    for d in entries:
        if not isinstance(d, dict) or any(k not in d for k in ("image_id", "file_name", "width", "height",
                                                              "annotations", "relations")):
            raise _fail(path, "every 'data' entry needs image_id, file_name, width, height, annotations, relations")
        image_id = _image_id(d["image_id"], path)
        if (image_id in test_ids) != test or not d["relations"]:
            continue
        where = f"image_id {image_id}"
        try:
            xyxy = np.array([a["bbox"] for a in d["annotations"]], dtype=np.float64).reshape(-1, 4)
            cats = np.array([a["category_id"] for a in d["annotations"]], dtype=np.int64)
            rels = np.array(d["relations"], dtype=np.int64).reshape(-1, 3)
            width, height = float(d["width"]), float(d["height"])
        except (TypeError, ValueError, KeyError) as e:
            raise _fail(path, f"{where}: malformed annotations/relations ({e!r})") from None
        if not (width > 0 and height > 0):
            raise _fail(path, f"{where}: width and height must be positive")
        if len(cats) and (cats.min() < 0 or cats.max() >= len(classes)):
            raise _fail(path, f"{where}: category_id outside 0..{len(classes) - 1}")
        if not np.isfinite(xyxy).all() or ((xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])).any():
            raise _fail(path, f"{where}: a bbox is not [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
        if (rels[:, :2] < 0).any() or (rels[:, :2] >= len(cats)).any():
            raise _fail(path, f"{where}: a relation indexes outside its {len(cats)} annotations")
        if rels[:, 2].min() < 0 or rels[:, 2].max() >= len(predicates):
            raise _fail(path, f"{where}: a predicate outside 0..{len(predicates) - 1}")
        if test:
            _, first = np.unique(rels, axis=0, return_index=True)
            rels = rels[np.sort(first)]
        image_ids.append(image_id)
        file_names.append(str(d["file_name"]))
        widths.append(width)
        heights.append(height)
        boxes.append(xyxy)
        labels.append(cats)
        relations.append(rels)
        num_boxes.append(len(cats))
        num_rels.append(len(rels))
    return CocoRelations(
        path=path,
        class_names=classes,
        predicate_names=predicates,
        class_ids=list(range(len(classes))),
        predicate_ids=list(range(len(predicates))),
        image_ids=np.array(image_ids, dtype=np.int64),
        file_names=file_names,
        widths=np.array(widths, dtype=np.float64),
        heights=np.array(heights, dtype=np.float64),
        box_offsets=_offsets(num_boxes),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        rel_offsets=_offsets(num_rels),
        relations=np.concatenate(relations) if relations else np.zeros((0, 3), np.int64),
    )


def load_psg_split(cfg, name: str) -> SceneGraphSplit:
    """``PSG_train`` or ``PSG_test`` from ``DATASETS.PSG`` (memoised per file)."""
    if name not in PSG_SPLITS:
        raise KeyError(f"Unknown PSG split '{name}'; expected one of {PSG_SPLITS}")
    path, images = cfg.DATASETS.PSG.JSON, cfg.DATASETS.PSG.IMAGES
    if not path:
        raise FileNotFoundError(f"{_KEY}JSON is not set (it must name OpenPSG's psg.json)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{_KEY}JSON: file not found: {path}")
    if not images or not os.path.isdir(images):
        raise FileNotFoundError(f"{_KEY}IMAGES: COCO image root not found: {images!r}")
    test = name == "PSG_test"
    margin = _gt_clip_margin(cfg)
    protocol = str(cfg.TEST.SGG_PROTOCOL)
    parsed = cached(("psg", _identity(path), test), lambda: read_psg(path, test))
    check_model_sizes(cfg, len(parsed.class_names), len(parsed.predicate_names), f"{_KEY}JSON {path}")
    split = cached(("psg-split", name, _identity(path), os.path.abspath(images), protocol),
                   lambda: build_split(name, parsed, images, True, False, not test, protocol,
                                       not test or margin == 0))
    logger.info("%s: %d images, %d objects, %d relations", name, len(split), split.num_objects,
                split.num_relations)
    return split
