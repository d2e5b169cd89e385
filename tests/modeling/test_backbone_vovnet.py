"""VoVNetV2 + CenterMask FPN: layout of the released weights, exact sizes, outputs, eSE, freezing, FrozenBN."""
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from configs.defaults import get_cfg
from modeling.backbone import VOVNET_SPECS, VoVNet, VoVNetFPN, build_backbone
from modeling.backbone.vovnet import EffectiveSE, OSAModule

torch.set_num_threads(1)
TINY = "V-19-slim-eSE"


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def vovnet_fpn_cfg(conv_body: str, norm: str = "FrozenBN", freeze_at: int = 2):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "VoVNetFPN"
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.VOVNET.CONV_BODY = conv_body
    cfg.MODEL.VOVNET.NORM = norm
    return cfg


@pytest.mark.parametrize("conv_body, expected", [
    ("V-39-eSE", 28_704_704), ("V-57-eSE", 44_964_288), ("V-99-eSE", 73_010_368)])
def test_backbone_plus_fpn_has_the_lab_parameter_count(conv_body, expected):
    with torch.device("meta"):
        backbone = build_backbone(vovnet_fpn_cfg(conv_body))
    assert isinstance(backbone, VoVNetFPN)
    assert num_parameters(backbone) == expected


def test_centermask_fpn_alone_has_its_parameter_count():
    with torch.device("meta"):
        backbone = build_backbone(vovnet_fpn_cfg("V-99-eSE"))
    assert num_parameters(backbone.fpn) == 3_540_992


def test_v99_names_follow_the_released_vovnet_detectron2_weights():
    with torch.device("meta"):
        keys = set(build_backbone(vovnet_fpn_cfg("V-99-eSE")).state_dict())
    prefix = "bottom_up."
    expected = ["stem.stem_1/conv.weight", "stem.stem_3/norm.running_var",
                "stage4.OSA4_3.layers.2.OSA4_3_2/conv.weight",
                *(f"stage4.OSA4_3.layers.2.OSA4_3_2/norm.{n}" for n in ("weight", "bias", "running_mean",
                                                                        "running_var")),
                "stage4.OSA4_3.concat.OSA4_3_concat/conv.weight", "stage4.OSA4_3.ese.fc.weight",
                "stage4.OSA4_3.ese.fc.bias", "stage5.OSA5_3.layers.4.OSA5_3_4/conv.weight",
                "stage3.OSA3_3.concat.OSA3_3_concat/norm.bias"]
    assert {prefix + key for key in expected} <= keys
    assert not any(key.startswith(prefix + "stage4.OSA4_10") for key in keys)  # V-99 stage 4 has 9 modules


@pytest.mark.parametrize("conv_body", list(VOVNET_SPECS))
def test_every_osa_module_has_ese_one_concat_and_identity_after_the_first(conv_body):
    spec = VOVNET_SPECS[conv_body]
    with torch.device("meta"):
        trunk = VoVNet(conv_body)
    for stage_index, stage_name in enumerate(("stage2", "stage3", "stage4", "stage5")):
        stage = getattr(trunk, stage_name)
        modules = [m for m in stage.children() if isinstance(m, OSAModule)]
        assert len(modules) == spec.modules_per_stage[stage_index]
        for position, module in enumerate(modules):
            assert isinstance(module.ese, EffectiveSE)
            assert len(module.layers) == spec.layers_per_module
            # One concatenation of the module input and every layer output feeds the 1x1 aggregation conv.
            in_channels = spec.stem_channels[-1] if stage_index == 0 else spec.out_channels[stage_index - 1]
            module_in = in_channels if position == 0 else spec.out_channels[stage_index]
            aggregation = module.concat[0]
            assert aggregation.kernel_size == (1, 1)
            assert aggregation.in_channels == module_in + spec.layers_per_module * spec.layer_channels[stage_index]
            assert module.identity == (position > 0)
        pools = [m for m in stage.children() if isinstance(m, nn.MaxPool2d)]
        if stage_name == "stage2":
            assert pools == []
        else:
            assert len(pools) == 1 and pools[0].ceil_mode and pools[0].stride == 2 and pools[0].kernel_size == 3


def test_ese_is_a_hard_sigmoid_gate():
    ese = EffectiveSE(4)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        ese.fc.weight.zero_()
        ese.fc.bias.fill_(3.0)  # hsigmoid(3) = 1: pass through
        assert torch.allclose(ese(x), x)
        ese.fc.bias.fill_(-3.0)  # hsigmoid(-3) = 0: closed
        assert torch.equal(ese(x), torch.zeros_like(x))
        ese.fc.bias.fill_(0.0)  # hsigmoid(0) = 1/2
        assert torch.allclose(ese(x), x / 2)


def test_identity_shortcut_adds_the_module_input():
    module = OSAModule(8, 4, 8, num_layers=2, name="OSA3_2", norm="BN", identity=True, depthwise=False).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        module.ese.fc.weight.zero_()
        module.ese.fc.bias.fill_(-3.0)  # gate closed: only the shortcut remains
        assert torch.equal(module(x), x)


