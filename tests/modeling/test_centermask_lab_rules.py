"""The lab's (centermask2) FCOS rules behind MODEL.CENTERMASK keys: threshold before centerness, NMS on unclipped
boxes, post-NMS top-k in training, the "fcos" box loss."""
import math

import pytest
import torch
from torchvision.models.detection._utils import BoxLinearCoder

from configs.defaults import get_cfg
from modeling.centermask.fcos import FCOS, build_fcos
from modeling.centermask.fcos_losses import centerness_targets, fcos_giou_loss
from modeling.centermask.fcos_postprocess import select_detections
from modeling.centermask.fcos_targets import fcos_anchors

CODER = BoxLinearCoder(normalize_by_size=True)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _one_location(class_prob: float, centerness: float, box: list[float], anchor_cell=(0, 0)):
    """One 2 x 2 level of stride 8, one class; only location 0 has a chance, with the given probabilities."""
    anchors = fcos_anchors([(2, 2)], [8], torch.device("cpu"))
    logits = torch.full((1, 4, 1), -20.0)
    logits[0, 0, 0] = _logit(class_prob)
    ctrness = torch.full((1, 4, 1), _logit(centerness))
    regression = torch.zeros(1, 4, 4)
    regression[0, 0] = CODER.encode(anchors[0], torch.tensor(box))
    return {"cls_logits": logits, "bbox_regression": regression, "bbox_ctrness": ctrness}, anchors


def _select(outputs, anchors, image_size=(16, 16), **rules):
    return select_detections(outputs, anchors, [4], [image_size], CODER, 0.05, 0.6, 1000, 3, **rules)


def test_threshold_before_or_after_centerness():
    # class 0.06, centerness 0.01: sigmoid(class) 0.06 > 0.05 but sqrt(0.06 * 0.01) = 0.0245 < 0.05.
    outputs, anchors = _one_location(0.06, 0.01, [0.0, 0.0, 8.0, 8.0])
    torchvision_rule = _select(outputs, anchors)
    lab_rule = _select(outputs, anchors, threshold_before_centerness=True)
    assert torchvision_rule.padding_mask.all()
    assert lab_rule.padding_mask.tolist() == [[False, True, True]]
    torch.testing.assert_close(lab_rule.scores[0, 0], torch.tensor(math.sqrt(0.06 * 0.01)))


def test_box_crossing_the_border_is_clipped_or_kept_as_regressed():
    outputs, anchors = _one_location(0.9, 0.9, [-4.0, 2.0, 30.0, 12.0])
    clipped = _select(outputs, anchors)
    unclipped = _select(outputs, anchors, clip_before_nms=False)
    torch.testing.assert_close(clipped.boxes[0, 0], torch.tensor([0.0, 2.0, 16.0, 12.0]))
    torch.testing.assert_close(unclipped.boxes[0, 0], torch.tensor([-4.0, 2.0, 30.0, 12.0]))
    # A box entirely outside the image: dropped when clipped first, kept (and NMS'd) as regressed otherwise.
    outputs, anchors = _one_location(0.9, 0.9, [3.0, 20.0, 6.0, 30.0])
    assert _select(outputs, anchors).padding_mask.all()
    assert not _select(outputs, anchors, clip_before_nms=False).padding_mask[0, 0]


class _FixedHead(torch.nn.Module):
    """Stands in for the FCOS head: every one of 16 x 16 stride-8 locations predicts its own cell (no overlap)."""

    def __init__(self):
        super().__init__()
        self.box_coder = CODER
        self.anchors = fcos_anchors([(16, 16)], [8], torch.device("cpu"))

    def forward(self, features):
        count = len(self.anchors)
        return {"cls_logits": torch.linspace(1, 3, count).reshape(1, count, 1),
                "bbox_regression": torch.full((1, count, 4), 0.5),
                "bbox_ctrness": torch.zeros(1, count, 1)}


def test_post_nms_topk_differs_between_training_and_test():
    fcos = FCOS(32, 1, [8], score_thresh=0.05, nms_thresh=0.6, pre_nms_topk=1000, detections_per_image=50,
                detections_per_image_train=100)
    fcos.head = _FixedHead()
    features = [torch.zeros(1, 32, 16, 16)]
    fcos.train()
    detections, losses = fcos(features, [(128, 128)])
    assert losses == {} and detections.boxes.shape[1] == 100 and not detections.padding_mask.any()
    fcos.eval()
    detections, _ = fcos(features, [(128, 128)])
    assert detections.boxes.shape[1] == 50 and not detections.padding_mask.any()


