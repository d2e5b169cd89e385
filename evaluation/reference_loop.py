"""The sgdet protocol written as plain per-image Python loops: the test oracle and the benchmark baseline.

It follows docs/PROTOCOL.md section 2 literally -- sort every row, sort every (row, predicate) entry, and for every
K and every ground-truth row scan the top-K list, computing IoUs pair by pair -- and shares no code with
:mod:`evaluation.sgg_metrics`, so agreement between the two is evidence that the vectorised version is right.
Scores are float64 products in the order predicate prob x subject score x object score, as in the fast version.
Both protocols of :mod:`evaluation.protocols` are written out here too (skipped images, detectron2's IoU in float32
scalars, the slot-0 mean-recall counts in the released code's shape), and a prediction's ``rel_ranking_scores``
order its graph-constrained list.
"""
from typing import Dict, Iterable, Sequence, Set, Tuple, Union

import numpy as np

from .protocols import SGGProtocol, get_protocol

RECALL_KS = (20, 50, 100)
TOP_K = 100


def _iou_plus1(a, b) -> float:
    """IoU of two xyxy boxes with the +1 pixel convention."""
    area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0)
    area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
    inter_w = max(min(a[2], b[2]) - max(a[0], b[0]) + 1.0, 0.0)
    inter_h = max(min(a[3], b[3]) - max(a[1], b[1]) + 1.0, 0.0)
    inter = inter_w * inter_h
    return inter / (area_a + area_b - inter)


def _iou_detectron2(a, b) -> float:
    """IoU of two xyxy boxes without the +1 pixel, in float32 as detectron2's ``pairwise_iou`` computes it."""
    a = [np.float32(v) for v in a]
    b = [np.float32(v) for v in b]
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    inter_w = max(min(a[2], b[2]) - max(a[0], b[0]), np.float32(0))
    inter_h = max(min(a[3], b[3]) - max(a[1], b[1]), np.float32(0))
    inter = inter_w * inter_h
    if not inter > 0:
        return 0.0
    return float(inter / (area_a + area_b - inter))


def _ranked_lists(prediction) -> Tuple[list, list]:
    """Graph-constrained and no-graph-constraint lists of (subject index, object index, predicate), top 100.

    The graph-constrained list is sorted by ``rel_ranking_scores`` when the prediction has them."""
    scores = [float(s) for s in prediction["scores"]]
    pairs = [(int(s), int(o)) for s, o in prediction["rel_pairs"]]
    distributions = [[float(p) for p in row] for row in prediction["rel_scores"]]
    ranking = prediction.get("rel_ranking_scores")

    graph = []
    for row, ((subject, obj), probs) in enumerate(zip(pairs, distributions)):
        best = max(range(len(probs)), key=lambda p: (probs[p], -p))  # first maximum
        key = float(ranking[row]) if ranking is not None else probs[best] * scores[subject] * scores[obj]
        graph.append((key, subject, obj, best))
    graph.sort(key=lambda entry: -entry[0])  # list.sort is stable

    free = []
    for (subject, obj), probs in zip(pairs, distributions):
        for predicate, prob in enumerate(probs):
            free.append((prob * scores[subject] * scores[obj], subject, obj, predicate))
    free.sort(key=lambda entry: -entry[0])
    return [entry[1:] for entry in graph[:TOP_K]], [entry[1:] for entry in free[:TOP_K]]


def _recalled(gt, prediction, entry, relation, iou=_iou_plus1) -> bool:
    """Whether one list entry (subject, object, predicate) recalls one ground-truth relation row."""
    subject, obj, predicate = entry
    gt_subject, gt_object, gt_predicate = (int(v) for v in relation)
    if predicate != gt_predicate:
        return False
    if int(prediction["labels"][subject]) != int(gt["labels"][gt_subject]):
        return False
    if int(prediction["labels"][obj]) != int(gt["labels"][gt_object]):
        return False
    pred_boxes, gt_boxes = prediction["boxes"], gt["boxes"]
    subject_iou = iou([float(v) for v in pred_boxes[subject]], [float(v) for v in gt_boxes[gt_subject]])
    object_iou = iou([float(v) for v in pred_boxes[obj]], [float(v) for v in gt_boxes[gt_object]])
    return subject_iou >= 0.5 and object_iou >= 0.5


