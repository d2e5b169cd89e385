"""The ``sgg-predictions`` file (docs/PROTOCOL.md): save atomically, load safely, validate with clear errors.

Layout: ``torch.save`` of ``{"format": "sgg-predictions/v1", "mode": "sgdet", "images": [...]}`` with one entry per
evaluated image in dataset order::

    image_id            int
    boxes               float32 (N, 4)  xyxy, original-image pixels
    labels              int64   (N,)    0-based object classes
    scores              float32 (N,)
    rel_pairs           int64   (R, 2)  (subject, object) indices into boxes
    rel_scores          float32 (R, P)  predicate probabilities, 0-based, no background column
    rel_ranking_scores  float32 (R,)    v2 only: the score the model ranks its rows by (finite, >= 0)

Two versions. ``sgg-predictions/v1`` has the first six fields. ``sgg-predictions/v2`` is v1 plus
``rel_ranking_scores`` in every image: the evaluator then orders the graph-constrained list by it (stable,
descending) instead of by predicate x subject x object score, which reproduces the released IterativeSG order
(its evaluator takes the rows as its post-processing emits them, ranked by the query's own scores). A writer
tags a file v2 exactly when its images carry ranking scores, so a file without them stays byte-compatible with
v1, and a reader that knows only v1 rejects a file whose numbers depend on the new field instead of silently
ranking it another way. :func:`load_predictions` reads both versions.

Files written by the evaluator keep every entity box but only the relation rows that reach the graph-constrained
or the no-graph-constraint top 100 (in their original order): evaluating the file gives the same numbers as
evaluating the model's full output. Files are read with ``torch.load(weights_only=True)``, so a file can never run
code.
"""
import math
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from utils.file_io import atomic_write
from utils.serialization import UnsafeFileError, load_tensor_file

FORMAT = "sgg-predictions/v1"
FORMAT_V2 = "sgg-predictions/v2"
FORMATS = (FORMAT, FORMAT_V2)
MODE = "sgdet"
# field -> (dtype, number of dimensions)
FIELDS = {
    "boxes": (np.float32, 2),
    "labels": (np.int64, 1),
    "scores": (np.float32, 1),
    "rel_pairs": (np.int64, 2),
    "rel_scores": (np.float32, 2),
}
# Optional field (format v2) -> (dtype, number of dimensions); an image either has it or not.
RANKING_FIELD = "rel_ranking_scores"
OPTIONAL_FIELDS = {RANKING_FIELD: (np.float32, 1)}


class PredictionsFileError(ValueError):
    """A predictions file (or a model output) that does not follow ``sgg-predictions/v1``."""


def check_image_structure(image: Dict[str, np.ndarray], where: str, num_predicates: Optional[int] = None) -> None:
    """Fields, dtypes and shapes of one image's numpy arrays (``rel_ranking_scores`` when present); ``where``
    prefixes errors."""
    present_optional = {field: spec for field, spec in OPTIONAL_FIELDS.items() if image.get(field) is not None}
    for field, (dtype, ndim) in {**FIELDS, **present_optional}.items():
        if field not in image:
            raise PredictionsFileError(f"{where}: missing field {field!r}")
        array = image[field]
        if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim:
            found = f"{array.dtype} with {array.ndim} dims" if isinstance(array, np.ndarray) else type(array).__name__
            raise PredictionsFileError(
                f"{where}: {field!r} must be {np.dtype(dtype).name} with {ndim} dims, found {found}"
            )
    num_boxes, num_rows = len(image["boxes"]), len(image["rel_pairs"])
    shapes = {
        "boxes": (num_boxes, 4),
        "labels": (num_boxes,),
        "scores": (num_boxes,),
        "rel_pairs": (num_rows, 2),
        "rel_scores": (num_rows, num_predicates if num_predicates is not None else image["rel_scores"].shape[1]),
    }
    if RANKING_FIELD in present_optional:
        shapes[RANKING_FIELD] = (num_rows,)
    for field, shape in shapes.items():
        if image[field].shape != shape:
            raise PredictionsFileError(f"{where}: {field!r} has shape {tuple(image[field].shape)}, expected {shape}")


