"""The pre-training detectors: DETR's size and names, the set matcher and loss, DETR's and FCOS's outputs, and the
names that make the hand-off into the scene-graph model a rename, and that DETR can learn."""
import itertools
import os

import pytest
import torch
from torchvision.ops import box_iou

from configs.defaults import get_cfg
from modeling import build_model
from modeling.detection_criterion import SetCriterion
from modeling.matcher import HungarianBoxMatcher
from modeling.weight_conversion import convert_to_model_state_dict
from tests.model_helpers import batch_item, tiny_cfg

torch.set_num_threads(1)
from tests import ROOT


def config(name: str, **overrides):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", name))
    cfg.merge_from_list([item for pair in overrides.items() for item in pair])
    return cfg


def build_on_meta(cfg):
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


def test_full_size_detr_detector_has_detrs_size_and_names():
    model = build_on_meta(config("detr_pretrain_vg.yaml"))
    d, ffn, queries, logits, layers = 256, 2048, 300, 151, 6
    attention = 4 * d * d + 4 * d  # in-projection (3 d x d + 3 d) and out-projection (d x d + d)
    feed_forward = (d * ffn + ffn) + (ffn * d + d)
    encoder_layer = attention + feed_forward + 2 * 2 * d
    decoder_layer = 2 * attention + feed_forward + 3 * 2 * d
    resnet101_trunk = 42_394_816  # FrozenBN affine parameters are buffers
    expected = (resnet101_trunk + (2048 * d + d) + layers * encoder_layer + layers * decoder_layer + 2 * d
                + queries * d + (d * logits + logits) + 2 * (d * d + d) + (d * 4 + 4))
    assert sum(p.numel() for p in model.parameters()) == expected == 60_531_035

    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    assert shapes["class_embed.weight"] == (151, 256)
    assert shapes["query_embed.weight"] == (300, 256)
    assert shapes["bbox_embed.layers.2.weight"] == (4, 256)
    assert shapes["transformer.decoder.layers.5.multihead_attn.in_proj_weight"] == (768, 256)
    assert shapes["transformer.decoder.norm.weight"] == (256,)
    assert shapes["transformer.encoder.layers.5.linear1.weight"] == (2048, 256)
    assert "backbone.body.layer4.2.conv3.weight" in shapes


def test_detr_detector_names_are_a_rename_of_the_scene_graph_model():
    """Every DETRDetector tensor lands, with its shape, in the released-recipe model (converter on meta)."""
    detector = build_on_meta(config("detr_pretrain_vg.yaml"))
    scene_graph = build_on_meta(config("iterative_model.yaml"))
    converted, report = convert_to_model_state_dict(detector.state_dict(), scene_graph)
    assert report.source_format == "detr" and report.unexpected == []
    fresh = tuple(f"transformer.{name}" for name in (
        "relation_embed.", "decoder.object_pos", "decoder.relation_pos", "decoder.subject_graph",
        "decoder.object_graph", "decoder.relation_graph"))
    assert report.missing and all(key.startswith(fresh) for key in report.missing)
    assert report.converted["class_embed.weight"] == ["transformer.object_embed.weight"]
    assert report.converted["transformer.decoder.layers.0.linear1.weight"] == [
        f"transformer.decoder.{branch}_layers.0.linear1.weight" for branch in ("subject", "object", "relation")]


def test_full_size_fcos_detector_is_the_centermask_fcos_on_vovnet99():
    detector = build_on_meta(config("centermask_pretrain_vg_V99.yaml"))
    scene_graph = build_on_meta(config("iterative_vovnet99_centermask.yaml"))
    # ScaledFCOSHead with 256 channels and 150 classes (modeling/centermask/fcos_head.py's count).
    assert sum(p.numel() for p in detector.fcos.parameters()) == 5_082_016
    converted, report = convert_to_model_state_dict(detector.state_dict(), scene_graph)
    assert report.source_format == "fcos-detector" and report.unexpected == []
    assert not [key for key in report.missing if key.startswith(("backbone.", "centermask.fcos."))]
    assert report.converted["fcos.head.scales"] == ["centermask.fcos.head.scales"]
    v39 = config("centermask_pretrain_vg_V39.yaml")
    assert v39.MODEL.VOVNET.CONV_BODY == "V-39-eSE" and v39.MODEL.META_ARCHITECTURE == "FCOSDetector"


