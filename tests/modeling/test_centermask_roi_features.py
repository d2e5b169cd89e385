"""CenterMask's level rule, batched multi-level RoIAlign, spatial attention and the box embedding."""
import math

import pytest
import torch
from torchvision.ops import roi_align

from modeling.centermask.box_embedding import BoxSineEmbedding
from modeling.centermask.roi_features import assign_boxes_to_levels, image_areas_of_rois, multilevel_roi_align
from modeling.centermask.spatial_attention import SpatialAttention


def test_level_rule_hand_numbers():
    """800×800 image (640,000 px²): k = ceil(5 - log2(640000 / box area)), clamped to 3..5."""
    boxes = torch.tensor(
        [
            [0.0, 0.0, 100.0, 100.0],  # ratio 64: 5 - 6 = -1 -> P3
            [0.0, 0.0, 400.0, 400.0],  # ratio 4: exactly 3 -> P3
            [0.0, 0.0, 500.0, 500.0],  # ratio 2.56: ceil(3.64) -> P4
            [0.0, 0.0, 400.0, 800.0],  # ratio 2: exactly 4 -> P4
            [100.0, 100.0, 700.0, 700.0],  # ratio 1.78: ceil(4.17) -> P5
            [0.0, 0.0, 800.0, 800.0],  # the whole image -> P5
            [10.0, 10.0, 10.0, 30.0],  # no area -> smallest level
        ]
    )
    levels = assign_boxes_to_levels(boxes, torch.full((7,), 640000.0), min_level=3, max_level=5)
    assert levels.tolist() == [3, 3, 4, 4, 5, 5, 3]


def test_level_rule_is_relative_to_each_image():
    box = torch.tensor([[0.0, 0.0, 300.0, 300.0]] * 2)
    rois = torch.cat((torch.tensor([[0.0], [1.0]]), box), dim=1)
    areas = image_areas_of_rois(rois, [(320, 320), (1200, 1200)])
    assert areas.tolist() == [102400.0, 1440000.0]
    assert assign_boxes_to_levels(box, areas, 3, 5).tolist() == [5, 3]


def test_batched_roi_align_equals_per_box_loop():
    torch.manual_seed(0)
    features = {level: torch.randn(2, 8, 128 // 2**level, 96 // 2**level) for level in (3, 4, 5)}
    image_sizes = [(128, 96), (100, 90)]
    image_idx = torch.tensor([0, 1] * 6)
    extent = torch.tensor([[w, h] for h, w in image_sizes], dtype=torch.float32)[image_idx]  # (12, 2) as (w, h)
    sides = extent * torch.linspace(0.15, 1.0, 12)[:, None]  # from P3-sized to whole-image boxes
    corners = torch.rand(12, 2) * (extent - sides)
    boxes = torch.cat((corners, corners + sides), dim=1)
    rois = torch.cat((image_idx[:, None].float(), boxes), dim=1)
    levels = assign_boxes_to_levels(boxes, image_areas_of_rois(rois, image_sizes), 3, 5)
    assert set(levels.tolist()) == {3, 4, 5}  # the boxes exercise every level

    batched = multilevel_roi_align(features, rois, levels, output_size=7)

    for i in range(len(rois)):
        image = int(rois[i, 0])
        w, h = boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]
        level = min(5, max(3, math.ceil(5 - math.log2(image_sizes[image][0] * image_sizes[image][1] / (w * h)))))
        reference = roi_align(
            features[level][image : image + 1],
            [boxes[i : i + 1]],
            7,
            spatial_scale=1 / 2**level,
            sampling_ratio=0,
            aligned=True,
        )
        torch.testing.assert_close(batched[i : i + 1], reference)


def test_low_precision_features_keep_exact_box_coordinates():
    torch.manual_seed(0)
    features = {level: torch.randn(1, 4, 1024 // 2**level, 1024 // 2**level).bfloat16() for level in (3, 4, 5)}
    rois = torch.tensor([[0.0, 701.3, 613.7, 733.9, 650.2]])  # bf16 would round these to multiples of 4
    pooled = multilevel_roi_align(features, rois, torch.tensor([3]), output_size=7)
    reference = roi_align(features[3].float(), rois, 7, spatial_scale=1 / 8, sampling_ratio=0, aligned=True)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, reference)


def test_roi_align_with_no_boxes():
    features = {level: torch.randn(1, 4, 8, 8) for level in (3, 4, 5)}
    pooled = multilevel_roi_align(features, torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64), output_size=7)
    assert pooled.shape == (0, 4, 7, 7)


def test_spatial_attention_matches_its_formula():
    torch.manual_seed(0)
    attention = SpatialAttention()
    assert sum(p.numel() for p in attention.parameters()) == 18
    with torch.no_grad():  # centre taps only: attention = sigmoid(2 * mean - max) cell by cell
        attention.conv.weight.zero_()
        attention.conv.weight[0, 0, 1, 1] = 2.0
        attention.conv.weight[0, 1, 1, 1] = -1.0
    x = torch.randn(3, 5, 7, 7)
    expected = x * torch.sigmoid(2 * x.mean(dim=1, keepdim=True) - x.amax(dim=1, keepdim=True))
    torch.testing.assert_close(attention(x), expected)


def test_box_embedding_depends_on_the_normalised_box():
    torch.manual_seed(0)
    embedding = BoxSineEmbedding(32)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [20.0, 40.0, 60.0, 120.0], [10.0, 20.0, 30.0, 61.0]])
    sizes = torch.tensor([[100.0, 50.0], [200.0, 100.0], [100.0, 50.0]])
    out = embedding(boxes, sizes)
    assert out.shape == (3, 32)
    torch.testing.assert_close(out[0], out[1])  # the same box relative to its image
    assert not torch.allclose(out[0], out[2])
    with pytest.raises(ValueError, match="multiple of 8"):
        BoxSineEmbedding(20)
