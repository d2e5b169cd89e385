"""How much each convention separating the ``standard`` and ``iterativesg`` protocols moves the numbers.

:func:`evaluate_conventions` scores one predictions file under the standard protocol, under the standard protocol
with one convention of :mod:`evaluation.protocols` switched to the released evaluator's (each alone), and under
``iterativesg`` (all four); :func:`convention_table` prints the result as Markdown (``tools/evaluate_predictions.py
--conventions``). One zero-shot set serves every row.

``python -m evaluation.protocol_study OUT_DIR`` reproduces the table of docs/PROTOCOL.md: it writes the synthetic
demo world (``data.synthetic``, 2,000 images, seed 0, no JPEGs), a copy of it whose test boxes near the right or
bottom border run 0-3 px past it (as Visual Genome's annotations often do; the synthetic world keeps its objects
4 px inside the image, so the ground-truth box convention cannot act there), model-like predictions for each test
split (:func:`model_like_predictions`), and prints both tables.
"""
import argparse
import os
import shutil
import sys
from dataclasses import replace
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from data.visual_genome import load_vg_split

from .predictions_file import load_predictions, order_by_split, save_predictions
from .protocols import ITERATIVESG, STANDARD
from .sgg_evaluator import SGGEvaluator, build_zero_shot_source

VARIANTS = (
    ("standard", STANDARD),
    ("1. images without rows skipped", replace(STANDARD, name="standard+1", skip_images_without_rows=True)),
    ("2. IoU without +1 px", replace(STANDARD, name="standard+2", iou_plus_one=False)),
    ("3. GT clipped at W/H, empty boxes dropped", replace(STANDARD, name="standard+3", gt_clip_margin=0)),
    ("4. mR slot-0 accumulation", replace(STANDARD, name="standard+4", mean_recall_slot0=True)),
    ("iterativesg (1-4)", ITERATIVESG),
)
TABLE_METRICS = ("R@20", "R@100", "ng-R@100", "zR@100", "mR@100", "ng-mR@100")


def _with_protocol(cfg, name: str):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.SGG_PROTOCOL = name
    cfg.freeze()
    return cfg


def evaluate_conventions(cfg, path: str, load_split: Callable = load_vg_split) -> List[Tuple[str, Dict]]:
    """``(label, recall metrics)`` of the predictions file ``path`` on ``DATASETS.TEST[0]`` for each of
    :data:`VARIANTS` (detection AP is the same under every variant and is not computed)."""
    dataset_name = cfg.DATASETS.TEST[0]
    splits = {margin: load_split(_with_protocol(cfg, name), dataset_name)
              for name, margin in (("standard", STANDARD.gt_clip_margin), ("iterativesg", ITERATIVESG.gt_clip_margin))}
    split = splits[STANDARD.gt_clip_margin]
    num_classes, num_predicates = len(split.idx_to_label), len(split.idx_to_predicate)
    images = order_by_split(load_predictions(path, num_predicates, num_classes), split.image_ids, path)
    source = build_zero_shot_source(cfg, dataset_name, num_classes, num_predicates)
    zero_shot = source() if callable(source) else source
    results = []
    for label, protocol in VARIANTS:
        evaluator = SGGEvaluator(splits[protocol.gt_clip_margin], zero_shot, dataset_name=dataset_name,
                                 protocol=protocol)
        for image in images:
            evaluator.process([{"image_id": image["image_id"]}], [image])
        results.append((label, evaluator.recall_metrics(evaluator.results)))
    return results


