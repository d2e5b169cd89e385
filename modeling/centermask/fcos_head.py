"""FCOS's prediction head with the per-level learnable regression scales."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOSHead


def _flatten_level(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C), row-major over the cells (torchvision's anchor order)."""
    return x.flatten(2).transpose(1, 2)


class ScaledFCOSHead(FCOSHead):
    """torchvision's ``FCOSHead`` (GroupNorm towers of ``num_convs`` convolutions, 4 as in FCOS; class logits, box
    distances, centerness) plus FCOS's learnable scalar per pyramid level that multiplies the regression before its
    ReLU.

    One head is shared by all levels, so a single output layer would have to predict distances of very different
    magnitudes; the scales (initialised to 1) let each level rescale them (FCOS paper, §3.1; centermask2's FCOS has
    them, torchvision's does not).  With 256 channels and 150 classes: 5,082,011 torchvision parameters + 5 scales
    = 5,082,016.  Distances are in units of the level's stride (``BoxLinearCoder(normalize_by_size=True)``).
    Only ``forward`` is overridden; ``compute_loss`` is torchvision's.
    """

    def __init__(self, in_channels: int, num_classes: int, num_levels: int, num_convs: int = 4):
        super().__init__(in_channels, num_anchors=1, num_classes=num_classes, num_convs=num_convs)
        self.scales = nn.Parameter(torch.ones(num_levels))

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        """``features``: one (B, C, H_l, W_l) map per level, finest first.  Returns torchvision's layout, all levels
        concatenated: ``cls_logits`` (B, A, num_classes), ``bbox_regression`` (B, A, 4) non-negative (l, t, r, b)
        in strides, ``bbox_ctrness`` (B, A, 1) logits, with A = sum of H_l * W_l."""
        if len(features) != self.scales.numel():
            raise ValueError(f"ScaledFCOSHead: expected {self.scales.numel()} levels, got {len(features)}")
        cls_head, reg_head = self.classification_head, self.regression_head
        logits, distances, centerness = [], [], []
        for level, x in enumerate(features):
            logits.append(_flatten_level(cls_head.cls_logits(cls_head.conv(x))))
            box_tower = reg_head.conv(x)
            distances.append(_flatten_level(F.relu(reg_head.bbox_reg(box_tower) * self.scales[level])))
            centerness.append(_flatten_level(reg_head.bbox_ctrness(box_tower)))
        return {
            "cls_logits": torch.cat(logits, dim=1),
            "bbox_regression": torch.cat(distances, dim=1),
            "bbox_ctrness": torch.cat(centerness, dim=1),
        }
