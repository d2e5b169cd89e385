"""Converters between VG150's three files and COCO-relations JSONs (``tools/convert_dataset.py``).

* :func:`vg_to_coco_relations`: each VG150 split as the VG loader yields it (``get_record(i)``: clamped float
  boxes, every relation row) → one COCO-relations JSON.  ``VG_train`` is written *before* the train-only filters
  (``FILTER_NON_OVERLAP``, duplicate sampling) so that the COCO-relations loader, which applies them to the split
  named in ``DATASETS.TRAIN``, gives back exactly the VG loader's train split; val/test are written with every
  box and relation.  Boxes without area (a few in VG150 after clamping) are not valid COCO-relations boxes: they
  are left out with their relations, and counted.
* :func:`coco_relations_to_vg`: train (+ val) + test JSONs → ``VG-SGG-with-attri.h5``,
  ``VG-SGG-dicts-with-attri.json``, ``image_data.json`` and ``VG_100K/<image_id>.jpg`` links to the images.
  Boxes are stored as VG150 does, as integers at ``BOX_SCALE`` 1024 and 512, so this direction rounds them.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np

from .coco_relations import read_coco_relations, split_to_coco_relations
from .visual_genome import CORRUPTED_IMAGE_IDS, SPLIT_NAMES, _read_vocabulary, _require_file, load_vg_split
from .vg_writer import encode_boxes, ranges_from_counts, vocabulary_dicts, write_json, write_vg_h5

__all__ = ["vg_to_coco_relations", "coco_relations_to_vg", "COCO_FILE_NAMES"]

# Output file of each VG split.
COCO_FILE_NAMES = {"VG_train": "train.json", "VG_val": "val.json", "VG_test": "test.json"}


def vg_to_coco_relations(cfg, out_dir: str, splits: Sequence[str] = SPLIT_NAMES) -> Dict[str, dict]:
    """Write ``out_dir/{train,val,test}.json`` from the VG150 files of ``cfg``; returns per split the path and the
    counts (images, objects, relations, dropped_empty_boxes, dropped_relations_of_empty_boxes)."""
    vocab = _require_file("MAPPING_DICTIONARY", cfg.DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY)
    classes, predicates = _read_vocabulary(vocab)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DETR.NUM_CLASSES, cfg.MODEL.DETR.NUM_RELATION_CLASSES = len(classes), len(predicates)
    cfg.DATASETS.VISUAL_GENOME.FILTER_NON_OVERLAP = False  # a train-only filter: the COCO loader applies it
    written = {}
    for name in splits:
        if name not in COCO_FILE_NAMES:
            raise KeyError(f"Unknown Visual Genome split '{name}'; expected one of {tuple(COCO_FILE_NAMES)}")
        split = load_vg_split(cfg, name)
        coco = split_to_coco_relations(split, description=f"VG150 {name} converted by tools/convert_dataset.py")
        path = os.path.join(out_dir, COCO_FILE_NAMES[name])
        write_json(path, coco)
        written[name] = {"path": path, "images": len(coco["images"]), "objects": len(coco["annotations"]),
                         "relations": len(coco["rel_annotations"]),
                         "dropped_empty_boxes": coco["info"]["dropped_empty_boxes"],
                         "dropped_relations_of_empty_boxes": coco["info"]["dropped_relations_of_empty_boxes"]}
    return written


def coco_relations_to_vg(out_dir: str, train_json: str, test_json: str, val_json: Optional[str] = None,
                         image_root: Optional[str] = None) -> dict:
    """Write VG150's files from COCO-relations splits; returns the counts and ``number_of_validation_images``.

    Split 0 holds the val images (those with a box and a relation) followed by the train images, split 2 the test
    images, so ``DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES`` = the returned value reproduces the split.
    With ``image_root`` (the folder the JSONs' ``file_name`` entries are relative to), ``out_dir/VG_100K``
    receives a symbolic link ``<image_id>.jpg`` per image.
    """
    parts = [("val", val_json), ("train", train_json), ("test", test_json)]
    parsed = {kind: read_coco_relations(path, image_root, f"--{kind}") for kind, path in parts if path}
    reference = parsed["train"]
    for kind, data in parsed.items():
        if (data.class_names, data.predicate_names) != (reference.class_names, reference.predicate_names):
            raise ValueError(f"--{kind} {data.path}: its categories/rel_categories differ from --train "
                             f"{reference.path}; every split must list the same ones")

    rows = []  # (kind, parsed, image index)
    skipped_val = 0
    for kind, data in parsed.items():
        num_boxes, num_rels = np.diff(data.box_offsets), np.diff(data.rel_offsets)
        for i in range(len(data.image_ids)):
            if kind == "val" and not (num_boxes[i] and num_rels[i]):
                skipped_val += 1  # VG150's val is "the first N split-0 images that pass the filters"
                continue
            rows.append((kind, data, i))
    ids = [int(data.image_ids[i]) for _, data, i in rows]
    reserved = sorted(set(ids) & set(CORRUPTED_IMAGE_IDS))
    if reserved:
        raise ValueError(f"image ids {reserved} are reserved by the VG150 format (its loader skips them as "
                         "corrupted images); renumber these images before converting")
    seen, repeated = set(), []
    for image_id in ids:
        if image_id in seen:
            repeated.append(image_id)
        seen.add(image_id)
    if repeated:
        raise ValueError(f"image ids {repeated[:5]} appear in more than one split; VG150 names images by id")

    boxes, labels, widths, heights, pairs, predicates, num_boxes, num_rels = [], [], [], [], [], [], [], []
    offset = 0
    for _, data, i in rows:
        b0, b1 = data.box_offsets[i], data.box_offsets[i + 1]
        r0, r1 = data.rel_offsets[i], data.rel_offsets[i + 1]
        w, h = data.widths[i], data.heights[i]
        image_boxes = data.boxes[b0:b1].copy()
        image_boxes[:, 0::2] = np.clip(image_boxes[:, 0::2], 0, w)
        image_boxes[:, 1::2] = np.clip(image_boxes[:, 1::2], 0, h)
        boxes.append(image_boxes)
        labels.append(data.labels[b0:b1] + 1)
        widths.append(np.full(b1 - b0, w))
        heights.append(np.full(b1 - b0, h))
        pairs.append(data.relations[r0:r1, :2] + offset)
        predicates.append(data.relations[r0:r1, 2] + 1)
        num_boxes.append(b1 - b0)
        num_rels.append(r1 - r0)
        offset += b1 - b0
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    widths = np.concatenate(widths) if widths else np.zeros(0)
    heights = np.concatenate(heights) if heights else np.zeros(0)
    pairs = np.concatenate(pairs).reshape(-1, 2) if pairs else np.zeros((0, 2), np.int64)
    predicates = np.concatenate(predicates) if predicates else np.zeros(0, np.int64)
    first_box, last_box = ranges_from_counts(num_boxes)
    first_rel, last_rel = ranges_from_counts(num_rels)
    os.makedirs(out_dir, exist_ok=True)
    write_vg_h5(os.path.join(out_dir, "VG-SGG-with-attri.h5"), {
        "split": np.array([2 if kind == "test" else 0 for kind, _, _ in rows], dtype=np.int64),
        "img_to_first_box": first_box, "img_to_last_box": last_box,
        "img_to_first_rel": first_rel, "img_to_last_rel": last_rel,
        "labels": labels,
        "boxes_1024": encode_boxes(boxes, widths, heights, 1024),
        "boxes_512": encode_boxes(boxes, widths, heights, 512),
        "relationships": pairs,
        "predicates": predicates,
        "attributes": np.zeros((len(labels), 10), dtype=np.int64),
        "active_object_mask": np.ones(len(labels), dtype=bool),
    })
    counts = {
        "object": {n: int((labels == k + 1).sum()) for k, n in enumerate(reference.class_names)},
        "predicate": {n: int((predicates == k + 1).sum()) for k, n in enumerate(reference.predicate_names)},
        "attribute": {},
    }
    write_json(os.path.join(out_dir, "VG-SGG-dicts-with-attri.json"),
               vocabulary_dicts(reference.class_names, reference.predicate_names, [], counts))
    write_json(os.path.join(out_dir, "image_data.json"), [
        {"image_id": int(data.image_ids[i]), "width": int(round(data.widths[i])),
         "height": int(round(data.heights[i])), "url": data.file_names[i], "coco_id": None, "flickr_id": None}
        for _, data, i in rows])
    if image_root:
        link_dir = os.path.join(out_dir, "VG_100K")
        os.makedirs(link_dir, exist_ok=True)
        for _, data, i in rows:
            link = os.path.join(link_dir, f"{int(data.image_ids[i])}.jpg")
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.abspath(os.path.join(image_root, data.file_names[i])), link)
    num_val = sum(1 for kind, _, _ in rows if kind == "val")
    return {"images": len(rows), "objects": int(len(labels)), "relations": int(len(predicates)),
            "number_of_validation_images": num_val, "skipped_val_images": skipped_val,
            "num_classes": len(reference.class_names), "num_relation_classes": len(reference.predicate_names)}
