"""Fixed-shape pieces of the hot path: the static image sizes, padded relation targets, the clamp-based GIoU loss
and the SDPA attention that keeps nn.MultiheadAttention's parameters."""
import pytest
import torch
from torch import nn
from torchvision.ops import generalized_box_iou_loss

from modeling.image_list import ImageList
from modeling.matcher import HungarianTripletMatcher, paired_generalized_box_iou_loss
from modeling.meta_arch_base import static_image_sizes
from modeling.scene_graph_criterion import SceneGraphCriterion, pad_relation_targets
from modeling.transformer_layers import FusedMultiheadAttention

MEAN, STD = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)


def test_static_sizes_are_the_aspect_groups_rounded_to_the_divisibility():
    assert static_image_sizes(128, 160, 32) == [(128, 160), (160, 128), (160, 160)]
    assert static_image_sizes(100, 150, 32) == [(128, 160), (160, 128), (160, 160)]


@pytest.mark.parametrize("shapes,padded", [
    ([(100, 150), (128, 120)], (128, 160)),  # landscape group
    ([(150, 100), (160, 128)], (160, 128)),  # portrait group
    ([(100, 150), (150, 100)], (160, 160)),  # mixed: the square size
])
def test_a_batch_is_padded_to_the_smallest_fixed_size_that_holds_it(shapes, padded):
    images = [torch.full((3, h, w), 7, dtype=torch.uint8) for h, w in shapes]
    batch = ImageList.from_tensors(images, 32, MEAN, STD, static_image_sizes(128, 160, 32))
    assert tuple(batch.tensor.shape[-2:]) == padded and batch.image_sizes == shapes
    for index, (h, w) in enumerate(shapes):
        assert not batch.padding_mask[index, :h, :w].any() and batch.padding_mask[index].sum() == padded[0] * padded[1] - h * w
        assert (batch.tensor[index, :, :h, :w] == 7).all() and (batch.tensor[index, :, h:, :] == 0).all()


def test_an_image_larger_than_every_fixed_size_is_a_clear_error():
    with pytest.raises(ValueError, match="MODEL.STATIC_SHAPES"):
        ImageList.from_tensors([torch.zeros(3, 200, 100, dtype=torch.uint8)], 32, MEAN, STD,
                               static_image_sizes(128, 160, 32))


def _target(num):
    return {f"{b}_{kind}": (torch.arange(num) + 1 if kind == "labels" else torch.rand(num, 4))
            for b in ("subject", "object", "relation") for kind in ("labels", "boxes")}


def test_targets_are_padded_to_the_fixed_count_with_a_validity_mask():
    targets = [_target(2), _target(0), _target(3)]
    padded = pad_relation_targets(targets, max_relations=5)
    assert padded["subject_labels"].shape == (3, 5) and padded["relation_boxes"].shape == (3, 5, 4)
    assert padded["valid"].tolist() == [[True, True, False, False, False], [False] * 5, [True] * 3 + [False] * 2]
    assert padded["object_labels"][2].tolist() == [1, 2, 3, 0, 0]
    torch.testing.assert_close(padded["object_boxes"][2, :3], targets[2]["object_boxes"])
    assert (padded["object_boxes"][0, 2:] == 0.5).all()  # a valid box in the padding: finite masked losses
    assert pad_relation_targets(targets)["subject_labels"].shape == (3, 3)  # without a fixed count: the batch max
    assert pad_relation_targets([_target(0)])["valid"].shape == (1, 1)
    with pytest.raises(ValueError, match="MODEL.STATIC_SHAPES.MAX_RELATIONS = 2"):
        pad_relation_targets(targets, max_relations=2)


def test_losses_with_fixed_size_targets_equal_those_with_the_batch_maximum():
    torch.manual_seed(0)
    targets = [_target(2), _target(1)]
    for target in targets:
        for branch in ("subject", "object", "relation"):
            target[f"{branch}_boxes"] = torch.tensor([[0.3, 0.4, 0.2, 0.3]]).repeat(len(target["subject_labels"]), 1)
            target[f"{branch}_labels"] = target[f"{branch}_labels"] % 3
    outputs = {}
    for branch, classes in (("subject", 5), ("object", 5), ("relation", 3)):
        outputs[f"{branch}_logits"] = torch.randn(2, 2, 4, classes + 1)
        outputs[f"{branch}_boxes"] = torch.rand(2, 2, 4, 4) * 0.5 + 0.2
    criterion = SceneGraphCriterion(5, 3, HungarianTripletMatcher(), 1.0, 5.0, 2.0, 0.1, torch.ones(4))
    dynamic = criterion(outputs, targets)
    criterion.max_relations = 6
    fixed = criterion(outputs, targets)
    assert fixed.keys() == dynamic.keys()
    for name in fixed:
        torch.testing.assert_close(fixed[name], dynamic[name], msg=name)


def test_clamp_giou_loss_equals_torchvision_values_and_gradients():
    torch.manual_seed(0)
    low = torch.rand(64, 2)
    boxes1 = torch.cat([low, low + torch.rand(64, 2) * 0.5], 1).requires_grad_()
    low = torch.rand(64, 2)
    boxes2 = torch.cat([low, low + torch.rand(64, 2) * 0.5], 1)
    boxes2[:8] = boxes1.detach()[:8] + 2.0  # disjoint pairs: no intersection, GIoU < 0
    ours = paired_generalized_box_iou_loss(boxes1, boxes2)
    reference = generalized_box_iou_loss(boxes1, boxes2, reduction="none")
    torch.testing.assert_close(ours, reference)
    assert (ours[:8] > 1).all()
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), boxes1)[0],
                               torch.autograd.grad(reference.sum(), boxes1)[0])
    assert paired_generalized_box_iou_loss(boxes1.detach().view(4, 16, 4), boxes2.view(4, 16, 4)).shape == (4, 16)


@pytest.mark.parametrize("kdim", [16, 48])
def test_sdpa_attention_keeps_the_parameters_and_results_of_nn_multihead_attention(kdim):
    torch.manual_seed(3)
    reference = nn.MultiheadAttention(16, 4, dropout=0.1, kdim=kdim, vdim=kdim, batch_first=True)
    torch.manual_seed(3)
    fused = FusedMultiheadAttention(16, 4, dropout=0.1, kdim=kdim, vdim=kdim)
    state = reference.state_dict()
    assert list(fused.state_dict()) == list(state)  # in_proj_weight or q/k/v_proj_weight, in_proj_bias, out_proj.*
    assert all(torch.equal(fused.state_dict()[name], value) for name, value in state.items())
    query = torch.randn(2, 5, 16, requires_grad=True)
    key, value = torch.randn(2, 7, kdim), torch.randn(2, 7, kdim)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 4:] = True
    reference.eval(), fused.eval()  # no dropout at test time: deterministic
    expected = reference(query, key, value, key_padding_mask=padding, need_weights=False)[0]
    got = fused(query, key, value, key_padding_mask=padding)[0]
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), query)[0],
                               torch.autograd.grad(expected.sum(), query)[0])
    with pytest.raises(ValueError, match="need_weights"):
        fused(query, key, value, need_weights=True)
