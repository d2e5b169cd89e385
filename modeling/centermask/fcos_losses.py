"""The FCOS box-regression loss of centermask2/AdelaiDet (the lab's), beside torchvision's."""
import torch
from torch import Tensor

BOX_LOSSES = ("torchvision", "fcos")


def fcos_giou_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Summed ``weight``-weighted GIoU loss on (left, top, right, bottom) distances, AdelaiDet's ``IOULoss('giou')``.

    ``pred`` and ``target`` (N, 4) are distances from the location to the box sides in units of the level's stride
    (the head's output and the encoded targets); ``weight`` (N,) is the centerness target of each positive.  The
    intersection-over-union is smoothed as (I + 1) / (U + 1) on these stride-normalised areas, so a small box's
    loss is strongly damped (torchvision's ``generalized_box_iou_loss`` uses exact pixel IoU); the enclosing box
    term is not smoothed.  Returns sum(weight * (1 - GIoU)); the caller divides by the sum of the weights.
    """
    pred_left, pred_top, pred_right, pred_bottom = pred.unbind(-1)
    left, top, right, bottom = target.unbind(-1)
    target_area = (left + right) * (top + bottom)
    pred_area = (pred_left + pred_right) * (pred_top + pred_bottom)
    intersection = (torch.minimum(pred_left, left) + torch.minimum(pred_right, right)) * (
        torch.minimum(pred_top, top) + torch.minimum(pred_bottom, bottom)
    )
    enclosing = (torch.maximum(pred_left, left) + torch.maximum(pred_right, right)) * (
        torch.maximum(pred_top, top) + torch.maximum(pred_bottom, bottom)
    )
    union = target_area + pred_area - intersection
    iou = (intersection + 1.0) / (union + 1.0)
    giou = iou - (enclosing - union) / enclosing
    return ((1.0 - giou) * weight).sum()


def centerness_targets(distances: Tensor) -> Tensor:
    """FCOS's centerness target sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of (N, 4) distances."""
    left_right = distances[..., [0, 2]]
    top_bottom = distances[..., [1, 3]]
    return torch.sqrt(
        (left_right.amin(-1) / left_right.amax(-1)) * (top_bottom.amin(-1) / top_bottom.amax(-1))
    )