def _mean(values) -> float:
    return sum(values) / len(values) if values else 0.0


def evaluate_reference(
    images: Iterable[Tuple[dict, dict]],
    predicate_names: Sequence[str],
    zero_shot_triplets: Set[Tuple[int, int, int]],
    ks: Sequence[int] = RECALL_KS,
    protocol: Union[str, SGGProtocol] = "standard",
) -> Dict[str, float]:
    """R, ng-R, zR, ng-zR, mR, ng-mR @ ks and per-predicate recalls, keyed like ``aggregate_recalls``.

    Args:
        images: ``(ground_truth, prediction)`` per image; ground truth has ``boxes``, ``labels``, ``relations``
            (sub, obj, pred); the prediction follows the ``sgg-predictions/v1`` image layout.
        predicate_names: the predicate vocabulary (its length is the mR denominator).
        zero_shot_triplets: 0-based (subject class, object class, predicate) tuples.
        protocol: ``standard`` or ``iterativesg`` (its ground-truth box convention is the caller's: pass boxes as
            the protocol's loader gives them).
    """
    protocol = get_protocol(protocol)
    iou = _iou_plus1 if protocol.iou_plus_one else _iou_detectron2
    num_predicates = len(predicate_names)
    per_image = {}  # metric name -> list of per-image recalls
    per_predicate = {}  # (list name, k, predicate) -> list of per-image recalls
    for gt, prediction in images:
        relations = [tuple(int(v) for v in row) for row in gt["relations"]]
        if not relations:
            continue
        if protocol.skip_images_without_rows and len(prediction["rel_pairs"]) == 0:
            continue
        graph, free = _ranked_lists(prediction)
        for prefix, ranked in (("", graph), ("ng-", free)):
            for k in ks:
                hits = [any(_recalled(gt, prediction, entry, rel, iou) for entry in ranked[:k]) for rel in relations]
                per_image.setdefault(f"{prefix}R@{k}", []).append(sum(hits) / len(hits))
                zero_shot_hits = [
                    hit
                    for hit, rel in zip(hits, relations)
                    if (int(gt["labels"][rel[0]]), int(gt["labels"][rel[1]]), rel[2]) in zero_shot_triplets
                ]
                if zero_shot_hits:
                    per_image.setdefault(f"{prefix}zR@{k}", []).append(sum(zero_shot_hits) / len(zero_shot_hits))
                # per-predicate counts of this image; the iterativesg protocol adds every row and hit to slot 0 too
                recall_count, recall_hit = [0] * num_predicates, [0] * num_predicates
                for hit, rel in zip(hits, relations):
                    for slot in (rel[2], 0) if protocol.mean_recall_slot0 else (rel[2],):
                        recall_count[slot] += 1
                        recall_hit[slot] += int(hit)
                for predicate in range(num_predicates):
                    if recall_count[predicate]:
                        per_predicate.setdefault((prefix, k, predicate), []).append(
                            recall_hit[predicate] / recall_count[predicate]
                        )

    results = {}
    for prefix in ("", "ng-"):
        for k in ks:
            results[f"{prefix}R@{k}"] = _mean(per_image.get(f"{prefix}R@{k}", []))
            results[f"{prefix}zR@{k}"] = _mean(per_image.get(f"{prefix}zR@{k}", []))
            recalls = [_mean(per_predicate.get((prefix, k, p), [])) for p in range(num_predicates)]
            results[f"{prefix}mR@{k}"] = sum(recalls) / num_predicates
            for name, value in zip(predicate_names, recalls):
                results[f"per_predicate_{prefix}R@{k}/{name}"] = value
    return results
