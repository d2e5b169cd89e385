"""tools/export_onnx.py: the tiny model's network (DETR encoder) and the demo model's (CenterMask encoder, its FCOS
detection selection inside the graph; "tokens" and "paste" fusions) exported with a dynamic image size,
onnxruntime against torch at sizes the export never saw (<= 1e-4), and tools/predict.py --onnx giving the torch
predictions."""
import contextlib
import io
import json
import os

import pytest

from tests.inference_helpers import DEMO_CONFIG, TINY_CONFIG, make_names_world, save_initialised_model, tiny_cfg
from tools import export_onnx, predict


def assert_same_scene_graph(got: dict, expected: dict) -> None:
    """Two predict.py records of one image agree: same triplets (names and box indices) and labels, scores within
    1e-4, boxes within 0.02 px."""
    assert [(t["subject"], t["predicate"], t["object"], t["subject_index"], t["object_index"])
            for t in got["triplets"]] == [(t["subject"], t["predicate"], t["object"], t["subject_index"],
                                           t["object_index"]) for t in expected["triplets"]]
    assert all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(got["triplets"], expected["triplets"]))
    assert [o["label"] for o in got["objects"]] == [o["label"] for o in expected["objects"]]
    for a, b in zip(got["objects"], expected["objects"]):
        assert max(abs(x - y) for x, y in zip(a["box_xyxy"], b["box_xyxy"])) <= 0.02


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_names_world(str(tmp_path_factory.mktemp("world")))


