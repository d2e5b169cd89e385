"""Scene graphs in the COCO-with-relations format: one COCO detection JSON per split plus relations.

The interchange format of SGG-Benchmark's ``RelationDataset`` and the SGG-Annotate tool (docs/DATASETS.md)::

    {"images":          [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}, ...],
     "annotations":     [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [x, y, w, h], "iscrowd": 0}, ...],
     "categories":      [{"id": 3, "name": "person"}, ...],
     "rel_categories":  [{"id": 0, "name": "on"}, ...],
     "rel_annotations": [{"id": 0, "image_id": 1, "subject_id": 7, "object_id": 8, "predicate_id": 0}, ...]}

``bbox`` is COCO's ``[x, y, width, height]`` in pixels of the image file; ``subject_id``/``object_id`` are
annotation ids.  Loading (:func:`load_coco_relations_split`):

* ``categories`` and ``rel_categories`` are sorted by id and numbered 0.. in that order (the model's indices; the
  names are kept for outputs), so ids need not be contiguous or 0-based;
* ``iscrowd`` annotations are skipped, with the relations that use them;
* images keep the file's order, boxes and relations their order within the image; boxes become xyxy float32,
  clamped to the image as VG150's are for ``TEST.SGG_PROTOCOL`` ([0, width - 1] x [0, height - 1] for
  "standard", [0, width] x [0, height] for "iterativesg"; boxes left without area go, with their relations, in
  training and under "iterativesg");
* every split drops images without a (non-crowd) box, and with ``DATASETS.VISUAL_GENOME.FILTER_EMPTY_RELATIONS``
  images without a relation;
* a *training* split (one named in ``DATASETS.TRAIN``) also applies ``FILTER_NON_OVERLAP`` (relations whose boxes
  do not intersect with positive area are dropped, then images left without relations) and
  ``FILTER_DUPLICATE_RELATIONS`` (one predicate per ordered pair, drawn at every load) — VG150's train filters;
  evaluation splits keep every relation row.

Before anything is built the file is checked (:func:`check_coco_relations`, the checks of
``tools/check_dataset.py``); any problem stops the load with one line per problem kind.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from .visual_genome import GT_CLIP_MARGIN, VGSplit, _gt_clip_margin

logger = logging.getLogger(__name__)

__all__ = [
    "REQUIRED_LISTS",
    "BOX_TOLERANCE",
    "Problem",
    "SceneGraphSplit",
    "CocoRelations",
    "read_json",
    "check_coco_relations",
    "format_problems",
    "parse_coco_relations",
    "read_coco_relations",
    "build_split",
    "load_coco_relations_split",
    "split_to_coco_relations",
    "clear_cache",
]

REQUIRED_LISTS = ("images", "annotations", "categories", "rel_categories", "rel_annotations")
# A box may stick out of its image by this many pixels (rounding in annotation tools) before it is a problem.
BOX_TOLERANCE = 1.0
_MAX_EXAMPLES = 5


@dataclass
class SceneGraphSplit(VGSplit):
    """A split whose images have their own file names (relative to ``image_dir``); otherwise a :class:`VGSplit`."""

    file_names: Sequence[str] = ()

    def file_name(self, i: int) -> str:
        return os.path.join(self.image_dir, self.file_names[i])


# ---------------------------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """One kind of mistake in a file: how many entries have it and the ids of the first ones."""

    kind: str
    what: str  # e.g. "annotations have a bbox with width or height <= 0"
    count: int = 0
    examples: List = field(default_factory=list)
    id_name: str = "ids"

    def add(self, example) -> None:
        self.count += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(example)

    def line(self) -> str:
        shown = ", ".join(str(e) for e in self.examples)
        more = ", ..." if self.count > len(self.examples) else ""
        return f"{self.kind}: {self.count} {self.what} (first {self.id_name}: {shown}{more})"


def format_problems(path: str, problems: Sequence[Problem]) -> str:
    """One line per problem kind, each naming the file."""
    return "\n".join(f"{path}: {p.line()}" for p in problems)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _entry_id(entry, position: int):
    """The entry's id for messages, or its position ``#n`` when it has no usable id."""
    return entry["id"] if isinstance(entry, dict) and _is_int(entry.get("id")) else f"#{position}"