@pytest.mark.parametrize("conv_body", ["V-19-slim-eSE", "V-19-slim-dw-eSE"])
def test_tiny_forward_shapes_match_output_shape(conv_body):
    backbone = build_backbone(vovnet_fpn_cfg(conv_body)).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    shapes = backbone.output_shape()
    assert list(features) == ["p3", "p4", "p5", "p6", "p7"] == list(shapes)
    for name, feature in features.items():
        channels, stride = shapes[name]
        assert channels == 256
        assert feature.shape == (2, 256, max(64 // stride, 1), max(64 // stride, 1)), name
    assert [shapes[n].stride for n in shapes] == [8, 16, 32, 64, 128]

    trunk_shapes = backbone.bottom_up.output_shape()
    with torch.no_grad():
        stages = backbone.bottom_up(torch.randn(1, 3, 64, 64))
    for name, feature in stages.items():
        channels, stride = trunk_shapes[name]
        assert feature.shape == (1, channels, 64 // stride, 64 // stride)
    assert [trunk_shapes[n].channels for n in trunk_shapes] == list(VOVNET_SPECS[conv_body].out_channels[1:])


def test_depthwise_spec_uses_separable_layers_and_reductions():
    with torch.device("meta"):
        keys = set(VoVNet("V-19-slim-dw-eSE").state_dict())
    assert "stem.stem_2/dw_conv3x3.weight" in keys and "stem.stem_2/pw_conv1x1.weight" in keys
    assert "stage2.OSA2_1.layers.0.OSA2_1_0/pw_norm.running_mean" in keys
    assert "stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/conv.weight" in keys
    assert not any("OSA2_1_reduction" in key for key in keys)  # stage 2 input is already 64 wide


def test_odd_input_sizes_follow_the_ceil_mode_pooling_arithmetic():
    def stem(n):  # two stride-2 3x3 convs with padding 1
        return (((n - 1) // 2 + 1) - 1) // 2 + 1

    def pool(n):  # 3x3/2 max-pool with ceil_mode
        return -(-(n - 3) // 2) + 1

    backbone = build_backbone(vovnet_fpn_cfg(TINY)).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 70, 90))
    p3 = (pool(stem(70)), pool(stem(90)))
    assert p3 == (9, 11)
    assert features["p3"].shape[-2:] == p3
    assert features["p4"].shape[-2:] == (pool(p3[0]), pool(p3[1]))
    assert features["p5"].shape[-2:] == (pool(pool(p3[0])), pool(pool(p3[1])))


@pytest.mark.parametrize("freeze_at, frozen", [(0, ()), (1, ("stem",)), (2, ("stem", "stage2")),
                                               (3, ("stem", "stage2", "stage3"))])
def test_freeze_at(freeze_at, frozen):
    backbone = build_backbone(vovnet_fpn_cfg(TINY, norm="BN", freeze_at=freeze_at))
    for name, parameter in backbone.named_parameters():
        is_frozen = name.startswith(tuple(f"bottom_up.{stage}." for stage in frozen))
        assert parameter.requires_grad == (not is_frozen), name
    norms = {name: type(m) for name, m in backbone.bottom_up.named_modules()
             if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))}
    for name, norm_type in norms.items():
        assert norm_type is (FrozenBatchNorm2d if name.startswith(frozen) else nn.BatchNorm2d), name


def test_frozen_bn_is_a_fixed_affine_map_that_never_updates():
    backbone = build_backbone(vovnet_fpn_cfg(TINY, freeze_at=0)).train()
    norms = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    generator = torch.Generator().manual_seed(0)
    for norm in norms:
        for name in ("weight", "bias", "running_mean"):
            getattr(norm, name).copy_(torch.randn(norm.weight.shape, generator=generator))
        norm.running_var.copy_(torch.rand(norm.weight.shape, generator=generator) + 0.5)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    # Frozen batch norms are buffers only: the trainable parameters are convolutions (and the FPN/eSE biases).
    norm = norms[0]
    x = torch.randn(2, norm.weight.numel(), 3, 3)
    expected = (x - norm.running_mean[:, None, None]) / torch.sqrt(norm.running_var[:, None, None] + norm.eps)
    expected = expected * norm.weight[:, None, None] + norm.bias[:, None, None]
    assert torch.allclose(norm(x), expected, atol=1e-5)
    assert not any(name.endswith(("norm.weight", "norm.bias")) for name, _ in backbone.named_parameters())


def test_group_norm_needs_divisible_widths():
    with pytest.raises(ValueError, match="MODEL.VOVNET.NORM"):
        build_backbone(vovnet_fpn_cfg(TINY, norm="GN"))  # slim widths (80, 112) are not multiples of 32
    with torch.device("meta"):
        backbone = build_backbone(vovnet_fpn_cfg("V-39-eSE", norm="GN"))
    assert any(isinstance(m, nn.GroupNorm) for m in backbone.modules())


def test_unknown_conv_body_names_the_key():
    with pytest.raises(ValueError, match="MODEL.VOVNET.CONV_BODY"):
        build_backbone(vovnet_fpn_cfg("V-42-eSE"))
