"""FCOS's location grid and its ground-truth assignment rule, batched over the images of a batch."""
import torch
from torch import Tensor

# torchvision's FCOS defaults: positives lie within 1.5 strides of a box centre, and a level-l location regresses
# boxes whose largest distance (l, t, r, b) lies in (4 * stride, 8 * stride) - open below on the finest level and
# above on the coarsest.
CENTER_SAMPLING_RADIUS = 1.5
SCALE_RANGE_IN_STRIDES = (4.0, 8.0)


def fcos_anchors(feature_sizes: list[tuple[int, int]], strides: list[int], device: torch.device) -> Tensor:
    """The FCOS locations of every level as stride-sized square "anchors", (A, 4) xyxy in input pixels.

    A location (x, y) of a level with stride s sits at (x * s + s // 2, y * s + s // 2), the centre of its cell, as
    in the FCOS paper (torchvision's ``AnchorGenerator`` would put it at the cell's corner).  The square's side s is
    what ``BoxLinearCoder(normalize_by_size=True)`` divides the distances by.  Rows run level by level, each
    row-major, matching the head's output order.
    """
    anchors = []
    for (height, width), stride in zip(feature_sizes, strides):
        ys = torch.arange(height, device=device, dtype=torch.float32) * stride + stride // 2
        xs = torch.arange(width, device=device, dtype=torch.float32) * stride + stride // 2
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centers = torch.stack((cx.flatten(), cy.flatten()), dim=1)
        anchors.append(torch.cat((centers - stride / 2, centers + stride / 2), dim=1))
    return torch.cat(anchors, dim=0)


def pad_targets(targets: list[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image targets into (B, M, 4) boxes, (B, M) labels and a (B, M) validity mask, M = max(1, most
    boxes in an image); padded rows are zero boxes with label -1 and ``valid`` False."""
    max_boxes = max([1] + [len(t["boxes"]) for t in targets])
    boxes = torch.zeros(len(targets), max_boxes, 4, device=device)
    labels = torch.full((len(targets), max_boxes), -1, dtype=torch.int64, device=device)
    for i, target in enumerate(targets):
        n = len(target["boxes"])
        boxes[i, :n] = target["boxes"].to(device=device, dtype=torch.float32)
        labels[i, :n] = target["labels"].to(device)
    return boxes, labels, labels >= 0


def assign_fcos_targets(
    anchors: Tensor, num_anchors_per_level: list[int], gt_boxes: Tensor, gt_valid: Tensor
) -> Tensor:
    """torchvision FCOS's assignment (``FCOS.compute_loss``), for a whole batch at once.

    A location is a positive of a box when it is inside the box, within ``CENTER_SAMPLING_RADIUS`` strides of its
    centre (Chebyshev distance) and the box's largest side distance is in the level's scale range; among several
    such boxes it takes the smallest (by area).  ``anchors`` (A, 4) from :func:`fcos_anchors`, ``gt_boxes``
    (B, M, 4) xyxy and ``gt_valid`` (B, M) from :func:`pad_targets`.  Returns (B, A) int64: the matched box
    index, -1 for background.  Memory is O(B * A * M).
    """
    strides = anchors[:, 2] - anchors[:, 0]  # (A,)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
    gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, M, 2)

    near_center = (centers[None, :, None] - gt_centers[:, None]).abs().amax(dim=3) < (
        CENTER_SAMPLING_RADIUS * strides[None, :, None]
    )
    x, y = centers[None, :, None].unbind(dim=3)  # (1, A, 1) each
    x0, y0, x1, y1 = gt_boxes[:, None].unbind(dim=3)  # (B, 1, M) each
    distances = torch.stack((x - x0, y - y0, x1 - x, y1 - y), dim=3)  # (B, A, M, 4)
    inside = distances.amin(dim=3) > 0

    lower = strides * SCALE_RANGE_IN_STRIDES[0]
    upper = strides * SCALE_RANGE_IN_STRIDES[1]
    lower[: num_anchors_per_level[0]] = 0
    upper[-num_anchors_per_level[-1]:] = float("inf")
    largest = distances.amax(dim=3)
    in_range = (largest > lower[None, :, None]) & (largest < upper[None, :, None])

    match = near_center & inside & in_range & gt_valid[:, None, :]
    areas = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])  # (B, M)
    candidate_areas = torch.where(match, areas[:, None, :], torch.full_like(largest, float("inf")))
    smallest_area, matched = candidate_areas.min(dim=2)
    return torch.where(torch.isinf(smallest_area), torch.full_like(matched, -1), matched)