class _Problems:
    """Problem kinds in a fixed order; only the ones that occur are reported."""

    def __init__(self):
        self._by_kind: "OrderedDict[str, Problem]" = OrderedDict()

    def add(self, kind: str, what: str, example, id_name: str = "ids") -> None:
        if kind not in self._by_kind:
            self._by_kind[kind] = Problem(kind, what, id_name=id_name)
        self._by_kind[kind].add(example)

    def list(self) -> List[Problem]:
        return list(self._by_kind.values())


def _check_vocabulary(data: dict, key: str, noun: str, problems: _Problems) -> dict:
    """``{id: name}`` of ``categories``/``rel_categories``; malformed entries and duplicate ids reported."""
    table = {}
    entries = data[key]
    if not entries:
        problems.add("empty_vocabulary", "vocabulary lists are empty", key, id_name="lists")
    for position, entry in enumerate(entries):
        if not (isinstance(entry, dict) and _is_int(entry.get("id")) and isinstance(entry.get("name"), str)):
            problems.add(f"malformed_{noun}", f"{key} entries lack an integer 'id' or a string 'name'",
                         _entry_id(entry, position), id_name="entries")
        elif entry["id"] in table:
            problems.add(f"duplicate_{noun}_id", f"{key} entries repeat an id", entry["id"])
        else:
            table[entry["id"]] = entry["name"]
    return table


