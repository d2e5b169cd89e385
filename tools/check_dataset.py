#!/usr/bin/env python
"""Check a COCO-relations file (one split of your own data) before training on it.

    python tools/check_dataset.py --json data/train.json --images data/images

Prints one ``ok:`` line with the split's size (exit status 0), or one ``error:`` line per kind of problem — how
many entries have it and the ids of the first ones — and exits with status 2.  The problems: missing image files,
boxes with width/height <= 0 or outside their image, annotations or relations naming unknown images, categories,
predicates or annotations, relations joining two images, duplicate ids, an empty split, malformed entries.
Training runs the same checks on every COCO-relations split it loads.  docs/DATASETS.md describes the format.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from data.coco_relations import check_coco_relations, parse_coco_relations, read_json  # noqa: E402
from engine.defaults import run_command_line  # noqa: E402


class _Problems(Exception):
    """Raised (and caught in :func:`main`) after the problem lines are printed."""


def check(json_file: str, images: str = "") -> None:
    """Print the report of ``json_file``; raises ``_Problems`` when there is one (user errors as ValueError/...)."""
    if images and not os.path.isdir(images):
        raise FileNotFoundError(f"--images: folder not found: {images}")
    data = read_json(json_file, "--json")
    problems = check_coco_relations(data, images or None)
    if problems:
        for problem in problems:
            print(f"error: {json_file}: {problem.line()}", file=sys.stderr, flush=True)
        raise _Problems()
    parsed = parse_coco_relations(data, json_file)
    num_rels = np.diff(parsed.rel_offsets)
    num_boxes = np.diff(parsed.box_offsets)
    print(f"ok: {json_file}: {len(parsed.image_ids)} images, {len(parsed.labels)} boxes, {len(parsed.relations)} "
          f"relations; {len(parsed.class_names)} categories, {len(parsed.predicate_names)} predicates "
          f"(MODEL.DETR.NUM_CLASSES {len(parsed.class_names)} "
          f"MODEL.DETR.NUM_RELATION_CLASSES {len(parsed.predicate_names)})")
    notes = []
    if not images:
        notes.append("image files not checked (pass --images DIR)")
    if parsed.num_crowd_boxes:
        notes.append(f"{parsed.num_crowd_boxes} iscrowd boxes and the {parsed.num_crowd_relations} relations using "
                     "them are skipped")
    if (num_boxes == 0).any():
        notes.append(f"{int((num_boxes == 0).sum())} images without boxes are skipped")
    if ((num_rels == 0) & (num_boxes > 0)).any():
        notes.append(f"{int(((num_rels == 0) & (num_boxes > 0)).sum())} images without relations are skipped "
                     "while DATASETS.VISUAL_GENOME.FILTER_EMPTY_RELATIONS is True")
    for note in notes:
        print(f"note: {note}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="a COCO-relations file (one split)")
    parser.add_argument("--images", default="", help="the folder its file_name entries are relative to")
    args = parser.parse_args(argv)
    try:
        return run_command_line(check, args.json, args.images)
    except _Problems:
        return 2


if __name__ == "__main__":
    sys.exit(main())
