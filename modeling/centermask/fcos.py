"""FCOS (Tian et al. 2019) on a feature pyramid: head, training losses and detections, batched over images."""
from typing import Optional

from torch import Tensor, nn

from ..backbone.norm import GROUP_NORM_GROUPS
from .fcos_head import ScaledFCOSHead
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
    ):
        super().__init__()
        self.strides = list(strides)
        self.head = ScaledFCOSHead(in_channels, num_classes, num_levels=len(self.strides))
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_topk = pre_nms_topk
        self.detections_per_image = detections_per_image

    def forward(
        self,
        features: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[Detections, dict[str, Tensor]]:
        """``features``: (B, C, H_l, W_l) per level, in the order of ``strides``; ``image_sizes``: unpadded (h, w);
        ``targets``: per image ``boxes`` (N, 4) xyxy pixels and ``labels`` (N,) 0-based, or None for no losses.

        Returns the (detached) top detections of every image and the three FCOS losses (``{}`` without targets).
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
            self.detections_per_image,
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
        return {_LOSS_NAMES[name]: value for name, value in losses.items()}