def test_fcos_detector_needs_the_pyramid():
    cfg = config("centermask_pretrain_vg_V99.yaml", **{"MODEL.BACKBONE.NAME": "ResNet", "MODEL.RESNETS.DEPTH": 50})
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME 'VoVNetFPN'"):
        build_on_meta(cfg)


def test_matcher_finds_the_cheapest_assignment_of_every_layer():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 4, generator=generator)  # 2 layers, 2 images, 5 queries, 3 classes + none
    boxes = torch.rand(2, 2, 5, 4, generator=generator) * 0.4 + 0.2
    targets = [{"labels": torch.tensor([0, 2, 1]), "boxes": torch.rand(3, 4, generator=generator) * 0.4 + 0.2},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])}]
    matcher = HungarianBoxMatcher(1.0, 5.0, 2.0)
    cost = matcher.cost_matrix(logits, boxes, targets)
    indices = matcher(logits, boxes, targets)
    for layer in range(2):
        for image, (offset, count) in enumerate([(0, 3), (3, 1)]):
            block = cost[layer, image * 5:(image + 1) * 5, offset:offset + count]
            best = min(sum(block[q, t] for t, q in enumerate(perm)) for perm in itertools.permutations(range(5), count))
            queries, columns = indices[layer][image]
            assert len(queries) == count
            assert block[queries, columns].sum() == pytest.approx(float(best), rel=1e-6)


