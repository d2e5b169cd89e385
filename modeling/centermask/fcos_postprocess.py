"""FCOS inference: per-image top-K detections after class-aware NMS, padded to a fixed K, batched."""
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.ops import batched_nms


class Detections(NamedTuple):
    """K detections per image, best first; rows where ``padding_mask`` is True are padding (zero box, score 0,
    label -1).  Boxes are xyxy in resized-image pixels, clipped to the image unless ``clip_before_nms`` was
    False."""

    boxes: Tensor  # (B, K, 4) float32
    scores: Tensor  # (B, K) float32
    labels: Tensor  # (B, K) int64, 0-based
    padding_mask: Tensor  # (B, K) bool


@torch.no_grad()
def select_detections(
    head_outputs: dict[str, Tensor],
    anchors: Tensor,
    num_anchors_per_level: list[int],
    image_sizes: list[tuple[int, int]],
    box_coder: BoxLinearCoder,
    score_thresh: float,
    nms_thresh: float,
    pre_nms_topk: int,
    detections_per_image: int,
    threshold_before_centerness: bool = False,
    clip_before_nms: bool = True,
) -> Detections:
    """FCOS's post-processing (as torchvision's ``FCOS.postprocess_detections``) for the whole batch at once.

    Score = sqrt(sigmoid(class logit) * sigmoid(centerness logit)) per (location, class).  A (location, class) is a
    candidate when its score is above ``score_thresh`` (torchvision's rule) or, with
    ``threshold_before_centerness``, when sigmoid(class logit) alone is (centermask2/AdelaiDet with
    ``THRESH_WITH_CTR False``, the lab's setting).  The ``pre_nms_topk`` best candidates per level and image (by
    score) are decoded; with ``clip_before_nms`` (torchvision) they are clipped to the unpadded image and boxes
    without area dropped, otherwise (centermask2) they stay as regressed, possibly reaching outside the image.
    Then one class-aware NMS over every image (the image index is part of the NMS group) and the
    ``detections_per_image`` best survivors per image.  Runs without gradients: the boxes are detached.
    """
    logits = head_outputs["cls_logits"].float()
    class_probs = logits.sigmoid()
    products = class_probs * head_outputs["bbox_ctrness"].float().sigmoid()  # (B, A, C)
    scores = torch.sqrt(products)
    candidates = (class_probs if threshold_before_centerness else scores) > score_thresh
    # Ranking by the score among candidates only; -1 marks a non-candidate (scores are >= 0).
    ranked = torch.where(candidates, scores, torch.full_like(scores, -1.0))
    num_images, _, num_classes = scores.shape
    device = scores.device

    candidate_scores, candidate_anchors = [], []
    start = 0
    for count in num_anchors_per_level:
        level_scores = ranked[:, start : start + count].flatten(1)  # (B, count * C)
        top_scores, top_idx = level_scores.topk(_at_most(level_scores.shape[1], pre_nms_topk), dim=1)
        candidate_scores.append(top_scores)
        candidate_anchors.append(top_idx + start * num_classes)
        start += count
    candidate_scores = torch.cat(candidate_scores, dim=1)  # (B, N), -1 where not a candidate
    flat_idx = torch.cat(candidate_anchors, dim=1)
    anchor_idx, labels = flat_idx // num_classes, flat_idx % num_classes

    distances = head_outputs["bbox_regression"].float().gather(1, anchor_idx[..., None].expand(-1, -1, 4))
    boxes = box_coder.decode(distances, anchors[anchor_idx])  # (B, N, 4)
    keep = candidate_scores >= 0
    if clip_before_nms:
        sizes = image_sizes_tensor(image_sizes, torch.float32, device)  # (B, 2) as (h, w)
        upper = sizes.flip(1).repeat(1, 2)[:, None, :]  # (B, 1, 4) = (w, h, w, h)
        boxes = torch.minimum(boxes.clamp(min=0), upper)
        keep = keep & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    image_idx, candidate_idx = keep.nonzero(as_tuple=True)
    kept_boxes = boxes[image_idx, candidate_idx]
    kept_scores = candidate_scores[image_idx, candidate_idx]
    kept_labels = labels[image_idx, candidate_idx]
    survivors = batched_nms(kept_boxes, kept_scores, image_idx * num_classes + kept_labels, nms_thresh)

    # Survivors come best first: a survivor's rank in its image is the number of survivors of that image before it
    # (a running count per image: no sort, so it exports to ONNX).
    survivor_image = image_idx[survivors]
    same_image = (survivor_image[:, None] == torch.arange(num_images, device=device)).long()  # (S, B)
    rank = (same_image.cumsum(0) - 1).gather(1, survivor_image[:, None]).squeeze(1)
    taken = rank < detections_per_image
    survivors, survivor_image, rank = survivors[taken], survivor_image[taken], rank[taken]

    shape = (num_images, detections_per_image)
    out_boxes = torch.zeros(*shape, 4, device=device)
    out_scores = torch.zeros(shape, device=device)
    out_labels = torch.full(shape, -1, dtype=torch.int64, device=device)
    padding_mask = torch.ones(shape, dtype=torch.bool, device=device)
    out_boxes[survivor_image, rank] = kept_boxes[survivors]
    out_scores[survivor_image, rank] = kept_scores[survivors]
    out_labels[survivor_image, rank] = kept_labels[survivors]
    padding_mask[survivor_image, rank] = False
    return Detections(out_boxes, out_scores, out_labels, padding_mask)


def _at_most(count, cap: int):
    """``min(count, cap)`` for a size: an int in eager mode, a tensor while tracing (then the minimum is part of the
    exported graph, so it follows the image size)."""
    return torch.clamp(count, max=cap) if isinstance(count, Tensor) else min(count, cap)


def image_sizes_tensor(image_sizes, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(B, 2) (h, w) of ``image_sizes``: a list of (h, w) per image, or already a (B, 2) tensor (what
    ``tools/export_onnx.py`` passes, so that the sizes follow the traced input's shape instead of being frozen into
    the ONNX graph as constants)."""
    if isinstance(image_sizes, Tensor):
        return image_sizes.to(dtype=dtype, device=device)
    return torch.tensor(image_sizes, dtype=dtype, device=device)
