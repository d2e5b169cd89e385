"""CenterMask's feature pyramid on VoVNet: stages 3-5 -> P3-P7, built from torchvision's FPN.

P3-P5: 1x1 lateral conv per stage (``fpn.inner_blocks.{0,1,2}.0``), nearest top-down upsampling and addition, 3x3
output conv (``fpn.layer_blocks.{0,1,2}.0``), all with bias and no norm.  P6 = 3x3 stride-2 conv on P5
(``fpn.extra_blocks.p6``), P7 = 3x3 stride-2 conv on ReLU(P6) (``fpn.extra_blocks.p7``).  centermask2 calls these
``fpn_lateral{3,4,5}``, ``fpn_output{3,4,5}`` and ``top_block.p6/p7``; ``modeling.weight_conversion`` renames them.
"""
from collections import OrderedDict
from typing import Dict

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from .shape_spec import ShapeSpec
from .vovnet import VoVNet

FPN_INPUTS = OrderedDict(p3="stage3", p4="stage4", p5="stage5")  # pyramid level -> VoVNet stage it is built on
FPN_STRIDES = OrderedDict(p3=8, p4=16, p5=32, p6=64, p7=128)


class VoVNetFPN(nn.Module):
    """VoVNet trunk (``bottom_up``) + FPN (``fpn``): ``forward(x) -> {"p3": ..., ..., "p7": ...}``."""

    # Inputs padded to a multiple of the coarsest FPN input stride, so the top-down sums line up (as detectron2).
    size_divisibility = 32

    def __init__(self, bottom_up: VoVNet, out_channels: int = 256):
        super().__init__()
        missing = [stage for stage in FPN_INPUTS.values() if stage not in bottom_up.out_features]
        if missing:
            raise ValueError(f"VoVNetFPN needs the VoVNet to return {list(FPN_INPUTS.values())}, missing {missing}")
        self.bottom_up = bottom_up
        in_shapes = bottom_up.output_shape()
        self.out_channels = out_channels
        # P6 is computed from P5 (not from C5) because LastLevelP6P7 gets in_channels == out_channels.
        self.fpn = FeaturePyramidNetwork(
            [in_shapes[stage].channels for stage in FPN_INPUTS.values()], out_channels,
            extra_blocks=LastLevelP6P7(out_channels, out_channels))

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """``x`` (B, 3, H, W) -> P3-P7, each (B, out_channels, ~H/stride, ~W/stride)."""
        stages = self.bottom_up(x)
        return dict(self.fpn(OrderedDict((level, stages[stage]) for level, stage in FPN_INPUTS.items())))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {level: ShapeSpec(self.out_channels, stride) for level, stride in FPN_STRIDES.items()}
