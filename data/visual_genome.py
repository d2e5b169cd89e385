"""Visual Genome VG150 (the scene-graph split of Xu et al. 2017) loaded into compact numpy arrays.

The dataset is three files plus an image folder (docs/PROTOCOL.md, section 1):

* ``VG-SGG-with-attri.h5`` (``DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5``): one row per valid image, boxes as
  (cx, cy, w, h) at a longer side of ``BOX_SCALE`` and relations as global object rows, no image ids;
* ``VG-SGG-dicts-with-attri.json`` (``MAPPING_DICTIONARY``): the class and predicate names (1-based);
* ``image_data.json`` (``IMAGE_DATA``): image id, width and height of every image, including four corrupted
  images that have no h5 row;
* ``VG_100K/<image_id>.jpg`` (``IMAGES``).

Every split is decoded once per process with vectorised numpy (the full 108k-row file parses in a few seconds) and
kept as concatenated arrays with per-image offsets, so thousands of images cost a few arrays, not thousands of
Python dicts, and a DataLoader worker forks them without copying.  ``VGSplit.get_record`` slices one image out.

Protocol (what every published VG150 number used):

1. ``VG_train``/``VG_val`` take split 0, ``VG_test`` split 2; images need >= 1 box, and >= 1 relation with
   ``FILTER_EMPTY_RELATIONS``.
2. ``VG_val`` is the first ``NUMBER_OF_VALIDATION_IMAGES`` of those split-0 images in file order, ``VG_train`` the
   rest.
3. ``FILTER_NON_OVERLAP`` (train only): keep relations whose subject and object boxes intersect with positive area
   (IoU > 0, detectron2's convention without the +1 pixel); drop images left with none.
4. Boxes: x1 = cx - w / 2 truncated toward zero (the reference assigns the float result into its int32 array),
   x2 = x1 + w; scaled by max(width, height) / BOX_SCALE and clamped to [0, width - 1] x [0, height - 1].  Train
   drops boxes that are empty after clamping (and their relations); val/test keep every box.  That is the standard
   evaluation protocol; with ``TEST.SGG_PROTOCOL iterativesg`` boxes are clipped to [0, width] x [0, height]
   instead, and every split drops the boxes left empty (with their relations): the released IterativeSG loader
   keeps boxes unclamped and its mapper clips them at the image size and drops empty ones, which is the same as
   clipping here since a clip commutes with the resize and the flip (docs/PROTOCOL.md).  Training sees at most a
   1-pixel difference between the two.
5. ``FILTER_DUPLICATE_RELATIONS`` (train only): ``get_record(i, rng)`` keeps one predicate per ordered
   (subject, object) pair, drawn with ``rng`` at every load.  Val/test keep every relation row (ground truth).
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CORRUPTED_IMAGE_IDS",
    "SPLIT_NAMES",
    "VGSplit",
    "load_vg_split",
    "get_predicate_counts",
    "clear_cache",
]

# Images listed in image_data.json that have no row in the h5 file (and no usable JPEG).
CORRUPTED_IMAGE_IDS = (1592, 1722, 4616, 4617)
SPLIT_NAMES = ("VG_train", "VG_val", "VG_test")

_KEY = "DATASETS.VISUAL_GENOME."
# TEST.SGG_PROTOCOL -> ground-truth boxes clipped to [0, W - margin] x [0, H - margin] (evaluation.protocols).
GT_CLIP_MARGIN = {"standard": 1, "iterativesg": 0}
_RANGE_FIELDS = ("img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel")


@dataclass
class VGSplit:
    """One split of VG150: per-image arrays plus concatenated per-object and per-relation arrays.

    Image ``i`` owns ``boxes[box_offsets[i]:box_offsets[i + 1]]`` (float32 xyxy, original-image pixels, clamped),
    ``labels[...]`` (int64, 0-based) and ``relations[rel_offsets[i]:rel_offsets[i + 1]]`` (int64 rows of
    subject index, object index — both local to the image — and 0-based predicate).
    """

    name: str
    image_dir: str
    image_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    box_offsets: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    rel_offsets: np.ndarray
    relations: np.ndarray
    idx_to_label: list
    idx_to_predicate: list
    sample_duplicate_relations: bool
    sgg_protocol: str = "standard"  # the TEST.SGG_PROTOCOL whose ground-truth box convention the boxes follow

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_objects(self) -> int:
        return int(self.box_offsets[-1])

    @property
    def num_relations(self) -> int:
        return int(self.rel_offsets[-1])

    def file_name(self, i: int) -> str:
        return os.path.join(self.image_dir, f"{int(self.image_ids[i])}.jpg")

    def get_record(self, i: int, rng: Optional[np.random.Generator] = None) -> dict:
        """Image ``i`` as the dict of docs/ARCHITECTURE.md (fresh arrays, safe to modify).

        With ``rng`` on a split that samples duplicates (train with ``FILTER_DUPLICATE_RELATIONS``), one relation
        row per ordered (subject, object) pair is kept, chosen uniformly among that pair's rows; with ``rng=None``
        every stored row is returned.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"{self.name}: record {i} out of range [0, {len(self)})")
        b0, b1 = self.box_offsets[i], self.box_offsets[i + 1]
        r0, r1 = self.rel_offsets[i], self.rel_offsets[i + 1]
        relations = self.relations[r0:r1].copy()
        if rng is not None and self.sample_duplicate_relations and len(relations) > 1:
            relations = sample_one_predicate_per_pair(relations, rng)
        return {
            "image_id": int(self.image_ids[i]),
            "file_name": self.file_name(i),
            "width": int(self.widths[i]),
            "height": int(self.heights[i]),
            "boxes": self.boxes[b0:b1].copy(),
            "labels": self.labels[b0:b1].copy(),
            "relations": relations,
        }


