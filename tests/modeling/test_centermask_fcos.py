"""FCOS of the CenterMask encoder: head size, per-level scales, batched target assignment, losses."""
from types import SimpleNamespace

import pytest
import torch
from torchvision.models.detection import FCOS as TorchvisionFCOS
from torchvision.models.detection.fcos import FCOSHead

from modeling.centermask.fcos import FCOS
from modeling.centermask.fcos_head import ScaledFCOSHead
from modeling.centermask.fcos_targets import assign_fcos_targets, fcos_anchors, pad_targets

STRIDES = [8, 16, 32, 64, 128]


def _feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    return [(-(-height // s), -(-width // s)) for s in STRIDES]


def _random_boxes(generator: torch.Generator, count: int, image_size: int) -> torch.Tensor:
    """``count`` boxes with sides from 4 px to most of the image, inside the image."""
    sides = 4 + torch.rand(count, 2, generator=generator) * (image_size - 8)
    corners = torch.rand(count, 2, generator=generator) * (image_size - sides)
    return torch.cat((corners, corners + sides), dim=1)


def test_head_with_150_classes_has_centermask2_parameter_count():
    head = ScaledFCOSHead(256, num_classes=150, num_levels=5)
    torchvision_count = sum(p.numel() for p in FCOSHead(256, 1, 150).parameters())
    assert sum(p.numel() for p in head.parameters()) == 5_082_016
    assert sum(p.numel() for p in head.parameters()) == torchvision_count + 5


def test_head_output_layout_and_level_scales():
    torch.manual_seed(0)
    head = ScaledFCOSHead(32, num_classes=3, num_levels=2)
    torch.nn.init.normal_(head.regression_head.bbox_reg.weight, std=0.5)
    features = [torch.randn(2, 32, 4, 6), torch.randn(2, 32, 2, 3)]
    out = head(features)
    assert out["cls_logits"].shape == (2, 30, 3)
    assert out["bbox_regression"].shape == (2, 30, 4)
    assert out["bbox_ctrness"].shape == (2, 30, 1)
    assert (out["bbox_regression"] >= 0).all() and (out["bbox_regression"] > 0).any()

    with torch.no_grad():
        head.scales[1] = 3.0
    scaled = head(features)["bbox_regression"]
    torch.testing.assert_close(scaled[:, :24], out["bbox_regression"][:, :24])
    torch.testing.assert_close(scaled[:, 24:], 3.0 * out["bbox_regression"][:, 24:])


def test_head_rejects_wrong_number_of_levels():
    head = ScaledFCOSHead(32, num_classes=3, num_levels=5)
    with pytest.raises(ValueError, match="expected 5 levels, got 2"):
        head([torch.randn(1, 32, 4, 4)] * 2)


def test_anchors_are_stride_squares_centred_on_cells():
    anchors = fcos_anchors([(2, 3), (1, 2)], [8, 16], torch.device("cpu"))
    assert anchors.shape == (8, 4)
    torch.testing.assert_close(anchors[0], torch.tensor([0.0, 0.0, 8.0, 8.0]))
    torch.testing.assert_close(anchors[4], torch.tensor([8.0, 8.0, 16.0, 16.0]))  # row 1, column 1
    torch.testing.assert_close(anchors[7], torch.tensor([16.0, 0.0, 32.0, 16.0]))  # level 2, column 1


def test_batched_assignment_equals_torchvision_rule():
    """Our one-shot (B, A, M) assignment gives torchvision ``FCOS.compute_loss``'s per-image matches."""
    generator = torch.Generator().manual_seed(3)
    image_size = 512
    sizes = _feature_sizes(image_size, image_size)
    anchors = fcos_anchors(sizes, STRIDES, torch.device("cpu"))
    num_anchors_per_level = [h * w for h, w in sizes]
    targets = [
        {"boxes": _random_boxes(generator, n, image_size), "labels": torch.randint(0, 5, (n,), generator=generator)}
        for n in (12, 0, 5)
    ]
    recorder = SimpleNamespace(compute_loss=lambda targets, outputs, anchors, matched_idxs: matched_idxs)
    reference = TorchvisionFCOS.compute_loss(
        SimpleNamespace(center_sampling_radius=1.5, head=recorder),
        targets,
        {},
        [anchors] * len(targets),
        num_anchors_per_level,
    )

    matched = assign_fcos_targets(anchors, num_anchors_per_level, *pad_targets(targets, torch.device("cpu"))[::2])
    for ours, theirs in zip(matched, reference):
        torch.testing.assert_close(ours, theirs)
    assert (matched[0] >= 0).sum() > 20  # the comparison covers many positives ...
    assert len(set(matched[0][matched[0] >= 0].tolist())) >= 10  # ... of most boxes
    assert (matched[1] == -1).all()


def _tiny_fcos(num_classes: int = 4) -> FCOS:
    return FCOS(64, num_classes, STRIDES, score_thresh=0.05, nms_thresh=0.6, pre_nms_topk=100, detections_per_image=5)


def _tiny_features(batch: int, size: int = 64) -> list[torch.Tensor]:
    return [torch.randn(batch, 64, h, w) for h, w in _feature_sizes(size, size)]


def test_losses_fall_when_overfitting_one_box():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    fcos = _tiny_fcos()
    features = _tiny_features(1)
    targets = [{"boxes": torch.tensor([[8.0, 12.0, 44.0, 52.0]]), "labels": torch.tensor([2])}]
    optimizer = torch.optim.Adam(fcos.parameters(), lr=1e-3)
    history = []
    for _ in range(15):
        _, losses = fcos(features, [(64, 64)], targets)
        assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
        assert all(torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        history.append({name: value.item() for name, value in losses.items()})
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    for name in ("loss_fcos_cls", "loss_fcos_loc"):
        assert history[-1][name] < 0.5 * history[0][name], (name, history[0][name], history[-1][name])
    assert sum(history[-1].values()) < 0.6 * sum(history[0].values())


def test_losses_with_no_boxes_anywhere_are_finite_background_only():
    torch.manual_seed(0)
    fcos = _tiny_fcos()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = fcos(_tiny_features(2), [(64, 64), (48, 64)], [empty, empty])
    assert losses["loss_fcos_cls"].item() > 0 and torch.isfinite(losses["loss_fcos_cls"])
    assert losses["loss_fcos_loc"].item() == 0 and losses["loss_fcos_ctr"].item() == 0
    sum(losses.values()).backward()
    assert fcos.head.classification_head.cls_logits.weight.grad.abs().sum() > 0
