"""Scene-graph recall metrics on hand-made cases with known answers, and against the plain-loop reference."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluation.reference_loop import evaluate_reference
from evaluation.report import format_results
from evaluation.sgg_evaluator import SGGEvaluator
from evaluation.sgg_metrics import _top_k_per_image, box_iou_plus1, match_images
from evaluation.synthetic import InMemorySplit, random_prediction, random_split

PREDICATES = ["p0", "p1", "p2", "p3"]  # p3 occurs in no image
CLASSES = ["c0", "c1", "c2"]
GT_BOXES = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49]], dtype=np.float32)
GT_LABELS = np.array([0, 1, 2])


def gt_record(image_id, relations, boxes=GT_BOXES, labels=GT_LABELS):
    return {"image_id": image_id, "boxes": boxes, "labels": np.asarray(labels, dtype=np.int64),
            "relations": np.asarray(relations, dtype=np.int64).reshape(-1, 3)}


def prediction(rows, boxes=GT_BOXES, labels=GT_LABELS, scores=None, num_predicates=len(PREDICATES)):
    """Prediction with one relation row per ``(subject, object, {predicate: prob})``."""
    rel_scores = np.zeros((len(rows), num_predicates), dtype=np.float32)
    for i, (_, _, probs) in enumerate(rows):
        for predicate, prob in probs.items():
            rel_scores[i, predicate] = prob
    return {
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "scores": np.ones(len(boxes), dtype=np.float32) if scores is None else np.asarray(scores, np.float32),
        "rel_pairs": np.array([[s, o] for s, o, _ in rows], dtype=np.int64).reshape(-1, 2),
        "rel_scores": rel_scores,
    }


def evaluate(records, predictions, zero_shot=np.zeros((0, 3), dtype=np.int64), predicates=PREDICATES,
             classes=CLASSES):
    split = InMemorySplit(records, classes, predicates)
    evaluator = SGGEvaluator(split, zero_shot_triplets=zero_shot)
    for record, output in zip(records, predictions):
        evaluator.process([{"image_id": record["image_id"]}], [output])
    return evaluator.evaluate()


def ranked_rows(placed, total=120):
    """``total`` rows with descending scores; ``placed[rank] = (subject, object, predicate)`` puts that triplet at
    0-based list position ``rank``; the other rows claim (2, 0, p3), which matches nothing."""
    rows = []
    for rank in range(total):
        subject, obj, predicate = placed.get(rank, (2, 0, 3))
        rows.append((subject, obj, {predicate: 0.99 - rank * 0.005}))
    return rows


# Image 1: four GT rows -- a duplicated row, a second predicate on the same pair, and a third relation; the
# recalling predictions sit at list positions 10 (< 20), 30 (< 50) and 70 (< 100).
IMAGE_1 = gt_record(1, [(0, 1, 0), (0, 1, 0), (0, 1, 1), (1, 2, 2)])
PREDICTION_1 = prediction(ranked_rows({10: (0, 1, 0), 30: (0, 1, 1), 70: (1, 2, 2), 110: (0, 1, 1)}))
# Image 2: two predicates on one pair, one row: argmax p0 is recalled with the graph constraint, p1 only without.
IMAGE_2 = gt_record(2, [(0, 1, 0), (0, 1, 1)])
PREDICTION_2 = prediction([(0, 1, {0: 0.6, 1: 0.4})])


def test_recall_at_each_cutoff_with_duplicates_and_two_predicates_per_pair():
    zero_shot = np.array([[0, 1, 1]])  # (c0, c1, p1): GT row 2 of image 1 and row 1 of image 2
    results = evaluate([IMAGE_1, IMAGE_2], [PREDICTION_1, PREDICTION_2], zero_shot)
    expected = {
        # image 1: 2/4, 3/4, 4/4; image 2: 1/2 at every K
        "R@20": 0.5, "R@50": 0.625, "R@100": 0.75,
        # image 2 recalls both rows without the graph constraint
        "ng-R@20": 0.75, "ng-R@50": 0.875, "ng-R@100": 1.0,
        # zero-shot rows: image 1 (position 30), image 2 (p1 is not the argmax)
        "zR@20": 0.0, "zR@50": 0.5, "zR@100": 0.5,
        "ng-zR@20": 0.5, "ng-zR@50": 1.0, "ng-zR@100": 1.0,
        # per predicate (p0, p1, p2, p3 absent) / 4
        "mR@20": 1.0 / 4, "mR@50": 1.5 / 4, "mR@100": 2.5 / 4,
        "ng-mR@20": 1.5 / 4, "ng-mR@50": 2.0 / 4, "ng-mR@100": 3.0 / 4,
    }
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-12), key
    assert results["per_predicate_R@100/p1"] == pytest.approx(0.5)
    assert results["per_predicate_R@100/p3"] == 0.0
    assert results["num_images"] == 2 and results["num_gt_relations"] == 6
    assert results["num_zero_shot_relations"] == 2
    assert results["AP50"] == pytest.approx(1.0) and results["AP"] == pytest.approx(1.0)


def test_image_without_predictions_counts_zero():
    empty = prediction([], boxes=np.zeros((0, 4)), labels=[])
    boxes_only = prediction([])
    image_3, image_4 = gt_record(3, [(0, 1, 0)]), gt_record(4, [(1, 2, 2)])
    results = evaluate([IMAGE_2, image_3, image_4], [PREDICTION_2, empty, boxes_only])
    assert results["R@100"] == pytest.approx(0.5 / 3)
    assert results["ng-R@100"] == pytest.approx(1.0 / 3)
    assert results["per_predicate_R@100/p0"] == pytest.approx(0.5)  # images 2 and 3 contain p0
    assert results["per_predicate_R@100/p2"] == 0.0


@pytest.mark.parametrize("height, recalled", [(4, True), (3, False)])
def test_iou_exactly_half_with_plus_one_pixels(height, recalled):
    # GT subject [0,0,9,9] covers 10x10 px; [0,0,9,4] covers 10x5 px: IoU 50/100 = 0.5 exactly (recalled);
    # [0,0,9,3] gives 0.4. Without the +1 the first would be 36/81 < 0.5.
    boxes = GT_BOXES.copy()
    boxes[0] = [0, 0, 9, height]
    iou = box_iou_plus1(GT_BOXES[0], boxes[0])
    assert iou == (0.5 if recalled else 0.4)
    results = evaluate([gt_record(1, [(0, 1, 0)])], [prediction([(0, 1, {0: 0.9})], boxes=boxes)])
    assert results["R@20"] == (1.0 if recalled else 0.0)


def test_wrong_label_is_not_recalled():
    labels = GT_LABELS.copy()
    labels[1] = 2
    results = evaluate([gt_record(1, [(0, 1, 0)])], [prediction([(0, 1, {0: 0.9})], labels=labels)])
    assert results["R@100"] == 0.0 and results["ng-R@100"] == 0.0


def test_evaluator_sorts_rows_itself_by_predicate_times_entity_scores():
    # Row order in the output does not matter: the low-probability row wins through its entity scores.
    boxes = np.concatenate([GT_BOXES, GT_BOXES[:2] + 100])
    labels = np.array([0, 1, 2, 0, 1])
    scores = [1.0, 1.0, 1.0, 0.1, 0.1]
    filler = [(3, 4, {3: 0.95})] * 30  # 0.95 x 0.01: below the real row
    rows = filler + [(0, 1, {0: 0.2})]
    results = evaluate([gt_record(1, [(0, 1, 0)])], [prediction(rows, boxes=boxes, labels=labels, scores=scores)])
    assert results["R@20"] == 1.0


def test_recalls_invariant_to_row_order():
    rng = np.random.default_rng(3)
    split = random_split(rng, 6, num_classes=8, num_predicates=5)
    predictions = [random_prediction(rng, r, 8, 5, num_boxes=20, num_rows=150) for r in split.records]
    shuffled = []
    for output in predictions:
        order = rng.permutation(len(output["rel_pairs"]))
        shuffled.append(dict(output, rel_pairs=output["rel_pairs"][order], rel_scores=output["rel_scores"][order]))
    first = evaluate(split.records, predictions, predicates=split.idx_to_predicate, classes=split.idx_to_label)
    second = evaluate(split.records, shuffled, predicates=split.idx_to_predicate, classes=split.idx_to_label)
    for key in first:
        assert first[key] == pytest.approx(second[key], abs=1e-12), key


def test_top_k_per_image_equals_a_stable_sort_of_each_image_with_ties():
    rng = np.random.default_rng(0)
    counts = [0, 250, 3, 120]
    image = np.repeat(np.arange(4), counts)
    scores = rng.integers(0, 5, image.size).astype(np.float64)
    selected, position, kth = _top_k_per_image(image, scores, 4, top_k=100)
    expected = []
    for i, start in enumerate(np.cumsum([0] + counts[:-1])):
        expected += list(start + np.argsort(-scores[image == i], kind="stable")[:100])
    assert selected.tolist() == expected
    assert position.tolist() == list(range(100)) + [0, 1, 2] + list(range(100))
    assert kth[0] == kth[2] == -np.inf and kth[1] == np.sort(scores[image == 1])[-100]


def test_an_image_matches_the_same_alone_or_in_a_batch():
    rng = np.random.default_rng(2)
    split = random_split(rng, 5, num_classes=6, num_predicates=4, boxes_per_image=8)
    predictions = [random_prediction(rng, r, 6, 4, num_boxes=n, num_rows=rows, coarse=True)
                   for r, n, rows in zip(split.records, (20, 0, 20, 20, 5), (300, 0, 40, 101, 100))]
    batched = match_images(predictions, split.records)
    for prediction, record, together in zip(predictions, split.records, batched):
        (alone,) = match_images([prediction], [record])
        for field in ("kept_rows", "graph_ranks", "free_ranks"):
            assert np.array_equal(getattr(alone, field), getattr(together, field)), field
    assert len(batched[0].kept_rows) >= 100 and len(batched[1].kept_rows) == 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), coarse=st.booleans(), num_rows=st.sampled_from([0, 5, 60, 130]))
def test_agrees_with_loop_reference(seed, coarse, num_rows):
    rng = np.random.default_rng(seed)
    num_classes, num_predicates = (4, 3) if coarse else (20, 10)
    split = random_split(rng, 4, num_classes, num_predicates, boxes_per_image=6, relations_per_image=5, coarse=coarse)
    predictions = [
        random_prediction(rng, record, num_classes, num_predicates, num_boxes=15, num_rows=num_rows, coarse=coarse)
        for record in split.records
    ]
    zero_shot = np.stack([rng.integers(0, num_classes, 8), rng.integers(0, num_classes, 8),
                          rng.integers(0, num_predicates, 8)], axis=1)
    ours = evaluate(split.records, predictions, zero_shot, split.idx_to_predicate, split.idx_to_label)
    reference = evaluate_reference(zip(split.records, predictions), split.idx_to_predicate,
                                   set(map(tuple, zero_shot.tolist())))
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_printed_block_matches_reference_format():
    results = {f"{m}@{k}": 0.0 for m in ("R", "ng-R", "zR", "ng-zR", "mR", "ng-mR") for k in (20, 50, 100)}
    results.update({"R@20": 0.2179, "R@50": 0.2712, "R@100": 0.2972, "ng-R@20": 0.2272, "ng-R@50": 0.3052,
                    "ng-R@100": 0.3547, "zR@20": 0.0134, "zR@50": 0.0274, "zR@100": 0.0384, "mR@20": 0.1115,
                    "mR@50": 0.1561, "mR@100": 0.1770, "AP50": 0.311, "AP": 0.173})
    for prefix in ("", "ng-"):
        results[f"per_predicate_{prefix}R@100/above"] = 0.1147
        results[f"per_predicate_{prefix}R@100/across"] = 0.0
    lines = format_results(results, ["above", "across"]).split("\n")
    assert lines[:4] == [
        "SGG eval:     R @ 20: 0.2179;     R @ 50: 0.2712;     R @ 100: 0.2972;  for mode=sgdet, type=Recall(Main).",
        "SGG eval:  ng-R @ 20: 0.2272;  ng-R @ 50: 0.3052;  ng-R @ 100: 0.3547;  for mode=sgdet, "
        "type=No Graph Constraint Recall(Main).",
        "SGG eval:    zR @ 20: 0.0134;    zR @ 50: 0.0274;    zR @ 100: 0.0384;  for mode=sgdet, "
        "type=Zero Shot Recall.",
        "SGG eval: ng-zR @ 20: 0.0000; ng-zR @ 50: 0.0000; ng-zR @ 100: 0.0000;  for mode=sgdet, "
        "type=No Graph Constraint Zero Shot Recall.",
    ]
    assert lines[4] == ("SGG eval:    mR @ 20: 0.1115;    mR @ 50: 0.1561;    mR @ 100: 0.1770;  for mode=sgdet, "
                        "type=Mean Recall.")
    assert lines[5] == "(above:0.1147) (across:0.0000)"
    assert lines[6].startswith("SGG eval: ng-mR @ 20: 0.0000;") and lines[7] == "(above:0.1147) (across:0.0000)"
    assert lines[8] == "Detection evaluation mAp=0.3110 (AP[.5:.95]=0.1730)"
