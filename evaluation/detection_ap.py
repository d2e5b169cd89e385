"""COCO box AP of the predicted entity boxes with pycocotools (the lab's "Detection evaluation mAp").

Ground truth and detections both become COCO datasets in memory with the +1 pixel width convention
(``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``), as the published scene-graph evaluators build them; pycocotools does the
matching (``evaluateImg``) and the averaging (``accumulate``), its progress prints silenced.
"""
import contextlib
import copy
import io
from typing import Dict, List, Sequence, Tuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# pycocotools' area ranges (box area in pixels²) and its largest detection budget.
ALL_AREAS = [0.0, 1e5**2]
AREA_RANGES = {"all": ALL_AREAS, "small": [0.0, 32.0**2], "medium": [32.0**2, 96.0**2], "large": [96.0**2, 1e5**2]}
MAX_DETECTIONS = 100


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


def _evaluate_chunk(ground_truth, predictions, num_classes: int, column_of: Dict[int, int], merged: np.ndarray,
                    areas: Sequence[str]):
    """pycocotools' per-(image, class, area range) evaluation of one chunk of images, written into
    ``merged[class, area, image]``.

    Only (image, class) pairs with ground truth or detections are evaluated (pycocotools' own loop visits every
    pair and finds nothing in the others), and only the fields ``accumulate`` reads are kept.
    """
    images = [{"id": int(entry["image_id"])} for entry in ground_truth]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_dataset(images, _annotations(ground_truth, with_scores=False), num_classes)
        coco_dt = _coco_dataset(images, _annotations(predictions, with_scores=True), num_classes)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    _set_params(evaluator.params, [image["id"] for image in images], num_classes, areas)
    evaluator._prepare()
    for image_id, category_id in set(evaluator._gts) | set(evaluator._dts):
        evaluator.ious[image_id, category_id] = evaluator.computeIoU(image_id, category_id)
        for area_index, area in enumerate(areas):
            result = evaluator.evaluateImg(image_id, category_id, AREA_RANGES[area], MAX_DETECTIONS)
            if result is not None:
                merged[category_id - 1, area_index, column_of[image_id]] = {
                    "dtScores": result["dtScores"],
                    "dtMatches": result["dtMatches"] > 0,
                    "dtIgnore": result["dtIgnore"],
                    "gtIgnore": result["gtIgnore"],
                }


def _set_params(params, image_ids: List[int], num_classes: int, areas: Sequence[str]) -> None:
    """The given area ranges and 100 detections only (area "all" is the one setting AP and AP50 read)."""
    params.imgIds = sorted(image_ids)
    params.catIds = list(range(1, num_classes + 1))
    params.areaRng = [AREA_RANGES[area] for area in areas]
    params.areaRngLbl = list(areas)
    params.maxDets = [MAX_DETECTIONS]


def detection_ap(
    ground_truth: Sequence[Dict], predictions: Sequence[Dict], num_classes: int, chunk_size: int = 1000
) -> Tuple[float, float]:
    """``(AP50, AP[.5:.95])`` of the predicted boxes (COCO's numbers at area "all", 100 detections per image and
    class); 0.0 where there is nothing to average.

    Images are evaluated ``chunk_size`` at a time (each (image, class) result depends on that image alone), so
    memory stays bounded on VG test's 26k images; pycocotools' ``accumulate`` then averages them all.

    Args:
        ground_truth: per image ``image_id``, ``boxes`` (xyxy), ``labels`` (0-based).
        predictions: the same images in the same order, with ``scores``.
        num_classes: number of object classes.
    """
    metrics = coco_box_metrics(ground_truth, predictions, num_classes, areas=("all",), chunk_size=chunk_size)
    return metrics["AP50"], metrics["AP"]


def coco_box_metrics(
    ground_truth: Sequence[Dict],
    predictions: Sequence[Dict],
    num_classes: int,
    areas: Sequence[str] = tuple(AREA_RANGES),
    chunk_size: int = 1000,
) -> Dict[str, float]:
    """COCO's box AP summary at 100 detections per image and class, as fractions in [0, 1]: ``AP`` (IoU
    .5:.95), ``AP50``, ``AP75`` at area "all", and ``APs``/``APm``/``APl`` for the "small"/"medium"/"large"
    ranges in ``areas``; 0.0 where there is nothing to average.  Arguments as :func:`detection_ap`, which is this
    function at area "all" only (each extra range costs one more ``evaluateImg`` per (image, class) pair).
    """
    if "all" not in areas or any(area not in AREA_RANGES for area in areas):
        raise ValueError(f"areas must include 'all' and come from {list(AREA_RANGES)}, got {list(areas)}")
    areas = ["all"] + [area for area in areas if area != "all"]
    names = {"small": "APs", "medium": "APm", "large": "APl"}
    if not any(len(entry["boxes"]) for entry in predictions):
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, **{names[area]: 0.0 for area in areas[1:]}}
    order = np.argsort([int(entry["image_id"]) for entry in ground_truth], kind="stable")
    column_of = {int(ground_truth[i]["image_id"]): column for column, i in enumerate(order)}
    merged = np.full((num_classes, len(areas), len(order)), None, dtype=object)
    for start in range(0, len(order), chunk_size):
        chunk = order[start:start + chunk_size]
        _evaluate_chunk([ground_truth[i] for i in chunk], [predictions[i] for i in chunk], num_classes,
                        column_of, merged, areas)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(iouType="bbox")
        _set_params(evaluator.params, list(column_of), num_classes, areas)
        evaluator._paramsEval = copy.deepcopy(evaluator.params)
        evaluator.evalImgs = list(merged.ravel())  # class, then area range, then image, as pycocotools lays out
        evaluator.accumulate()
    precision = evaluator.eval["precision"][..., 0]  # (IoU thresholds, recall points, classes, area ranges)

    def at_iou(threshold: float) -> np.ndarray:
        return precision[np.flatnonzero(np.isclose(evaluator.params.iouThrs, threshold))[0], :, :, 0]

    metrics = {"AP": _mean_defined(precision[..., 0]), "AP50": _mean_defined(at_iou(0.5)),
               "AP75": _mean_defined(at_iou(0.75))}
    for index, area in enumerate(areas[1:], start=1):
        metrics[names[area]] = _mean_defined(precision[..., index])
    return metrics


def _mean_defined(precision: np.ndarray) -> float:
    """COCO's average over precision entries, skipping the -1 of classes without ground truth (0 if none)."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else 0.0
