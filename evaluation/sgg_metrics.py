"""Scene-graph recall metrics (sgdet) computed from one first-hit rank per ground-truth relation.

The protocol (docs/PROTOCOL.md, section 2) in two steps:

1. **Per image** (:func:`match_images`, vectorised over a batch of images): rank the prediction rows into the
   graph-constrained list (each row with its argmax predicate, scored predicate prob x subject score x object
   score, stable descending) and the no-graph-constraint list (every (row, predicate) entry, top 100), compute the
   +1-pixel IoU of each (ground-truth box, predicted box) pair with equal labels once, and record for every
   ground-truth relation row the position of the first entry in each list that recalls it. A ground-truth row is
   recalled at K iff that rank is < K, so one rank serves R, zR and mR at every K. Images never interact: a batch
   only shares the numpy calls, so an image's ranks do not depend on which images it is batched with.
2. **Over the split** (:func:`aggregate_recalls`): turn the concatenated ranks into R@K, ng-R@K, zR@K, ng-zR@K,
   mR@K, ng-mR@K and per-predicate recalls with a handful of vectorised ``bincount`` calls.

Deliberate choices, shared with :mod:`evaluation.reference_loop`:
* a prediction may recall several ground-truth rows and duplicate ground-truth rows all count;
* an image without prediction rows has recall 0 under the standard protocol (the released IterativeSG evaluator
  skips such images, which inflates recall; ``TEST.SGG_PROTOCOL iterativesg`` does the same, see
  :mod:`evaluation.protocols`);
* images without ground-truth relations carry no recall and are not averaged (VG's test split has none);
* zR averages over images that contain zero-shot rows; with no such image at all, zR is 0.

Protocol switches here: ``match_images(iou_plus_one=False)`` uses detectron2's IoU (:func:`box_iou_detectron2`);
``aggregate_recalls(mean_recall_slot0=True)`` the released mean recall's slot-0 accumulation. A prediction carrying
``rel_ranking_scores`` (R,) has its graph-constrained list ordered by them (stable, descending) instead of by the
product score, in both protocols; the no-graph-constraint list always uses the product scores.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

# The largest K of the protocol; both ranked lists are truncated to it before matching.
TOP_K = 100
RECALL_KS = (20, 50, 100)
IOU_THRESHOLD = 0.5
# Rank stored for a ground-truth row that no prediction in the top-TOP_K list recalls.
NO_HIT = np.iinfo(np.int32).max


def box_iou_plus1(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``(..., 4)`` paired element by element (broadcasting), +1 pixel convention, float64.

    The area of a box is (x2 - x1 + 1)(y2 - y1 + 1). For an (A, B) matrix pass ``a[:, None]`` and ``b[None]``.
    """
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    area_a = (a[..., 2] - a[..., 0] + 1.0) * (a[..., 3] - a[..., 1] + 1.0)
    area_b = (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)
    inter_w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1.0
    inter_h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1.0
    inter = np.clip(inter_w, 0.0, None) * np.clip(inter_h, 0.0, None)
    return inter / (area_a + area_b - inter)


