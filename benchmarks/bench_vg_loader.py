#!/usr/bin/env python
"""Time the VG150 parse (``load_vg_split``) on a synthetic file of the real dataset's size.

    python benchmarks/bench_vg_loader.py [--workdir DIR] [--images 108073] [--objects 1150000] [--relations 623000]

Writes VG-SGG-with-attri.h5 / image_data.json / dicts json with the full VG150 shapes (random annotations, no
JPEGs, a 150-class / 50-predicate vocabulary), then reports the wall time of the first ``load_vg_split`` of every
split (the first one includes reading the h5 and image_data.json), the memoised reload time, and the memory the
three splits hold.  Run it pinned to one core to reproduce the "< 20 s on one core" budget:
``taskset -c 0 python benchmarks/bench_vg_loader.py``.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs.defaults import get_cfg  # noqa: E402
from data.vg_writer import ranges_from_counts, vocabulary_dicts, write_json, write_vg_h5  # noqa: E402
from data.visual_genome import CORRUPTED_IMAGE_IDS, SPLIT_NAMES, clear_cache, load_vg_split  # noqa: E402


def write_vg_sized_dataset(out_dir: str, num_images: int, num_objects: int, num_relations: int, seed: int = 0):
    """Random VG-format files with the requested totals (vectorised; a few seconds for the full size)."""
    rng = np.random.default_rng(seed)
    boxes_per_image = rng.multinomial(num_objects, np.full(num_images, 1.0 / num_images))
    boxes_per_image[: max(1, num_images // 1000)] = 0  # a few images without boxes
    num_objects = int(boxes_per_image.sum())
    can_relate = np.flatnonzero(boxes_per_image >= 2)
    rels_per_image = np.zeros(num_images, dtype=np.int64)
    rels_per_image[can_relate] = rng.multinomial(num_relations, np.full(len(can_relate), 1.0 / len(can_relate)))
    num_relations = int(rels_per_image.sum())
    first_box, last_box = ranges_from_counts(boxes_per_image)
    first_rel, last_rel = ranges_from_counts(rels_per_image)

    widths = rng.integers(400, 1025, num_images)
    heights = rng.integers(300, 1025, num_images)
    box_image = np.repeat(np.arange(num_images), boxes_per_image)
    scale = 1024.0 / np.maximum(widths, heights)[box_image]
    w = np.maximum(1, (rng.uniform(0.05, 0.6, num_objects) * widths[box_image] * scale)).astype(np.int32)
    h = np.maximum(1, (rng.uniform(0.05, 0.6, num_objects) * heights[box_image] * scale)).astype(np.int32)
    cx = (rng.uniform(0.2, 0.8, num_objects) * widths[box_image] * scale).astype(np.int32)
    cy = (rng.uniform(0.2, 0.8, num_objects) * heights[box_image] * scale).astype(np.int32)
    boxes_1024 = np.stack([cx, cy, w, h], axis=1)

    rel_image = np.repeat(np.arange(num_images), rels_per_image)
    n = boxes_per_image[rel_image]
    subject = first_box[rel_image] + (rng.random(num_relations) * n).astype(np.int64)
    obj = first_box[rel_image] + (rng.random(num_relations) * n).astype(np.int64)
    write_vg_h5(
        os.path.join(out_dir, "VG-SGG-with-attri.h5"),
        {
            "split": np.where(np.arange(num_images) < int(0.7 * num_images), 0, 2),
            "img_to_first_box": first_box,
            "img_to_last_box": last_box,
            "img_to_first_rel": first_rel,
            "img_to_last_rel": last_rel,
            "labels": rng.integers(1, 151, num_objects),
            "boxes_1024": boxes_1024,
            "boxes_512": boxes_1024 // 2,
            "relationships": np.stack([subject, obj], axis=1),
            "predicates": rng.integers(1, 51, num_relations),
            "attributes": np.zeros((num_objects, 10), dtype=np.int64),
            "active_object_mask": np.ones(num_objects, dtype=bool),
        },
    )
    image_ids = [i + 1 if i + 1 < CORRUPTED_IMAGE_IDS[0] else i + 10000 for i in range(num_images)]
    entries = [{"image_id": int(i), "url": "", "width": int(a), "height": int(b), "coco_id": None, "flickr_id": None}
               for i, a, b in zip(image_ids, widths, heights)]
    for k, corrupted in enumerate(CORRUPTED_IMAGE_IDS):
        entries.insert(min(len(entries), 1000 * (k + 1)), {"image_id": corrupted, "url": "", "width": 10,
                                                           "height": 10, "coco_id": None, "flickr_id": None})
    write_json(os.path.join(out_dir, "image_data.json"), entries)
    labels = [f"object{i:03d}" for i in range(1, 151)]
    predicates = [f"predicate{i:02d}" for i in range(1, 51)]
    attributes = [f"attribute{i:03d}" for i in range(1, 201)]
    counts = {"object": {x: 1 for x in labels}, "predicate": {x: 1 for x in predicates},
              "attribute": {x: 1 for x in attributes}}
    write_json(os.path.join(out_dir, "VG-SGG-dicts-with-attri.json"),
               vocabulary_dicts(labels, predicates, attributes, counts))
    os.makedirs(os.path.join(out_dir, "VG_100K"), exist_ok=True)
    return num_objects, num_relations


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="", help="where to write the files (default: a temporary folder)")
    parser.add_argument("--images", type=int, default=108073)
    parser.add_argument("--objects", type=int, default=1150000)
    parser.add_argument("--relations", type=int, default=623000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.workdir or tmp
        os.makedirs(out, exist_ok=True)
        start = time.perf_counter()
        objects, relations = write_vg_sized_dataset(out, args.images, args.objects, args.relations)
        print(f"wrote {args.images} rows, {objects} boxes, {relations} relations in "
              f"{time.perf_counter() - start:.1f} s")
        cfg = get_cfg()
        cfg.merge_from_list([
            "DATASETS.VISUAL_GENOME.IMAGES", os.path.join(out, "VG_100K"),
            "DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY", os.path.join(out, "VG-SGG-dicts-with-attri.json"),
            "DATASETS.VISUAL_GENOME.IMAGE_DATA", os.path.join(out, "image_data.json"),
            "DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5", os.path.join(out, "VG-SGG-with-attri.h5"),
            "DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES", min(5000, args.images // 20),
        ])
        clear_cache()
        total, nbytes = 0.0, 0
        for name in SPLIT_NAMES:
            start = time.perf_counter()
            split = load_vg_split(cfg, name)
            elapsed = time.perf_counter() - start
            total += elapsed
            nbytes += sum(a.nbytes for a in (split.image_ids, split.widths, split.heights, split.box_offsets,
                                             split.boxes, split.labels, split.rel_offsets, split.relations))
            print(f"{name}: images={len(split)} objects={split.num_objects} relations={split.num_relations} "
                  f"parse {elapsed:.2f} s")
        start = time.perf_counter()
        for name in SPLIT_NAMES:
            load_vg_split(cfg, name)
        print(f"all three splits: {total:.2f} s first load, {time.perf_counter() - start:.4f} s memoised reload, "
              f"{nbytes / 2**20:.1f} MiB of arrays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