def check_coco_relations(data, image_root: Optional[str] = None) -> List[Problem]:
    """Every problem of a parsed COCO-relations file, grouped by kind (empty list: the file is usable).

    With ``image_root`` every image file must exist under it.  Kinds: ``not_an_object``, ``missing_list``,
    ``empty_vocabulary``, ``malformed_category``/``predicate``/``image``/``annotation``/``relation``,
    ``duplicate_category_id``/``predicate_id``/``image_id``/``annotation_id``/``relation_id``, ``empty_split``,
    ``missing_image_file``, ``annotation_unknown_image``, ``unknown_category``, ``degenerate_box``,
    ``box_outside_image``, ``unknown_predicate``, ``relation_unknown_image``, ``relation_unknown_annotation``,
    ``relation_across_images``, ``self_relation``.
    """
    problems = _Problems()
    if not isinstance(data, dict):
        problems.add("not_an_object", "top-level values are not a JSON object", type(data).__name__,
                     id_name="types")
        return problems.list()
    for key in REQUIRED_LISTS:
        if not isinstance(data.get(key), list):
            problems.add("missing_list", "required lists are missing (or not lists)", key, id_name="keys")
    if problems.list():
        return problems.list()

    categories = _check_vocabulary(data, "categories", "category", problems)
    predicates = _check_vocabulary(data, "rel_categories", "predicate", problems)

    images = {}
    for position, image in enumerate(data["images"]):
        ok = isinstance(image, dict) and _is_int(image.get("id")) and isinstance(image.get("file_name"), str)
        ok = ok and all(_is_number(image.get(k)) and image.get(k) > 0 for k in ("width", "height"))
        if not ok:
            problems.add("malformed_image", "images lack an integer 'id', a 'file_name' or a positive "
                         "'width'/'height'", _entry_id(image, position))
        elif image["id"] in images:
            problems.add("duplicate_image_id", "images repeat an id", image["id"])
        else:
            images[image["id"]] = image
    if not data["images"]:
        problems.add("empty_split", "images: the split has no image", "images", id_name="lists")
    if image_root is not None:
        for image_id, image in images.items():
            if not os.path.isfile(os.path.join(image_root, image["file_name"])):
                problems.add("missing_image_file", f"image files are missing under {image_root}",
                             f"{image_id} ({image['file_name']})", id_name="image ids")

    annotations = {}
    for position, ann in enumerate(data["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        ok = isinstance(ann, dict) and all(_is_int(ann.get(k)) for k in ("id", "image_id", "category_id"))
        ok = ok and isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)
        ok = ok and ann.get("iscrowd", 0) in (0, 1)
        if not ok:
            problems.add("malformed_annotation", "annotations lack an integer 'id'/'image_id'/'category_id', a "
                         "'bbox' of 4 finite numbers or an 'iscrowd' of 0/1", _entry_id(ann, position),
                         id_name="annotation ids")
            continue
        if ann["id"] in annotations:
            problems.add("duplicate_annotation_id", "annotations repeat an id", ann["id"])
            continue
        annotations[ann["id"]] = ann
        image = images.get(ann["image_id"])
        if image is None:
            problems.add("annotation_unknown_image", "annotations name an image_id that is not in images",
                         ann["id"], id_name="annotation ids")
        if ann["category_id"] not in categories:
            problems.add("unknown_category", "annotations have a category_id that is not in categories",
                         ann["id"], id_name="annotation ids")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            problems.add("degenerate_box", "annotations have a bbox with width or height <= 0", ann["id"],
                         id_name="annotation ids")
        elif image is not None and (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > image["width"] +
                                    BOX_TOLERANCE or y + h > image["height"] + BOX_TOLERANCE or
                                    x >= image["width"] or y >= image["height"] or x + w <= 0 or y + h <= 0):
            problems.add("box_outside_image", f"annotations have a bbox more than {BOX_TOLERANCE:g} px outside "
                         "their image", ann["id"], id_name="annotation ids")

    relation_ids = set()
    for position, rel in enumerate(data["rel_annotations"]):
        keys = ("id", "image_id", "subject_id", "object_id", "predicate_id")
        if not (isinstance(rel, dict) and all(_is_int(rel.get(k)) for k in keys)):
            problems.add("malformed_relation", "rel_annotations lack an integer " + "/".join(keys),
                         _entry_id(rel, position), id_name="relation ids")
            continue
        if rel["id"] in relation_ids:
            problems.add("duplicate_relation_id", "rel_annotations repeat an id", rel["id"])
            continue
        relation_ids.add(rel["id"])
        if rel["predicate_id"] not in predicates:
            problems.add("unknown_predicate", "relations have a predicate_id that is not in rel_categories",
                         rel["id"], id_name="relation ids")
        if rel["image_id"] not in images:
            problems.add("relation_unknown_image", "relations name an image_id that is not in images", rel["id"],
                         id_name="relation ids")
        ends = [annotations.get(rel["subject_id"]), annotations.get(rel["object_id"])]
        if None in ends:
            problems.add("relation_unknown_annotation", "relations point at a subject_id/object_id that is not "
                         "an annotation id", rel["id"], id_name="relation ids")
        elif any(end["image_id"] != rel["image_id"] for end in ends):
            problems.add("relation_across_images", "relations join annotations of another image than their "
                         "image_id", rel["id"], id_name="relation ids")
        elif rel["subject_id"] == rel["object_id"]:
            problems.add("self_relation", "relations have the same subject and object", rel["id"],
                         id_name="relation ids")
    return problems.list()


# ---------------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CocoRelations:
    """A checked file as arrays: images in file order, non-crowd boxes and their relations grouped per image."""

    path: str
    class_names: List[str]  # contiguous index -> name (categories sorted by id)
    predicate_names: List[str]
    class_ids: List[int]  # contiguous index -> the file's category id
    predicate_ids: List[int]
    image_ids: np.ndarray  # (I,) int64
    file_names: List[str]
    widths: np.ndarray  # (I,) float64
    heights: np.ndarray
    box_offsets: np.ndarray  # (I + 1,)
    boxes: np.ndarray  # (N, 4) float64 xyxy, unclamped
    labels: np.ndarray  # (N,) int64 contiguous
    rel_offsets: np.ndarray  # (I + 1,)
    relations: np.ndarray  # (R, 3) int64 local subject, local object, contiguous predicate
    num_crowd_boxes: int = 0
    num_crowd_relations: int = 0


def read_json(path: str, what: str):
    """The parsed JSON at ``path``; ``FileNotFoundError``/``ValueError`` naming ``what`` (a config key or flag)."""
    if not path:
        raise FileNotFoundError(f"{what} is not set (it must name the JSON file)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: file not found: {path}")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{what}: {path} is not valid JSON: {e}") from None


def _offsets(counts) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return offsets


def parse_coco_relations(data: dict, path: str) -> CocoRelations:
    """Arrays of a file that :func:`check_coco_relations` accepted (no filter applied besides ``iscrowd``)."""
    categories = sorted((c["id"], c["name"]) for c in data["categories"])
    predicates = sorted((p["id"], p["name"]) for p in data["rel_categories"])
    class_index = {cid: i for i, (cid, _) in enumerate(categories)}
    predicate_index = {pid: i for i, (pid, _) in enumerate(predicates)}
    image_index = {image["id"]: i for i, image in enumerate(data["images"])}

    per_image_boxes: List[list] = [[] for _ in data["images"]]
    where = {}  # annotation id -> (image position, local index); crowd annotations map to None
    num_crowd = 0
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            where[ann["id"]] = None
            num_crowd += 1
            continue
        i = image_index[ann["image_id"]]
        where[ann["id"]] = (i, len(per_image_boxes[i]))
        per_image_boxes[i].append((ann["bbox"], class_index[ann["category_id"]]))
    per_image_relations: List[list] = [[] for _ in data["images"]]
    num_crowd_relations = 0
    for rel in data["rel_annotations"]:
        subject, obj = where[rel["subject_id"]], where[rel["object_id"]]
        if subject is None or obj is None:
            num_crowd_relations += 1
            continue
        per_image_relations[subject[0]].append((subject[1], obj[1], predicate_index[rel["predicate_id"]]))

    xywh = np.array([b for boxes in per_image_boxes for b, _ in boxes], dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return CocoRelations(
        path=path,
        class_names=[name for _, name in categories],
        predicate_names=[name for _, name in predicates],
        class_ids=[cid for cid, _ in categories],
        predicate_ids=[pid for pid, _ in predicates],
        image_ids=np.array([image["id"] for image in data["images"]], dtype=np.int64),
        file_names=[image["file_name"] for image in data["images"]],
        widths=np.array([image["width"] for image in data["images"]], dtype=np.float64),
        heights=np.array([image["height"] for image in data["images"]], dtype=np.float64),
        box_offsets=_offsets([len(b) for b in per_image_boxes]),
        boxes=boxes,
        labels=np.array([label for boxes_ in per_image_boxes for _, label in boxes_], dtype=np.int64),
        rel_offsets=_offsets([len(r) for r in per_image_relations]),
        relations=np.array([r for rels in per_image_relations for r in rels], dtype=np.int64).reshape(-1, 3),
        num_crowd_boxes=num_crowd,
        num_crowd_relations=num_crowd_relations,
    )


def read_coco_relations(path: str, image_root: Optional[str] = None, what: Optional[str] = None) -> CocoRelations:
    """Read, check (raising ``ValueError`` with one line per problem kind) and parse a COCO-relations file."""
    data = read_json(path, what or path)
    problems = check_coco_relations(data, image_root)
    if problems:
        raise ValueError(f"{what + ': ' if what else ''}{path} has {len(problems)} kind(s) of problem "
                         f"(the report of tools/check_dataset.py --json {path}):\n"
                         + format_problems(path, problems))
    return parse_coco_relations(data, path)


# ---------------------------------------------------------------------------------------------------------------
# Splits (the filters shared with PSG)
# ---------------------------------------------------------------------------------------------------------------
def build_split(
    name: str,
    parsed: CocoRelations,
    image_dir: str,
    filter_empty_relations: bool,
    filter_non_overlap: bool,
    sample_duplicate_relations: bool,
    sgg_protocol: str = "standard",
    drop_empty_boxes: bool = False,
) -> SceneGraphSplit:
    """The split of ``parsed``: images without boxes dropped (and, as asked, without relations / relations whose
    boxes do not overlap), boxes clamped to the image as VG150's loader does for ``sgg_protocol`` ([0, W - 1] x
    [0, H - 1] for "standard", [0, W] x [0, H] for "iterativesg"), float32; with ``drop_empty_boxes`` the boxes
    left without area by the clamp go, with their relations."""
    margin = GT_CLIP_MARGIN[sgg_protocol]
    num_boxes = np.diff(parsed.box_offsets)
    num_rels = np.diff(parsed.rel_offsets)
    rel_image = np.repeat(np.arange(len(num_rels)), num_rels)
    relations = parsed.relations
    rel_keep = np.ones(len(relations), dtype=bool)
    keep = num_boxes > 0
    if filter_empty_relations:
        keep &= num_rels > 0
    if filter_non_overlap:
        # VG150's rule: relations whose boxes intersect with positive area; images left with none are dropped.
        global_pairs = relations[:, :2] + parsed.box_offsets[rel_image][:, None]
        sub, obj = parsed.boxes[global_pairs[:, 0]], parsed.boxes[global_pairs[:, 1]]
        inter_w = np.minimum(sub[:, 2], obj[:, 2]) - np.maximum(sub[:, 0], obj[:, 0])
        inter_h = np.minimum(sub[:, 3], obj[:, 3]) - np.maximum(sub[:, 1], obj[:, 1])
        rel_keep = (inter_w > 0) & (inter_h > 0)
        keep &= np.bincount(rel_image[rel_keep], minlength=len(num_rels)) > 0
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise ValueError(
            f"{name} ({parsed.path}) is empty after the filters (images need a box; "
            f"DATASETS.VISUAL_GENOME.FILTER_EMPTY_RELATIONS={filter_empty_relations}, "
            f"FILTER_NON_OVERLAP={filter_non_overlap})")

    box_rows = np.flatnonzero(np.repeat(keep, num_boxes))
    rel_keep &= keep[rel_image]
    widths, heights = parsed.widths[rows], parsed.heights[rows]
    box_image = np.repeat(np.arange(len(rows)), num_boxes[rows])
    boxes = parsed.boxes[box_rows]
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, (widths[box_image] - margin)[:, None])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, (heights[box_image] - margin)[:, None])
    labels = parsed.labels[box_rows]
    box_offsets = _offsets(num_boxes[rows])
    relations = relations[rel_keep].copy()
    rel_counts = np.bincount(rel_image[rel_keep], minlength=len(num_rels))[rows]
    if drop_empty_boxes:
        box_ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not box_ok.all():
            rel_img = np.repeat(np.arange(len(rows)), rel_counts)
            old_global = relations[:, :2] + box_offsets[rel_img][:, None]
            rel_ok = box_ok[old_global].all(axis=1)
            new_box_offsets = _offsets(np.bincount(box_image[box_ok], minlength=len(rows)))
            relations = relations[rel_ok]
            relations[:, :2] = (np.cumsum(box_ok) - 1)[old_global[rel_ok]] - new_box_offsets[rel_img[rel_ok]][:, None]
            rel_counts = np.bincount(rel_img[rel_ok], minlength=len(rows))
            boxes, labels, box_offsets = boxes[box_ok], labels[box_ok], new_box_offsets
    return SceneGraphSplit(
        name=name,
        image_dir=image_dir,
        image_ids=parsed.image_ids[rows],
        widths=np.round(widths).astype(np.int64),
        heights=np.round(heights).astype(np.int64),
        box_offsets=box_offsets,
        boxes=boxes.astype(np.float32),
        labels=labels,
        rel_offsets=_offsets(rel_counts),
        relations=relations,
        idx_to_label=list(parsed.class_names),
        idx_to_predicate=list(parsed.predicate_names),
        sample_duplicate_relations=bool(sample_duplicate_relations),
        sgg_protocol=sgg_protocol,
        file_names=[parsed.file_names[r] for r in rows],
    )


