"""RoIAlign of boxes on a feature pyramid with CenterMask's scale-adaptive level rule, batched over images."""

import torch
from torch import Tensor
from torchvision.ops import roi_align

from .fcos_postprocess import image_sizes_tensor


def assign_boxes_to_levels(boxes: Tensor, image_areas: Tensor, min_level: int, max_level: int) -> Tensor:
    """CenterMask's scale-adaptive RoI assignment (Lee & Park 2020, eq. 1): k = ⌈k_max − log2(A_image / A_box)⌉,
    clamped to [min_level, max_level], with k_max = ``max_level``.

    Unlike FPN's rule (fixed 224-pixel canonical box) it is relative to the image: a box covering more than half
    of the image goes to P5 (k_max), one of a quarter to a half to P4, smaller ones to P3.  ``boxes`` (N, 4) xyxy
    and ``image_areas`` (N,) (h * w of each box's own unpadded image) in the same pixels.  Returns (N,) int64
    pyramid levels (3 = P3).
    """
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    box_areas = (widths * heights).clamp(min=torch.finfo(boxes.dtype).eps)
    levels = torch.ceil(max_level - torch.log2(image_areas / box_areas))
    return levels.clamp(min=min_level, max=max_level).to(torch.int64)


def multilevel_roi_align(
    features: dict[int, Tensor], rois: Tensor, levels: Tensor, output_size: int
) -> Tensor:
    """RoIAlign every RoI on the map of its level: one ``roi_align`` call per level for the RoIs of all images.

    ``features`` maps a level l to its (B, C, H, W) map of stride 2**l; ``rois`` (N, 5) rows (image index, x1, y1,
    x2, y2) in input pixels; ``levels`` (N,) from :func:`assign_boxes_to_levels`.  Sampling is detectron2's
    ROIAlignV2 (half-pixel ``aligned=True``, adaptive sampling ratio), as centermask2 uses; it runs in the dtype
    of ``rois`` (float32), whatever the features' (bf16 under autocast).  Returns (N, C, output_size,
    output_size), differentiable in ``features`` (not in ``rois``).
    """
    channels = next(iter(features.values())).shape[1]
    pooled = rois.new_zeros(rois.shape[0], channels, output_size, output_size)
    for level, feature_map in features.items():
        index = torch.nonzero(levels == level).squeeze(1)
        level_pooled = roi_align(
            feature_map.to(rois.dtype),  # never the other way: bf16 box coordinates would be off by pixels
            rois.index_select(0, index),
            output_size,
            spatial_scale=1.0 / 2**level,
            sampling_ratio=0,
            aligned=True,
        )
        pooled = pooled.index_copy(0, index, level_pooled)
    return pooled


def image_areas_of_rois(rois: Tensor, image_sizes) -> Tensor:
    """(N,) unpadded area h * w of the image each RoI (row: image index, x1, y1, x2, y2) belongs to; ``image_sizes``
    a list of (h, w) or a (B, 2) tensor."""
    sizes = image_sizes_tensor(image_sizes, rois.dtype, rois.device)
    return (sizes[:, 0] * sizes[:, 1])[rois[:, 0].long()]
