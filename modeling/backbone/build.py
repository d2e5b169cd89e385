"""``build_backbone(cfg)``: the image backbone named by ``MODEL.BACKBONE.NAME``."""
from torch import nn

from .fpn import VoVNetFPN
from .resnet import ResNetBackbone
from .vovnet import VoVNet

BACKBONE_NAMES = ("ResNet", "VoVNetFPN")


def build_backbone(cfg) -> nn.Module:
    """The backbone of ``cfg``: a module with ``forward(x) -> dict[str, Tensor]`` and ``output_shape()``.

    * ``"ResNet"``: torchvision ResNet-``MODEL.RESNETS.DEPTH`` trunk with ``MODEL.RESNETS.NORM``, output ``res5``.
    * ``"VoVNetFPN"``: VoVNetV2 ``MODEL.VOVNET.CONV_BODY`` with ``MODEL.VOVNET.NORM`` + CenterMask FPN of
      ``MODEL.FPN.OUT_CHANNELS`` channels, outputs ``p3`` ... ``p7``.

    ``MODEL.BACKBONE.FREEZE_AT`` leading stages (stem = 1) are frozen in both.
    """
    name = cfg.MODEL.BACKBONE.NAME
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    if name == "ResNet":
        return ResNetBackbone(cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM, freeze_at)
    if name == "VoVNetFPN":
        bottom_up = VoVNet(cfg.MODEL.VOVNET.CONV_BODY, cfg.MODEL.VOVNET.NORM, freeze_at)
        return VoVNetFPN(bottom_up, cfg.MODEL.FPN.OUT_CHANNELS)
    raise ValueError(f"MODEL.BACKBONE.NAME must be one of {BACKBONE_NAMES}, got {name!r}")