_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_SIZE = 8


def clear_cache() -> None:
    _CACHE.clear()


def _identity(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size)


def cached(key: tuple, make):
    """Memoise ``make()`` under ``key`` (a few entries per process)."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = make()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def check_model_sizes(cfg, num_classes: int, num_predicates: int, source: str) -> None:
    """``MODEL.DETR.NUM_CLASSES``/``NUM_RELATION_CLASSES`` must equal the dataset's; the error gives the values."""
    wrong = [(key, have, want) for key, have, want in (
        ("NUM_CLASSES", int(cfg.MODEL.DETR.NUM_CLASSES), num_classes),
        ("NUM_RELATION_CLASSES", int(cfg.MODEL.DETR.NUM_RELATION_CLASSES), num_predicates)) if have != want]
    if wrong:
        raise ValueError(
            f"{source} has {num_classes} object classes and {num_predicates} predicates, but "
            + " and ".join(f"MODEL.DETR.{key} is {have}" for key, have, _ in wrong) + "; set "
            + " ".join(f"MODEL.DETR.{key} {want}" for key, _, want in wrong))


def load_coco_relations_split(cfg, name: str, json_file: str, image_root: str, what: str) -> SceneGraphSplit:
    """Split ``name`` from a COCO-relations file (training filters when ``name`` is in ``DATASETS.TRAIN``).

    ``what`` names where the file was registered (for messages), e.g. ``DATASETS.COCO_RELATIONS[0].JSON``.
    """
    if not image_root or not os.path.isdir(image_root):
        raise FileNotFoundError(f"{what.rsplit('.', 1)[0]}.IMAGES: image folder not found: {image_root!r}")
    if not json_file or not os.path.isfile(json_file):
        raise FileNotFoundError(f"{what}: file not found: {json_file!r}")
    vg = cfg.DATASETS.VISUAL_GENOME
    is_train = name in tuple(cfg.DATASETS.TRAIN)
    margin = _gt_clip_margin(cfg)
    filters = (bool(vg.FILTER_EMPTY_RELATIONS), is_train and bool(vg.FILTER_NON_OVERLAP),
               is_train and bool(vg.FILTER_DUPLICATE_RELATIONS), str(cfg.TEST.SGG_PROTOCOL),
               is_train or margin == 0)
    parsed = cached(("coco", _identity(json_file), os.path.abspath(image_root)),
                    lambda: read_coco_relations(json_file, image_root, what))
    check_model_sizes(cfg, len(parsed.class_names), len(parsed.predicate_names), f"{what} {json_file}")
    split = cached(("coco-split", name, _identity(json_file), os.path.abspath(image_root)) + filters,
                   lambda: build_split(name, parsed, image_root, *filters))
    if parsed.num_crowd_boxes:
        logger.info("%s: skipped %d iscrowd boxes and %d relations using them", name, parsed.num_crowd_boxes,
                    parsed.num_crowd_relations)
    logger.info("%s: %d images, %d objects, %d relations", name, len(split), split.num_objects,
                split.num_relations)
    return split


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------
def split_to_coco_relations(split, description: str = "", class_ids: Optional[Sequence[int]] = None,
                            predicate_ids: Optional[Sequence[int]] = None) -> dict:
    """A split (every stored relation row, ``get_record(i)``) as a COCO-relations dict.

    Category and predicate ids are 1-based (VG150's) unless given; annotation and relation ids count from 1;
    ``file_name`` is relative to the split's image folder.  Boxes are written as exact ``[x1, y1, x2 - x1,
    y2 - y1]`` of the float32 boxes, so reading the file back gives the same float32 boxes.
    """
    class_ids = list(class_ids) if class_ids is not None else list(range(1, len(split.idx_to_label) + 1))
    predicate_ids = list(predicate_ids) if predicate_ids is not None else list(
        range(1, len(split.idx_to_predicate) + 1))
    images, annotations, relations = [], [], []
    dropped_boxes = dropped_relations = 0
    for i in range(len(split)):
        record = split.get_record(i)
        image_id = int(record["image_id"])
        images.append({"id": image_id, "file_name": os.path.relpath(record["file_name"], split.image_dir),
                       "width": int(record["width"]), "height": int(record["height"])})
        annotation_id = {}  # box index -> annotation id; boxes without area are not valid in the format
        for k, (box, label) in enumerate(zip(record["boxes"].tolist(), record["labels"].tolist())):
            x1, y1, x2, y2 = box
            if not (x2 > x1 and y2 > y1):
                dropped_boxes += 1
                continue
            annotation_id[k] = len(annotations) + 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": class_ids[label],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for s, o, p in record["relations"].tolist():
            if s not in annotation_id or o not in annotation_id:
                dropped_relations += 1
                continue
            relations.append({"id": len(relations) + 1, "image_id": image_id, "subject_id": annotation_id[s],
                              "object_id": annotation_id[o], "predicate_id": predicate_ids[p]})
    return {
        "info": {"description": description, "dropped_empty_boxes": dropped_boxes,
                 "dropped_relations_of_empty_boxes": dropped_relations},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name} for cid, name in zip(class_ids, split.idx_to_label)],
        "rel_categories": [{"id": pid, "name": name} for pid, name in zip(predicate_ids, split.idx_to_predicate)],
        "rel_annotations": relations,
    }