def test_set_loss_is_zero_for_boxes_at_the_targets_and_handles_empty_images():
    criterion = SetCriterion(3, HungarianBoxMatcher(), class_weight=1.0, l1_weight=5.0, giou_weight=2.0,
                             no_object_weight=0.1)
    target_boxes = torch.tensor([[0.3, 0.4, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    logits = torch.full((2, 2, 4, 4), -20.0)
    logits[..., 3] = 20.0  # every query "no object" ...
    boxes = torch.full((2, 2, 4, 4), 0.5)
    logits[:, 0, 1, 3], logits[:, 0, 1, 2] = -20.0, 20.0  # ... but query 1 of image 0 says class 2 at box 0
    logits[:, 0, 3, 3], logits[:, 0, 3, 0] = -20.0, 20.0  # and query 3 class 0 at box 1
    boxes[:, 0, 1], boxes[:, 0, 3] = target_boxes[0], target_boxes[1]
    targets = [{"labels": torch.tensor([2, 0]), "boxes": target_boxes},
               {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    losses = criterion(logits, boxes, targets)
    assert sorted(losses) == sorted(f"loss_{kind}_{layer}" for kind in ("ce", "l1", "giou") for layer in (0, 1))
    for name, value in losses.items():
        assert float(value) == pytest.approx(0.0, abs=1e-5), name

    # A wrong class on a matched query costs CE; the no-object weight scales the unmatched queries' share.
    logits[1, 0, 1, 2], logits[1, 0, 1, 1] = -20.0, 20.0
    losses = criterion(logits, boxes, targets)
    weights_sum = 2 * 1.0 + 6 * 0.1  # two matched queries (weight 1), six unmatched (0.1)
    assert float(losses["loss_ce_1"]) == pytest.approx(40.0 / weights_sum, rel=1e-4)
    assert float(losses["loss_ce_0"]) == pytest.approx(0.0, abs=1e-6)


def test_detr_detector_trains_and_outputs_the_best_queries_in_original_pixels():
    cfg = tiny_cfg(MODEL__META_ARCHITECTURE="DETRDetector", TEST__DETECTIONS_PER_IMAGE=7)
    torch.manual_seed(0)
    model = build_model(cfg)
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    batch = [batch_item(image, [[10, 10, 50, 60], [60, 20, 120, 90]], [1, 3], [[0, 1, 2]], original_size=(192, 256)),
             batch_item(image[:, :64], [[5, 5, 40, 40]], [0], [])]
    losses = model(batch)
    assert len(losses) == 3 * cfg.MODEL.DETR.DEC_LAYERS and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.class_embed.weight.grad.abs().sum() > 0 and model.query_embed.weight.grad.abs().sum() > 0

    model.eval()
    outputs = model(batch)
    assert [len(o["boxes"]) for o in outputs] == [7, 7]
    for output, (height, width) in zip(outputs, [(192, 256), (64, 128)]):
        assert (output["scores"][:-1] >= output["scores"][1:]).all()
        assert output["boxes"][:, 0::2].max() <= width and output["boxes"][:, 1::2].max() <= height
        assert output["labels"].dtype == torch.int64 and int(output["labels"].max()) < cfg.MODEL.DETR.NUM_CLASSES

    # Post-processing: a normalised (cx, cy, w, h) box scales to the original image, the best class is reported.
    logits = torch.full((1, 2, 13), -5.0)
    logits[0, 0, 4], logits[0, 1, 12] = 5.0, 9.0  # query 1 is "no object": its best real class scores low
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]]])
    (result,) = model.postprocess(logits, boxes, [(100, 200)])
    assert result["labels"][0] == 4 and result["scores"][0] > 0.9 > result["scores"][1]
    assert torch.allclose(result["boxes"][0], torch.tensor([80.0, 30.0, 120.0, 70.0]))


def test_fcos_detector_trains_and_outputs_detections_inside_the_original_image():
    cfg = tiny_cfg(MODEL__META_ARCHITECTURE="FCOSDetector", TEST__DETECTIONS_PER_IMAGE=20)
    cfg.MODEL.CENTERMASK.SCORE_THRESH = 0.0
    torch.manual_seed(0)
    model = build_model(cfg)
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    batch = [batch_item(image, [[10, 10, 50, 60], [60, 20, 120, 90]], [1, 3], [], original_size=(192, 256))]
    losses = model(batch)
    assert sorted(losses) == ["loss_fcos_cls", "loss_fcos_ctr", "loss_fcos_loc"]
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    model.eval()
    (output,) = model(batch)
    assert len(output["boxes"]) == 20 and (output["scores"][:-1] >= output["scores"][1:]).all()
    assert output["boxes"][:, 0::2].max() <= 256 and output["boxes"][:, 1::2].max() <= 192
    # The resized image is half the original: boxes come back at twice the FCOS scale.
    detections, _ = model.fcos([model.backbone(model.preprocess_images(batch)[0])[f"p{level}"]
                                for level in (3, 4, 5, 6, 7)], [(96, 128)])
    assert torch.allclose(output["boxes"][0], detections.boxes[0, 0] * 2)


def test_detector_labels_outside_the_classes_are_named():
    model = build_model(tiny_cfg(MODEL__META_ARCHITECTURE="DETRDetector"))
    item = batch_item(torch.zeros(3, 64, 64, dtype=torch.uint8), [[1, 1, 20, 20]], [12], [])
    with pytest.raises(ValueError, match="MODEL.DETR.NUM_CLASSES = 12"):
        model([item])


def test_detr_detector_overfits_one_image():
    """Two coloured rectangles: within 60 AdamW steps DETR classifies and boxes both (its loss can learn)."""
    cfg = tiny_cfg(MODEL__META_ARCHITECTURE="DETRDetector", MODEL__ENCODER__IN_FEATURE="p4")
    torch.manual_seed(0)
    model = build_model(cfg)
    image = torch.full((3, 128, 128), 100, dtype=torch.uint8)
    image[:, 10:50, 10:60] = torch.tensor([200, 30, 30])[:, None, None]
    image[:, 70:120, 60:120] = torch.tensor([30, 30, 200])[:, None, None]
    batch = [batch_item(image, [[10, 10, 60, 50], [60, 70, 120, 120]], [1, 7], [])]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    for _ in range(60):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    (output,) = model(batch)
    assert sorted(output["labels"][:2].tolist()) == [1, 7] and output["scores"][1] > 0.5 > output["scores"][2]
    expected = torch.tensor([[10.0, 10, 60, 50], [60, 70, 120, 120]])
    assert box_iou(output["boxes"][:2], expected).max(1).values.min() > 0.8
