"""The lab's (centermask2 layout) FCOS and SAG-Mask checkpoints convert into our CenterMask models and FCOSDetector."""
import pytest
import torch

from configs.defaults import get_cfg
from modeling import build_model
from modeling.weight_conversion import convert_to_model_state_dict, rename_iterativesg

from tests import ROOT

CHANNELS = 64  # the tiny configs' FPN
TOWER_CONVS = (0, 3, 6, 9)  # Sequential(conv, GroupNorm, ReLU) x 4
TOWER_NORMS = (1, 4, 7, 10)


def lab_fcos_head(num_classes: int, prefix: str = "proposal_generator.fcos_head.", seed: int = 0) -> dict:
    """A centermask2/lab FCOS head written from its documented key names: 43 tensors."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    state = {}
    for tower in ("cls_tower", "bbox_tower"):
        for index in TOWER_CONVS:
            state[f"{prefix}{tower}.{index}.weight"] = rand(CHANNELS, CHANNELS, 3, 3)
            state[f"{prefix}{tower}.{index}.bias"] = rand(CHANNELS)
        for index in TOWER_NORMS:
            state[f"{prefix}{tower}.{index}.weight"] = rand(CHANNELS)
            state[f"{prefix}{tower}.{index}.bias"] = rand(CHANNELS)
    for name, out in (("cls_logits", num_classes), ("bbox_pred", 4), ("ctrness", 1)):
        state[f"{prefix}{name}.weight"] = rand(out, CHANNELS, 3, 3)
        state[f"{prefix}{name}.bias"] = rand(out)
    for level in range(5):
        state[f"{prefix}scales.{level}.scale"] = torch.tensor([1.0 + level / 10])
    assert len(state) == 43
    return state


def lab_mask_head(prefix: str = "roi_heads.mask_head.") -> dict:
    state = {f"{prefix}mask_fcn{k}.{t}": torch.randn(CHANNELS, CHANNELS, 3, 3) if t == "weight" else
             torch.randn(CHANNELS) for k in range(1, 5) for t in ("weight", "bias")}
    state[f"{prefix}spatialAtt.conv.weight"] = torch.randn(1, 2, 3, 3)
    state[f"{prefix}deconv.weight"] = torch.randn(CHANNELS, CHANNELS, 2, 2)
    state[f"{prefix}deconv.bias"] = torch.randn(CHANNELS)
    state[f"{prefix}predictor.weight"] = torch.randn(80, CHANNELS, 1, 1)  # COCO's; not built here
    state[f"{prefix}predictor.bias"] = torch.randn(80)
    return state


def tiny_model(config: str = "tiny_cpu.yaml", **overrides):
    cfg = get_cfg()
    cfg.merge_from_file(f"{ROOT}/configs/{config}")
    if config == "tiny_cpu.yaml":
        cfg.MODEL.ENCODER.NAME = "CenterMask"
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return build_model(cfg)


def _assert_head_loaded(converted, checkpoint, head, num_loaded=43):
    assert converted[f"{head}scales"].tolist() == pytest.approx([1.0, 1.1, 1.2, 1.3, 1.4])
    assert torch.equal(converted[f"{head}classification_head.conv.3.weight"],
                       checkpoint["proposal_generator.fcos_head.cls_tower.3.weight"])
    assert torch.equal(converted[f"{head}regression_head.conv.10.bias"],
                       checkpoint["proposal_generator.fcos_head.bbox_tower.10.bias"])
    assert torch.equal(converted[f"{head}regression_head.bbox_reg.weight"],
                       checkpoint["proposal_generator.fcos_head.bbox_pred.weight"])
    assert torch.equal(converted[f"{head}regression_head.bbox_ctrness.bias"],
                       checkpoint["proposal_generator.fcos_head.ctrness.bias"])


def test_lab_fcos_head_loads_43_of_43_into_the_centermask_model():
    model = tiny_model()  # 12 classes
    checkpoint = lab_fcos_head(num_classes=12)
    converted, report = convert_to_model_state_dict({"model": checkpoint}, model)
    assert report.source_format == "vovnet"  # the lab's / centermask2 layout, not "ours"
    assert len(report.converted) == 43 and report.unexpected == [] and report.left_at_init == []
    assert all(targets[0].startswith("centermask.fcos.head.") for targets in report.converted.values())
    _assert_head_loaded(converted, checkpoint, "centermask.fcos.head.")
    head_keys = {k for k in model.state_dict() if k.startswith("centermask.fcos.head.")}
    assert head_keys <= set(converted) and not [k for k in report.missing if k in head_keys]
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert unexpected == [] and sorted(missing) == sorted(report.missing)
    assert model.centermask.fcos.head.scales.tolist() == pytest.approx([1.0, 1.1, 1.2, 1.3, 1.4])


def test_class_logits_of_another_class_count_are_reported_and_left_at_init():
    model = tiny_model()
    initial = model.state_dict()["centermask.fcos.head.classification_head.cls_logits.weight"].clone()
    converted, report = convert_to_model_state_dict(lab_fcos_head(num_classes=150), model)
    assert len(report.converted) == 41
    assert [entry.split()[0] for entry in report.left_at_init] == [
        "proposal_generator.fcos_head.cls_logits.weight", "proposal_generator.fcos_head.cls_logits.bias"]
    assert "(150, 64, 3, 3) vs model (12, 64, 3, 3)" in report.left_at_init[0]
    assert "centermask.fcos.head.classification_head.cls_logits.weight" in report.missing
    assert "class count differs, left at initialisation (2)" in str(report)
    model.load_state_dict(converted, strict=False)
    assert torch.equal(model.state_dict()["centermask.fcos.head.classification_head.cls_logits.weight"], initial)


def test_lab_fcos_head_loads_into_the_fcos_detector():
    model = tiny_model("tiny_fcos_cpu.yaml")
    checkpoint = lab_fcos_head(num_classes=12)
    converted, report = convert_to_model_state_dict(checkpoint, model)
    assert len(report.converted) == 43 and report.unexpected == []
    _assert_head_loaded(converted, checkpoint, "fcos.head.")


def test_sag_mask_head_loads_into_the_paste_fusion_and_its_predictor_is_dropped():
    model = tiny_model(**{"MODEL.CENTERMASK.FUSION": "paste", "MODEL.ENCODER.IN_FEATURE": "p5"})
    checkpoint = {**lab_fcos_head(num_classes=12), **lab_mask_head()}
    converted, report = convert_to_model_state_dict(checkpoint, model)
    assert len(report.converted) == 43 + 11
    assert sorted(report.unexpected) == ["roi_heads.mask_head.predictor.bias", "roi_heads.mask_head.predictor.weight"]
    assert torch.equal(converted["centermask.mask_head.spatial_attention.conv.weight"],
                       checkpoint["roi_heads.mask_head.spatialAtt.conv.weight"])
    assert torch.equal(converted["centermask.mask_head.mask_fcn4.bias"], checkpoint["roi_heads.mask_head.mask_fcn4.bias"])
    assert not [k for k in report.missing if k.startswith(("centermask.mask_head.", "centermask.fcos."))]


def test_lab_full_scene_graph_checkpoint_names():
    # The lab's IterativeRelationDetr stores its VoVNet inside DETR's Joiner and registers FCOS and the SAG-Mask
    # head again under the transformer.
    assert rename_iterativesg("detr.backbone.0.backbone.bottom_up.stem.stem_1/conv.weight") == [
        "backbone.bottom_up.stem.stem_1/conv.weight"]
    assert rename_iterativesg("detr.backbone.0.backbone.fpn_output4.bias") == ["backbone.fpn.layer_blocks.1.0.bias"]
    assert rename_iterativesg("detr.transformer.centermask.fcos.fcos_head.scales.2.scale") == [
        "centermask.fcos.head.scales[2]", "fcos.head.scales[2]"]
    assert rename_iterativesg("detr.transformer.roi_heads.mask_head.deconv.weight") == [
        "centermask.mask_head.deconv.weight"]
    assert rename_iterativesg("detr.transformer.decoder.subject_layers.0.linear1.weight") == [
        "transformer.decoder.subject_layers.0.linear1.weight"]