def sample_one_predicate_per_pair(relations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep one row per ordered (subject, object) pair, uniformly at random among its rows, in the original order."""
    order = rng.permutation(len(relations))
    _, first_in_order = np.unique(relations[order, :2], axis=0, return_index=True)
    return relations[np.sort(order[first_in_order])]


# ---------------------------------------------------------------------------------------------------------------
# File reading and validation
# ---------------------------------------------------------------------------------------------------------------
def _require_file(cfg_key: str, path: str) -> str:
    if not path:
        raise FileNotFoundError(f"{_KEY}{cfg_key} is not set (it must name the dataset file)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{_KEY}{cfg_key}: file not found: {path}")
    return path


def _read_vocabulary(path: str) -> tuple[list, list]:
    """0-based class and predicate names from the dicts json (whose ``idx_to_*`` keys are "1".."n")."""
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{_KEY}MAPPING_DICTIONARY: cannot read JSON {path}: {e}") from None
    names = []
    for field in ("idx_to_label", "idx_to_predicate"):
        table = info.get(field) if isinstance(info, dict) else None
        if not isinstance(table, dict) or not table:
            raise KeyError(f"{_KEY}MAPPING_DICTIONARY: {path} has no '{field}' table")
        try:
            indices = sorted(int(k) for k in table)
        except ValueError:
            raise ValueError(f"{_KEY}MAPPING_DICTIONARY: {path}: '{field}' keys must be integers") from None
        if indices != list(range(1, len(indices) + 1)):
            raise ValueError(f"{_KEY}MAPPING_DICTIONARY: {path}: '{field}' keys must be 1..{len(indices)}")
        names.append([table[str(k)] for k in indices])
    return names[0], names[1]


@dataclass
class _RawVG:
    """The h5 rows aligned with image_data.json, boxes decoded to xyxy at BOX_SCALE (int32, unclamped)."""

    split: np.ndarray
    first_box: np.ndarray
    last_box: np.ndarray
    first_rel: np.ndarray
    last_rel: np.ndarray
    labels: np.ndarray  # (N,) 1-based
    boxes: np.ndarray  # (N, 4) int32 xyxy at BOX_SCALE
    relationships: np.ndarray  # (R, 2) global object rows
    predicates: np.ndarray  # (R,) 1-based
    image_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray


def decode_boxes(cxcywh: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) int32 -> xyxy int32 as the reference computes it.

    The reference writes ``cxcy - wh / 2`` (a float) back into its int32 array, which truncates toward zero, and
    then adds the integer width/height: x1 = trunc(cx - w / 2), x2 = x1 + w.  E.g. cx 5, w 3 gives x1 3, x2 6.
    """
    cxcywh = np.asarray(cxcywh, dtype=np.int32)
    xy1 = np.trunc(cxcywh[:, :2] - cxcywh[:, 2:] / 2.0).astype(np.int32)
    return np.concatenate([xy1, xy1 + cxcywh[:, 2:]], axis=1)


def _read_h5(path: str, box_scale: int) -> dict:
    import h5py

    box_field = f"boxes_{box_scale}"
    fields = ("split",) + _RANGE_FIELDS + ("labels", box_field, "relationships", "predicates")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{_KEY}VG_ATTRIBUTE_H5: cannot open HDF5 file {path}: {e}") from None
    with f:
        missing = [k for k in fields if k not in f]
        if missing:
            hint = f" (BOX_SCALE {box_scale} needs '{box_field}')" if box_field in missing else ""
            raise KeyError(f"{_KEY}VG_ATTRIBUTE_H5: {path} lacks dataset(s) {missing}{hint}")
        arrays = {k: f[k][()] for k in fields}
    arrays["boxes"] = arrays.pop(box_field)
    return arrays


def _check_shapes(a: dict, path: str) -> None:
    num_images = len(a["split"])
    for k in _RANGE_FIELDS:
        if a[k].shape != (num_images,):
            raise ValueError(f"{_KEY}VG_ATTRIBUTE_H5: {path}: '{k}' has shape {a[k].shape}, expected ({num_images},)")
    n, r = len(a["labels"]), len(a["predicates"])
    expected = {"labels": (n,), "boxes": (n, 4), "relationships": (r, 2), "predicates": (r,)}
    for k, shape in expected.items():
        if a[k].shape != shape:
            raise ValueError(f"{_KEY}VG_ATTRIBUTE_H5: {path}: '{k}' has shape {a[k].shape}, expected {shape}")


def _check_ranges(first: np.ndarray, last: np.ndarray, total: int, what: str, path: str) -> None:
    empty = first < 0
    bad = (empty & (last >= 0)) | (~empty & ((last < first) | (last >= total)))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{_KEY}VG_ATTRIBUTE_H5: {path}: row {row} has an invalid {what} range "
            f"[{int(first[row])}, {int(last[row])}] (total {total})"
        )