def box_iou_detectron2(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes paired element by element (broadcasting), as detectron2's ``pairwise_iou`` computes it.

    No +1 pixel: the area of a box is (x2 - x1)(y2 - y1); the arithmetic is float32 in detectron2's order
    (intersection w x h, then inter / ((area_a + area_b) - inter)), and the IoU is 0 wherever the intersection is 0
    (so two empty boxes give 0, not NaN). Returns float32.
    """
    a = np.asarray(boxes_a, dtype=np.float32)
    b = np.asarray(boxes_b, dtype=np.float32)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_a + area_b - inter)
    return np.where(inter > 0, iou, np.float32(0)).astype(np.float32)


@dataclass
class ImageMatch:
    """What matching leaves of one image."""

    kept_rows: np.ndarray  # (M,) int64 ascending: the relation rows either top-k list uses
    graph_ranks: np.ndarray  # (R,) int32 first-hit rank of each ground-truth row, graph-constrained list
    free_ranks: np.ndarray  # (R,) int32 the same in the no-graph-constraint list


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Start of each group in a concatenation of groups of ``counts`` items."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _top_k_per_image(image: np.ndarray, scores: np.ndarray, num_images: int, top_k: int):
    """Each image's ``top_k`` items by descending score, ties in item order (a stable sort per image).

    Items must be grouped by image in ascending order. Only items at or above their image's k-th largest score
    (found by partitioning) are sorted. Returns the selected item indices (grouped by image, in list order),
    their positions in their image's list, and each image's k-th largest score (-inf with fewer items).
    """
    counts = np.bincount(image, minlength=num_images)
    kth = _kth_largest_per_image(image, scores, _offsets(counts), counts, top_k)
    order = np.flatnonzero(scores >= kth[image])
    order = order[np.argsort(-scores[order], kind="stable")]
    order = order[np.argsort(image[order], kind="stable")]
    position = np.arange(len(order)) - _offsets(np.bincount(image[order], minlength=num_images))[image[order]]
    keep = position < top_k
    return order[keep], position[keep], kth


def _kth_largest_per_image(image, scores, start, counts, k: int) -> np.ndarray:
    """Each image's k-th largest score, -inf for an image with fewer than k items (items grouped by image)."""
    width = int(counts.max(initial=0))
    if width < k:
        return np.full(len(counts), -np.inf)
    padded = np.full((len(counts), width), -np.inf)
    padded[image, np.arange(len(image)) - start[image]] = scores
    return np.partition(padded, width - k, axis=1)[:, width - k]


def _pad(values: List[np.ndarray], width: int, fill, trailing=()) -> np.ndarray:
    """Stack per-image arrays of different lengths into (B, width, *trailing), padding with ``fill``."""
    counts = np.array([len(v) for v in values], dtype=np.int64)
    padded = np.full((len(values), width, *trailing), fill, dtype=values[0].dtype)
    if counts.sum():
        image = np.repeat(np.arange(len(values)), counts)
        padded[image, np.arange(counts.sum()) - _offsets(counts)[image]] = np.concatenate(values)
    return padded


def match_images(
    predictions: Sequence[Dict], ground_truths: Sequence[Dict], top_k: int = TOP_K, iou_plus_one: bool = True
) -> List[ImageMatch]:
    """Rank and match a batch of images.

    Args:
        predictions: per image ``boxes`` float32 (N, 4), ``labels`` int64 (N,), ``scores`` float32 (N,) >= 0,
            ``rel_pairs`` int64 (R, 2), ``rel_scores`` float32 (R, P) >= 0 (validated), and optionally
            ``rel_ranking_scores`` float32 (R,): then the graph-constrained list is the rows in descending order
            of these (stable). Either every image of the batch has them or none.
        ground_truths: per image ``boxes`` (G, 4), ``labels`` (G,), ``relations`` int64 (T, 3).
        iou_plus_one: IoU with the +1 pixel convention (:func:`box_iou_plus1`, standard protocol) or detectron2's
            (:func:`box_iou_detectron2`, iterativesg protocol).

    Scores are float64 products in the fixed order predicate prob x subject score x object score. An entry never
    scores above its row's graph-constrained score (rounding is monotone), so when an image has at least
    ``top_k`` rows, entries scoring below its ``top_k``-th row cannot reach its no-graph-constraint top ``top_k``:
    only the entries at or above that cut-off (about ``top_k`` of them) are ranked.
    """
    num_images = len(predictions)
    rows_per_image = np.array([len(p["rel_pairs"]) for p in predictions], dtype=np.int64)
    row_image = np.repeat(np.arange(num_images), rows_per_image)
    row_start = _offsets(rows_per_image)
    rel_scores = np.concatenate([p["rel_scores"] for p in predictions])
    rel_pairs = np.concatenate([p["rel_pairs"] for p in predictions])
    box_width = max(1, max(len(p["boxes"]) for p in predictions))
    entity_scores = _pad([p["scores"] for p in predictions], box_width, 0).astype(np.float64)
    subject_scores = entity_scores[row_image, rel_pairs[:, 0]]
    object_scores = entity_scores[row_image, rel_pairs[:, 1]]

    # Graph-constrained list: one entry per row, its argmax predicate, ranked by the row score (or the given
    # ranking scores). ``cutoff`` is each image's k-th best row score (-inf with fewer than k rows).
    best_prob = rel_scores.max(axis=1)
    row_scores = best_prob.astype(np.float64) * subject_scores * object_scores
    ranked = [p.get("rel_ranking_scores") is not None for p in predictions]
    if any(ranked) and not all(ranked):
        raise ValueError("match_images: either every prediction has 'rel_ranking_scores' or none")
    if ranked and all(ranked):
        ranking = np.concatenate([p["rel_ranking_scores"] for p in predictions]).astype(np.float64)
        graph_rows, graph_position, _ = _top_k_per_image(row_image, ranking, num_images, top_k)
        cutoff = _kth_largest_per_image(row_image, row_scores, row_start, rows_per_image, top_k)
    else:
        graph_rows, graph_position, cutoff = _top_k_per_image(row_image, row_scores, num_images, top_k)
    graph_image = row_image[graph_rows]
    # argmax (first maximum) of the listed rows only: finding the first entry equal to the row maximum is cheaper
    graph_predicate = (rel_scores[graph_rows] == best_prob[graph_rows, None]).argmax(axis=1)

    # No-graph-constraint list: (row, predicate) entries at or above the cut-off; the image's k-th best entry
    # is among them (the best entries of its top-k rows all reach the cut-off). They are found with a float32
    # pre-filter whose 1e-6 relative margin dwarfs any rounding, then scored exactly.
    candidates = np.flatnonzero(row_scores >= cutoff[row_image])
    pair_scores = subject_scores[candidates] * object_scores[candidates]
    with np.errstate(divide="ignore", invalid="ignore"):
        threshold = cutoff[row_image[candidates]] / pair_scores * (1.0 - 1e-6)
    threshold[np.isnan(threshold)] = -np.inf  # 0 / 0: a zero cut-off admits zero-score entries
    survivor, competing_predicate = np.nonzero(rel_scores[candidates] >= threshold.astype(np.float32)[:, None])
    competing_row = candidates[survivor]
    competing_scores = rel_scores[competing_row, competing_predicate].astype(np.float64)
    competing_scores = competing_scores * subject_scores[competing_row] * object_scores[competing_row]
    competing = competing_scores >= cutoff[row_image[competing_row]]
    competing_row, competing_predicate = competing_row[competing], competing_predicate[competing]
    competing_scores = competing_scores[competing]
    free, free_position, _ = _top_k_per_image(row_image[competing_row], competing_scores, num_images, top_k)
    free_rows, free_predicate = competing_row[free], competing_predicate[free]
    free_image = row_image[free_rows]

    # Both lists side by side per image: (B, 2 top_k) subject, object and predicate of each entry.
    entry_subject = np.zeros((num_images, 2 * top_k), dtype=np.int64)
    entry_object = np.zeros((num_images, 2 * top_k), dtype=np.int64)
    entry_predicate = np.full((num_images, 2 * top_k), -1, dtype=np.int64)  # -1: no entry, matches nothing
    for image, position, rows, predicate in (
        (graph_image, graph_position, graph_rows, graph_predicate),
        (free_image, top_k + free_position, free_rows, free_predicate),
    ):
        entry_subject[image, position] = rel_pairs[rows, 0]
        entry_object[image, position] = rel_pairs[rows, 1]
        entry_predicate[image, position] = predicate

    # (B, G, N) whether predicted box n matches ground-truth box g of image b (same label, IoU >= 0.5; the IoU is
    # computed once per same-label pair), then one hit matrix over all ground-truth rows.
    gt_width = max(1, max(len(g["boxes"]) for g in ground_truths))
    gt_boxes = _pad([np.asarray(g["boxes"], np.float32).reshape(-1, 4) for g in ground_truths], gt_width, 0, (4,))
    gt_labels = _pad([np.asarray(g["labels"], np.int64) for g in ground_truths], gt_width, -1)
    boxes = _pad([p["boxes"] for p in predictions], box_width, 0, (4,))
    labels = _pad([p["labels"] for p in predictions], box_width, -2)
    same_label = gt_labels[:, :, None] == labels[:, None, :]
    pair_image, gt_box, box = np.nonzero(same_label)
    box_match = np.zeros_like(same_label)
    box_iou = box_iou_plus1 if iou_plus_one else box_iou_detectron2
    overlap = box_iou(gt_boxes[pair_image, gt_box], boxes[pair_image, box])
    box_match[pair_image, gt_box, box] = overlap >= IOU_THRESHOLD
    relations = [np.asarray(g["relations"], np.int64).reshape(-1, 3) for g in ground_truths]
    gt_rows_per_image = np.array([len(r) for r in relations], dtype=np.int64)
    gt_image = np.repeat(np.arange(num_images), gt_rows_per_image)
    gt_relations = np.concatenate(relations)
    # Entries claiming a row's predicate, then those whose two boxes match; the first such entry of each list.
    row, entry = np.nonzero(gt_relations[:, 2, None] == entry_predicate[gt_image])
    image = gt_image[row]
    hit = (box_match[image, gt_relations[row, 0], entry_subject[image, entry]]
           & box_match[image, gt_relations[row, 1], entry_object[image, entry]])
    row, entry = row[hit], entry[hit]
    ranks = []
    for in_list, offset in ((entry < top_k, 0), (entry >= top_k, top_k)):
        list_ranks = np.full(len(gt_relations), NO_HIT, dtype=np.int32)
        np.minimum.at(list_ranks, row[in_list], (entry[in_list] - offset).astype(np.int32))
        ranks.append(list_ranks)

    kept = np.zeros(len(rel_pairs), dtype=bool)
    kept[graph_rows] = True
    kept[free_rows] = True
    kept = np.flatnonzero(kept)
    kept_image = row_image[kept]
    kept_split = np.split(kept - row_start[kept_image], np.cumsum(np.bincount(kept_image, minlength=num_images))[:-1])
    rank_split = np.cumsum(gt_rows_per_image)[:-1]
    return [
        ImageMatch(kept_rows, graph_ranks, free_ranks)
        for kept_rows, graph_ranks, free_ranks in zip(
            kept_split, np.split(ranks[0], rank_split), np.split(ranks[1], rank_split)
        )
    ]


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
    skipped_images: Optional[np.ndarray] = None,
    mean_recall_slot0: bool = False,
) -> Dict[str, float]:
    """Every recall metric from the ground-truth rows of all images, concatenated in dataset order.

    Args:
        gt_predicates: (T,) 0-based predicate of each ground-truth relation row.
        zero_shot: (T,) bool, the row's triplet is in the zero-shot set.
        graph_ranks, free_ranks: (T,) first-hit ranks in the graph-constrained / no-graph-constraint lists.
        image_index: (T,) index of the row's image in ``range(num_images)``.
        predicate_names: the split's predicate vocabulary; its length is the mR denominator.
        skipped_images: (num_images,) bool, images left out of every average (the iterativesg protocol's images
            without prediction rows); ``None`` keeps every image.
        mean_recall_slot0: the released mean recall's accumulation: per image, every ground-truth row and every
            hit is also counted for predicate 0, whose per-image recall is then (hits + hits of predicate 0) /
            (rows + rows of predicate 0), recorded for every image with rows (iterativesg protocol).

    Returns a flat dict: ``R@K``, ``ng-R@K``, ``zR@K``, ``ng-zR@K``, ``mR@K``, ``ng-mR@K`` and
    ``per_predicate_R@K/<name>``, ``per_predicate_ng-R@K/<name>``.
    """
    num_predicates = len(predicate_names)
    image_index = np.asarray(image_index, dtype=np.int64)
    gt_predicates = np.asarray(gt_predicates, dtype=np.int64)
    zero_shot = np.asarray(zero_shot, dtype=bool)
    graph_ranks, free_ranks = np.asarray(graph_ranks), np.asarray(free_ranks)
    if skipped_images is not None:
        kept = ~np.asarray(skipped_images, dtype=bool)[image_index]
        image_index, gt_predicates, zero_shot = image_index[kept], gt_predicates[kept], zero_shot[kept]
        graph_ranks, free_ranks = graph_ranks[kept], free_ranks[kept]
    mr_image, mr_predicate = image_index, gt_predicates
    if mean_recall_slot0:  # every row counted a second time, for predicate 0
        mr_image = np.concatenate([image_index, image_index])
        mr_predicate = np.concatenate([gt_predicates, np.zeros_like(gt_predicates)])
    results: Dict[str, float] = {}
    for prefix, ranks in (("", graph_ranks), ("ng-", free_ranks)):
        for k in ks:
            hit = (ranks < k).astype(np.float64)
            results[f"{prefix}R@{k}"] = _mean_over_images(hit, image_index, num_images)
            results[f"{prefix}zR@{k}"] = _mean_over_images(hit[zero_shot], image_index[zero_shot], num_images)
            mr_hit = np.concatenate([hit, hit]) if mean_recall_slot0 else hit
            per_predicate = _per_predicate_recall(mr_hit, mr_image, mr_predicate, num_predicates)
            results[f"{prefix}mR@{k}"] = float(per_predicate.sum() / num_predicates)
            for name, value in zip(predicate_names, per_predicate):
                results[f"per_predicate_{prefix}R@{k}/{name}"] = float(value)
    return results
