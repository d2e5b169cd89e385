"""Image backbones: DETR's ResNet trunk and VoVNetV2 + CenterMask FPN (``build_backbone(cfg)``)."""
from .build import build_backbone
from .fpn import VoVNetFPN
from .resnet import ResNetBackbone
from .shape_spec import ShapeSpec
from .vovnet import VOVNET_SPECS, VoVNet

__all__ = ["build_backbone", "ResNetBackbone", "VoVNet", "VoVNetFPN", "ShapeSpec", "VOVNET_SPECS"]
