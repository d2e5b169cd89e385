"""End to end on a tiny synthetic world with the real parts: train a few iterations on the CPU, --eval-only,
re-evaluate the saved predictions file offline (identical numbers), predict on image files, results tables."""
import json
import os

import pytest
import torch

import train_iterative_model
from configs.defaults import get_cfg
from data.synthetic import config_overrides, generate_synthetic_vg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_cpu.yaml")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    record = generate_synthetic_vg(str(out), num_images=36, seed=3, number_of_validation_images=4)
    return [str(v) for v in config_overrides(str(out), record)]


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """A 3-iteration run; returns (output dir, command overrides, the test metrics printed at the end)."""
    out = str(tmp_path_factory.mktemp("run"))
    overrides = world + [
        "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "100",
        "TEST.EVAL_PERIOD", "0", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160", "SOLVER.LOG_PERIOD", "1",
    ]
    results = train_iterative_model.run(["--num-gpus", "1", "--config-file", TINY] + overrides)
    return out, overrides, results["VG_test"]


def test_train_then_eval_only_then_offline_evaluation_agree(trained, capsys):
    out, overrides, trained_metrics = trained
    for name in ("config.yaml", "log.txt", "metrics.json", "model_final.pth", "last_checkpoint"):
        assert os.path.isfile(os.path.join(out, name)), name
    inference_dir = os.path.join(out, "inference", "VG_test")
    predictions = os.path.join(inference_dir, "sgg_predictions.pt")
    saved = torch.load(predictions, weights_only=True)
    # v2 exactly when the model stores its rows' ranking scores (docs/PROTOCOL.md, section 5)
    ranked = "rel_ranking_scores" in saved["images"][0]
    assert saved["format"] == ("sgg-predictions/v2" if ranked else "sgg-predictions/v1") and saved["mode"] == "sgdet"
    with open(os.path.join(inference_dir, "sgg_eval.json")) as f:
        on_disk = json.load(f)
    assert on_disk["protocol"] == "standard"  # the default TEST.SGG_PROTOCOL

    evaluated = train_iterative_model.run(["--resume", "--eval-only", "--num-gpus", "1", "--config-file", TINY]
                                          + overrides)["VG_test"]
    from tools.evaluate_predictions import evaluate_predictions_file

    cfg = get_cfg()
    cfg.merge_from_file(TINY)
    cfg.merge_from_list(overrides)
    offline = evaluate_predictions_file(cfg, predictions)
    printed = capsys.readouterr().out
    assert "SGG eval:     R @ 20:" in printed and "Detection evaluation mAp=" in printed
    for key in ("R@20", "R@50", "R@100", "ng-R@100", "zR@100", "mR@100", "ng-mR@50", "AP50", "AP"):
        assert key in trained_metrics, key
        assert trained_metrics[key] == evaluated[key] == offline[key] == on_disk[key], key
    assert len(saved["images"]) == int(on_disk["num_images"])


def test_predict_writes_scene_graph_json_and_png(trained, world, tmp_path):
    out, overrides, _ = trained
    from tools.predict import main as predict_main

    images_dir = world[world.index("DATASETS.VISUAL_GENOME.IMAGES") + 1]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in sorted(os.listdir(images_dir))[:2]:
        (inputs / name).write_bytes(open(os.path.join(images_dir, name), "rb").read())
    rc = predict_main(["--config-file", os.path.join(out, "config.yaml"), "--input", str(inputs), "--output",
                       str(tmp_path / "pred"), "--top-k", "5", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")])
    assert rc == 0
    for name in sorted(os.listdir(inputs)):
        stem = os.path.splitext(name)[0]
        with open(tmp_path / "pred" / f"{stem}.json") as f:
            graph = json.load(f)
        assert 0 < len(graph["triplets"]) <= 5
        num_objects = len(graph["objects"])
        for t in graph["triplets"]:
            assert 0 <= t["subject_index"] < num_objects and 0 <= t["object_index"] < num_objects
            assert graph["objects"][t["subject_index"]]["label"] == t["subject"]
            assert 0.0 <= t["score"] <= 1.0
        scores = [t["score"] for t in graph["triplets"]]
        assert scores == sorted(scores, reverse=True)
        assert (tmp_path / "pred" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_without_weights_is_a_clear_error(trained, tmp_path, capsys):
    out, _, _ = trained
    from tools.predict import main as predict_main

    rc = predict_main(["--config-file", os.path.join(out, "config.yaml"), "--input", str(tmp_path),
                       "--output", str(tmp_path / "o")])
    assert rc == 2
    assert "--input" in capsys.readouterr().err  # empty folder is reported first, naming the flag
    (tmp_path / "x.jpg").write_bytes(b"")
    rc = predict_main(["--config-file", os.path.join(out, "config.yaml"), "--input", str(tmp_path / "x.jpg"),
                       "--output", str(tmp_path / "o")])
    assert rc == 2 and "MODEL.WEIGHTS" in capsys.readouterr().err


def test_results_table_reads_the_run(trained, tmp_path):
    out, _, metrics = trained
    from tools.results_table import main as table_main

    md = tmp_path / "tables.md"
    assert table_main([out, "--names", "tiny", "--output", str(md)]) == 0
    text = md.read_text()
    assert "| tiny | VoVNetV2-19-slim-FPN/DETR | 3×2 |" in text and "| CPU | 2 |" in text
    expected_r = "/".join(f"{100 * metrics[f'R@{k}']:.2f}" for k in (20, 50, 100))
    assert f"| tiny | {expected_r} |" in text
    assert f"{100 * metrics['AP50']:.2f}" in text
