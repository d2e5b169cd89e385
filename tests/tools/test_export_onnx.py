"""tools/export_onnx.py: the tiny model's network exported with a dynamic image size, onnxruntime against torch at
two sizes (<= 1e-4), and tools/predict.py --onnx giving the torch predictions."""
import json
import os

import pytest

from tests.inference_helpers import DEMO_CONFIG, TINY_CONFIG, make_names_world, save_initialised_model, tiny_cfg
from tools import export_onnx, predict


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
        assert [(t["subject"], t["predicate"], t["object"], t["subject_index"], t["object_index"])
                for t in got["triplets"]] == [(t["subject"], t["predicate"], t["object"], t["subject_index"],
                                               t["object_index"]) for t in expected["triplets"]]
        assert all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(got["triplets"], expected["triplets"]))
        assert [o["label"] for o in got["objects"]] == [o["label"] for o in expected["objects"]]
        for a, b in zip(got["objects"], expected["objects"]):
            assert max(abs(x - y) for x, y in zip(a["box_xyxy"], b["box_xyxy"])) <= 0.02


def test_export_refuses_the_centermask_encoder_by_name(world, tmp_path, capsys):
    argv = ["--config-file", DEMO_CONFIG, "--output", str(tmp_path / "demo.onnx"), *world, "MODEL.WEIGHTS", "x.pth"]
    assert export_onnx.main(argv) == 2
    assert "error: MODEL.ENCODER.NAME 'CenterMask': only the DETR encoder exports" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
