"""FCOS (Tian et al. 2019) on a feature pyramid: head, training losses and detections, batched over images."""
from typing import Optional

from torch import Tensor, nn

from ..backbone.norm import GROUP_NORM_GROUPS
from .fcos_head import ScaledFCOSHead
from .fcos_losses import BOX_LOSSES, centerness_targets, fcos_giou_loss
from .fcos_postprocess import Detections, select_detections
from .fcos_targets import assign_fcos_targets, fcos_anchors, pad_targets

# torchvision's loss names -> ours (centermask2's).
_LOSS_NAMES = {"classification": "loss_fcos_cls", "bbox_regression": "loss_fcos_loc", "bbox_ctrness": "loss_fcos_ctr"}


FCOS_LEVELS = (3, 4, 5, 6, 7)  # P3-P7, strides 8-128


def check_fcos_channels(channels: int) -> None:
    """The FCOS towers use GroupNorm with :data:`GROUP_NORM_GROUPS` groups: ``channels`` (the FPN's
    ``MODEL.FPN.OUT_CHANNELS``) must be a multiple of it."""
    if channels % GROUP_NORM_GROUPS != 0:
        raise ValueError(f"MODEL.FPN.OUT_CHANNELS = {channels} must be a multiple of {GROUP_NORM_GROUPS} "
                         f"(the FCOS towers use GroupNorm with {GROUP_NORM_GROUPS} groups)")


