"""DETR's ResNet trunk: torchvision's ResNet without its classifier.

The layout is torchvision's (stride in the 3x3 convolution of a bottleneck, as in DETR), so parameter names are
torchvision's under ``body.`` (``body.conv1.weight``, ``body.bn1.running_mean``, ``body.layer1.0.conv1.weight``,
``body.layer1.0.downsample.0.weight`` ...).  detectron2 names the same tensors ``stem.conv1``, ``res2.0.conv1``,
``res2.0.shortcut`` ...; ``modeling.weight_conversion`` translates them.

Stages, in detectron2's numbering used by ``FREEZE_AT`` and the output names: stem (``conv1``/``bn1``),
``res2`` = ``layer1`` (stride 4), ``res3`` = ``layer2`` (8), ``res4`` = ``layer3`` (16), ``res5`` = ``layer4`` (32).
"""
from collections import OrderedDict
from functools import partial
from typing import Dict, Sequence

from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import Bottleneck, ResNet

from .norm import build_norm, freeze
from .shape_spec import ShapeSpec

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# detectron2 stage name -> (torchvision module name, output channels, stride)
STAGES = OrderedDict(
    res2=("layer1", 256, 4),
    res3=("layer2", 512, 8),
    res4=("layer3", 1024, 16),
    res5=("layer4", 2048, 32),
)


class ResNetBackbone(nn.Module):
    """A torchvision bottleneck ResNet returning the feature maps of the stages in ``out_features``.

    Args:
        depth: 50 or 101.
        norm: "FrozenBN", "BN", "SyncBN" or "GN".
        freeze_at: number of leading stages frozen (0 none, 1 stem, 2 stem + res2, ..., 5 everything).
        out_features: which of ``res2`` ... ``res5`` to return; the trunk stops after the last of them.
    """

    # The ResNet/DETR path pads a batch to its largest image only, no rounding (as released; docs/MODEL.md, "Input").
    size_divisibility = 1

    def __init__(self, depth: int = 101, norm: str = "FrozenBN", freeze_at: int = 2,
                 out_features: Sequence[str] = ("res5",)):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        unknown = [name for name in out_features if name not in STAGES]
        if unknown or not out_features:
            raise ValueError(f"ResNet out_features must be a non-empty subset of {list(STAGES)}, got {out_features}")
        if not 0 <= freeze_at <= 1 + len(STAGES):
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT must be in [0, {1 + len(STAGES)}], got {freeze_at}")
        trunk = ResNet(Bottleneck, list(BLOCKS_PER_STAGE[depth]),
                       norm_layer=partial(build_norm, norm, config_key="MODEL.RESNETS.NORM"))
        self.out_features = tuple(name for name in STAGES if name in out_features)
        self.body = IntermediateLayerGetter(trunk, {STAGES[name][0]: name for name in self.out_features})
        self._freeze_stages(freeze_at)

    def _freeze_stages(self, freeze_at: int) -> None:
        stem = ["conv1", "bn1"] if freeze_at >= 1 else []
        stages = [module_name for module_name, _, _ in list(STAGES.values())[: max(freeze_at - 1, 0)]]
        for module_name in stem + stages:
            if module_name in self.body:  # stages after the last output are not built
                self.body[module_name] = freeze(self.body[module_name])

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """``x`` (B, 3, H, W) normalised image -> ``{"res5": (B, 2048, ceil(H/32), ceil(W/32)), ...}``."""
        return dict(self.body(x))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {name: ShapeSpec(STAGES[name][1], STAGES[name][2]) for name in self.out_features}
