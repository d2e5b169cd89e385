"""Detection AP: the reduced COCO evaluation gives pycocotools' full-summary AP and AP50, +1 pixel widths."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from evaluation.detection_ap import _annotations, _coco_dataset, detection_ap
from evaluation.synthetic import random_prediction, random_split


def full_coco_summary(ground_truth, predictions, num_classes):
    images = [{"id": int(entry["image_id"])} for entry in ground_truth]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(_coco_dataset(images, _annotations(ground_truth, False), num_classes),
                             _coco_dataset(images, _annotations(predictions, True), num_classes), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[1], evaluator.stats[0]


def test_matches_the_full_pycocotools_summary():
    rng = np.random.default_rng(0)
    split = random_split(rng, 12, num_classes=5, num_predicates=3, boxes_per_image=6)
    predictions = [dict(random_prediction(rng, r, 5, 3, num_boxes=25, num_rows=0), image_id=r["image_id"])
                   for r in split.records]
    predictions[4]["boxes"], predictions[4]["labels"] = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    predictions[4]["scores"] = np.zeros(0, np.float32)
    expected_ap50, expected_ap = full_coco_summary(split.records, predictions, 5)
    shuffled = np.random.default_rng(1).permutation(12)
    for chunk_size in (1000, 5):  # one chunk; chunks of 5 images, given out of id order
        ap50, ap = detection_ap([split.records[i] for i in shuffled], [predictions[i] for i in shuffled], 5,
                                chunk_size=chunk_size)
        assert 0 < ap < ap50 < 1
        assert ap50 == pytest.approx(expected_ap50, abs=1e-12) and ap == pytest.approx(expected_ap, abs=1e-12)


def test_plus_one_pixel_widths_and_no_detections():
    gt = [{"image_id": 1, "boxes": np.array([[0, 0, 9, 9]], np.float32), "labels": np.array([0])}]
    # [0,0,9,4] covers half of the 10x10 GT box with +1 widths: a hit at IoU 0.5, missed above it
    half = [{"image_id": 1, "boxes": np.array([[0, 0, 9, 4]], np.float32), "labels": np.array([0]),
             "scores": np.array([0.9], np.float32)}]
    ap50, ap = detection_ap(gt, half, num_classes=2)
    assert ap50 == pytest.approx(1.0) and ap == pytest.approx(0.1)
    empty = [{"image_id": 1, "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
              "scores": np.zeros(0, np.float32)}]
    assert detection_ap(gt, empty, num_classes=2) == (0.0, 0.0)
