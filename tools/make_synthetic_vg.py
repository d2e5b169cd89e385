#!/usr/bin/env python
"""Write the synthetic VG-format world (data/synthetic.py) to OUTDIR and print its record.

    python tools/make_synthetic_vg.py OUTDIR --images 600 --seed 0

The module docstring of data/synthetic.py lists the config keys that point a run at OUTDIR.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.synthetic import generate_synthetic_vg  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="output folder (created)")
    parser.add_argument("--images", type=int, default=600, help="number of h5 rows / JPEGs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=None,
                        help="NUMBER_OF_VALIDATION_IMAGES the record's counts assume (default images // 10)")
    parser.add_argument("--no-images", action="store_true", help="write the annotation files only")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    record = generate_synthetic_vg(args.out_dir, args.images, args.seed, args.val_images,
                                   write_images=not args.no_images)
    print(json.dumps(record["splits"]))
    print(f"wrote {args.images} images to {args.out_dir} in {time.perf_counter() - start:.1f} s; "
          f"set DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES {record['number_of_validation_images']} "
          f"MODEL.DETR.NUM_CLASSES {record['num_classes']} "
          f"MODEL.DETR.NUM_RELATION_CLASSES {record['num_relation_classes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