def test_fcos_giou_loss_hand_computed():
    # Positive 1: pred (1, 1, 1, 1), target (2, 1, 1, 1): areas 4 and 6, I = 2 x 2 = 4, U = 6, IoU = 5/7, the
    # enclosing box equals the union: loss 2/7, centerness sqrt(1/2 * 1).  Positive 2: exact, loss 0, weight 1.
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([[2.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    weight = centerness_targets(target)
    torch.testing.assert_close(weight, torch.tensor([math.sqrt(0.5), 1.0]))
    torch.testing.assert_close(fcos_giou_loss(pred, target, weight), torch.tensor(2 / 7 * math.sqrt(0.5)))
    # Enclosing term: pred (0.5, 0.5, 0.5, 0.5) vs target (0.5, 0.5, 1.5, 0.5): I = 1, U = 2, IoU = 2/3, enclosing
    # = union -> loss 1/3; pred shifted right (0, 0.5, 1, 0.5) vs target (1, 0.5, 0, 0.5): I = 0, U = 2,
    # IoU = 1/3, enclosing 2 x 1 = 2 -> loss 2/3.
    pred = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.0, 0.5, 1.0, 0.5]])
    target = torch.tensor([[0.5, 0.5, 1.5, 0.5], [1.0, 0.5, 0.0, 0.5]])
    losses = [fcos_giou_loss(pred[i:i + 1], target[i:i + 1], torch.ones(1)) for i in range(2)]
    torch.testing.assert_close(torch.stack(losses), torch.tensor([1 / 3, 2 / 3]))


def test_fcos_box_loss_flavour_in_the_detector_losses():
    # One 2 x 2 level of stride 8 and one tiny box (2, 2, 7, 7): only the location (4, 4) is a positive, with
    # target distances (2, 2, 3, 3) / 8.  Every location predicts (2, 2, 2, 2) / 8.
    # "fcos": I = 0.5^2, U = 0.625^2 (target area, which contains the prediction), IoU = (0.25 + 1) / (0.390625 +
    # 1), enclosing = U: loss 1 - 1.25 / 1.390625 (one positive: the centerness weighting cancels).
    # "torchvision": pixel boxes (2, 2, 6, 6) vs (2, 2, 7, 7): IoU 16/25, enclosing = target: loss 0.36.
    anchors = fcos_anchors([(2, 2)], [8], torch.device("cpu"))
    head_outputs = {"cls_logits": torch.zeros(1, 4, 1), "bbox_regression": torch.full((1, 4, 4), 0.25),
                    "bbox_ctrness": torch.zeros(1, 4, 1)}
    targets = [{"boxes": torch.tensor([[2.0, 2.0, 7.0, 7.0]]), "labels": torch.tensor([0])}]
    expected = {"torchvision": 0.36, "fcos": 1 - 1.25 / 1.390625}
    for flavour, value in expected.items():
        fcos = FCOS(32, 1, [8], 0.05, 0.6, 10, 5, box_loss=flavour)
        losses = fcos.losses(head_outputs, anchors, [4], targets)
        torch.testing.assert_close(losses["loss_fcos_loc"], torch.tensor(value), rtol=1e-5, atol=1e-6)


def test_config_keys_reach_fcos_and_bad_values_are_named():
    cfg = get_cfg()
    assert (cfg.MODEL.CENTERMASK.SCORE_THRESH_BEFORE_CENTERNESS, cfg.MODEL.CENTERMASK.CLIP_BEFORE_NMS,
            cfg.MODEL.CENTERMASK.BOX_LOSS, cfg.MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS_TRAIN) == (
        False, True, "torchvision", 0)  # today's "tokens" behaviour
    cfg.MODEL.CENTERMASK.SCORE_THRESH_BEFORE_CENTERNESS = True
    cfg.MODEL.CENTERMASK.CLIP_BEFORE_NMS = False
    cfg.MODEL.CENTERMASK.BOX_LOSS = "fcos"
    fcos = build_fcos(cfg, 64, 50, 100)
    assert (fcos.threshold_before_centerness, fcos.clip_before_nms, fcos.box_loss) == (True, False, "fcos")
    assert (fcos.detections_per_image, fcos.detections_per_image_train) == (50, 100)
    assert build_fcos(cfg, 64, 50, 0).detections_per_image_train == 50
    cfg.MODEL.CENTERMASK.BOX_LOSS = "l1"
    with pytest.raises(ValueError, match="MODEL.CENTERMASK.BOX_LOSS"):
        build_fcos(cfg, 64, 50)


def test_head_convs_sets_the_tower_depth_and_zero_is_named():
    cfg = get_cfg()
    assert cfg.MODEL.CENTERMASK.HEAD_CONVS == 4  # FCOS's and centermask2's towers
    convs = {}
    for depth in (4, 2):
        cfg.MODEL.CENTERMASK.HEAD_CONVS = depth
        head = build_fcos(cfg, 64, 50).head
        convs[depth] = [sum(isinstance(m, torch.nn.Conv2d) for m in tower.conv)
                        for tower in (head.classification_head, head.regression_head)]
        out = head([torch.randn(1, 64, 4, 4), torch.randn(1, 64, 2, 2)] + [torch.randn(1, 64, 1, 1)] * 3)
        assert out["cls_logits"].shape == (1, 23, cfg.MODEL.DETR.NUM_CLASSES)
    assert convs == {4: [4, 4], 2: [2, 2]}
    cfg.MODEL.CENTERMASK.HEAD_CONVS = 0
    with pytest.raises(ValueError, match="MODEL.CENTERMASK.HEAD_CONVS must be >= 1, got 0"):
        build_fcos(cfg, 64, 50)
