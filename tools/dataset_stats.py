#!/usr/bin/env python
"""Print the size of every split of a config (``DATASETS.TRAIN``, ``VAL``, ``TEST``) as the loader sees it.

    python tools/dataset_stats.py --config-file CFG [--predicates] [--datasets A B ...] [KEY VALUE ...]

One line per split, ``VG_train: images=<int> objects=<int> relations=<int>``: stored rows after the image filters
and the non-overlap filter (train), before the per-load duplicate-relation sampling.  ``--predicates`` adds a
histogram of each split's predicates; ``--datasets`` names other registered splits (docs/DATASETS.md).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs.defaults import get_cfg  # noqa: E402
from data.catalog import DatasetCatalog  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help="YAML config (optional)")
    parser.add_argument("--predicates", action="store_true", help="print a predicate histogram per split")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="registered split names (default: DATASETS.TRAIN, VAL and TEST of the config)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    args = parser.parse_args(argv)
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    names = args.datasets or list(dict.fromkeys(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.VAL)
                                                + list(cfg.DATASETS.TEST)))
    for name in names:
        split = DatasetCatalog.get(name, cfg)
        print(f"{name}: images={len(split)} objects={split.num_objects} relations={split.num_relations}")
        if args.predicates:
            counts = np.bincount(split.relations[:, 2], minlength=len(split.idx_to_predicate))
            width = max(len(p) for p in split.idx_to_predicate)
            for predicate, count in sorted(zip(split.idx_to_predicate, counts.tolist()), key=lambda x: -x[1]):
                share = count / max(1, split.num_relations)
                print(f"  {predicate:<{width}} {count:>8d} {share:7.2%} {'#' * int(round(40 * share))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