def check_image_values(image: Dict[str, np.ndarray], where: str, num_classes: Optional[int] = None) -> None:
    """Values of one structurally valid image: finite ordered boxes, non-negative finite scores, pair indices
    within the boxes, labels within the classes; ``where`` prefixes errors."""
    boxes = image["boxes"]
    if boxes.size and not np.isfinite(boxes).all():
        raise PredictionsFileError(f"{where}: 'boxes' contains NaN or infinite values")
    if boxes.size and not (boxes[:, 2:] >= boxes[:, :2]).all():
        raise PredictionsFileError(f"{where}: 'boxes' must be xyxy with x2 >= x1 and y2 >= y1")
    for field in ("scores", "rel_scores", RANKING_FIELD):
        if image.get(field) is not None and image[field].size:
            low, high = float(image[field].min()), float(image[field].max())  # NaN propagates into both
            if not (math.isfinite(low) and math.isfinite(high)):
                raise PredictionsFileError(f"{where}: {field!r} contains NaN or infinite values")
            if low < 0:
                raise PredictionsFileError(f"{where}: {field!r} must be non-negative probabilities, found {low}")
    pairs, num_boxes = image["rel_pairs"], len(boxes)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= num_boxes):
        raise PredictionsFileError(
            f"{where}: 'rel_pairs' must index the {num_boxes} boxes, found values in [{pairs.min()}, {pairs.max()}]"
        )
    labels = image["labels"]
    if labels.size and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        limit = f"[0, {num_classes})" if num_classes is not None else "non-negative"
        raise PredictionsFileError(f"{where}: 'labels' must be {limit}, found [{labels.min()}, {labels.max()}]")


def check_many_image_values(
    images: Sequence[Dict[str, np.ndarray]], where: Callable[[Dict], str], num_classes: Optional[int] = None
) -> None:
    """:func:`check_image_values` for structurally valid images, checked together with a few calls over their
    concatenated arrays; on a failure each image is checked alone, so the error names the culprit."""
    boxes = np.concatenate([image["boxes"] for image in images])
    scores = np.concatenate([image["scores"] for image in images])
    labels = np.concatenate([image["labels"] for image in images])
    pairs = np.concatenate([image["rel_pairs"] for image in images])
    num_boxes = np.array([len(image["boxes"]) for image in images])
    pair_limit = np.repeat(num_boxes, [len(image["rel_pairs"]) for image in images])[:, None]
    valid = (
        bool(np.isfinite(boxes).all())
        and bool((boxes[:, 2:] >= boxes[:, :2]).all())
        and (not scores.size or (0 <= float(scores.min()) and math.isfinite(float(scores.max()))))
        and (not labels.size or (labels.min() >= 0 and (num_classes is None or labels.max() < num_classes)))
        and bool(((pairs >= 0) & (pairs < pair_limit)).all())
    )
    for image in images:
        bad_scores = any(
            image.get(field) is not None and image[field].size
            and not (0 <= float(image[field].min()) and math.isfinite(float(image[field].max())))
            for field in ("rel_scores", RANKING_FIELD)
        )
        if not valid or bad_scores:
            check_image_values(image, where(image), num_classes)


def check_image_predictions(
    image: Dict[str, np.ndarray], where: str, num_predicates: Optional[int] = None, num_classes: Optional[int] = None
) -> None:
    """Validate one image's numpy arrays (structure, then values); ``where`` prefixes errors."""
    check_image_structure(image, where, num_predicates)
    check_image_values(image, where, num_classes)


def save_predictions(path: str, images: Sequence[Dict[str, np.ndarray]]) -> None:
    """Write ``images`` (dicts of numpy arrays + ``image_id``) atomically: ``sgg-predictions/v2`` when they carry
    ``rel_ranking_scores`` (all of them must), else ``sgg-predictions/v1``."""
    ranked = [image.get(RANKING_FIELD) is not None for image in images]
    if any(ranked) and not all(ranked):
        missing = next(int(image["image_id"]) for image, has in zip(images, ranked) if not has)
        raise PredictionsFileError(
            f"{path}: some images have {RANKING_FIELD!r} and others (e.g. image_id {missing}) do not"
        )
    fields = list(FIELDS) + ([RANKING_FIELD] if ranked and all(ranked) else [])
    payload = {
        "format": FORMAT_V2 if RANKING_FIELD in fields else FORMAT,
        "mode": MODE,
        "images": [
            {"image_id": int(image["image_id"]), **{field: torch.from_numpy(image[field]) for field in fields}}
            for image in images
        ],
    }
    atomic_write(path, lambda stream: torch.save(payload, stream))


