"""The lab's "CenterMask" encoder: FCOS detections turned into extra memory tokens for the three decoders."""
from typing import Optional

import torch
from torch import Tensor, nn

from .box_embedding import BoxSineEmbedding
from .fcos import FCOS_LEVELS, build_fcos, check_fcos_channels
from .fcos_postprocess import image_sizes_tensor
from .roi_features import assign_boxes_to_levels, image_areas_of_rois, multilevel_roi_align
from .spatial_attention import SpatialAttention

ROI_LEVELS = (3, 4, 5)  # CenterMask pools RoIs from P3-P5 only (k_max = 5)


class CenterMaskInjector(nn.Module):
    """``MODEL.CENTERMASK.FUSION "tokens"``: FCOS on P3-P7, then one token per top detection: spatially attended
    RoI features plus a box position.

    Per image the ``MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS`` (K) best FCOS detections (score sqrt(class ×
    centerness) > ``SCORE_THRESH``, class-aware NMS at ``NMS_THRESH``) are RoIAligned (``ROI_RESOLUTION``²,
    CenterMask's scale-adaptive level rule on P3-P5, one call per level for the whole batch), passed through
    CenterMask's spatial attention, flattened and projected to ``MODEL.DETR.HIDDEN_DIM`` (d) channels (linear +
    LayerNorm, the scale of DETR's post-norm encoder output).  Their positional embedding is a sine embedding of
    the normalised box (:class:`BoxSineEmbedding`).  The meta-architecture appends these K tokens to the DETR
    encoder memory, so the subject, object and predicate decoders attend to the detector's objects.  The boxes are
    detached: gradients reach the features through RoIAlign, not the box coordinates.  With
    ``TOKEN_DETECTION_CONTENT`` each token's content also carries its detection: a second projection of the
    box's sine features and a class embedding of FCOS's label × its score, added after the projection (cross-attention adds the positional
    embedding to the keys only, so without them the decoders cannot copy a detection's box or class from the
    values they attend to).  FCOS is trained jointly
    (its losses × ``FCOS_LOSS_WEIGHT``; at 0 the FCOS head is frozen and its losses are not computed).

    Parameters with 256 FPN channels, d = 256, 150 classes, 7×7 RoIs: FCOS head 5,082,016, spatial attention 18,
    token projection 3,212,032 (256·49·256 + 256 linear, 512 LayerNorm), box embedding 65,792 - 8,359,858 in all.
    The lab's CenterMask count also includes a SAG-Mask head (2,643,298) and a MaskIoU head (16,340,304); Visual
    Genome has no masks for them to learn from, so they are absent here.
    """

    fusion = "tokens"

    def __init__(self, cfg):
        super().__init__()
        in_channels = cfg.MODEL.FPN.OUT_CHANNELS
        hidden_dim = cfg.MODEL.DETR.HIDDEN_DIM
        centermask = cfg.MODEL.CENTERMASK
        _check_config(cfg)
        self.in_channels = in_channels
        self.roi_resolution = centermask.ROI_RESOLUTION
        self.fcos_loss_weight = centermask.FCOS_LOSS_WEIGHT
        self.fcos = build_fcos(cfg, in_channels, centermask.NUM_INJECTED_DETECTIONS,
                               centermask.NUM_INJECTED_DETECTIONS_TRAIN)
        if self.fcos_loss_weight == 0:  # FCOS stays as initialised (the lab's recipe): frozen, no losses computed
            self.fcos.requires_grad_(False)
        self.spatial_attention = SpatialAttention()
        self.token_proj = nn.Sequential(
            nn.Flatten(1), nn.Linear(in_channels * self.roi_resolution**2, hidden_dim), nn.LayerNorm(hidden_dim)
        )
        self.box_embedding = BoxSineEmbedding(hidden_dim)
        self.detection_content = centermask.TOKEN_DETECTION_CONTENT
        if self.detection_content:
            self.content_box_proj = nn.Linear(hidden_dim, hidden_dim)  # of the position's sine features
            self.content_class_embedding = nn.Embedding(cfg.MODEL.DETR.NUM_CLASSES, hidden_dim)

    def forward(
        self,
        features: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """``features``: "p3".."p7" (B, C, H_l, W_l); ``image_sizes``: unpadded resized (h, w) per image;
        ``targets``: per image ``boxes`` (N, 4) xyxy resized-image pixels and ``labels`` (N,) 0-based, or None.

        Returns ``tokens`` (B, K, d), ``pos`` (B, K, d), ``padding_mask`` (B, K) bool (True = no detection; such
        rows of ``tokens`` and ``pos`` are zero) and ``losses``: ``loss_fcos_{cls,loc,ctr}`` × FCOS_LOSS_WEIGHT in
        training mode with targets, else ``{}``.
        """
        self._check_inputs(features, image_sizes, targets)
        with_losses = self.training and targets is not None and self.fcos_loss_weight != 0
        pyramid = [features[f"p{level}"] for level in FCOS_LEVELS]
        with torch.set_grad_enabled(torch.is_grad_enabled() and with_losses):
            detections, losses = self.fcos(pyramid, image_sizes, targets if with_losses else None)

        image_idx, slot = (~detections.padding_mask).nonzero(as_tuple=True)
        boxes = detections.boxes[image_idx, slot]
        rois = torch.cat((image_idx[:, None].to(boxes.dtype), boxes), dim=1)
        levels = assign_boxes_to_levels(boxes, image_areas_of_rois(rois, image_sizes), ROI_LEVELS[0], ROI_LEVELS[-1])
        roi_features = multilevel_roi_align(
            {level: features[f"p{level}"] for level in ROI_LEVELS}, rois, levels, self.roi_resolution
        )
        detection_tokens = self.token_proj(self.spatial_attention(roi_features))
        sizes = image_sizes_tensor(image_sizes, boxes.dtype, boxes.device)
        box_sines = self.box_embedding.sine_features(boxes, sizes[image_idx])
        detection_pos = self.box_embedding.proj(box_sines)
        if self.detection_content:
            labels, scores = detections.labels[image_idx, slot], detections.scores[image_idx, slot]
            detection_tokens = (detection_tokens + self.content_box_proj(box_sines)
                                + self.content_class_embedding(labels) * scores[:, None].to(detection_tokens.dtype))

        slots = detections.padding_mask.shape
        tokens = _to_slots(detection_tokens, image_idx, slot, slots)
        pos = _to_slots(detection_pos, image_idx, slot, slots)
        losses = {name: value * self.fcos_loss_weight for name, value in losses.items()}
        return tokens, pos, detections.padding_mask, losses

    def _check_inputs(
        self,
        features: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]],
    ) -> None:
        missing = [f"p{level}" for level in FCOS_LEVELS if f"p{level}" not in features]
        if missing:
            raise KeyError(f"CenterMaskInjector needs FPN features p3..p7; missing {missing} (got {sorted(features)})")
        batch = features["p3"].shape[0]
        for level in FCOS_LEVELS:
            shape = tuple(features[f"p{level}"].shape)
            if len(shape) != 4 or shape[:2] != (batch, self.in_channels):
                raise ValueError(
                    f"CenterMaskInjector: p{level} has shape {shape}; expected ({batch}, {self.in_channels}, H, W) "
                    f"with {self.in_channels} = MODEL.FPN.OUT_CHANNELS"
                )
        if len(image_sizes) != batch:
            raise ValueError(f"CenterMaskInjector: {len(image_sizes)} image_sizes for a batch of {batch}")
        if targets is not None and len(targets) != batch:
            raise ValueError(f"CenterMaskInjector: {len(targets)} targets for a batch of {batch}")


