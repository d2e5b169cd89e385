"""Random VG-like ground truth and sgdet predictions, for the evaluator's tests and benchmark.

:class:`InMemorySplit` follows the split contract of ``data.visual_genome`` (``image_ids``, ``idx_to_label``,
``idx_to_predicate``, ``get_record``), so the evaluator runs on it exactly as on VG.
:func:`random_prediction` plants jittered copies of the ground-truth boxes and relations among random ones, so
recalls are neither 0 nor 1; ``coarse=True`` draws scores and coordinates from small grids, which makes tied
scores and IoUs of exactly 0.5 common (the cases where a careless implementation differs from the protocol).
"""
from typing import Dict, List, Optional, Sequence

import numpy as np


class InMemorySplit:
    """A split held as a list of records (``image_id``, ``boxes``, ``labels``, ``relations``, ...)."""

    def __init__(self, records: List[Dict], idx_to_label: Sequence[str], idx_to_predicate: Sequence[str]):
        self.records = records
        self.image_ids = np.array([record["image_id"] for record in records], dtype=np.int64)
        self.idx_to_label = list(idx_to_label)
        self.idx_to_predicate = list(idx_to_predicate)

    def __len__(self) -> int:
        return len(self.records)

    def get_record(self, i: int, rng: Optional[np.random.Generator] = None) -> Dict:
        return {key: value.copy() if isinstance(value, np.ndarray) else value for key, value in self.records[i].items()}


def _random_boxes(rng: np.random.Generator, n: int, width: int, height: int, coarse: bool) -> np.ndarray:
    if coarse:  # corners on a 10-pixel grid: IoUs land exactly on 0.5 now and then
        x = np.sort(rng.integers(0, 4, size=(n, 2)), axis=1) * 10 + np.array([0, 9])
        y = np.sort(rng.integers(0, 4, size=(n, 2)), axis=1) * 10 + np.array([0, 9])
    else:
        x = np.sort(rng.uniform(0, width - 1, size=(n, 2)), axis=1)
        y = np.sort(rng.uniform(0, height - 1, size=(n, 2)), axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)


def random_record(
    rng: np.random.Generator,
    image_id: int,
    num_classes: int,
    num_predicates: int,
    num_boxes: int,
    num_relations: int,
    coarse: bool = False,
) -> Dict:
    """One ground-truth image; relation rows may repeat (duplicates are part of the protocol)."""
    width, height = 800, 600
    relations = np.zeros((0, 3), dtype=np.int64)
    if num_boxes > 0 and num_relations > 0:
        relations = np.stack(
            [
                rng.integers(0, num_boxes, num_relations),
                rng.integers(0, num_boxes, num_relations),
                rng.integers(0, num_predicates, num_relations),
            ],
            axis=1,
        ).astype(np.int64)
    return {
        "image_id": image_id,
        "file_name": f"{image_id}.jpg",
        "width": width,
        "height": height,
        "boxes": _random_boxes(rng, num_boxes, width, height, coarse),
        "labels": rng.integers(0, num_classes, num_boxes).astype(np.int64),
        "relations": relations,
    }


def random_split(
    rng: np.random.Generator,
    num_images: int,
    num_classes: int = 150,
    num_predicates: int = 50,
    boxes_per_image: int = 12,
    relations_per_image: int = 7,
    coarse: bool = False,
    first_image_id: int = 1,
) -> InMemorySplit:
    """A split of ``num_images`` random images (ids ``first_image_id``, ``first_image_id + 1``, ...)."""
    records = [
        random_record(
            rng,
            first_image_id + i,
            num_classes,
            num_predicates,
            num_boxes=boxes_per_image,
            num_relations=relations_per_image,
            coarse=coarse,
        )
        for i in range(num_images)
    ]
    return InMemorySplit(
        records, [f"class{c}" for c in range(num_classes)], [f"predicate{p}" for p in range(num_predicates)]
    )


def random_prediction(
    rng: np.random.Generator,
    record: Dict,
    num_classes: int,
    num_predicates: int,
    num_boxes: int = 80,
    num_rows: int = 300,
    coarse: bool = False,
) -> Dict[str, np.ndarray]:
    """sgdet predictions for one image in the ``sgg-predictions/v1`` layout (numpy arrays, file dtypes)."""
    gt_boxes, gt_labels, relations = record["boxes"], record["labels"], record["relations"]
    num_planted = min(len(gt_boxes), num_boxes)
    boxes = _random_boxes(rng, num_boxes, record["width"], record["height"], coarse)
    labels = rng.integers(0, num_classes, num_boxes)
    if num_planted:  # jittered copies of the ground truth, most with the right class
        jitter = rng.integers(-3, 4, size=(num_planted, 4)) if coarse else rng.normal(0, 4, size=(num_planted, 4))
        jittered = gt_boxes[:num_planted] + jitter
        jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2])  # keep x2 >= x1, y2 >= y1
        boxes[:num_planted] = jittered
        right_class = rng.random(num_planted) < 0.8
        labels[:num_planted] = np.where(right_class, gt_labels[:num_planted], labels[:num_planted])
    scores = rng.integers(1, 5, num_boxes) / 4 if coarse else rng.uniform(0.05, 1.0, num_boxes)

    prediction = {"boxes": boxes.astype(np.float32), "labels": labels.astype(np.int64),
                  "scores": np.asarray(scores, dtype=np.float32)}
    if num_rows == 0 or num_boxes == 0:
        prediction["rel_pairs"] = np.zeros((0, 2), dtype=np.int64)
        prediction["rel_scores"] = np.zeros((0, num_predicates), dtype=np.float32)
        return prediction

    rel_pairs = rng.integers(0, num_boxes, size=(num_rows, 2))
    if coarse:  # probabilities on a quarter grid: many tied rows and entries
        rel_scores = rng.integers(0, 4, size=(num_rows, num_predicates)) / 4
    else:
        logits = rng.normal(size=(num_rows, num_predicates))
        rel_scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    usable = relations[(relations[:, 0] < num_planted) & (relations[:, 1] < num_planted)]
    if len(usable):  # some rows claim a ground-truth relation
        rows = rng.choice(num_rows, size=min(len(usable), num_rows), replace=False)
        rel_pairs[rows] = usable[: len(rows), :2]
        # sometimes the claimed predicate is not the row's argmax: only the no-graph-constraint list recalls it
        claimed = rng.integers(1, 5, len(rows)) / 4 if coarse else rng.uniform(0.0, 0.6, len(rows))
        rel_scores[rows, usable[: len(rows), 2]] = claimed
    prediction["rel_pairs"] = rel_pairs.astype(np.int64)
    prediction["rel_scores"] = rel_scores.astype(np.float32)
    return prediction
