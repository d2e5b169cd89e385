"""Box-AP evaluation of the pre-training detectors: COCO's six numbers as pycocotools' full summary gives them,
the DatasetEvaluator protocol (dataset order, duplicates, bad outputs) and the atomically written
detection_eval.json, with the records of several processes."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from evaluation import detection_evaluator
from evaluation.detection_ap import _annotations, _coco_dataset, coco_box_metrics
from evaluation.detection_evaluator import RESULTS_FILE, DetectionEvaluator
from evaluation.synthetic import random_prediction, random_split

NUM_CLASSES = 5


def full_coco_stats(ground_truth, predictions, num_classes):
    """pycocotools' own evaluate / accumulate / summarize: stats[0:6] = AP, AP50, AP75, APs, APm, APl."""
    images = [{"id": int(entry["image_id"])} for entry in ground_truth]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(_coco_dataset(images, _annotations(ground_truth, False), num_classes),
                             _coco_dataset(images, _annotations(predictions, True), num_classes), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), evaluator.stats[:6]))


def scaled_world(seed: int = 0, num_images: int = 12):
    """Random images whose boxes are shrunk per image so that small, medium and large boxes all occur."""
    rng = np.random.default_rng(seed)
    split = random_split(rng, num_images, num_classes=NUM_CLASSES, num_predicates=3, boxes_per_image=6)
    predictions = []
    for index, record in enumerate(split.records):
        prediction = random_prediction(rng, record, NUM_CLASSES, 3, num_boxes=20, num_rows=0)
        factor = (0.04, 0.15, 1.0)[index % 3]
        record["boxes"] = record["boxes"] * factor
        predictions.append({"image_id": record["image_id"], "boxes": prediction["boxes"] * factor,
                            "labels": prediction["labels"], "scores": prediction["scores"]})
    return split, predictions


def test_coco_box_metrics_match_the_full_pycocotools_summary():
    split, predictions = scaled_world()
    expected = full_coco_stats(split.records, predictions, NUM_CLASSES)
    assert all(0 < expected[name] < 1 for name in ("APs", "APm", "APl"))  # every area range is exercised
    for chunk_size in (1000, 5):
        metrics = coco_box_metrics(split.records, predictions, NUM_CLASSES, chunk_size=chunk_size)
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, abs=1e-12), name


def test_coco_box_metrics_rejects_unknown_area_ranges():
    split, predictions = scaled_world(num_images=3)
    with pytest.raises(ValueError, match="areas must include 'all'"):
        coco_box_metrics(split.records, predictions, NUM_CLASSES, areas=("small",))
    with pytest.raises(ValueError, match="tiny"):
        coco_box_metrics(split.records, predictions, NUM_CLASSES, areas=("all", "tiny"))


def as_outputs(predictions):
    """Model-style outputs: torch tensors, as a detector returns them."""
    return [{"image_id": p["image_id"], "boxes": torch.from_numpy(p["boxes"]), "labels": torch.from_numpy(p["labels"]),
             "scores": torch.from_numpy(p["scores"])} for p in predictions]


def test_evaluator_gives_the_metrics_in_dataset_order_once_per_image_and_writes_them(tmp_path, capsys):
    split, predictions = scaled_world()
    expected = coco_box_metrics(split.records, predictions, NUM_CLASSES)
    evaluator = DetectionEvaluator(split, output_dir=str(tmp_path), dataset_name="VG_test")
    evaluator.reset()
    outputs = as_outputs(predictions)
    order = np.random.default_rng(3).permutation(len(outputs))
    for i in list(order) + [int(order[0])]:  # shuffled, and one image processed twice
        evaluator.process([{"image_id": outputs[i]["image_id"]}], [outputs[i]])
    metrics = evaluator.evaluate()
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-12), name
    assert metrics["num_images"] == 12 and metrics["num_gt_boxes"] == 72 and metrics["num_detections"] == 240
    printed = capsys.readouterr().out
    assert "Detection evaluation on VG_test: 12 images" in printed and f"AP {100 * expected['AP']:.2f}" in printed
    with open(tmp_path / RESULTS_FILE) as f:
        assert json.load(f) == pytest.approx(metrics)
    assert [name for name in os.listdir(tmp_path) if name != RESULTS_FILE] == []  # no temporary file left


def test_perfect_detections_score_one_and_reset_forgets():
    split, _ = scaled_world(num_images=6)
    perfect = [{"image_id": r["image_id"], "boxes": r["boxes"], "labels": r["labels"],
                "scores": np.linspace(1, 0.5, len(r["labels"])).astype(np.float32)} for r in split.records]
    evaluator = DetectionEvaluator(split)
    evaluator.process([{"image_id": 0}] * 6, as_outputs(perfect))
    metrics = evaluator.evaluate()
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    evaluator.reset()
    assert evaluator.evaluate()["num_images"] == 0


@pytest.mark.parametrize("change,error,message", [
    ({"image_id": 999}, KeyError, "image_id 999 is not in the evaluated split"),
    ({"labels": torch.tensor([0, NUM_CLASSES])}, ValueError, r"label outside \[0, 5\)"),
    ({"scores": torch.tensor([0.5])}, ValueError, "2 boxes, 2 labels and 1 scores"),
    ({"boxes": torch.tensor([[0.0, 0, 1, 1], [0, 0, float("nan"), 1]])}, ValueError, "non-finite"),
])
def test_bad_detector_outputs_are_named(change, error, message):
    split, _ = scaled_world(num_images=2)
    output = {"image_id": split.records[0]["image_id"], "boxes": torch.tensor([[0.0, 0, 5, 5], [1, 1, 9, 9]]),
              "labels": torch.tensor([0, 1]), "scores": torch.tensor([0.9, 0.1])}
    output.update(change)
    with pytest.raises(error, match=message):
        DetectionEvaluator(split, dataset_name="VG_val").process([{"image_id": output["image_id"]}], [output])


def test_output_without_scores_is_named():
    split, _ = scaled_world(num_images=1)
    output = {"image_id": split.records[0]["image_id"], "boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}
    with pytest.raises(KeyError, match=r"lacks \['scores'\]"):
        DetectionEvaluator(split).process([{"image_id": output["image_id"]}], [output])



def test_rank_zero_evaluates_every_shard_and_other_ranks_return_nothing(tmp_path, monkeypatch):
    """The gather itself is the SGG evaluator's (tested with two gloo processes there); here rank 0 receives both
    shards' records and rank 1 nothing, as ``_gather_on_main_process`` hands them over."""
    split, predictions = scaled_world(seed=5, num_images=9)
    outputs = as_outputs(predictions)
    single = DetectionEvaluator(split)
    single.process([{"image_id": o["image_id"]} for o in outputs], outputs)
    expected = single.evaluate()

    shards = []
    for rank in (0, 1):
        evaluator = DetectionEvaluator(split, output_dir=str(tmp_path / f"rank{rank}"))
        for i in list(range(rank, 9, 2))[::-1]:  # arrival order must not matter
            evaluator.process([{"image_id": outputs[i]["image_id"]}], [outputs[i]])
        shards.append(evaluator)
    monkeypatch.setattr(detection_evaluator, "_gather_on_main_process", lambda items: None)
    assert shards[1].evaluate() == {} and not (tmp_path / "rank1").exists()
    gathered = shards[1]._detections + shards[0]._detections
    monkeypatch.setattr(detection_evaluator, "_gather_on_main_process", lambda items: gathered)
    assert shards[0].evaluate() == expected and expected["num_images"] == 9 and 0 < expected["AP"] < 1
    assert (tmp_path / "rank0" / RESULTS_FILE).is_file()
