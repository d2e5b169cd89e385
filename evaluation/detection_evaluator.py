"""``DetectionEvaluator``: detectron2's DatasetEvaluator protocol for the box AP of the pre-training detectors.

Each process keeps the detections of its own shard (boxes, labels, scores per image, validated on arrival);
:meth:`DetectionEvaluator.evaluate` gathers them on rank 0, puts them in dataset order (each image once) and
computes COCO's box AP summary against the split's ground truth with pycocotools
(:func:`evaluation.detection_ap.coco_box_metrics`): ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` as
fractions in [0, 1].  Rank 0 prints them and writes ``<output_dir>/detection_eval.json`` atomically.
"""
import json
import logging
import os
from typing import Dict, List, Optional

import numpy as np

from data.catalog import get_split
from utils.file_io import atomic_write_text

from .detection_ap import coco_box_metrics
from .sgg_evaluator import _gather_on_main_process, _to_numpy

logger = logging.getLogger(__name__)

RESULTS_FILE = "detection_eval.json"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class DetectionEvaluator:
    """Box AP of a detector's outputs over one split (``reset`` / ``process`` / ``evaluate``).

    Args:
        split: the evaluated split (``image_ids``, ``idx_to_label``, ``get_record``: every box of val/test).
        output_dir: where rank 0 writes ``detection_eval.json``; ``None`` writes nothing.
        dataset_name: only for messages.
        inference_amp: whether :func:`evaluation.inference_on_dataset` runs the model under bf16 autocast on CUDA.
    """

    def __init__(self, split, output_dir: Optional[str] = None, dataset_name: str = "", inference_amp: bool = False):
        self.split = split
        self.output_dir = output_dir
        self.dataset_name = dataset_name
        self.inference_amp = inference_amp
        self.num_classes = len(split.idx_to_label)
        self._position = {int(image_id): i for i, image_id in enumerate(split.image_ids)}
        self._detections: List[Dict] = []

    def reset(self) -> None:
        self._detections = []

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        """Keep each image's ``boxes`` (N, 4) xyxy original-image pixels, ``labels`` (N,) 0-based, ``scores`` (N,)."""
        for item, output in zip(inputs, outputs):
            image_id = int(output.get("image_id", item["image_id"]))
            if image_id not in self._position:
                raise KeyError(f"image_id {image_id} is not in the evaluated split {self.dataset_name!r}")
            missing = [name for name in ("boxes", "labels", "scores") if name not in output]
            if missing:
                raise KeyError(f"detector output for image_id {image_id} lacks {missing} (it has {sorted(output)})")
            boxes = _to_numpy(output["boxes"], np.float32).reshape(-1, 4)
            labels = _to_numpy(output["labels"], np.int64).reshape(-1)
            scores = _to_numpy(output["scores"], np.float32).reshape(-1)
            if not len(boxes) == len(labels) == len(scores):
                raise ValueError(f"detector output for image_id {image_id}: {len(boxes)} boxes, {len(labels)} labels "
                                 f"and {len(scores)} scores")
            if len(labels) and not (0 <= labels.min() and labels.max() < self.num_classes):
                raise ValueError(f"detector output for image_id {image_id}: label outside [0, {self.num_classes})")
            if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
                raise ValueError(f"detector output for image_id {image_id}: non-finite boxes or scores")
            self._detections.append({"index": self._position[image_id], "image_id": image_id, "boxes": boxes,
                                     "labels": labels, "scores": scores})

    def _unique_in_dataset_order(self, detections: List[Dict]) -> List[Dict]:
        detections = sorted(detections, key=lambda entry: entry["index"])
        unique = [entry for i, entry in enumerate(detections)
                  if i == 0 or entry["index"] != detections[i - 1]["index"]]
        if len(unique) != len(detections):
            logger.warning("%d images of %s were evaluated more than once; each counts once",
                           len(detections) - len(unique), self.dataset_name)
        return unique

    def summarize(self, detections: List[Dict]) -> Dict[str, float]:
        """COCO box metrics of per-image detections in dataset order, plus image/box counts."""
        if not detections:
            logger.warning("DetectionEvaluator on %s received no images", self.dataset_name)
        ground_truth = []
        for entry in detections:
            record = self.split.get_record(entry["index"])
            ground_truth.append({"image_id": entry["image_id"],
                                 "boxes": np.asarray(record["boxes"], dtype=np.float32).reshape(-1, 4),
                                 "labels": np.asarray(record["labels"], dtype=np.int64)})
        metrics = coco_box_metrics(ground_truth, detections, self.num_classes)
        metrics["num_images"] = len(detections)
        metrics["num_gt_boxes"] = int(sum(len(entry["labels"]) for entry in ground_truth))
        metrics["num_detections"] = int(sum(len(entry["labels"]) for entry in detections))
        return metrics

    def evaluate(self) -> Dict[str, float]:
        """On rank 0: the metrics, printed and written to ``output_dir/detection_eval.json``; ``{}`` elsewhere."""
        detections = _gather_on_main_process(self._detections)
        if detections is None:
            return {}
        metrics = self.summarize(self._unique_in_dataset_order(detections))
        print(format_detection_results(metrics, self.dataset_name), flush=True)
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            atomic_write_text(os.path.join(self.output_dir, RESULTS_FILE), json.dumps(metrics, indent=2))
        return metrics


def format_detection_results(metrics: Dict[str, float], dataset_name: str = "") -> str:
    """Two lines: the counts, then COCO's six box APs in percent."""
    header = (f"Detection evaluation{' on ' + dataset_name if dataset_name else ''}: {metrics['num_images']} images, "
              f"{metrics['num_gt_boxes']} ground-truth boxes, {metrics['num_detections']} detections")
    return header + "\n" + "  ".join(f"{name} {100 * metrics[name]:.2f}" for name in METRICS)


def build_detection_evaluator(cfg, dataset_name: str, output_dir: Optional[str]) -> DetectionEvaluator:
    """The box-AP evaluator of split ``dataset_name`` (any registered name) writing to ``output_dir``."""
    return DetectionEvaluator(get_split(cfg, dataset_name), output_dir=output_dir, dataset_name=dataset_name,
                              inference_amp=bool(cfg.SOLVER.AMP.ENABLED))
