"""Speed of the sgdet evaluator against the plain-loop reference on synthetic VG-sized predictions.

Every image has about 12 ground-truth boxes and 7 relations; its predictions have 80 entity boxes and 300 relation
rows over 50 predicates (what the IterativeSG post-processing emits). Predictions are drawn from a pool of
``--pool`` distinct images and cycled, so memory stays small for any ``--images``; generation is not timed.

    python benchmarks/bench_evaluator.py --images 26446

Ends with ``evaluator: <x> ms/image, loop reference: <y> ms/image, speedup <z>x``. The evaluator's time covers
``process`` (ranking, matching, compaction) and the recall aggregation, measured as CPU time of this process
(the machine may be shared); detection AP (pycocotools) is timed
separately with ``--with-ap`` because the loop reference has no counterpart.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.reference_loop import evaluate_reference  # noqa: E402
from evaluation.sgg_evaluator import SGGEvaluator  # noqa: E402
from evaluation.synthetic import InMemorySplit, random_prediction, random_record  # noqa: E402

NUM_CLASSES, NUM_PREDICATES = 150, 50


def make_split_and_pool(num_images: int, pool_size: int, seed: int):
    """A split of ``num_images`` images whose image i repeats ground truth and predictions of pool entry i % pool."""
    rng = np.random.default_rng(seed)
    pool_records = [
        random_record(rng, 0, NUM_CLASSES, NUM_PREDICATES, num_boxes=12, num_relations=int(rng.integers(3, 12)))
        for _ in range(pool_size)
    ]
    pool_predictions = [random_prediction(rng, record, NUM_CLASSES, NUM_PREDICATES) for record in pool_records]
    records = [dict(pool_records[i % pool_size], image_id=i + 1) for i in range(num_images)]
    split = InMemorySplit(
        records, [f"class{c}" for c in range(NUM_CLASSES)], [f"predicate{p}" for p in range(NUM_PREDICATES)]
    )
    zero_shot = np.stack([rng.integers(0, NUM_CLASSES, 500), rng.integers(0, NUM_CLASSES, 500),
                          rng.integers(0, NUM_PREDICATES, 500)], axis=1)
    return split, pool_predictions, zero_shot


def time_evaluator(split, pool_predictions, zero_shot, with_ap: bool):
    evaluator = SGGEvaluator(split, zero_shot_triplets=zero_shot)
    evaluator.reset()
    pool = len(pool_predictions)
    start = time.process_time()
    for i, image_id in enumerate(split.image_ids):
        output = dict(pool_predictions[i % pool], image_id=int(image_id))
        evaluator.process([{"image_id": int(image_id)}], [output])
    processed = time.process_time()
    metrics = evaluator.recall_metrics(evaluator.results)
    aggregated = time.process_time()
    print(f"evaluator: process {processed - start:.2f} s, aggregation {aggregated - processed:.3f} s "
          f"for {len(split)} images")
    if with_ap:
        metrics.update(evaluator.detection_metrics(evaluator.results))
        print(f"detection AP (pycocotools): {time.process_time() - aggregated:.2f} s "
              f"(AP50 {metrics['AP50']:.4f}, AP {metrics['AP']:.4f})")
    return metrics, aggregated - start


def time_reference(split, pool_predictions, zero_shot, num_images: int):
    pool = len(pool_predictions)
    images = [(split.get_record(i), pool_predictions[i % pool]) for i in range(num_images)]
    start = time.process_time()
    metrics = evaluate_reference(images, split.idx_to_predicate, set(map(tuple, zero_shot.tolist())))
    return metrics, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images evaluated by our evaluator")
    parser.add_argument("--reference-images", type=int, default=100, help="images evaluated by the loop reference")
    parser.add_argument("--pool", type=int, default=500, help="distinct synthetic images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-ap", action="store_true", help="also time detection AP (pycocotools)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    split, pool_predictions, zero_shot = make_split_and_pool(args.images, args.pool, args.seed)
    ours, ours_seconds = time_evaluator(split, pool_predictions, zero_shot, args.with_ap)
    reference_images = min(args.reference_images, args.images)
    reference, reference_seconds = time_reference(split, pool_predictions, zero_shot, reference_images)

    if reference_images == args.images:
        worst = max(abs(ours[key] - reference[key]) for key in reference)
        print(f"largest difference to the loop reference over all metrics: {worst:.3g}")
    ours_ms = 1000 * ours_seconds / args.images
    reference_ms = 1000 * reference_seconds / reference_images
    print(f"R@100 {ours['R@100']:.4f}, ng-R@100 {ours['ng-R@100']:.4f}, mR@100 {ours['mR@100']:.4f}; "
          f"VG test (26,446 images) would take {ours_ms * 26446 / 1000:.1f} s")
    print(f"evaluator: {ours_ms:.3f} ms/image, loop reference: {reference_ms:.2f} ms/image, "
          f"speedup {reference_ms / ours_ms:.1f}x")


if __name__ == "__main__":
    main()