def load_predictions(
    path: str, num_predicates: Optional[int] = None, num_classes: Optional[int] = None
) -> List[Dict[str, np.ndarray]]:
    """Read and validate a predictions file; returns its images as dicts of numpy arrays + ``image_id`` (int).

    Reads ``sgg-predictions/v1`` and ``v2`` (whose images also hold ``rel_ranking_scores``). Raises
    ``FileNotFoundError`` or :class:`PredictionsFileError` naming the file (and the image) for anything that does
    not follow the format: wrong tag or mode, wrong dtypes/shapes, pair indices out of range, NaN scores, missing or
    duplicate image ids, ranking scores missing in v2 or present in v1.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Predictions file not found: {path}")
    try:
        payload = load_tensor_file(path, "predictions file")
    except UnsafeFileError as error:
        raise PredictionsFileError(f"{path}: not a readable sgg-predictions file ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise PredictionsFileError(f"{path}: format tag must be one of {FORMATS}, found {found!r}")
    version_fields = list(FIELDS) + ([RANKING_FIELD] if payload["format"] == FORMAT_V2 else [])
    if payload.get("mode") != MODE:
        raise PredictionsFileError(f"{path}: mode must be {MODE!r}, found {payload.get('mode')!r}")
    if not isinstance(payload.get("images"), list):
        raise PredictionsFileError(f"{path}: 'images' must be a list")

    images, seen = [], set()
    for position, entry in enumerate(payload["images"]):
        where = f"{path}: images[{position}]"
        if not isinstance(entry, dict):
            raise PredictionsFileError(f"{where} must be a dict, found {type(entry).__name__}")
        image_id = entry.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise PredictionsFileError(f"{where}: 'image_id' must be an int, found {image_id!r}")
        if image_id in seen:
            raise PredictionsFileError(f"{where}: duplicate image_id {image_id}")
        seen.add(image_id)
        where = f"{where} (image_id {image_id})"
        image = {"image_id": image_id}
        if payload["format"] == FORMAT and entry.get(RANKING_FIELD) is not None:
            raise PredictionsFileError(f"{where}: {RANKING_FIELD!r} is a {FORMAT_V2} field, the file says {FORMAT}")
        if RANKING_FIELD in version_fields and entry.get(RANKING_FIELD) is None:
            raise PredictionsFileError(f"{where}: missing field {RANKING_FIELD!r} (every {FORMAT_V2} image has it)")
        for field in version_fields:
            value = entry.get(field)
            if value is not None and not isinstance(value, torch.Tensor):
                raise PredictionsFileError(f"{where}: {field!r} must be a tensor, found {type(value).__name__}")
            if value is not None:
                image[field] = value.numpy()
        check_image_predictions(image, where, num_predicates=num_predicates, num_classes=num_classes)
        images.append(image)
    return images


def order_by_split(images: List[Dict], split_image_ids: np.ndarray, path: str) -> List[Dict]:
    """The file's images in dataset order; raises if an image is not in the split or a split image is missing."""
    position = {int(image_id): i for i, image_id in enumerate(split_image_ids)}
    unknown = [image["image_id"] for image in images if image["image_id"] not in position]
    if unknown:
        raise PredictionsFileError(
            f"{path}: {len(unknown)} image ids are not in the evaluated split, e.g. {unknown[:5]}"
        )
    if len(images) != len(position):
        present = {image["image_id"] for image in images}
        missing = [int(i) for i in split_image_ids if int(i) not in present]
        raise PredictionsFileError(
            f"{path}: {len(missing)} of the split's {len(position)} images are missing, e.g. image ids {missing[:5]}"
        )
    return sorted(images, key=lambda image: position[image["image_id"]])