@pytest.fixture(scope="module")
def exported(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    weights = save_initialised_model(tiny_cfg(world), str(folder / "tiny.pth"))
    argv = ["--config-file", TINY_CONFIG, "--output", str(folder / "tiny.onnx"), "--check-sizes", "128x160,97x130",
            *world, "MODEL.WEIGHTS", weights]
    return argv, weights, str(folder / "tiny.onnx")


def test_export_matches_torch_at_two_sizes(world, exported, capsys):
    argv, weights, path = exported
    assert export_onnx.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {path}; onnxruntime vs torch at 128x160, 97x130: max abs diff subject_logits" in printed
    cfg = tiny_cfg(world, TINY_CONFIG, "MODEL.WEIGHTS", weights)
    worst = export_onnx.check(cfg, path, [(96, 128), (130, 70)], seed=1)  # sizes the export never saw
    assert sorted(worst) == sorted(export_onnx.OUTPUT_NAMES)
    assert 0 < max(worst.values()) <= 1e-4, worst
    network = export_onnx.OnnxSceneGraphNetwork(path)
    assert network.size_divisibility == 32 and network.metadata["weights"] == weights


def test_predict_on_onnxruntime_equals_torch(world, exported, tmp_path):
    argv, weights, path = exported
    if not os.path.isfile(path):
        assert export_onnx.main(argv) == 0
    images = world[1]
    common = ["--config-file", TINY_CONFIG, "--input", images, "--format", "jsonl", "--top-k", "8", *world,
              "MODEL.WEIGHTS", weights, "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]
    assert predict.main(common[:4] + ["--output", str(tmp_path / "torch.jsonl")] + common[4:]) == 0
    assert predict.main(common[:4] + ["--output", str(tmp_path / "onnx.jsonl"), "--onnx", path] + common[4:]) == 0
    runs = [{r["file_name"]: r for r in map(json.loads, open(tmp_path / f"{name}.jsonl"))} for name in ("torch",
                                                                                                     "onnx")]
    assert sorted(runs[0]) == sorted(runs[1]) and len(runs[0]) == len(os.listdir(images))
    for name, expected in runs[0].items():
        got = runs[1][name]
        assert expected["model"]["runtime"] == "torch" and got["model"]["runtime"] == "onnxruntime"
        assert got["model"]["onnx"] == path
        assert_same_scene_graph(got, expected)


@pytest.fixture(scope="module")
def centermask_exported(world, tmp_path_factory):
    """The demo model (CenterMask "tokens" encoder: FCOS detections as 20 memory tokens), untrained: every FCOS
    location is a candidate (score ~0.07 > 0.05), so the graph's top-k, NMS and RoIAlign all run on many boxes."""
    folder = tmp_path_factory.mktemp("onnx_centermask")
    weights = save_initialised_model(tiny_cfg(world, DEMO_CONFIG), str(folder / "demo.pth"))
    argv = ["--config-file", DEMO_CONFIG, "--output", str(folder / "demo.onnx"), "--check-sizes", "128x160,160x128",
            *world, "MODEL.WEIGHTS", weights]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_onnx.main(argv) == 0
    return weights, str(folder / "demo.onnx"), printed.getvalue()


def test_centermask_tokens_export_matches_torch_at_other_sizes(world, centermask_exported):
    weights, path, printed = centermask_exported
    assert f"wrote {path}; onnxruntime vs torch at 128x160, 160x128: max abs diff" in printed
    cfg = tiny_cfg(world, DEMO_CONFIG, "MODEL.WEIGHTS", weights)
    worst = export_onnx.check(cfg, path, [(96, 128), (224, 320)], seed=2)
    assert 0 < max(worst.values()) <= 1e-4, worst
    # The detections are in the graph: FCOS's selection exported as ONNX operators, the image size is not frozen.
    import onnx

    def operators(graph):  # with those of sub-graphs (If branches)
        for node in graph.node:
            yield node.op_type
            for attribute in node.attribute:
                for sub in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                    yield from operators(sub)

    assert {"TopK", "NonMaxSuppression", "RoiAlign", "NonZero"} <= set(operators(onnx.load(path).graph))


def test_centermask_tokens_equal_torch_detections_as_tokens(world, centermask_exported):
    """The injected tokens themselves (not only the decoders' outputs, which could hide a wrong detection): the
    network's per-query outputs change when the tokens are dropped, so the parity above covers them."""
    import torch

    weights, _, _ = centermask_exported
    cfg = tiny_cfg(world, DEMO_CONFIG, "MODEL.WEIGHTS", weights)
    from engine.checkpoint import ModelCheckpointer
    from modeling import build_model

    model = build_model(cfg).eval()
    ModelCheckpointer(model, save_to_disk=False).load(weights, checkpointables=[])
    network = export_onnx.exportable_network(model)
    images = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with_tokens = network(images)
        model.centermask.fcos.score_thresh = 1.0  # no detection survives: every token slot is padding
        without_tokens = network(images)
    assert max(float((a - b).abs().max()) for a, b in zip(with_tokens, without_tokens)) > 1e-3


def test_predict_on_onnxruntime_equals_torch_with_centermask(world, centermask_exported, tmp_path):
    weights, path, _ = centermask_exported
    common = ["--config-file", DEMO_CONFIG, "--input", world[1], "--format", "jsonl", "--top-k", "8", *world,
              "MODEL.WEIGHTS", weights]
    assert predict.main(common[:4] + ["--output", str(tmp_path / "torch.jsonl")] + common[4:]) == 0
    assert predict.main(common[:4] + ["--output", str(tmp_path / "onnx.jsonl"), "--onnx", path] + common[4:]) == 0
    runs = [{r["file_name"]: r for r in map(json.loads, open(tmp_path / f"{name}.jsonl"))} for name in ("torch",
                                                                                                     "onnx")]
    assert sorted(runs[0]) == sorted(runs[1]) and len(runs[0]) == len(os.listdir(world[1]))
    for name, expected in runs[0].items():
        got = runs[1][name]
        assert got["model"]["runtime"] == "onnxruntime" and got["model"]["onnx"] == path
        assert_same_scene_graph(got, expected)


def test_centermask_paste_export_matches_torch(world, tmp_path, capsys):
    """The lab's "paste" fusion (SAG-Mask maps added onto P5 at each detection's cells) exports too.  The untrained
    FCOS regresses stride-sized boxes, smaller than a P5 cell (nothing would be pasted): a box-regression bias of 4
    strides makes its boxes cover P5 cells."""
    import torch

    from engine.checkpoint import ModelCheckpointer
    from modeling import build_model

    paste = ["MODEL.CENTERMASK.FUSION", "paste", "MODEL.DETR.ENC_LAYERS", "0", "MODEL.ENCODER.IN_FEATURE", "p5",
             "MODEL.CENTERMASK.ROI_RESOLUTION", "14"]
    weights = save_initialised_model(tiny_cfg(world, DEMO_CONFIG, *paste), str(tmp_path / "paste.pth"))
    checkpoint = torch.load(weights, weights_only=True)
    checkpoint["model"]["centermask.fcos.head.regression_head.bbox_reg.bias"].fill_(4.0)
    torch.save(checkpoint, weights)
    model = build_model(tiny_cfg(world, DEMO_CONFIG, *paste)).eval()
    ModelCheckpointer(model, save_to_disk=False).load(weights, checkpointables=[])
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(0)))
        fused, _ = model.centermask(features, [(128, 160)])
    assert float((fused - features["p5"]).abs().max()) > 0.1  # maps are pasted
    argv = ["--config-file", DEMO_CONFIG, "--output", str(tmp_path / "paste.onnx"), "--check-sizes",
            "128x160,96x128", *world, "MODEL.WEIGHTS", weights, *paste]
    assert export_onnx.main(argv) == 0
    assert f"wrote {tmp_path / 'paste.onnx'}; onnxruntime vs torch at 128x160, 96x128" in capsys.readouterr().out
