"""ResNet trunk: torchvision layout, exact size, outputs, freezing and norms."""
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from configs.defaults import get_cfg
from modeling.backbone import ResNetBackbone, build_backbone

torch.set_num_threads(1)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet101_frozen_bn_has_the_released_parameter_count():
    cfg = get_cfg()  # defaults: ResNet-101, FrozenBN
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    assert isinstance(backbone, ResNetBackbone)
    assert num_parameters(backbone) == 42_394_816


def test_resnet_uses_torchvision_names_without_classifier():
    with torch.device("meta"):
        keys = set(ResNetBackbone(50).state_dict())
    assert {"body.conv1.weight", "body.bn1.running_var", "body.layer1.0.conv1.weight",
            "body.layer1.0.downsample.0.weight", "body.layer1.0.downsample.1.running_mean",
            "body.layer4.2.bn3.bias"} <= keys
    assert not any(key.startswith(("body.fc", "fc.", "body.avgpool")) for key in keys)
    # FrozenBN keeps no batch counter.
    assert not any(key.endswith("num_batches_tracked") for key in keys)


def test_stride_sits_in_the_3x3_convolution():
    with torch.device("meta"):
        backbone = ResNetBackbone(50)
    first_block = backbone.body.layer2[0]
    assert first_block.conv1.stride == (1, 1)
    assert first_block.conv2.stride == (2, 2)


def test_outputs_match_output_shape():
    backbone = ResNetBackbone(50, out_features=("res2", "res3", "res4", "res5")).eval()
    image_size = 96
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, image_size, image_size))
    shapes = backbone.output_shape()
    assert list(features) == ["res2", "res3", "res4", "res5"] == list(shapes)
    for name, feature in features.items():
        channels, stride = shapes[name]
        assert feature.shape == (2, channels, image_size // stride, image_size // stride)
    assert shapes["res5"] == (2048, 32)


def test_default_output_is_res5_only():
    with torch.device("meta"):
        backbone = ResNetBackbone(50)
    assert backbone.output_shape() == {"res5": (2048, 32)}


@pytest.mark.parametrize("freeze_at, frozen_prefixes", [
    (0, ()),
    (1, ("conv1", "bn1")),
    (2, ("conv1", "bn1", "layer1")),
    (4, ("conv1", "bn1", "layer1", "layer2", "layer3")),
])
def test_freeze_at_freezes_the_leading_stages(freeze_at, frozen_prefixes):
    with torch.device("meta"):
        backbone = ResNetBackbone(50, norm="BN", freeze_at=freeze_at)
    for name, parameter in backbone.body.named_parameters():
        assert parameter.requires_grad == (not name.startswith(frozen_prefixes)), name
    # Frozen stages' batch norms become FrozenBatchNorm2d (their statistics must not move); the others stay BN.
    for name, module in backbone.body.named_modules():
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            frozen = name.startswith(frozen_prefixes)
            assert isinstance(module, FrozenBatchNorm2d if frozen else nn.BatchNorm2d), name


def test_frozen_stages_keep_their_statistics_in_training():
    backbone = ResNetBackbone(50, norm="BN", freeze_at=2, out_features=("res2", "res3")).train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone(torch.randn(2, 3, 32, 32))
    after = backbone.state_dict()
    assert torch.equal(before["body.layer1.0.bn1.running_mean"], after["body.layer1.0.bn1.running_mean"])
    assert not torch.equal(before["body.layer2.0.bn1.running_mean"], after["body.layer2.0.bn1.running_mean"])


@pytest.mark.parametrize("norm, norm_type", [("FrozenBN", FrozenBatchNorm2d), ("BN", nn.BatchNorm2d),
                                             ("SyncBN", nn.SyncBatchNorm), ("GN", nn.GroupNorm)])
def test_norm_choice(norm, norm_type):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    assert isinstance(backbone.body.layer3[0].bn2, norm_type)


def test_bad_config_values_name_the_key():
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH"):
        ResNetBackbone(34)
    with pytest.raises(ValueError, match="MODEL.RESNETS.NORM"):
        ResNetBackbone(50, norm="LayerNorm")
    with pytest.raises(ValueError, match="MODEL.BACKBONE.FREEZE_AT"):
        ResNetBackbone(50, freeze_at=7)
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "Swin"
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME"):
        build_backbone(cfg)
