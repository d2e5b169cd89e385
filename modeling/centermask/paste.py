"""The lab's published "paste" fusion: FCOS detections' SAG-Mask maps added onto P5 where each box lies.

See docs/MODEL.md (CenterMask section) for the model and docs/DIFFERENCES.md for how it differs from the lab's code.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fcos import FCOS_LEVELS, build_fcos
from .roi_features import assign_boxes_to_levels, image_areas_of_rois, multilevel_roi_align
from .spatial_attention import SpatialAttention

ROI_LEVELS = (3, 4, 5)  # CenterMask pools RoIs from P3-P5 only (k_max = 5)
MASK_HEAD_CONVS = 4  # centermask2's ROI_MASK_HEAD.NUM_CONV in the lab's config


def _msra_fill(module: nn.Module) -> None:
    """detectron2's ``c2_msra_fill``: He-normal weights (fan-out, ReLU gain), zero bias."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class SAGMaskHead(nn.Module):
    """CenterMask's spatial-attention-guided mask head (centermask2's ``SpatialAttentionMaskHead``) without its
    1×1 mask predictor: 4 × (3×3 conv + ReLU), spatial attention, 2×2 stride-2 transposed conv + ReLU.

    (N, C, R, R) RoI features -> (N, C, 2R, 2R) maps.  Names mirror centermask2's (``mask_fcn1``…``mask_fcn4``,
    ``deconv``; its ``spatialAtt`` is ``spatial_attention`` here).  With C = 256: 4 × 590,080 + 18 + 262,400 =
    2,622,738 parameters (centermask2's COCO head adds an 80-class predictor, 20,560: 2,643,298).
    """

    def __init__(self, channels: int, num_convs: int = MASK_HEAD_CONVS):
        super().__init__()
        self.num_convs = num_convs
        for index in range(1, num_convs + 1):
            conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
            _msra_fill(conv)
            self.add_module(f"mask_fcn{index}", conv)
        self.spatial_attention = SpatialAttention()
        _msra_fill(self.spatial_attention.conv)
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        _msra_fill(self.deconv)

    def forward(self, x: Tensor) -> Tensor:
        for index in range(1, self.num_convs + 1):
            x = F.relu(getattr(self, f"mask_fcn{index}")(x))
        return F.relu(self.deconv(self.spatial_attention(x)))