def convention_table(results: Sequence[Tuple[str, Dict]], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Markdown: the standard row's values, each single convention's change from it, the iterativesg values (and
    their change); the counts of scored images and ground-truth rows in the last columns."""
    base = dict(results)["standard"]
    lines = ["| Evaluated with | " + " | ".join(metrics) + " | images scored | GT rows |",
             "|:--|" + "--:|" * (len(metrics) + 2)]
    for label, values in results:
        if label == "standard":
            cells = [f"{values[m]:.4f}" for m in metrics]
        elif label.startswith("iterativesg"):
            cells = [f"{values[m]:.4f} ({values[m] - base[m]:+.4f})" for m in metrics]
        else:
            cells = [f"{values[m] - base[m]:+.4f}" for m in metrics]
        counts = f"{values['num_images_scored']} | {values['num_gt_relations']}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {counts} |")
    return "\n".join(lines)


def model_like_predictions(split, rng: np.random.Generator, empty_fraction: float = 0.03, num_rows: int = 100,
                           true_boxes: Callable = None) -> List[Dict]:
    """Predictions resembling a trained model's on every image of ``split``: each ground-truth box jittered (sd 15 %
    of its side, kept inside the image), its label right 85 % of the time, plus four low-scoring distractors;
    ``num_rows`` relation rows, the ground-truth pairs among them with the true predicate boosted by U(0, 0.8) over
    Dirichlet noise. ``empty_fraction`` of the images get boxes but no relation row. ``true_boxes(i)`` may supply
    the boxes to jitter (default: the record's)."""
    num_classes, num_predicates = len(split.idx_to_label), len(split.idx_to_predicate)
    outputs = []
    for i in range(len(split)):
        record = split.get_record(i)
        width, height = record["width"], record["height"]
        gt = np.asarray(record["boxes"], np.float64).reshape(-1, 4)
        if true_boxes is not None and len(true_boxes(i)) == len(gt):
            gt = np.asarray(true_boxes(i), np.float64).reshape(-1, 4)
        side = np.repeat(np.maximum(gt[:, 2:] - gt[:, :2], 1.0), 2, axis=1)[:, [0, 2, 1, 3]]
        boxes = gt + rng.normal(0, 0.15, gt.shape) * side
        distractors = np.sort(rng.uniform(0, 1, (4, 2, 2)), axis=1).transpose(0, 2, 1).reshape(4, 4)
        boxes = np.concatenate([boxes, distractors * [width, height, width, height]])
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        labels = np.concatenate([record["labels"], rng.integers(0, num_classes, 4)])
        wrong = rng.random(len(gt)) > 0.85
        labels[:len(gt)][wrong] = rng.integers(0, num_classes, int(wrong.sum()))
        scores = np.concatenate([rng.uniform(0.4, 1.0, len(gt)), rng.uniform(0.05, 0.5, 4)])
        relations = record["relations"]
        if rng.random() < empty_fraction:
            pairs = np.zeros((0, 2), np.int64)
        else:
            random_pairs = rng.integers(0, len(boxes), (max(num_rows - len(relations), 0), 2))
            pairs = np.concatenate([relations[:, :2], random_pairs])[:num_rows]
        rel_scores = rng.dirichlet(np.full(num_predicates, 0.3), len(pairs))
        true_rows = min(len(relations), len(pairs))
        rel_scores[np.arange(true_rows), relations[:true_rows, 2]] += rng.uniform(0, 0.8, true_rows)
        rel_scores /= rel_scores.sum(axis=1, keepdims=True)
        order = rng.permutation(len(pairs))
        outputs.append({"image_id": record["image_id"], "boxes": boxes.astype(np.float32),
                        "labels": labels.astype(np.int64), "scores": scores.astype(np.float32),
                        "rel_pairs": pairs[order].astype(np.int64), "rel_scores": rel_scores[order].astype(np.float32)})
    return outputs


def extend_test_boxes_to_border(world_dir: str, out_dir: str, reach: float = 12.0, seed: int = 0) -> None:
    """Copy the VG-format world of ``world_dir`` to ``out_dir``, moving the right (bottom) edge of every split-2
    box that ends within ``reach`` px of the image's right (bottom) border to 0-3 px past it."""
    import h5py

    from data.vg_writer import H5_DTYPES, encode_boxes, write_vg_h5

    os.makedirs(os.path.join(out_dir, "VG_100K"), exist_ok=True)
    for name in ("VG-SGG-dicts-with-attri.json", "image_data.json"):
        shutil.copyfile(os.path.join(world_dir, name), os.path.join(out_dir, name))
    with h5py.File(os.path.join(world_dir, "VG-SGG-with-attri.h5"), "r") as f:
        fields = {name: f[name][()] for name in H5_DTYPES}
    import json

    from data.visual_genome import CORRUPTED_IMAGE_IDS, decode_boxes

    with open(os.path.join(world_dir, "image_data.json")) as f:
        sizes = [(d["width"], d["height"]) for d in json.load(f) if d["image_id"] not in CORRUPTED_IMAGE_IDS]
    rng = np.random.default_rng(seed)
    num_boxes = np.where(fields["img_to_first_box"] >= 0, fields["img_to_last_box"] - fields["img_to_first_box"] + 1,
                         0)
    box_row = np.repeat(np.arange(len(num_boxes)), num_boxes)
    widths = np.array([sizes[r][0] for r in box_row], np.float64)
    heights = np.array([sizes[r][1] for r in box_row], np.float64)
    scale = np.maximum(widths, heights) / 1024.0
    boxes = decode_boxes(fields["boxes_1024"]).astype(np.float64) * scale[:, None]
    test = fields["split"][box_row] == 2
    moved = np.zeros(len(boxes), dtype=bool)
    for axis, size in ((2, widths), (3, heights)):
        near = test & (size - boxes[:, axis] < reach)
        boxes[near, axis] = size[near] + rng.uniform(0, 3, int(near.sum()))
        moved |= near
    for scale_name, box_scale in (("boxes_1024", 1024), ("boxes_512", 512)):
        fields[scale_name][moved] = encode_boxes(boxes[moved], widths[moved], heights[moved], box_scale)
    write_vg_h5(os.path.join(out_dir, "VG-SGG-with-attri.h5"), fields)


def main(argv=None) -> int:
    from configs.defaults import get_cfg
    from data.synthetic import config_overrides, generate_synthetic_vg

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="folder for the worlds and the predictions files")
    parser.add_argument("--images", type=int, default=2000, help="images of the synthetic world (the demo's 2,000)")
    args = parser.parse_args(argv)
    world = os.path.join(args.out_dir, "synthetic")
    record = generate_synthetic_vg(world, args.images, seed=0, write_images=False)
    border = os.path.join(args.out_dir, "synthetic_border")
    extend_test_boxes_to_border(world, border)
    for title, folder in (("synthetic demo world", world), ("synthetic world, test boxes reaching the border", border)):
        cfg = get_cfg()
        cfg.merge_from_list([str(v) for v in config_overrides(folder, record)])
        cfg.freeze()
        split = load_vg_split(cfg, "VG_test")
        clipped = load_vg_split(_with_protocol(cfg, "iterativesg"), "VG_test")
        path = os.path.join(args.out_dir, f"{os.path.basename(folder)}_predictions.pt")
        save_predictions(path, model_like_predictions(split, np.random.default_rng(1),
                                                      true_boxes=lambda i: clipped.get_record(i)["boxes"]))
        print(f"\n{title}: VG_test, {len(split)} images, model-like predictions ({path})\n")
        print(convention_table(evaluate_conventions(cfg, path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
