"""COCO box AP of the predicted entity boxes with pycocotools (the lab's "Detection evaluation mAp").

Ground truth and detections both become COCO datasets in memory with the +1 pixel width convention
(``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``), as the published scene-graph evaluators build them; pycocotools' own
progress prints are silenced.
"""
import contextlib
import io
from typing import Dict, Sequence, Tuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _xywh_plus1(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], axis=1)


def _coco_dataset(images, annotations, num_classes: int) -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
    }
    coco.createIndex()
    return coco


def _annotations(entries, with_scores: bool):
    """COCO annotation dicts; ids start at 1 because pycocotools reads id 0 as "unmatched"."""
    annotations = []
    for entry in entries:
        boxes = _xywh_plus1(entry["boxes"])
        labels = np.asarray(entry["labels"]).tolist()
        scores = np.asarray(entry["scores"], dtype=np.float64).tolist() if with_scores else None
        for j, box in enumerate(boxes.tolist()):
            annotation = {
                "id": len(annotations) + 1,
                "image_id": int(entry["image_id"]),
                "category_id": int(labels[j]) + 1,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
            if with_scores:
                annotation["score"] = scores[j]
            annotations.append(annotation)
    return annotations


def detection_ap(
    ground_truth: Sequence[Dict], predictions: Sequence[Dict], num_classes: int
) -> Tuple[float, float]:
    """``(AP50, AP[.5:.95])`` of the predicted boxes; 0.0 where pycocotools has nothing to average.

    Args:
        ground_truth: per image ``image_id``, ``boxes`` (xyxy), ``labels`` (0-based).
        predictions: per image ``image_id``, ``boxes`` (xyxy), ``labels`` (0-based), ``scores``.
        num_classes: number of object classes.
    """
    images = [{"id": int(entry["image_id"])} for entry in ground_truth]
    detections = _annotations(predictions, with_scores=True)
    if not detections:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_dataset(images, _annotations(ground_truth, with_scores=False), num_classes)
        coco_dt = _coco_dataset(images, detections, num_classes)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap, ap50 = evaluator.stats[0], evaluator.stats[1]
    return max(float(ap50), 0.0), max(float(ap), 0.0)
