"""Weight conversion: every source naming loads into our names with the right tensors.

The model here is a small stand-in with the released IterativeSG parameter names (tiny widths) around one of our
real backbones.  Foreign checkpoints are produced from it by this file's own renaming rules, written in the
direction *our name -> foreign name*, independently of the converter.
"""
import logging
import os
import re

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from modeling.backbone import ResNetBackbone, VoVNet, VoVNetFPN
from modeling.weight_conversion import convert_to_model_state_dict

torch.set_num_threads(1)
D, FFN, LAYERS, QUERIES, CLASSES, PREDICATES = 8, 16, 2, 5, 4, 3


def attention(kv_dim: int = D) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(D, 2, kdim=kv_dim, vdim=kv_dim)


class EncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = attention()
        self.linear1, self.linear2 = nn.Linear(D, FFN), nn.Linear(FFN, D)
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)


class DecoderLayer(EncoderLayer):
    def __init__(self):
        super().__init__()
        self.multihead_attn = attention()
        self.norm3 = nn.LayerNorm(D)


class StandInModel(nn.Module):
    """The released IterativeSG layout (names only; tiny widths) on top of ``backbone``."""

    def __init__(self, backbone: nn.Module, feature_channels: int):
        super().__init__()
        self.backbone = backbone
        self.input_proj = nn.Conv2d(feature_channels, D, 1)
        self.query_embed, self.object_query_embed, self.relation_query_embed = (
            nn.Embedding(QUERIES, D) for _ in range(3))
        self.transformer = nn.Module()
        self.transformer.encoder = nn.Module()
        self.transformer.encoder.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))
        decoder = self.transformer.decoder = nn.Module()
        between_layers = range(LAYERS - 1)
        for branch in ("subject", "object", "relation"):
            setattr(decoder, f"{branch}_layers", nn.ModuleList(DecoderLayer() for _ in range(LAYERS)))
            setattr(decoder, f"{branch}_graph_query_attn", nn.ModuleList(attention(3 * D) for _ in between_layers))
            setattr(decoder, f"{branch}_graph_query_residual", nn.ModuleList(nn.Linear(D, D) for _ in between_layers))
            setattr(decoder, f"{branch}_graph_query_norm", nn.ModuleList(nn.LayerNorm(D) for _ in between_layers))
        decoder.object_pos_attn = nn.ModuleList(attention() for _ in range(LAYERS))
        decoder.object_pos_linear = nn.ModuleList(nn.Linear(D, D) for _ in range(LAYERS))
        decoder.relation_pos_attn = nn.ModuleList(attention(2 * D) for _ in range(LAYERS))
        decoder.relation_pos_linear = nn.ModuleList(nn.Linear(D, D) for _ in range(LAYERS))
        decoder.subject_norm, decoder.relation_norm = nn.LayerNorm(D), nn.LayerNorm(D)
        self.transformer.object_embed = nn.Linear(D, CLASSES + 1)
        self.transformer.object_bbox_coords = nn.Module()
        self.transformer.object_bbox_coords.layers = nn.ModuleList([nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, 4)])
        self.transformer.relation_embed = nn.Linear(D, PREDICATES + 1)


def resnet_model() -> StandInModel:
    return StandInModel(ResNetBackbone(50), 2048)


def vovnet_model() -> StandInModel:
    return StandInModel(VoVNetFPN(VoVNet("V-19-slim-eSE")), 256)