def box_cells(boxes: Tensor, stride: int, grid_size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Where each box goes on a grid of cells of side ``stride``, by the lab's rule.

    ``boxes`` (..., 4) xyxy input pixels.  The first cell is ⌊x0 / stride⌋, ⌊y0 / stride⌋ and the extent
    ⌊x1 / stride⌋ − ⌊x0 / stride⌋ columns by ⌊y1 / stride⌋ − ⌊y0 / stride⌋ rows (the last cell a box touches is
    left out), cut at the grid's far edges (``grid_size`` (rows, columns)).  A box with a negative coordinate or
    an empty extent is not pasted.  Returns ``(row0, col0, rows, cols, pasted)``; rows and columns run along y
    and x (the lab's loop swaps them).
    """
    height, width = grid_size
    cells = torch.floor(boxes / stride)
    col0, row0, col1, row1 = cells.unbind(-1)
    rows = torch.minimum(row1 - row0, height - row0)
    cols = torch.minimum(col1 - col0, width - col0)
    pasted = (boxes >= 0).all(-1) & (rows >= 1) & (cols >= 1)
    return row0, col0, rows, cols, pasted


def interpolation_matrix(start: Tensor, extent: Tensor, grid: int, source: int) -> Tensor:
    """Bilinear resize (``align_corners=True``) of ``source`` samples to ``extent`` samples placed at cells
    ``start`` … ``start + extent − 1`` of a line of ``grid`` cells, as a (..., grid, source) matrix (rows outside
    the extent are zero).  Output sample t reads source position t · (source − 1) / (extent − 1) (0 when the
    extent is 1), as ``F.interpolate`` does."""
    t = torch.arange(grid, dtype=start.dtype, device=start.device) - start[..., None]  # (..., grid)
    inside = (t >= 0) & (t < extent[..., None])
    scale = torch.where(extent > 1, (source - 1) / (extent - 1).clamp(min=1), torch.zeros_like(extent))
    position = t * scale[..., None]
    taps = torch.arange(source, dtype=start.dtype, device=start.device)
    weights = (1 - (position[..., None] - taps).abs()).clamp(min=0)  # (..., grid, source) hat function
    return weights * inside[..., None]


def paste_maps(feature_map: Tensor, maps: Tensor, boxes: Tensor, valid: Tensor, stride: int) -> Tensor:
    """``feature_map`` (B, C, H, W) plus every valid box's map resized onto the cells it covers.

    ``maps`` (B, K, C, S, S), ``boxes`` (B, K, 4) xyxy input pixels, ``valid`` (B, K) bool.  Each map is resized
    bilinearly (``align_corners=True``) to its box's extent in cells (:func:`box_cells`) and added there; maps of
    the same image add up.  The resize is separable, so it is two batched matrix products with the
    (B, K, H, S) and (B, K, W, S) interpolation matrices: no loop over boxes, no host synchronisation, fixed
    shapes.  Differentiable in ``feature_map`` and ``maps`` (not in ``boxes``).
    """
    batch, num_slots, channels, source, _ = maps.shape
    height, width = feature_map.shape[-2:]
    row0, col0, rows, cols, pasted = box_cells(boxes.detach().float(), stride, (height, width))
    pasted = pasted & valid
    row_weights = interpolation_matrix(row0, rows, height, source) * pasted[..., None, None]  # (B, K, H, S)
    col_weights = interpolation_matrix(col0, cols, width, source)  # (B, K, W, S)
    maps = maps.to(feature_map.dtype)
    rows_resized = torch.einsum("bkhs,bkcst->bkcht", row_weights.to(maps.dtype), maps)  # (B, K, C, H, S)
    resized_sum = torch.einsum("bkcht,bkwt->bchw", rows_resized, col_weights.to(maps.dtype))
    return feature_map + resized_sum


class CenterMaskPaste(nn.Module):
    """``MODEL.CENTERMASK.FUSION "paste"``, the lab's published fusion (docs/MODEL.md, CenterMask section).

    FCOS on P3-P7 keeps the top detections (``NUM_INJECTED_DETECTIONS`` at test,
    ``NUM_INJECTED_DETECTIONS_TRAIN`` in training); each is RoIAligned (``ROI_RESOLUTION``², CenterMask's
    scale-adaptive level rule on P3-P5) and run through the SAG-Mask head (:class:`SAGMaskHead`, 2R × 2R maps of
    ``MODEL.FPN.OUT_CHANNELS`` channels); every map is resized to its box's extent on the grid of
    ``MODEL.ENCODER.IN_FEATURE`` (P5, stride 32) and added there (:func:`paste_maps`).  The model then reads this
    map as it reads P5 without a CenterMask: padding mask and sine positions from the image sizes, no input
    projection (the memory is the map itself), then the DETR encoder (the lab's has none: ``MODEL.DETR.ENC_LAYERS``
    0) and the three decoders.  No mask loss (Visual Genome has no masks).  FCOS losses × ``FCOS_LOSS_WEIGHT``; at 0
    (the lab's) the FCOS head is frozen and its losses are not computed.

    Runs on all K slots of every image (padding slots are computed, then not pasted), so the shapes do not depend
    on how many detections survive.
    """

    fusion = "paste"

    def __init__(self, cfg):
        super().__init__()
        centermask = cfg.MODEL.CENTERMASK
        in_channels = cfg.MODEL.FPN.OUT_CHANNELS
        if cfg.MODEL.DETR.HIDDEN_DIM != in_channels:
            raise ValueError(f"MODEL.CENTERMASK.FUSION 'paste': the memory is the FPN map itself, so MODEL.DETR."
                             f"HIDDEN_DIM ({cfg.MODEL.DETR.HIDDEN_DIM}) must equal MODEL.FPN.OUT_CHANNELS "
                             f"({in_channels})")
        in_feature = cfg.MODEL.ENCODER.IN_FEATURE
        if in_feature not in [f"p{level}" for level in FCOS_LEVELS]:
            raise ValueError(f"MODEL.CENTERMASK.FUSION 'paste' pastes onto an FPN level: MODEL.ENCODER.IN_FEATURE "
                             f"must be one of p3..p7, got {in_feature!r}")
        for key in ("NUM_INJECTED_DETECTIONS", "ROI_RESOLUTION"):
            if centermask[key] < 1:
                raise ValueError(f"MODEL.CENTERMASK.{key} must be >= 1, got {centermask[key]}")
        if centermask.NUM_INJECTED_DETECTIONS_TRAIN < 0:
            raise ValueError("MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS_TRAIN must be >= 0 (0 = "
                             f"NUM_INJECTED_DETECTIONS), got {centermask.NUM_INJECTED_DETECTIONS_TRAIN}")
        self.in_channels = in_channels
        self.in_feature = in_feature
        self.stride = 2 ** int(in_feature[1:])
        self.roi_resolution = centermask.ROI_RESOLUTION
        self.fcos_loss_weight = centermask.FCOS_LOSS_WEIGHT
        self.fcos = build_fcos(cfg, in_channels, centermask.NUM_INJECTED_DETECTIONS,
                               centermask.NUM_INJECTED_DETECTIONS_TRAIN)
        if self.fcos_loss_weight == 0:
            self.fcos.requires_grad_(False)
        self.mask_head = SAGMaskHead(in_channels)

    def forward(
        self,
        features: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``features`` "p3".."p7" (B, C, H_l, W_l); ``image_sizes`` unpadded (h, w); ``targets`` per image
        ``boxes`` (N, 4) xyxy resized-image pixels and ``labels`` (N,), or None.

        Returns the fused ``MODEL.ENCODER.IN_FEATURE`` map (B, C, H, W) and the FCOS losses × FCOS_LOSS_WEIGHT
        (``{}`` in eval mode, without targets, or at weight 0).
        """
        missing = [f"p{level}" for level in FCOS_LEVELS if f"p{level}" not in features]
        if missing:
            raise KeyError(f"CenterMaskPaste needs FPN features p3..p7; missing {missing} (got {sorted(features)})")
        batch = features["p3"].shape[0]
        if len(image_sizes) != batch:
            raise ValueError(f"CenterMaskPaste: {len(image_sizes)} image_sizes for a batch of {batch}")
        with_losses = self.training and targets is not None and self.fcos_loss_weight != 0
        pyramid = [features[f"p{level}"] for level in FCOS_LEVELS]
        with torch.set_grad_enabled(torch.is_grad_enabled() and with_losses):
            detections, losses = self.fcos(pyramid, image_sizes, targets if with_losses else None)

        num_slots = detections.boxes.shape[1]
        boxes = detections.boxes.reshape(-1, 4)
        image_idx = torch.arange(batch, device=boxes.device).repeat_interleave(num_slots)
        rois = torch.cat((image_idx[:, None].to(boxes.dtype), boxes), dim=1)
        levels = assign_boxes_to_levels(boxes, image_areas_of_rois(rois, image_sizes), ROI_LEVELS[0], ROI_LEVELS[-1])
        roi_features = multilevel_roi_align(
            {level: features[f"p{level}"] for level in ROI_LEVELS}, rois, levels, self.roi_resolution
        )
        maps = self.mask_head(roi_features)
        maps = maps.reshape(batch, num_slots, *maps.shape[1:])
        fused = paste_maps(features[self.in_feature], maps, detections.boxes, ~detections.padding_mask, self.stride)
        return fused, {name: value * self.fcos_loss_weight for name, value in losses.items()}

