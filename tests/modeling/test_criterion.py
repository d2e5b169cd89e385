"""Targets, α/β predicate weights and the per-layer losses of the criterion."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from modeling.scene_graph_criterion import (SceneGraphCriterion, predicate_class_weights, relation_box_xyxy,
                                relation_targets)
from modeling.matcher import HungarianTripletMatcher


def test_predicate_weights_formula_on_a_small_case():
    weights = predicate_class_weights([90, 9, 1], 3, alpha=0.07, undersample=1.5, no_relation_weight=0.1)
    # f = 0.9, 0.09, 0.01: the first two are frequent enough for weight 1; the last gets
    # (0.07 / (0.01 + 1e-5)) ** 0.75 = 6.993007 ** 0.75 = 4.300292 (without the 1e-5: 7 ** 0.75 = 4.303517).
    torch.testing.assert_close(weights, torch.tensor([1.0, 1.0, 4.300292, 0.1]))


def test_predicate_weights_use_the_released_epsilon_not_a_count_floor():
    # f = 5 / 100000 = 5e-5: (0.07 / 6e-5) ** 0.75 = 1166.667 ** 0.75 = 199.6228 (the released formula); without
    # the 1e-5 it would be 1400 ** 0.75 = 228.87.  A predicate never seen (f = 0) gets 7000 ** 0.75 = 765.2856.
    weights = predicate_class_weights([99995, 5, 0], 3, alpha=0.07, undersample=1.5, no_relation_weight=0.1)
    torch.testing.assert_close(weights, torch.tensor([1.0, 199.6228, 765.2856, 0.1]))


def test_predicate_weights_span_one_to_about_two_hundred_on_a_vg_like_distribution():
    # A long-tailed distribution like VG150's training predicates: 50 classes, head ~16 %, tail share ~6e-5.
    counts = np.round(np.geomspace(120_000, 45, 50)).astype(np.int64)
    assert 5e-5 < counts[-1] / counts.sum() < 7e-5
    weights = predicate_class_weights(counts, 50, alpha=0.07, undersample=1.5, no_relation_weight=0.1)
    assert weights[:-1].min() == 1.0 and weights[-1] == pytest.approx(0.1)
    assert 150 < weights[:-1].max() < 250
    assert torch.all(weights[1:-1] >= weights[:-2])  # rarer predicates never weigh less
    assert torch.all(predicate_class_weights(None, 50, 0.07, 1.5, 0.1)[:-1] == 1.0)


def test_predicate_weights_errors_and_unseen_predicates():
    with pytest.raises(ValueError, match="NUM_RELATION_CLASSES"):
        predicate_class_weights([1, 2], 3, 0.07, 1.5, 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        predicate_class_weights([0, 0, 0], 3, 0.07, 1.5, 0.1)
    assert torch.isfinite(predicate_class_weights([10, 0, 5], 3, 0.07, 1.5, 0.1)).all()


def test_relation_box_spans_the_two_centres_or_falls_back_to_the_subject():
    subjects = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    objects = torch.tensor([[20.0, 30.0, 40.0, 50.0], [20.0, 0.0, 40.0, 10.0]])  # second pair: same centre y
    torch.testing.assert_close(relation_box_xyxy(subjects, objects),
                               torch.tensor([[5.0, 5.0, 30.0, 40.0], [0.0, 0.0, 10.0, 10.0]]))


def test_relation_box_falls_back_to_the_subject_below_a_span_of_1e_5_pixels():
    subjects = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3, dtype=torch.float64)
    # centre spans in x: 5e-6 px (degenerate), exactly 1e-5 px (degenerate: nonempty needs > 1e-5), 2e-5 px (kept)
    objects = torch.tensor([[0.0, 20.0, 10.00001, 40.0], [0.0, 20.0, 10.00002, 40.0], [0.0, 20.0, 10.00004, 40.0]],
                           dtype=torch.float64)
    boxes = relation_box_xyxy(subjects, objects)
    torch.testing.assert_close(boxes[:2], subjects[:2])
    torch.testing.assert_close(boxes[2], torch.tensor([5.0, 5.0, 5.00002, 30.0], dtype=torch.float64))


def test_relation_targets_are_normalised_cxcywh_of_the_resized_image():
    instances = {"boxes": torch.tensor([[0.0, 0.0, 50.0, 20.0], [50.0, 20.0, 100.0, 40.0]]),
                 "labels": torch.tensor([3, 7]), "relations": torch.tensor([[1, 0, 2]])}
    target = relation_targets(instances, (40, 100), torch.device("cpu"), num_classes=8, num_relation_classes=3)
    assert target["subject_labels"].tolist() == [7] and target["object_labels"].tolist() == [3]
    assert target["relation_labels"].tolist() == [2]
    torch.testing.assert_close(target["subject_boxes"], torch.tensor([[0.75, 0.75, 0.5, 0.5]]))
    torch.testing.assert_close(target["object_boxes"], torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    torch.testing.assert_close(target["relation_boxes"], torch.tensor([[0.5, 0.5, 0.5, 0.5]]))


@pytest.mark.parametrize("field,value,message", [
    ("labels", [3, 8], "MODEL.DETR.NUM_CLASSES"),
    ("relations", [[1, 0, 3]], "MODEL.DETR.NUM_RELATION_CLASSES"),
    ("relations", [[2, 0, 1]], "outside"),
    ("labels", [3], "2 boxes but 1 labels"),
])
def test_relation_targets_reject_annotations_outside_the_model(field, value, message):
    instances = {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([3, 7]),
                 "relations": torch.tensor([[1, 0, 2]])}
    instances[field] = torch.tensor(value)
    with pytest.raises(ValueError, match=message):
        relation_targets(instances, (40, 100), torch.device("cpu"), num_classes=8, num_relation_classes=3)


def _targets():
    return [
        {"subject_labels": torch.tensor([1, 2]), "object_labels": torch.tensor([3, 0]),
         "relation_labels": torch.tensor([0, 2]),
         "subject_boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]]),
         "object_boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.2, 0.7, 0.2, 0.3]]),
         "relation_boxes": torch.tensor([[0.4, 0.4, 0.2, 0.2], [0.45, 0.65, 0.5, 0.1]])},
        {"subject_labels": torch.tensor([4]), "object_labels": torch.tensor([4]), "relation_labels": torch.tensor([1]),
         "subject_boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]]), "object_boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1]]),
         "relation_boxes": torch.tensor([[0.35, 0.35, 0.3, 0.3]])},
    ]


def _perfect_outputs(targets, num_layers=2, num_queries=4, num_classes=5, num_predicates=3):
    """Matched queries (query i ↔ relation i, i < Q) predict the targets exactly; the rest predict "nothing"."""
    out = {}
    for branch in ("subject", "object", "relation"):
        classes = num_predicates if branch == "relation" else num_classes
        logits = torch.full((num_layers, len(targets), num_queries, classes + 1), -30.0)
        logits[..., -1] = 30.0
        boxes = torch.tensor([0.5, 0.5, 0.1, 0.1]).repeat(num_layers, len(targets), num_queries, 1)
        for image, target in enumerate(targets):
            n = min(len(target["relation_labels"]), num_queries)  # relations beyond Q stay unmatched
            logits[:, image, :n, -1] = -30.0
            logits[:, image, torch.arange(n), target[f"{branch}_labels"][:n]] = 30.0
            boxes[:, image, :n] = target[f"{branch}_boxes"][:n]
        out[f"{branch}_logits"], out[f"{branch}_boxes"] = logits, boxes
    return out


def _criterion(predicate_weights=None, deep_supervision=True):
    if predicate_weights is None:
        predicate_weights = torch.tensor([1.0, 1.0, 1.0, 0.1])
    return SceneGraphCriterion(5, 3, HungarianTripletMatcher(), class_weight=1.0, l1_weight=5.0, giou_weight=2.0,
                               no_object_weight=0.1, predicate_weights=predicate_weights,
                               deep_supervision=deep_supervision)


def test_perfect_predictions_cost_nothing_and_every_layer_is_reported():
    targets = _targets()
    losses = _criterion()(_perfect_outputs(targets), targets)
    assert set(losses) == {f"loss_{b}_{t}_{layer}" for b in ("sub", "obj", "rel") for t in ("ce", "l1", "giou")
                           for layer in (0, 1)}
    for name, value in losses.items():
        assert value.item() == pytest.approx(0.0, abs=1e-5), name


def test_box_losses_are_normalised_by_the_number_of_relations():
    targets = _targets()
    outputs = _perfect_outputs(targets)
    outputs["subject_boxes"][1, 0, 0, 0] += 0.03  # layer 1: one of the three relations off by 0.03 in cx
    losses = _criterion()(outputs, targets)
    assert losses["loss_sub_l1_1"].item() == pytest.approx(5.0 * 0.03 / 3, rel=1e-4)
    assert losses["loss_sub_l1_0"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_sub_giou_1"].item() > 0 and losses["loss_obj_l1_1"].item() == pytest.approx(0.0, abs=1e-6)


def test_box_losses_are_normalised_by_the_matched_count_when_an_image_has_more_relations_than_queries():
    # One image, T = 5 relations, Q = 4 queries: 4 relations are matched (sum of min(Q, T)), so one box off by
    # 0.03 in cx costs 5 * 0.03 / 4 = 0.0375 (the released normaliser), not 5 * 0.03 / 5 = 0.03.
    target = {"subject_labels": torch.tensor([1, 2, 3, 4, 0]), "object_labels": torch.tensor([0, 1, 2, 3, 4]),
              "relation_labels": torch.tensor([0, 1, 2, 0, 1])}
    centres = torch.tensor([0.2, 0.35, 0.5, 0.65, 0.9])
    for branch in ("subject", "object", "relation"):
        target[f"{branch}_boxes"] = torch.stack([centres, centres, torch.full((5,), 0.1), torch.full((5,), 0.1)], 1)
    outputs = _perfect_outputs([target], num_layers=1, num_queries=4)
    outputs["subject_boxes"][0, 0, 0, 0] += 0.03
    losses = _criterion(deep_supervision=False)(outputs, [target])
    assert losses["loss_sub_l1_0"].item() == pytest.approx(5.0 * 0.03 / 4, rel=1e-4)
    assert losses["loss_obj_l1_0"].item() == pytest.approx(0.0, abs=1e-6)


def test_an_image_without_relations_in_the_batch_gives_finite_losses():
    targets = _targets()
    empty = {key: value[:0] for key, value in targets[1].items()}
    outputs = _perfect_outputs([targets[0], empty])
    losses = _criterion()(outputs, [targets[0], empty])
    assert all(torch.isfinite(v) for v in losses.values())
    only_empty = _criterion()(_perfect_outputs([empty]), [empty])
    assert all(torch.isfinite(v) for v in only_empty.values())
    assert only_empty["loss_sub_l1_1"].item() == 0.0 and only_empty["loss_rel_giou_1"].item() == 0.0


def test_predicate_cross_entropy_uses_the_class_weights():
    targets = _targets()
    outputs = _perfect_outputs(targets)
    torch.manual_seed(0)
    outputs["relation_logits"] = torch.randn_like(outputs["relation_logits"])
    weights = torch.tensor([1.0, 8.0, 2.0, 0.1])
    losses = _criterion(weights, deep_supervision=False)(outputs, targets)
    assert not any(name.endswith("_0") for name in losses)
    # The matcher keeps query i ↔ relation i (boxes and entity classes are perfect there).
    expected_classes = torch.tensor([[0, 2, 3, 3], [1, 3, 3, 3]])
    expected = F.cross_entropy(outputs["relation_logits"][1].reshape(-1, 4), expected_classes.reshape(-1),
                               weight=weights)
    assert losses["loss_rel_ce_1"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_wrong_predicate_weight_shape_is_rejected():
    with pytest.raises(ValueError, match="predicate_weights"):
        _criterion(torch.ones(3))