def _read_raw(h5_path: str, image_data_path: str, box_scale: int) -> _RawVG:
    a = _read_h5(h5_path, box_scale)
    for k in ("labels", "predicates"):  # stored as (N, 1) columns
        if a[k].ndim == 2 and a[k].shape[1] == 1:
            a[k] = a[k][:, 0]
    _check_shapes(a, h5_path)
    first_box, last_box = a["img_to_first_box"].astype(np.int64), a["img_to_last_box"].astype(np.int64)
    first_rel, last_rel = a["img_to_first_rel"].astype(np.int64), a["img_to_last_rel"].astype(np.int64)
    _check_ranges(first_box, last_box, len(a["labels"]), "box", h5_path)
    _check_ranges(first_rel, last_rel, len(a["predicates"]), "relation", h5_path)

    try:
        with open(image_data_path) as f:
            image_data = json.load(f)
        kept = [d for d in image_data if int(d["image_id"]) not in CORRUPTED_IMAGE_IDS]
        image_ids = np.array([int(d["image_id"]) for d in kept], dtype=np.int64)
        widths = np.array([int(d["width"]) for d in kept], dtype=np.int64)
        heights = np.array([int(d["height"]) for d in kept], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{_KEY}IMAGE_DATA: {image_data_path} is not a list of dicts with image_id/width/height: {e!r}"
        ) from None
    num_rows = len(a["split"])
    if len(kept) != num_rows:
        raise ValueError(
            f"{_KEY}IMAGE_DATA: {image_data_path} lists {len(kept)} images after dropping the corrupted ids "
            f"{list(CORRUPTED_IMAGE_IDS)}, but {_KEY}VG_ATTRIBUTE_H5 {h5_path} has {num_rows} rows"
        )
    if (widths <= 0).any() or (heights <= 0).any():
        bad = int(np.flatnonzero((widths <= 0) | (heights <= 0))[0])
        raise ValueError(f"{_KEY}IMAGE_DATA: {image_data_path}: image {int(image_ids[bad])} has a non-positive size")

    return _RawVG(
        split=a["split"].astype(np.int64),
        first_box=first_box,
        last_box=last_box,
        first_rel=first_rel,
        last_rel=last_rel,
        labels=a["labels"].astype(np.int64),
        boxes=decode_boxes(a["boxes"]),
        relationships=a["relationships"].astype(np.int64),
        predicates=a["predicates"].astype(np.int64),
        image_ids=image_ids,
        widths=widths,
        heights=heights,
    )