def _to_slots(rows: Tensor, image_idx: Tensor, slot: Tensor, slots: torch.Size) -> Tensor:
    """Scatter (N, d) rows into a zero (B, K, d) tensor at (image_idx, slot)."""
    return rows.new_zeros(*slots, rows.shape[1]).index_put((image_idx, slot), rows)


def _check_config(cfg) -> None:
    """Clear errors for settings the injector cannot build with, naming the config key."""
    centermask = cfg.MODEL.CENTERMASK
    check_fcos_channels(cfg.MODEL.FPN.OUT_CHANNELS)
    if cfg.MODEL.DETR.HIDDEN_DIM % 8 != 0:
        raise ValueError(f"MODEL.DETR.HIDDEN_DIM = {cfg.MODEL.DETR.HIDDEN_DIM} must be a multiple of 8 (box embedding)")
    for key in ("NUM_INJECTED_DETECTIONS", "ROI_RESOLUTION", "PRE_NMS_TOPK"):
        if centermask[key] < 1:
            raise ValueError(f"MODEL.CENTERMASK.{key} must be >= 1, got {centermask[key]}")
    if centermask.NUM_INJECTED_DETECTIONS_TRAIN < 0:
        raise ValueError("MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS_TRAIN must be >= 0 (0 = NUM_INJECTED_DETECTIONS), "
                         f"got {centermask.NUM_INJECTED_DETECTIONS_TRAIN}")
    for key in ("SCORE_THRESH", "NMS_THRESH"):
        if not 0.0 <= centermask[key] <= 1.0:
            raise ValueError(f"MODEL.CENTERMASK.{key} must be in [0, 1], got {centermask[key]}")
