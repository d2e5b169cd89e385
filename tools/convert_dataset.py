#!/usr/bin/env python
"""Convert scene-graph datasets between VG150's files and COCO-relations JSONs (data/convert.py).

    # VG150 (h5 + dicts json + image_data.json + VG_100K) -> OUT/train.json, OUT/val.json, OUT/test.json
    python tools/convert_dataset.py vg-to-coco --vg-dir /data/vg --output OUT [--config-file CFG] [KEY VALUE ...]

    # COCO-relations splits -> OUT/VG-SGG-with-attri.h5, VG-SGG-dicts-with-attri.json, image_data.json, VG_100K/
    python tools/convert_dataset.py coco-to-vg --train train.json [--val val.json] --test test.json \\
        --images IMAGES --output OUT

``--vg-dir`` names the folder of VG150's standard file names (``DATASETS.VISUAL_GENOME.*`` overrides or a config
file can name them one by one instead).  vg-to-coco writes each split as the VG loader yields it (train before its
train-only filters, which the COCO-relations loader applies again), so loading the JSONs gives back the same
records; coco-to-vg rounds boxes to VG150's integer storage.  Both print the config lines to use the result.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.defaults import run_command_line  # noqa: E402

VG_FILES = {"VG_ATTRIBUTE_H5": "VG-SGG-with-attri.h5", "MAPPING_DICTIONARY": "VG-SGG-dicts-with-attri.json",
            "IMAGE_DATA": "image_data.json", "IMAGES": "VG_100K"}


def vg_to_coco(args) -> None:
    from configs.defaults import get_cfg
    from data.convert import vg_to_coco_relations

    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    if args.vg_dir:
        if not os.path.isdir(args.vg_dir):
            raise FileNotFoundError(f"--vg-dir: folder not found: {args.vg_dir}")
        for key, name in VG_FILES.items():
            cfg.DATASETS.VISUAL_GENOME[key] = os.path.join(args.vg_dir, name)
    cfg.merge_from_list(args.opts)
    written = vg_to_coco_relations(cfg, args.output)
    for name, info in written.items():
        dropped = (f" (left out {info['dropped_empty_boxes']} boxes without area and their "
                   f"{info['dropped_relations_of_empty_boxes']} relations)" if info["dropped_empty_boxes"] else "")
        print(f"wrote {info['path']}: {info['images']} images, {info['objects']} objects, "
              f"{info['relations']} relations{dropped}")
    images = cfg.DATASETS.VISUAL_GENOME.IMAGES
    print("use them with:\nDATASETS:\n  COCO_RELATIONS:\n" + "".join(
        f"    - {{NAME: vg150_{name[3:]}, JSON: {info['path']}, IMAGES: {images}}}\n"
        for name, info in written.items()) + '  TRAIN: ("vg150_train",)\n  VAL: ("vg150_val",)\n'
        '  TEST: ("vg150_test",)')


def coco_to_vg(args) -> None:
    from data.convert import coco_relations_to_vg

    if args.images and not os.path.isdir(args.images):
        raise FileNotFoundError(f"--images: folder not found: {args.images}")
    info = coco_relations_to_vg(args.output, args.train, args.test, args.val or None, args.images or None)
    print(f"wrote {args.output}: {info['images']} images, {info['objects']} objects, {info['relations']} relations"
          + (f" ({info['skipped_val_images']} --val images without boxes or relations left out)"
             if info["skipped_val_images"] else ""))
    print(" ".join(f"DATASETS.VISUAL_GENOME.{key} {os.path.join(args.output, name)}" for key, name in VG_FILES.items())
          + f" DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES {info['number_of_validation_images']}"
          + f" MODEL.DETR.NUM_CLASSES {info['num_classes']}"
          + f" MODEL.DETR.NUM_RELATION_CLASSES {info['num_relation_classes']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    to_coco = commands.add_parser("vg-to-coco", help="VG150 files -> train/val/test COCO-relations JSONs")
    to_coco.add_argument("--vg-dir", default="", help="folder with VG150's files under their standard names")
    to_coco.add_argument("--config-file", default="", help="a config naming the VG150 files instead")
    to_coco.add_argument("--output", required=True, help="folder for train.json, val.json, test.json")
    to_coco.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    to_vg = commands.add_parser("coco-to-vg", help="COCO-relations splits -> VG150 files")
    to_vg.add_argument("--train", required=True, help="COCO-relations JSON of the training split")
    to_vg.add_argument("--val", default="", help="COCO-relations JSON of the validation split (optional)")
    to_vg.add_argument("--test", required=True, help="COCO-relations JSON of the test split")
    to_vg.add_argument("--images", default="", help="folder the file_name entries are relative to (linked into "
                       "OUTPUT/VG_100K as <image_id>.jpg)")
    to_vg.add_argument("--output", required=True, help="folder for the VG150 files")
    args = parser.parse_args(argv)
    return run_command_line(vg_to_coco if args.command == "vg-to-coco" else coco_to_vg, args)


if __name__ == "__main__":
    sys.exit(main())