class FCOS(nn.Module):
    """Anchor-free one-stage detector over the pyramid levels given to ``forward``.

    Reuses torchvision's pieces: the head (:class:`ScaledFCOSHead`, torchvision's ``FCOSHead`` + per-level scales),
    its ``BoxLinearCoder`` and its ``compute_loss`` (sigmoid focal loss, GIoU loss on the decoded boxes, centerness
    BCE, each summed over the positives and divided by their number in the batch - per process, not all-reduced).
    The glue written here is the location grid, the batched target assignment (torchvision's rule, see
    :func:`assign_fcos_targets`) and the batched post-processing (:func:`select_detections`).

    The lab's (centermask2) rules are options: ``box_loss`` "fcos" replaces the box term by AdelaiDet's
    centerness-weighted GIoU on stride-normalised distances (:func:`fcos_giou_loss`, divided by the sum of the
    centerness targets); ``threshold_before_centerness`` and ``clip_before_nms`` are passed to
    :func:`select_detections`; ``detections_per_image_train`` keeps a different number of detections in training
    mode (centermask2's ``POST_NMS_TOPK_TRAIN``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: list[int],
        score_thresh: float,
        nms_thresh: float,
        pre_nms_topk: int,
        detections_per_image: int,
        detections_per_image_train: Optional[int] = None,
        threshold_before_centerness: bool = False,
        clip_before_nms: bool = True,
        box_loss: str = "torchvision",
        head_convs: int = 4,
    ):
        super().__init__()
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"MODEL.CENTERMASK.BOX_LOSS must be one of {BOX_LOSSES}, got {box_loss!r}")
        self.strides = list(strides)
        self.head = ScaledFCOSHead(in_channels, num_classes, num_levels=len(self.strides), num_convs=head_convs)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_topk = pre_nms_topk
        self.detections_per_image = detections_per_image
        self.detections_per_image_train = detections_per_image_train or detections_per_image
        self.threshold_before_centerness = threshold_before_centerness
        self.clip_before_nms = clip_before_nms
        self.box_loss = box_loss

    def forward(
        self,
        features: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[Detections, dict[str, Tensor]]:
        """``features``: (B, C, H_l, W_l) per level, in the order of ``strides``; ``image_sizes``: unpadded (h, w);
        ``targets``: per image ``boxes`` (N, 4) xyxy pixels and ``labels`` (N,) 0-based, or None for no losses.

        Returns the (detached) top detections of every image (``detections_per_image_train`` slots in training
        mode, ``detections_per_image`` in eval mode) and the three FCOS losses (``{}`` without targets).
        """
        head_outputs = {name: out.float() for name, out in self.head(features).items()}
        feature_sizes = [tuple(f.shape[-2:]) for f in features]
        num_anchors_per_level = [h * w for h, w in feature_sizes]
        anchors = fcos_anchors(feature_sizes, self.strides, features[0].device)

        losses: dict[str, Tensor] = {}
        if targets is not None:
            losses = self.losses(head_outputs, anchors, num_anchors_per_level, targets)
        detections = select_detections(
            head_outputs,
            anchors,
            num_anchors_per_level,
            image_sizes,
            self.head.box_coder,
            self.score_thresh,
            self.nms_thresh,
            self.pre_nms_topk,
            self.detections_per_image_train if self.training else self.detections_per_image,
            threshold_before_centerness=self.threshold_before_centerness,
            clip_before_nms=self.clip_before_nms,
        )
        return detections, losses

    def losses(
        self,
        head_outputs: dict[str, Tensor],
        anchors: Tensor,
        num_anchors_per_level: list[int],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """``loss_fcos_cls``, ``loss_fcos_loc`` and ``loss_fcos_ctr`` of a batch (unweighted)."""
        gt_boxes, gt_labels, gt_valid = pad_targets(targets, anchors.device)
        matched = assign_fcos_targets(anchors, num_anchors_per_level, gt_boxes, gt_valid)
        padded_targets = [{"boxes": b, "labels": l} for b, l in zip(gt_boxes, gt_labels)]
        losses = self.head.compute_loss(
            padded_targets, head_outputs, [anchors] * len(targets), list(matched.unbind(0))
        )
        if self.box_loss == "fcos":
            losses["bbox_regression"] = self.fcos_box_loss(head_outputs, anchors, gt_boxes, matched)
        return {_LOSS_NAMES[name]: value for name, value in losses.items()}

    def fcos_box_loss(self, head_outputs: dict[str, Tensor], anchors: Tensor, gt_boxes: Tensor,
                      matched: Tensor) -> Tensor:
        """centermask2's box loss: sum over positives of centerness target × (1 − GIoU) on stride-normalised
        distances with IoU = (I + 1) / (U + 1), divided by the sum of the centerness targets (at least 1e-6)."""
        positive = matched >= 0  # (B, A)
        image_idx, anchor_idx = positive.nonzero(as_tuple=True)
        boxes = gt_boxes[image_idx, matched[image_idx, anchor_idx]]
        target = self.head.box_coder.encode(anchors[anchor_idx], boxes)  # distances / stride
        pred = head_outputs["bbox_regression"][image_idx, anchor_idx]
        weight = centerness_targets(target)
        return fcos_giou_loss(pred, target, weight) / weight.sum().clamp(min=1e-6)


def build_fcos(cfg, in_channels: int, detections_per_image: int,
               detections_per_image_train: Optional[int] = None) -> FCOS:
    """The FCOS of ``MODEL.CENTERMASK`` (thresholds, NMS, the lab's rules, box loss) on P3-P7 with
    ``MODEL.DETR.NUM_CLASSES`` classes: shared by the scene-graph encoders and ``FCOSDetector``."""
    centermask = cfg.MODEL.CENTERMASK
    check_fcos_channels(in_channels)
    for key in ("SCORE_THRESH", "NMS_THRESH"):
        if not 0.0 <= centermask[key] <= 1.0:
            raise ValueError(f"MODEL.CENTERMASK.{key} must be in [0, 1], got {centermask[key]}")
    if centermask.HEAD_CONVS < 1:
        raise ValueError(f"MODEL.CENTERMASK.HEAD_CONVS must be >= 1, got {centermask.HEAD_CONVS}")
    if centermask.PRE_NMS_TOPK < 1:
        raise ValueError(f"MODEL.CENTERMASK.PRE_NMS_TOPK must be >= 1, got {centermask.PRE_NMS_TOPK}")
    return FCOS(
        in_channels,
        cfg.MODEL.DETR.NUM_CLASSES,
        strides=[2**level for level in FCOS_LEVELS],
        score_thresh=centermask.SCORE_THRESH,
        nms_thresh=centermask.NMS_THRESH,
        pre_nms_topk=centermask.PRE_NMS_TOPK,
        detections_per_image=detections_per_image,
        detections_per_image_train=detections_per_image_train,
        threshold_before_centerness=centermask.SCORE_THRESH_BEFORE_CENTERNESS,
        clip_before_nms=centermask.CLIP_BEFORE_NMS,
        box_loss=centermask.BOX_LOSS,
        head_convs=centermask.HEAD_CONVS,
    )