def random_state(model: nn.Module, seed: int = 0) -> dict:
    """Our-named state dict of ``model`` with every tensor (FrozenBN buffers included) drawn at random."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.rand(value.shape, generator=generator) + 0.5 for key, value in model.state_dict().items()}


# ---- the foreign namings, from our names -------------------------------------------------------------------------
def torchvision_to_detectron2_resnet(name: str) -> str:
    """``conv1.weight`` -> ``stem.conv1.weight``, ``layer3.5.bn2.bias`` -> ``res4.5.conv2.norm.bias`` ..."""
    name = re.sub(r"^conv1\.", "stem.conv1.", name)
    name = re.sub(r"^bn1\.", "stem.conv1.norm.", name)
    name = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", name)
    name = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", name)
    name = name.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
    return name


def released_iterativesg_name(name: str) -> str:
    if name.startswith("backbone.body."):
        return "detr.backbone.0.backbone." + torchvision_to_detectron2_resnet(name[len("backbone.body."):])
    return "detr." + name


def centermask2_name(name: str) -> str:
    fpn = re.match(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d)\.0\.(.*)", name)
    if fpn:
        kind = "fpn_lateral" if fpn.group(1) == "inner_blocks" else "fpn_output"
        return f"backbone.{kind}{int(fpn.group(2)) + 3}.{fpn.group(3)}"
    return name.replace("backbone.fpn.extra_blocks.", "backbone.top_block.")


def is_backbone(name: str) -> bool:
    return name.startswith("backbone.")


def assert_loads_exactly(converted: dict, expected: dict, model: nn.Module) -> None:
    assert set(converted) == set(expected)
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key
    model.load_state_dict(converted, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


# ---- tests -------------------------------------------------------------------------------------------------------
def test_our_checkpoint_is_identity_also_wrapped_and_with_ddp_prefix():
    model = vovnet_model()
    ours = random_state(model)
    for checkpoint in (ours, {"model": ours, "iteration": 7}, {f"module.{k}": v for k, v in ours.items()}):
        converted, report = convert_to_model_state_dict(checkpoint, model)
        assert report.source_format == "ours"
        assert report.missing == [] and report.unexpected == [] and report.num_renamed == 0
        assert_loads_exactly(converted, ours, model)


def test_released_iterativesg_checkpoint_loads_completely():
    model = resnet_model()
    ours = random_state(model)
    released = {released_iterativesg_name(k): v for k, v in ours.items()}
    assert "detr.backbone.0.backbone.res2.0.shortcut.norm.running_var" in released
    assert "detr.transformer.decoder.relation_pos_attn.1.k_proj_weight" in released
    converted, report = convert_to_model_state_dict({"model": released}, model)
    assert report.source_format == "iterativesg"
    assert report.missing == [] and report.unexpected == []
    assert report.num_renamed == len(released)
    assert_loads_exactly(converted, ours, model)


def test_numpy_values_and_num_batches_tracked_are_handled():
    model = resnet_model()
    ours = random_state(model)
    released = {released_iterativesg_name(k): v.numpy() for k, v in ours.items()}
    released["detr.backbone.0.backbone.res2.0.conv1.norm.num_batches_tracked"] = np.array(3)
    converted, report = convert_to_model_state_dict(released, model)
    assert report.missing == [] and report.unexpected == []  # FrozenBN has no counter: silently skipped
    assert_loads_exactly(converted, ours, model)


SINGLE_DECODER_SOURCES = {
    # original DETR (facebookresearch): torchvision ResNet under backbone.0.body
    "original": lambda name: name.replace("backbone.body.", "backbone.0.body."),
    # detectron2 DETR wrapper: detr. prefix, detectron2 ResNet
    "detectron2": lambda name: ("detr.backbone.0.backbone." + torchvision_to_detectron2_resnet(name[14:])
                                if name.startswith("backbone.body.") else "detr." + name),
}


@pytest.mark.parametrize("source", list(SINGLE_DECODER_SOURCES))
def test_single_decoder_detr_is_replicated_into_the_three_decoders(source):
    model = resnet_model()
    donor = random_state(model, seed=1)
    detr = {}
    for key, value in donor.items():
        if key.startswith(("backbone.", "input_proj.", "transformer.encoder.")):
            detr[key] = value
    for key, value in donor.items():  # the DETR decoder, heads and queries come from our subject branch
        for ours_prefix, detr_prefix in (("transformer.decoder.subject_layers.", "transformer.decoder.layers."),
                                         ("transformer.decoder.subject_norm.", "transformer.decoder.norm."),
                                         ("transformer.object_embed.", "class_embed."),
                                         ("transformer.object_bbox_coords.", "bbox_embed."),
                                         ("query_embed.", "query_embed.")):
            if key.startswith(ours_prefix):
                detr[detr_prefix + key[len(ours_prefix):]] = value
    checkpoint = {SINGLE_DECODER_SOURCES[source](k): v for k, v in detr.items()}
    assert any(k.endswith("bbox_embed.layers.2.weight") for k in checkpoint)

    converted, report = convert_to_model_state_dict(checkpoint, model)
    assert report.source_format == "detr" and report.unexpected == []
    fresh = ("transformer.relation_embed.", "transformer.decoder.object_pos", "transformer.decoder.relation_pos",
             "graph_query")
    assert report.missing and all(any(part in key for part in fresh) for key in report.missing)
    assert "transformer.relation_embed.weight" in report.missing
    for branch in ("subject", "object", "relation"):
        for key in [k for k in donor if k.startswith("transformer.decoder.subject_layers.")]:
            target = key.replace("subject_layers", f"{branch}_layers")
            assert torch.equal(converted[target], donor[key]), target
    for queries in ("query_embed.weight", "object_query_embed.weight", "relation_query_embed.weight"):
        assert torch.equal(converted[queries], donor["query_embed.weight"])
    assert torch.equal(converted["transformer.decoder.relation_norm.weight"],
                       donor["transformer.decoder.subject_norm.weight"])
    assert torch.equal(converted["transformer.object_bbox_coords.layers.2.bias"],
                       donor["transformer.object_bbox_coords.layers.2.bias"])
    assert torch.equal(converted["backbone.body.layer4.2.bn3.running_mean"],
                       donor["backbone.body.layer4.2.bn3.running_mean"])
    # Replicas are independent tensors: training one decoder must not move another.
    replicas = [converted[f"transformer.decoder.{branch}_layers.0.linear1.weight"]
                for branch in ("subject", "object", "relation")]
    assert len({t.data_ptr() for t in replicas}) == 3
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert sorted(missing) == sorted(report.missing) and unexpected == []


def test_centermask2_checkpoint_converts_backbone_and_fpn(caplog):
    model = vovnet_model()
    ours = random_state(model)
    checkpoint = {centermask2_name(k): v for k, v in ours.items() if is_backbone(k)}
    assert "backbone.fpn_lateral3.weight" in checkpoint and "backbone.top_block.p7.bias" in checkpoint
    assert "backbone.bottom_up.stage4.OSA4_1.layers.2.OSA4_1_2/conv.weight" in checkpoint
    checkpoint["proposal_generator.fcos_head.cls_logits.weight"] = torch.zeros(80, 256, 3, 3)
    with caplog.at_level(logging.WARNING, logger="modeling.weight_conversion"):
        converted, report = convert_to_model_state_dict({"model": checkpoint}, model, input_format="RGB")
    assert report.source_format == "vovnet"
    assert report.unexpected == ["proposal_generator.fcos_head.cls_logits.weight"]
    assert sorted(report.missing) == sorted(k for k in ours if not is_backbone(k))
    assert set(converted) == {k for k in ours if is_backbone(k)}
    assert all(torch.equal(converted[k], ours[k]) for k in converted)
    assert any("BGR" in note and "103.530" in note for note in report.notes)
    assert "BGR" in str(report)
    assert any("BGR" in record.getMessage() for record in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modeling.weight_conversion"):
        convert_to_model_state_dict(checkpoint, model, input_format="BGR")
    assert not caplog.records


def test_bare_imagenet_vovnet_names_go_to_the_trunk():
    model = vovnet_model()
    ours = random_state(model)
    prefix = "backbone.bottom_up."
    checkpoint = {k[len(prefix):]: v for k, v in ours.items() if k.startswith(prefix)}
    assert "stem.stem_1/conv.weight" in checkpoint
    converted, report = convert_to_model_state_dict(checkpoint, model)
    assert report.source_format == "vovnet" and report.unexpected == []
    assert set(converted) == {k for k in ours if k.startswith(prefix)}
    assert all(torch.equal(converted[k], ours[k]) for k in converted)
    assert "backbone.fpn.inner_blocks.0.0.weight" in report.missing


def test_torchvision_imagenet_resnet_goes_to_the_body():
    model = resnet_model()
    imagenet = torchvision.models.resnet50().state_dict()  # BatchNorm: has num_batches_tracked, and fc
    converted, report = convert_to_model_state_dict(imagenet, model)
    assert report.source_format == "torchvision-resnet"
    assert report.unexpected == ["fc.weight", "fc.bias"]
    assert set(converted) == {k for k in model.state_dict() if is_backbone(k)}
    assert torch.equal(converted["backbone.body.layer2.0.downsample.1.running_var"],
                       imagenet["layer2.0.downsample.1.running_var"])


def test_shape_mismatch_is_an_error_naming_the_key():
    model = resnet_model()
    released = {released_iterativesg_name(k): v for k, v in random_state(model).items()}
    released["detr.transformer.object_embed.weight"] = torch.zeros(CLASSES + 7, D)
    with pytest.raises(ValueError, match=r"detr\.transformer\.object_embed\.weight"):
        convert_to_model_state_dict(released, model)


def test_report_lists_missing_and_unexpected_keys_of_a_partial_checkpoint():
    model = resnet_model()
    ours = random_state(model)
    partial = {k: v for k, v in ours.items() if not k.startswith("transformer.encoder.")}
    partial["some_other_model.head.weight"] = torch.zeros(3)
    converted, report = convert_to_model_state_dict(partial, model)
    assert report.source_format == "ours"
    assert sorted(report.missing) == sorted(k for k in ours if k.startswith("transformer.encoder."))
    assert report.unexpected == ["some_other_model.head.weight"]
    assert "transformer.encoder.layers.*.norm1.weight (x2)" in str(report)


def test_not_a_state_dict_is_rejected_clearly():
    with pytest.raises(ValueError, match="no tensors"):
        convert_to_model_state_dict({"model": {"iteration": 3}}, resnet_model())


def test_convert_weights_tool_writes_our_names(tmp_path, monkeypatch, capsys):
    import modeling
    from tools import convert_weights

    model = resnet_model()
    ours = random_state(model)
    monkeypatch.setattr(modeling, "build_model", lambda cfg, predicate_counts=None: resnet_model(), raising=False)
    source = tmp_path / "released.pth"
    torch.save({"model": {released_iterativesg_name(k): v for k, v in ours.items()}}, source)
    output = tmp_path / "out" / "converted.pth"
    assert convert_weights.main(["--input", str(source), "--output", str(output), "MODEL.RESNETS.DEPTH", "50"]) == 0
    printed = capsys.readouterr().out
    assert "iterativesg" in printed and "missing in checkpoint (0)" in printed
    saved = torch.load(output, weights_only=True)
    assert saved["conversion"]["source_format"] == "iterativesg"
    assert set(saved["model"]) == set(ours)
    assert all(torch.equal(saved["model"][k], ours[k]) for k in ours)
    assert os.listdir(output.parent) == ["converted.pth"]  # no temporary file left behind

    assert convert_weights.main(["--input", str(tmp_path / "nope.pth"), "--output", str(output)]) == 2
    assert "nope.pth" in capsys.readouterr().err
