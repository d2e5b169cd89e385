"""Detector pre-training end to end on the synthetic world with the real parts: the box-only train split, a few
CPU iterations of DETR and of FCOS through the training command line, detection_eval.json, and the hand-off of
each finished run into the scene-graph model through tools/convert_weights.py and MODEL.WEIGHTS."""
import json
import os

import h5py
import numpy as np
import pytest
import torch

import train_iterative_model
from configs.defaults import get_cfg
from data.synthetic import config_overrides, generate_synthetic_vg
from data.visual_genome import load_vg_split
from engine.checkpoint import ModelCheckpointer
from modeling import build_model
from modeling.weight_conversion import convert_to_model_state_dict
from tools import convert_weights

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
SMALL_IMAGES = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128",
                "INPUT.MAX_SIZE_TEST", "160"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    record = generate_synthetic_vg(out, num_images=36, seed=3, number_of_validation_images=4)
    return out, [str(v) for v in config_overrides(out, record)]


def config(name: str, overrides):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", name))
    cfg.merge_from_list(overrides)
    return cfg


def test_detector_train_split_keeps_every_image_with_a_box(world):
    out, overrides = world
    with h5py.File(os.path.join(out, "VG-SGG-with-attri.h5"), "r") as f:
        with_boxes = int(((f["split"][:] == 0) & (f["img_to_first_box"][:] >= 0)).sum())
    split = load_vg_split(config("tiny_detr_cpu.yaml", overrides), "VG_train")
    assert len(split) == with_boxes - 4  # all split-0 images with a box, less the 4 validation images
    without_relations = [i for i in range(len(split)) if len(split.get_record(i)["relations"]) == 0]
    assert without_relations and all(len(split.get_record(i)["boxes"]) > 0 for i in without_relations)
    assert len(split) > len(load_vg_split(config("tiny_cpu.yaml", overrides), "VG_train"))


@pytest.mark.parametrize("detector,target_overrides,handed_over", [
    ("tiny_detr_cpu.yaml", [], ("backbone.", "input_proj.", "query_embed.", "object_query_embed.",
                                "relation_query_embed.", "transformer.encoder.", "transformer.object_embed.",
                                "transformer.object_bbox_coords.", "transformer.decoder.subject_norm.",
                                "transformer.decoder.relation_norm.", "transformer.decoder.subject_layers.",
                                "transformer.decoder.object_layers.", "transformer.decoder.relation_layers.")),
    ("tiny_fcos_cpu.yaml", ["MODEL.ENCODER.NAME", "CenterMask"], ("backbone.", "centermask.fcos.")),
])
def test_pretrain_evaluate_and_hand_off(world, tmp_path, detector, target_overrides, handed_over, capsys):
    _, overrides = world
    run_dir = str(tmp_path / "run")
    results = train_iterative_model.run(
        ["--num-gpus", "1", "--config-file", os.path.join(ROOT, "configs", detector)] + overrides + SMALL_IMAGES
        + ["OUTPUT_DIR", run_dir, "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)", "TEST.EVAL_PERIOD", "3"])
    for dataset in ("VG_val", "VG_test"):
        with open(os.path.join(run_dir, "inference", dataset, "detection_eval.json")) as f:
            on_disk = json.load(f)
        assert all(0.0 <= on_disk[name] <= 1.0 for name in METRICS)
        assert on_disk["num_images"] == {"VG_val": 4, "VG_test": 10}[dataset] and on_disk["num_detections"] > 0
    assert results["VG_test"] == pytest.approx(on_disk)
    assert os.path.isfile(os.path.join(run_dir, "best_model_final.pth"))  # TEST.BEST_METRIC "AP" was found
    assert "Detection evaluation on VG_test: 10 images" in capsys.readouterr().out

    converted_path = str(tmp_path / "init.pth")
    target = overrides + target_overrides + ["MODEL.DEVICE", "cpu"]
    assert convert_weights.main(["--input", run_dir, "--output", converted_path,
                                 "--config-file", os.path.join(ROOT, "configs", "tiny_cpu.yaml")] + target) == 0
    model = build_model(config("tiny_cpu.yaml", target))
    ModelCheckpointer(model, str(tmp_path), save_to_disk=False).resume_or_load(converted_path, resume=False)

    converted = torch.load(converted_path, weights_only=True)
    _, report = convert_to_model_state_dict(converted, model)
    handed = [key for key in model.state_dict() if key.startswith(handed_over)]
    assert handed and not [key for key in report.missing if key.startswith(handed_over)]
    assert converted["conversion"]["unexpected"] == []

    trained = torch.load(os.path.join(run_dir, "model_final.pth"), weights_only=True)["model"]
    loaded = model.state_dict()
    if detector == "tiny_detr_cpu.yaml":
        pairs = [("class_embed.weight", "transformer.object_embed.weight"),
                 ("transformer.decoder.layers.1.linear2.weight",
                  "transformer.decoder.relation_layers.1.linear2.weight"),
                 ("query_embed.weight", "object_query_embed.weight"),
                 ("transformer.encoder.layers.0.self_attn.in_proj_weight",) * 2]
        fresh = [key for key in report.missing if key.startswith("transformer.relation_embed.")]
        assert len(fresh) == 2  # the predicate head starts fresh
    else:
        pairs = [("fcos.head.scales", "centermask.fcos.head.scales"),
                 ("fcos.head.classification_head.cls_logits.weight",
                  "centermask.fcos.head.classification_head.cls_logits.weight")]
    pairs.append(("backbone.fpn.layer_blocks.0.0.weight",) * 2)
    for source, destination in pairs:
        assert torch.equal(loaded[destination], trained[source]), (source, destination)
    assert np.isfinite([float(v.float().sum()) for v in loaded.values()]).all()
