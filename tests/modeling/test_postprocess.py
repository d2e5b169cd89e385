"""Inference post-processing on hand-made predictions: NMS mapping, de-duplication, ranking, scaling."""
import pytest
import torch

from modeling.postprocess import SceneGraphPostProcessor


def _logits(distribution_rows):
    """Logits whose softmax is the given rows (each row: probabilities of the real classes, rest = background)."""
    probs = torch.tensor(distribution_rows, dtype=torch.float32)
    return torch.cat([probs, 1 - probs.sum(1, keepdim=True)], 1).log()


def _outputs():
    # Subjects: A, A' (≈ A, same class, lower score), B.  Objects: C, C' (≈ C, lower score), A'' (≈ A, other class).
    subject_boxes = [[0.3, 0.3, 0.2, 0.2], [0.31, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]
    object_boxes = [[0.5, 0.8, 0.2, 0.1], [0.5, 0.81, 0.2, 0.1], [0.3, 0.31, 0.2, 0.2]]
    subject_probs = [[0, 0.9, 0, 0], [0, 0.8, 0, 0], [0, 0, 0.7, 0]]
    object_probs = [[0, 0, 0, 0.95], [0, 0, 0, 0.6], [0, 0, 0.5, 0]]
    # Triplets 0 and 1 become identical (A, C, predicate 1) after the mapping; triplet 1's predicate is surer, but
    # rows are ranked by each query's own scores: triplet 0 0.8 x 0.9 x 0.95 = 0.684 > triplet 1 0.9 x 0.8 x 0.6.
    predicate_probs = [[0.05, 0.8, 0.05], [0.02, 0.9, 0.03], [0.6, 0.1, 0.1]]
    return {
        "subject_logits": _logits(subject_probs)[None], "object_logits": _logits(object_probs)[None],
        "relation_logits": _logits(predicate_probs)[None],
        "subject_boxes": torch.tensor([subject_boxes]), "object_boxes": torch.tensor([object_boxes]),
        "relation_boxes": torch.rand(1, 3, 4),
    }


def _box_index(result, xyxy):
    matches = (result["boxes"] - torch.tensor(xyxy)).abs().sum(1) < 1e-3
    assert matches.sum() == 1, (xyxy, result["boxes"])
    return int(matches.nonzero()[0, 0])


def test_nms_mapping_deduplication_ranking_and_original_pixels():
    (result,) = SceneGraphPostProcessor(0.5, 300)(_outputs(), [(200, 100)])  # (height, width)
    assert result["boxes"].dtype == torch.float32 and result["rel_pairs"].dtype == torch.int64
    assert len(result["boxes"]) == 4  # A', C' suppressed; A'' survives (class-aware NMS)
    a = _box_index(result, [20.0, 40.0, 40.0, 80.0])
    b = _box_index(result, [60.0, 120.0, 80.0, 160.0])
    c = _box_index(result, [40.0, 150.0, 60.0, 170.0])
    a2 = _box_index(result, [20.0, 42.0, 40.0, 82.0])
    assert result["labels"][[a, b, c, a2]].tolist() == [1, 2, 3, 2]
    torch.testing.assert_close(result["scores"][[a, b, c, a2]], torch.tensor([0.9, 0.7, 0.95, 0.5]))

    # Triplet 0 (0.684) is ranked first and triplet 1 (0.432, same kept subject/object/predicate) is dropped;
    # triplet 2: 0.6 x 0.7 x 0.5 = 0.21.  (Ranking by the kept boxes' scores would keep triplet 1 instead:
    # 0.9 x 0.9 x 0.95 = 0.7695 > 0.684.)
    assert result["rel_pairs"].tolist() == [[a, c], [b, a2]]
    torch.testing.assert_close(result["rel_scores"], torch.tensor([[0.05, 0.8, 0.05], [0.6, 0.1, 0.1]]))
    assert result["rel_ranking_scores"].dtype == torch.float32
    torch.testing.assert_close(result["rel_ranking_scores"], torch.tensor([0.684, 0.21]))


def test_without_suppression_every_box_is_kept_and_the_cap_applies():
    (result,) = SceneGraphPostProcessor(1.0, 300)(_outputs(), [(200, 100)])
    assert len(result["boxes"]) == 6 and len(result["rel_pairs"]) == 3
    (capped,) = SceneGraphPostProcessor(0.5, 1)(_outputs(), [(200, 100)])
    assert capped["rel_pairs"].shape == (1, 2) and capped["rel_scores"].shape == (1, 3)


def test_boxes_are_clamped_to_the_image_and_batches_are_split():
    outputs = {k: torch.cat([v, v]) for k, v in _outputs().items()}
    outputs["subject_boxes"][1, 2] = torch.tensor([0.95, 0.95, 0.3, 0.3])
    first, second = SceneGraphPostProcessor(0.5, 300)(outputs, [(200, 100), (50, 60)])
    assert len(first["rel_pairs"]) == 2 and len(second["rel_pairs"]) == 2
    assert second["boxes"][:, 2].max() <= 60 and second["boxes"][:, 3].max() <= 50


def _two_subjects_sticking_out_of_the_image():
    # Subjects (class 0, scores 0.9 / 0.8): x [0.70, 1.30] and x [0.70, 0.98], y [0.4, 0.6].  Unclipped IoU
    # 0.28 / 0.60 = 0.467 (both kept at NMS 0.5); clipped at x = 1 first it would be 0.28 / 0.30 = 0.933.
    # Objects: the same box twice (class 1, scores 0.7 / 0.6): the second is suppressed and maps to the first.
    return {
        "subject_logits": _logits([[0.9, 0], [0.8, 0]])[None], "object_logits": _logits([[0, 0.7], [0, 0.6]])[None],
        "relation_logits": _logits([[0.5, 0.2], [0.1, 0.6]])[None],
        "subject_boxes": torch.tensor([[[1.0, 0.5, 0.6, 0.2], [0.84, 0.5, 0.28, 0.2]]]),
        "object_boxes": torch.tensor([[[0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]]]),
        "relation_boxes": torch.rand(1, 2, 4),
    }


def test_nms_and_the_mapping_use_the_unclipped_boxes_and_clipping_comes_last():
    (result,) = SceneGraphPostProcessor(0.5, 300)(_two_subjects_sticking_out_of_the_image(), [(100, 200)])
    assert len(result["boxes"]) == 3  # both subjects kept (clipping first would keep 2 boxes)
    s1 = _box_index(result, [140.0, 40.0, 200.0, 60.0])  # x2 = 1.3 x 200 = 260, clipped to 200 at the end
    s2 = _box_index(result, [140.0, 40.0, 196.0, 60.0])
    o = _box_index(result, [20.0, 10.0, 60.0, 30.0])
    torch.testing.assert_close(result["scores"][[s1, s2, o]], torch.tensor([0.9, 0.8, 0.7]))
    # rows: query 0 (0.5 x 0.9 x 0.7 = 0.315), query 1 (0.6 x 0.8 x 0.6 = 0.288); both objects map to o.
    assert result["rel_pairs"].tolist() == [[s1, o], [s2, o]]
    torch.testing.assert_close(result["rel_ranking_scores"], torch.tensor([0.315, 0.288]))


def test_two_step_scaling_through_the_input_size_and_a_degenerate_box_never_gives_nan():
    outputs = _two_subjects_sticking_out_of_the_image()
    outputs["object_boxes"][0, 1] = torch.tensor([0.5, 0.5, 0.0, 0.0])  # an empty box: IoU 0, never NaN
    (direct,) = SceneGraphPostProcessor(0.5, 300)(outputs, [(100, 200)])
    (two_step,) = SceneGraphPostProcessor(0.5, 300)(outputs, [(100, 200)], [(40, 80)])
    torch.testing.assert_close(two_step["boxes"], direct["boxes"])
    assert len(direct["boxes"]) == 4 and torch.isfinite(direct["rel_ranking_scores"]).all()
    # The empty object box is its class's second kept box; with IoU 0 to every kept box it maps to the first
    # kept box of its class (argmax on ties), as the released mapping does.
    o = _box_index(direct, [20.0, 10.0, 60.0, 30.0])
    assert direct["rel_pairs"][:, 1].tolist() == [o, o]


def test_invalid_settings_name_the_config_key():
    with pytest.raises(ValueError, match="TEST.NMS_THRESH"):
        SceneGraphPostProcessor(0.0, 300)
    with pytest.raises(ValueError, match="TEST.RELATIONS_PER_IMAGE"):
        SceneGraphPostProcessor(0.5, 0)
