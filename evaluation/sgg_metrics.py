"""Scene-graph recall metrics (sgdet) computed from one first-hit rank per ground-truth relation.

The protocol (SPEC section 2) in two steps:

1. **Per image** (:func:`match_image`): rank the prediction rows into the graph-constrained list (each row with its
   argmax predicate, scored predicate prob x subject score x object score, stable descending) and the
   no-graph-constraint list (every (row, predicate) entry, global top 100), compute ONE +1-pixel IoU matrix between
   ground-truth and predicted boxes, and record for every ground-truth relation row the position of the first
   prediction in each list that recalls it. A ground-truth row is recalled at K iff that rank is < K, so one
   rank serves R, zR and mR at every K.
2. **Over the split** (:func:`aggregate_recalls`): turn the concatenated ranks into R@K, ng-R@K, zR@K, ng-zR@K,
   mR@K, ng-mR@K and per-predicate recalls with a handful of vectorised ``bincount`` calls.

Deliberate choices, shared with :mod:`evaluation.reference_loop`:
* a prediction may recall several ground-truth rows and duplicate ground-truth rows all count;
* an image without prediction rows has recall 0 (the published evaluators skip such images, which inflates recall);
* images without ground-truth relations carry no recall and are not averaged (VG's test split has none);
* zR averages over images that contain zero-shot rows; with no such image at all, zR is 0.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

# The largest K of the protocol; both ranked lists are truncated to it before matching.
TOP_K = 100
RECALL_KS = (20, 50, 100)
IOU_THRESHOLD = 0.5
# Rank stored for a ground-truth row that no prediction in the top-TOP_K list recalls.
NO_HIT = np.iinfo(np.int32).max
# Up to this many values, top-k selection is a full stable sort (faster than partitioning at that size).
_FULL_SORT_MAX = 1024


def box_iou_plus1(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(A, B) IoU matrix of xyxy boxes with the +1 pixel convention (area = (x2 - x1 + 1)(y2 - y1 + 1)), float64."""
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    area_a = (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
    area_b = (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
    inter_w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1.0
    inter_h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1.0
    inter = np.clip(inter_w, 0.0, None) * np.clip(inter_h, 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union


@dataclass(frozen=True)
class RankedPredictions:
    """The two top-``TOP_K`` lists of one image: prediction-row indices and the predicate each entry claims."""

    graph_rows: np.ndarray  # (<=TOP_K,) int64, graph-constrained order
    graph_predicates: np.ndarray  # (<=TOP_K,) int64, argmax predicate of each row
    free_rows: np.ndarray  # (<=TOP_K,) int64, no-graph-constraint order
    free_predicates: np.ndarray  # (<=TOP_K,) int64


def _top_k_stable_descending(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, ordered as a stable descending sort of all of ``values`` would order them.

    Equal values keep index order, so the result equals ``np.argsort(-values, kind="stable")[:k]`` without sorting
    the whole array.
    """
    n = values.size
    if n <= _FULL_SORT_MAX:  # sorting a few hundred values beats partitioning them
        return np.argsort(-values, kind="stable")[:k]
    threshold = np.partition(values, n - k)[n - k]  # the k-th largest value
    above = np.flatnonzero(values > threshold)
    ties = np.flatnonzero(values == threshold)[: k - above.size]
    candidates = np.concatenate([above, ties])
    candidates.sort()
    return candidates[np.argsort(-values[candidates], kind="stable")]


def rank_predictions(
    entity_scores: np.ndarray, rel_pairs: np.ndarray, rel_scores: np.ndarray, top_k: int = TOP_K
) -> RankedPredictions:
    """Build the graph-constrained and no-graph-constraint lists of one image (SPEC section 2).

    Scores are products in float64 in the fixed order ``predicate prob x subject score x object score`` (scores
    are non-negative). An entry never scores above its row's graph-constrained score (rounding is monotone), so
    entries of rows scoring below the ``top_k``-th row cannot reach the no-graph-constraint top ``top_k``: only
    the remaining rows (about ``top_k`` of them, or all rows when there are fewer) are scored entry by entry.
    """
    num_rows, num_predicates = rel_scores.shape
    if num_rows == 0:
        empty = np.zeros(0, dtype=np.int64)
        return RankedPredictions(empty, empty, empty, empty)
    subject_scores = entity_scores[rel_pairs[:, 0]].astype(np.float64)
    object_scores = entity_scores[rel_pairs[:, 1]].astype(np.float64)
    best_predicate = rel_scores.argmax(axis=1)
    best_prob = rel_scores[np.arange(num_rows), best_predicate].astype(np.float64)
    row_scores = best_prob * subject_scores * object_scores
    graph_rows = _top_k_stable_descending(row_scores, top_k)

    # With fewer than top_k rows every entry competes.
    cutoff = row_scores[graph_rows[-1]] if num_rows >= top_k else -np.inf
    candidates = np.flatnonzero(row_scores >= cutoff)
    entry_scores = (
        rel_scores[candidates].astype(np.float64) * subject_scores[candidates, None] * object_scores[candidates, None]
    ).ravel()
    # The k-th best entry scores at least the cut-off (the best entry of each top-k row does), so only entries
    # at or above it compete; keeping them in index order keeps the stable tie order.
    competing = np.flatnonzero(entry_scores >= cutoff)
    free_entries = competing[_top_k_stable_descending(entry_scores[competing], top_k)]
    return RankedPredictions(
        graph_rows=graph_rows,
        graph_predicates=best_predicate[graph_rows].astype(np.int64),
        free_rows=candidates[free_entries // num_predicates],
        free_predicates=free_entries % num_predicates,
    )


def match_image(
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_relations: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    rel_pairs: np.ndarray,
    ranked: RankedPredictions,
):
    """First-hit ranks ``(graph (R,), no-graph-constraint (R,))`` int32 of the R ground-truth relation rows.

    A prediction entry recalls a ground-truth row iff subject, object and predicate labels are equal and both
    boxes overlap the ground-truth boxes with +1-pixel IoU >= 0.5. Both lists are matched in one pass over
    their concatenation; the rank is the position of the first recalling entry (``NO_HIT`` if none).
    """
    num_graph = len(ranked.graph_rows)
    if len(gt_relations) == 0 or num_graph == 0:
        no_hit = np.full(len(gt_relations), NO_HIT, dtype=np.int32)
        return no_hit, no_hit.copy()
    box_match = (box_iou_plus1(gt_boxes, boxes) >= IOU_THRESHOLD) & (gt_labels[:, None] == labels[None, :])
    rows = np.concatenate([ranked.graph_rows, ranked.free_rows])
    predicates = np.concatenate([ranked.graph_predicates, ranked.free_predicates])
    hits = (
        box_match[gt_relations[:, 0, None], rel_pairs[rows, 0][None, :]]
        & box_match[gt_relations[:, 1, None], rel_pairs[rows, 1][None, :]]
        & (gt_relations[:, 2, None] == predicates[None, :])
    )
    ranks = []
    for list_hits in (hits[:, :num_graph], hits[:, num_graph:]):
        ranks.append(np.where(list_hits.any(axis=1), list_hits.argmax(axis=1), NO_HIT).astype(np.int32))
    return ranks[0], ranks[1]


def triplet_keys(subject_classes, object_classes, predicates, num_classes: int, num_predicates: int) -> np.ndarray:
    """One int64 per (subject class, object class, predicate) triplet, all 0-based (for set membership tests)."""
    subject_classes = np.asarray(subject_classes, dtype=np.int64)
    object_classes = np.asarray(object_classes, dtype=np.int64)
    predicates = np.asarray(predicates, dtype=np.int64)
    return (subject_classes * num_classes + object_classes) * num_predicates + predicates


def _mean_over_images(hit: np.ndarray, image_index: np.ndarray, num_images: int) -> float:
    """Per-image fraction of recalled rows, averaged over the images that have rows (0 when none has)."""
    rows_per_image = np.bincount(image_index, minlength=num_images)
    hits_per_image = np.bincount(image_index, weights=hit, minlength=num_images)
    has_rows = rows_per_image > 0
    if not has_rows.any():
        return 0.0
    return float(np.mean(hits_per_image[has_rows] / rows_per_image[has_rows]))


def _per_predicate_recall(hit: np.ndarray, image_index: np.ndarray, predicate: np.ndarray, num_predicates: int):
    """Recall of each predicate: per image hits_p / count_p, averaged over the images containing p (0 if none)."""
    group, group_of_row = np.unique(image_index * num_predicates + predicate, return_inverse=True)
    group_recall = np.bincount(group_of_row, weights=hit) / np.bincount(group_of_row)
    group_predicate = group % num_predicates
    images_with_predicate = np.bincount(group_predicate, minlength=num_predicates)
    recall_sum = np.bincount(group_predicate, weights=group_recall, minlength=num_predicates)
    return np.divide(
        recall_sum, images_with_predicate, out=np.zeros(num_predicates), where=images_with_predicate > 0
    )


def aggregate_recalls(
    gt_predicates: np.ndarray,
    zero_shot: np.ndarray,
    graph_ranks: np.ndarray,
    free_ranks: np.ndarray,
    image_index: np.ndarray,
    num_images: int,
    predicate_names: Sequence[str],
    ks: Sequence[int] = RECALL_KS,
) -> Dict[str, float]:
    """Every recall metric from the ground-truth rows of all images, concatenated in dataset order.

    Args:
        gt_predicates: (T,) 0-based predicate of each ground-truth relation row.
        zero_shot: (T,) bool, the row's triplet is in the zero-shot set.
        graph_ranks, free_ranks: (T,) first-hit ranks in the graph-constrained / no-graph-constraint lists.
        image_index: (T,) index of the row's image in ``range(num_images)``.
        predicate_names: the split's predicate vocabulary; its length is the mR denominator.

    Returns a flat dict: ``R@K``, ``ng-R@K``, ``zR@K``, ``ng-zR@K``, ``mR@K``, ``ng-mR@K`` and
    ``per_predicate_R@K/<name>``, ``per_predicate_ng-R@K/<name>``.
    """
    num_predicates = len(predicate_names)
    image_index = np.asarray(image_index, dtype=np.int64)
    gt_predicates = np.asarray(gt_predicates, dtype=np.int64)
    zero_shot = np.asarray(zero_shot, dtype=bool)
    results: Dict[str, float] = {}
    for prefix, ranks in (("", np.asarray(graph_ranks)), ("ng-", np.asarray(free_ranks))):
        for k in ks:
            hit = (ranks < k).astype(np.float64)
            results[f"{prefix}R@{k}"] = _mean_over_images(hit, image_index, num_images)
            results[f"{prefix}zR@{k}"] = _mean_over_images(hit[zero_shot], image_index[zero_shot], num_images)
            per_predicate = _per_predicate_recall(hit, image_index, gt_predicates, num_predicates)
            results[f"{prefix}mR@{k}"] = float(per_predicate.sum() / num_predicates)
            for name, value in zip(predicate_names, per_predicate):
                results[f"per_predicate_{prefix}R@{k}/{name}"] = float(value)
    return results


def recall_metric_names(ks: Sequence[int] = RECALL_KS) -> List[str]:
    """The headline metric keys in printing order."""
    names = []
    for metric in ("R", "ng-R", "zR", "ng-zR", "mR", "ng-mR"):
        names += [f"{metric}@{k}" for k in ks]
    return names
