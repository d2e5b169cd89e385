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
    # Triplets 0 and 1 become identical (A, C, predicate 1) after the mapping; triplet 1's predicate is surer.
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

    assert result["rel_pairs"].tolist() == [[a, c], [b, a2]]
    torch.testing.assert_close(result["rel_scores"], torch.tensor([[0.02, 0.9, 0.03], [0.6, 0.1, 0.1]]))
    row_scores = (result["scores"][result["rel_pairs"][:, 0]] * result["scores"][result["rel_pairs"][:, 1]]
                  * result["rel_scores"].max(1).values)
    assert row_scores.tolist() == sorted(row_scores.tolist(), reverse=True)
    assert row_scores[0].item() == pytest.approx(0.9 * 0.95 * 0.9, rel=1e-5)


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


def test_invalid_settings_name_the_config_key():
    with pytest.raises(ValueError, match="TEST.NMS_THRESH"):
        SceneGraphPostProcessor(0.0, 300)
    with pytest.raises(ValueError, match="TEST.RELATIONS_PER_IMAGE"):
        SceneGraphPostProcessor(0.5, 0)
