"""Batch padding and the feature-map padding mask: the ResNet/DETR path pads to the batch's largest image (no
size divisibility, as released), FPN backbones to a multiple of 32; the mask keeps ceil(h/s) x ceil(w/s) cells."""
import torch

from configs.defaults import get_cfg
from modeling.backbone.fpn import VoVNetFPN
from modeling.backbone.resnet import ResNetBackbone
from modeling.backbone.vovnet import VoVNet
from modeling.meta_arch_base import MetaArchitectureBase, feature_padding_mask, flatten_feature_map


def items(*sizes):
    return [{"image": torch.full((3, h, w), 100, dtype=torch.uint8)} for h, w in sizes]


def test_resnet_batches_pad_to_the_largest_image_and_fpn_batches_to_multiples_of_32():
    cfg = get_cfg()
    resnet = MetaArchitectureBase(cfg, ResNetBackbone(50, "FrozenBN", out_features=("res5",)))
    tensor, mask, sizes = resnet.preprocess_images(items((50, 70), (61, 45)))
    assert resnet.size_divisibility == 1 and tuple(tensor.shape) == (2, 3, 61, 70)
    assert sizes == [(50, 70), (61, 45)]
    assert mask[0, :50, :70].logical_not().all() and mask[0, 50:].all() and mask[1, :, 45:].all()
    vovnet = MetaArchitectureBase(cfg, VoVNetFPN(VoVNet("V-19-slim-eSE", "FrozenBN", 0), 32))
    tensor, _, _ = vovnet.preprocess_images(items((50, 70), (61, 45)))
    assert vovnet.size_divisibility == 32 and tuple(tensor.shape) == (2, 3, 64, 96)
    # The ResNet's res5 of a 61 x 70 batch is ceil(61/32) x ceil(70/32) = 2 x 3 cells.
    with torch.no_grad():
        assert tuple(resnet.backbone(torch.zeros(1, 3, 61, 70))["res5"].shape[-2:]) == (2, 3)


def test_feature_mask_keeps_ceil_of_each_image_over_the_stride():
    # Batch padded to 100 x 100 (no divisibility), stride 32 -> a 4 x 4 map.  Image 0 is 100 x 100 (4 x 4 valid
    # cells); image 1 is 90 x 40: ceil(90/32) = 3 rows, ceil(40/32) = 2 columns.  Resizing the pixel mask instead
    # (nearest: rows 0, 25, 50, 75) would call 4 rows and 2 columns of image 1 valid.
    padding = torch.ones(2, 100, 100, dtype=torch.bool)
    padding[0] = False
    padding[1, :90, :40] = False
    mask = feature_padding_mask(padding, (4, 4), 32)
    assert not mask[0].any()
    expected = torch.ones(4, 4, dtype=torch.bool)
    expected[:3, :2] = False
    assert torch.equal(mask[1], expected)
    # A map larger than the sampled mask (never for ceil-sized maps) is padding there.
    assert feature_padding_mask(padding, (5, 4), 32)[0, 4].all()

    feature = torch.zeros(2, 8, 4, 4)
    _, _, flat = flatten_feature_map(feature, padding, torch.nn.Identity(), lambda m: torch.zeros(2, 8, 4, 4),
                                     stride=32)
    assert torch.equal(flat, mask.flatten(1))
    _, _, resized = flatten_feature_map(feature, padding, torch.nn.Identity(), lambda m: torch.zeros(2, 8, 4, 4))
    assert int((~resized[1]).sum()) == 8 and int((~flat[1]).sum()) == 6


def test_with_sides_divisible_by_the_stride_both_masks_agree():
    padding = torch.ones(1, 64, 96, dtype=torch.bool)
    padding[0, :50, :70] = False
    for stride, size in ((32, (2, 3)), (16, (4, 6)), (8, (8, 12))):
        resized = torch.nn.functional.interpolate(padding[None].float(), size=size)[0].bool()
        assert torch.equal(feature_padding_mask(padding, size, stride), resized)