# ---------------------------------------------------------------------------------------------------------------
# Split construction (vectorised)
# ---------------------------------------------------------------------------------------------------------------
def _gather_ranges(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated element indices of inclusive ranges (-1/-1 = empty) and the per-range offsets."""
    counts = np.where(first >= 0, last - first + 1, 0)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    index = np.arange(offsets[-1], dtype=np.int64) + np.repeat(np.where(first >= 0, first, 0) - offsets[:-1], counts)
    return index, offsets


def _offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _check_label_range(values: np.ndarray, num: int, what: str, h5_path: str, dict_path: str) -> None:
    bad = (values < 1) | (values > num)
    if bad.any():
        v = int(values[np.flatnonzero(bad)[0]])
        raise ValueError(
            f"{_KEY}VG_ATTRIBUTE_H5: {h5_path} has {what} {v} outside 1..{num} "
            f"(the {what} count of {_KEY}MAPPING_DICTIONARY {dict_path})"
        )


def _build_split(cfg, name: str, raw: _RawVG, labels_vocab: list, predicates_vocab: list) -> VGSplit:
    vg = cfg.DATASETS.VISUAL_GENOME
    is_train = name == "VG_train"
    keep = (raw.split == (2 if name == "VG_test" else 0)) & (raw.first_box >= 0)
    if vg.FILTER_EMPTY_RELATIONS:
        keep &= raw.first_rel >= 0
    rows = np.flatnonzero(keep)
    if name != "VG_test":
        num_val = int(vg.NUMBER_OF_VALIDATION_IMAGES)
        if num_val < 0:
            raise ValueError(f"{_KEY}NUMBER_OF_VALIDATION_IMAGES must be >= 0, got {num_val}")
        rows = rows[:num_val] if name == "VG_val" else rows[num_val:]

    box_index, box_offsets = _gather_ranges(raw.first_box[rows], raw.last_box[rows])
    rel_index, rel_offsets = _gather_ranges(raw.first_rel[rows], raw.last_rel[rows])
    rel_image = np.repeat(np.arange(len(rows)), np.diff(rel_offsets))
    global_pairs = raw.relationships[rel_index]
    first = raw.first_box[rows][rel_image]
    num_boxes = np.diff(box_offsets)[rel_image]
    local = global_pairs - first[:, None]
    bad = (local < 0) | (local >= num_boxes[:, None])
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(
            f"{_KEY}VG_ATTRIBUTE_H5: relationship row {int(rel_index[j])} points at object rows "
            f"{global_pairs[j].tolist()} outside its image's boxes (h5 row {int(rows[rel_image[j]])})"
        )

    if is_train and vg.FILTER_NON_OVERLAP:
        sub, obj = raw.boxes[global_pairs[:, 0]], raw.boxes[global_pairs[:, 1]]
        inter_w = np.minimum(sub[:, 2], obj[:, 2]) - np.maximum(sub[:, 0], obj[:, 0])
        inter_h = np.minimum(sub[:, 3], obj[:, 3]) - np.maximum(sub[:, 1], obj[:, 1])
        overlapping = (inter_w > 0) & (inter_h > 0)
        images_kept = np.bincount(rel_image[overlapping], minlength=len(rows)) > 0
        rows = rows[images_kept]
        rel_keep = overlapping & images_kept[rel_image]
        box_index, box_offsets = _gather_ranges(raw.first_box[rows], raw.last_box[rows])
        rel_index, local = rel_index[rel_keep], local[rel_keep]
        rel_offsets = _offsets_from_counts(np.bincount(rel_image[rel_keep], minlength=len(images_kept))[images_kept])

    widths, heights = raw.widths[rows], raw.heights[rows]
    box_image = np.repeat(np.arange(len(rows)), np.diff(box_offsets))
    scale = (np.maximum(widths, heights) / float(vg.BOX_SCALE))[box_image]
    boxes = raw.boxes[box_index].astype(np.float64) * scale[:, None]
    margin = _gt_clip_margin(cfg)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, (widths[box_image] - margin)[:, None])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, (heights[box_image] - margin)[:, None])
    labels = raw.labels[box_index]
    predicates = raw.predicates[rel_index]
    _check_label_range(labels, len(labels_vocab), "object label", vg.VG_ATTRIBUTE_H5, vg.MAPPING_DICTIONARY)
    _check_label_range(predicates, len(predicates_vocab), "predicate", vg.VG_ATTRIBUTE_H5, vg.MAPPING_DICTIONARY)
    relations = np.column_stack([local, predicates - 1]).astype(np.int64)

    if is_train or margin == 0:
        # Drop boxes that are empty after clamping, and the relations that use them; re-index the rest.  With the
        # iterativesg protocol val/test too, as the released test mapper does (its 1e-5 px threshold in the resized
        # image is the same as > 0 here: VG's clipped box sides are multiples of 1/1024 px).
        box_ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not box_ok.all():
            new_global = np.cumsum(box_ok) - 1
            new_box_offsets = _offsets_from_counts(np.bincount(box_image[box_ok], minlength=len(rows)))
            rel_img = np.repeat(np.arange(len(rows)), np.diff(rel_offsets))
            old_global = relations[:, :2] + box_offsets[rel_img][:, None]
            rel_ok = box_ok[old_global].all(axis=1)
            relations = relations[rel_ok]
            relations[:, :2] = new_global[old_global[rel_ok]] - new_box_offsets[rel_img[rel_ok]][:, None]
            rel_offsets = _offsets_from_counts(np.bincount(rel_img[rel_ok], minlength=len(rows)))
            boxes, labels, box_offsets = boxes[box_ok], labels[box_ok], new_box_offsets

    if len(rows) == 0:
        raise ValueError(
            f"{name} is empty after the filters ({_KEY}FILTER_EMPTY_RELATIONS={vg.FILTER_EMPTY_RELATIONS}, "
            f"FILTER_NON_OVERLAP={vg.FILTER_NON_OVERLAP}, NUMBER_OF_VALIDATION_IMAGES={vg.NUMBER_OF_VALIDATION_IMAGES})"
            f" on {vg.VG_ATTRIBUTE_H5}"
        )
    return VGSplit(
        name=name,
        image_dir=vg.IMAGES,
        image_ids=raw.image_ids[rows],
        widths=widths,
        heights=heights,
        box_offsets=box_offsets,
        boxes=boxes.astype(np.float32),
        labels=labels - 1,
        rel_offsets=rel_offsets,
        relations=relations,
        idx_to_label=list(labels_vocab),
        idx_to_predicate=list(predicates_vocab),
        sample_duplicate_relations=bool(is_train and vg.FILTER_DUPLICATE_RELATIONS),
        sgg_protocol=str(cfg.TEST.SGG_PROTOCOL),
    )


def _gt_clip_margin(cfg) -> int:
    """The ground-truth box margin of ``TEST.SGG_PROTOCOL`` (``ValueError`` naming the key if unknown)."""
    protocol = cfg.TEST.SGG_PROTOCOL
    if protocol not in GT_CLIP_MARGIN:
        raise ValueError(f"TEST.SGG_PROTOCOL must be one of {sorted(GT_CLIP_MARGIN)}, got {protocol!r}")
    return GT_CLIP_MARGIN[protocol]


# ---------------------------------------------------------------------------------------------------------------
# Public entry points (memoised per process)
# ---------------------------------------------------------------------------------------------------------------
_RAW_CACHE: "OrderedDict[tuple, _RawVG]" = OrderedDict()
_SPLIT_CACHE: "OrderedDict[tuple, VGSplit]" = OrderedDict()
_CACHE_SIZE = 4


def _file_identity(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size)


def _remember(cache: OrderedDict, key: tuple, value):
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every parsed file and split (tests rewrite files in place)."""
    _RAW_CACHE.clear()
    _SPLIT_CACHE.clear()


def load_vg_split(cfg, name: str) -> VGSplit:
    """The split ``name`` (``VG_train``, ``VG_val`` or ``VG_test``) as configured by ``cfg.DATASETS.VISUAL_GENOME``.

    Parsed once per process and memoised on the file identities and the filter settings.
    """
    if name not in SPLIT_NAMES:
        raise KeyError(f"Unknown Visual Genome split '{name}'; expected one of {SPLIT_NAMES}")
    vg = cfg.DATASETS.VISUAL_GENOME
    h5_path = _require_file("VG_ATTRIBUTE_H5", vg.VG_ATTRIBUTE_H5)
    dict_path = _require_file("MAPPING_DICTIONARY", vg.MAPPING_DICTIONARY)
    image_data_path = _require_file("IMAGE_DATA", vg.IMAGE_DATA)
    if not vg.IMAGES:
        raise FileNotFoundError(f"{_KEY}IMAGES is not set (it must name the image folder)")
    if not os.path.isdir(vg.IMAGES):
        raise FileNotFoundError(f"{_KEY}IMAGES: folder not found: {vg.IMAGES}")
    if int(vg.BOX_SCALE) <= 0:
        raise ValueError(f"{_KEY}BOX_SCALE must be positive, got {vg.BOX_SCALE}")

    files = (_file_identity(h5_path), _file_identity(image_data_path), _file_identity(dict_path))
    settings = (
        name,
        os.path.abspath(vg.IMAGES),
        bool(vg.FILTER_EMPTY_RELATIONS),
        bool(vg.FILTER_NON_OVERLAP),
        bool(vg.FILTER_DUPLICATE_RELATIONS),
        int(vg.NUMBER_OF_VALIDATION_IMAGES),
        int(vg.BOX_SCALE),
        str(cfg.TEST.SGG_PROTOCOL),
        int(cfg.MODEL.DETR.NUM_CLASSES),
        int(cfg.MODEL.DETR.NUM_RELATION_CLASSES),
    )
    key = files + settings
    if key in _SPLIT_CACHE:
        return _SPLIT_CACHE[key]

    labels_vocab, predicates_vocab = _read_vocabulary(dict_path)
    for model_key, vocab, what in (
        ("NUM_CLASSES", labels_vocab, "object classes"),
        ("NUM_RELATION_CLASSES", predicates_vocab, "predicates"),
    ):
        if len(vocab) != getattr(cfg.MODEL.DETR, model_key):
            raise ValueError(
                f"{_KEY}MAPPING_DICTIONARY {dict_path} has {len(vocab)} {what} but MODEL.DETR.{model_key} is "
                f"{getattr(cfg.MODEL.DETR, model_key)}; set MODEL.DETR.{model_key} {len(vocab)}"
            )

    raw_key = files[:2] + (int(vg.BOX_SCALE),)
    raw = _RAW_CACHE.get(raw_key)
    if raw is None:
        raw = _remember(_RAW_CACHE, raw_key, _read_raw(h5_path, image_data_path, int(vg.BOX_SCALE)))
    split = _build_split(cfg, name, raw, labels_vocab, predicates_vocab)
    logger.info(
        "%s: %d images, %d objects, %d relations", name, len(split), split.num_objects, split.num_relations
    )
    return _remember(_SPLIT_CACHE, key, split)


def get_predicate_counts(cfg) -> np.ndarray:
    """Relation rows per predicate (0-based) in ``VG_train``, duplicates included: the f_c of the alpha/beta weights."""
    split = load_vg_split(cfg, "VG_train")
    return np.bincount(split.relations[:, 2], minlength=len(split.idx_to_predicate)).astype(np.int64)
