#!/usr/bin/env python
"""Write the synthetic VG-format world (data/synthetic.py) to OUTDIR and print its record.

    python tools/make_synthetic_vg.py OUTDIR --images 600 --seed 0 [--format vg|coco|both]

``--format vg`` (default) writes VG150's three files (the module docstring of data/synthetic.py lists the config
keys that point a run at OUTDIR); ``coco`` writes OUTDIR/train.json, val.json and test.json in the COCO-relations
format instead (docs/DATASETS.md; the same splits, images in OUTDIR/VG_100K); ``both`` writes both.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.defaults import get_cfg  # noqa: E402
from data.convert import vg_to_coco_relations  # noqa: E402
from data.synthetic import config_overrides, generate_synthetic_vg  # noqa: E402

VG_FILES = ("VG-SGG-with-attri.h5", "VG-SGG-dicts-with-attri.json", "image_data.json")


def write_coco_relations(out_dir: str, record: dict, keep_vg_files: bool) -> dict:
    """Convert the world just written to OUTDIR/{train,val,test}.json (and remove VG150's files unless kept)."""
    cfg = get_cfg()
    cfg.merge_from_list(config_overrides(out_dir, record))
    written = vg_to_coco_relations(cfg, out_dir)
    if not keep_vg_files:
        for name in VG_FILES:
            os.remove(os.path.join(out_dir, name))
    for name, info in written.items():
        print(f"wrote {info['path']}: {info['images']} images, {info['objects']} objects, "
              f"{info['relations']} relations")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="output folder (created)")
    parser.add_argument("--images", type=int, default=600, help="number of h5 rows / JPEGs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=None,
                        help="NUMBER_OF_VALIDATION_IMAGES the record's counts assume (default images // 10)")
    parser.add_argument("--no-images", action="store_true", help="write the annotation files only")
    parser.add_argument("--format", choices=("vg", "coco", "both"), default="vg",
                        help="VG150 files, COCO-relations JSONs, or both (default vg)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    record = generate_synthetic_vg(args.out_dir, args.images, args.seed, args.val_images,
                                   write_images=not args.no_images)
    print(json.dumps(record["splits"]))
    if args.format != "vg":
        write_coco_relations(args.out_dir, record, keep_vg_files=args.format == "both")
    sizes = (f"MODEL.DETR.NUM_CLASSES {record['num_classes']} "
             f"MODEL.DETR.NUM_RELATION_CLASSES {record['num_relation_classes']}")
    print(f"wrote {args.images} images to {args.out_dir} in {time.perf_counter() - start:.1f} s")
    if args.format != "coco":
        print(f"VG150 files: set DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES "
              f"{record['number_of_validation_images']} {sizes}")
    if args.format != "vg":
        entries = ", ".join(f"{{'NAME': 'synthetic_{k}', 'JSON': '{os.path.join(args.out_dir, k + '.json')}', "
                            f"'IMAGES': '{os.path.join(args.out_dir, 'VG_100K')}'}}" for k in ("train", "val", "test"))
        print(f'COCO-relations files: set DATASETS.COCO_RELATIONS "[{entries}]" DATASETS.TRAIN "(\'synthetic_train\',)"'
              f' DATASETS.VAL "(\'synthetic_val\',)" DATASETS.TEST "(\'synthetic_test\',)" {sizes}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
