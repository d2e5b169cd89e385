"""Every shipped YAML config merges into the defaults (no typo, no wrong type) and builds its model."""
import glob
import os

import pytest

from configs.defaults import get_cfg
from tools.count_parameters import build_on_meta, count_parameters

from tests import ROOT
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


def test_configs_are_shipped():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"iterative_model.yaml", "iterative_vovnet99_centermask.yaml", "demo_synthetic.yaml",
            "tiny_cpu.yaml", "detr_pretrain_vg.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_merges_and_builds(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    counts = count_parameters(build_on_meta(cfg))
    assert counts["total"] > counts["backbone"] > 0


def test_demo_detector_hands_its_backbone_fpn_and_fcos_to_the_two_stage_demo_model(tmp_path):
    """The two-stage demo's stages fit together: every tensor of a stage-1 run (demo_synthetic_detector.yaml)
    lands, unchanged, in the stage-2 model (demo_synthetic_two_stage.yaml) through tools/convert_weights.py, and
    stage 2 keeps that FCOS frozen and reads the images at the scale the detector learned."""
    import torch

    from modeling import build_model
    from tools.convert_weights import main as convert_weights

    configs = {}
    for stage, name in (("detector", "demo_synthetic_detector.yaml"),
                        ("scene_graph", "demo_synthetic_two_stage.yaml")):
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(ROOT, "configs", name))
        configs[stage] = cfg
    detector, scene_graph = configs["detector"], configs["scene_graph"]
    for key in ("MIN_SIZE_TRAIN", "MAX_SIZE_TRAIN", "MIN_SIZE_TEST", "MAX_SIZE_TEST", "FORMAT"):
        assert detector.INPUT[key] == scene_graph.INPUT[key], key
    assert detector.MODEL.META_ARCHITECTURE == "FCOSDetector" and scene_graph.MODEL.ENCODER.NAME == "CenterMask"

    torch.manual_seed(0)
    trained = build_model(detector).state_dict()
    run = tmp_path / "detector"
    run.mkdir()
    torch.save({"model": trained, "iteration": 299}, run / "model_final.pth")
    (run / "last_checkpoint").write_text("model_final.pth")
    init = tmp_path / "init.pth"
    assert convert_weights(["--input", str(run), "--output", str(init),
                            "--config-file", os.path.join(ROOT, "configs", "demo_synthetic_two_stage.yaml")]) == 0
    converted = torch.load(init, weights_only=True)["model"]
    weights = {name: tensor for name, tensor in trained.items() if not name.endswith("num_batches_tracked")}
    assert len(weights) > 150  # (BN step counters of the stages stage 2 freezes have no FrozenBN counterpart)
    for name, tensor in weights.items():
        target = "centermask." + name if name.startswith("fcos.") else name
        assert torch.equal(converted[target], tensor), name

    model = build_model(scene_graph)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith(("backbone.", "centermask.fcos."))]
    assert not any(p.requires_grad for p in model.centermask.fcos.parameters())  # stage 2 keeps FCOS frozen


@pytest.mark.parametrize("name", ["iterative_model.yaml", "iterative_vovnet39_fpn.yaml", "iterative_vovnet57_fpn.yaml",
                                  "iterative_vovnet99_fpn.yaml", "iterative_vovnet99_centermask.yaml"])
def test_row_a_and_the_vovnet_configs_follow_the_released_recipe(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", name))
    # The released yaml turns the non-overlap filter off (every training relation) and uses DETR's crop.
    assert cfg.DATASETS.VISUAL_GENOME.FILTER_NON_OVERLAP is False
    assert (cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.PROB) == (True, "detr", 0.5)
    assert tuple(cfg.INPUT.CROP.SIZE) == (384, 600) and tuple(cfg.INPUT.CROP.RESIZE_BEFORE_CROP) == (400, 500, 600)
    assert cfg.SOLVER.AMP.PRECISION == "bfloat16"  # ours; "float16" is the released AMPTrainer (docs/DIFFERENCES.md)
    assert (cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR) == (10, 1.0)  # released: no warm-up in effect
    assert get_cfg().DATASETS.VISUAL_GENOME.FILTER_NON_OVERLAP is True  # the code default stays on
