"""benchmarks/bench_model.py: the command line runs on the tiny config and ends with the ratio line; its
synthetic inputs are valid training data; bad arguments fail with clear messages."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from configs.defaults import get_cfg
from tests.model_helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_model  # noqa: E402

RATIO_LINE = re.compile(r"^train_ratio_to_backbone=(\S+) infer_ratio_to_backbone=(\S+)$")


@pytest.mark.timeout(60)
def test_cli_on_tiny_config_ends_with_positive_ratios(tmp_path):
    json_path = tmp_path / "bench.json"
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_model.py"), "--device", "cpu",
               "--threads", "1", "--size", "96", "128", "--iters", "1", "--warmup", "1",
               "--json-out", str(json_path), "SOLVER.IMS_PER_BATCH", "3"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    match = RATIO_LINE.match(lines[-1])
    assert match, f"last line is not the ratio line: {lines[-1]!r}"
    train_ratio, infer_ratio = float(match.group(1)), float(match.group(2))
    assert train_ratio > 0 and infer_ratio > 0

    payload = json.loads(json_path.read_text())
    (result,) = payload["results"]
    assert result["config"] == "tiny_cpu" and result["batch"] == 3 and result["size"] == [96, 128]
    timed = ("backbone_fwd_bwd_ms", "train_step_ms", "images_per_s", "backbone_fwd_ms", "inference_ms",
             "preprocess_ms")
    assert all(result[key] > 0 for key in timed), result
    assert result["train_ratio"] == pytest.approx(train_ratio, abs=5e-4)
    assert result["train_ratio"] == pytest.approx(result["train_step_ms"] / result["backbone_fwd_bwd_ms"])
    assert result["inference_ratio"] == pytest.approx(infer_ratio, abs=5e-4)
    assert result["precision"] == "fp32" and result["compiled"] is False
    # The table row of the config sits above the ratio line.
    assert any(line.lstrip().startswith("tiny_cpu") for line in lines[:-1])


def test_synthetic_batch_is_valid_training_data():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "tiny_cpu.yaml"))
    batch = bench_model.synthetic_training_batch(cfg, batch_size=3, height=64, width=96, seed=3)
    assert len(batch) == 3
    for index, item in enumerate(batch):
        image, instances = item["image"], item["instances"]
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 96 - 16 * index)
        boxes, labels, relations = instances["boxes"], instances["labels"], instances["relations"]
        assert boxes.shape == (bench_model.BOXES_PER_IMAGE, 4)
        assert (boxes[:, 2] - boxes[:, 0] >= 8).all() and (boxes[:, 3] - boxes[:, 1] >= 8).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= image.shape[2]).all() and (boxes[:, 3] <= 64).all()
        assert labels.min() >= 0 and labels.max() < cfg.MODEL.DETR.NUM_CLASSES
        assert relations.shape == (bench_model.RELATIONS_PER_IMAGE, 3)
        assert (relations[:, 0] != relations[:, 1]).all()
        assert len({tuple(pair) for pair in relations[:, :2].tolist()}) == len(relations)  # no pair twice
        assert relations[:, 2].max() < cfg.MODEL.DETR.NUM_RELATION_CLASSES


def test_inference_item_is_resized_back_to_the_requested_size():
    original = bench_model.synthetic_original_image(96, 128)
    assert original.shape == (3, 72, 96)
    item = bench_model.resize_for_inference(original, short=96, max_size=128)
    assert item["image"].shape == (3, 96, 128) and (item["height"], item["width"]) == (72, 96)


def test_arguments_split_config_files_from_overrides():
    args = bench_model.parse_args(["--device", "cpu", "--config-file", "a.yaml", "b.yml", "MODEL.X", "1"])
    assert args.config_file == ["a.yaml", "b.yml"] and args.opts == ["MODEL.X", "1"]


def test_bad_arguments_fail_clearly(capsys):
    with pytest.raises(FileNotFoundError, match="--config-file missing.yaml"):
        bench_model.main(["--device", "cpu", "--config-file", "missing.yaml"])
    with pytest.raises(SystemExit):
        bench_model.parse_args(["--device", "cpu", "MODEL.DEVICE"])
    assert "KEY VALUE pairs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_model.parse_args(["--device", "cpu", "--compile", "--warmup", "1"])
    assert "--warmup >= 2" in capsys.readouterr().err


def test_arithmetic_counts_are_positive_and_backward_adds_work():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "tiny_cpu.yaml"))
    gflop = bench_model.arithmetic_gflop(cfg, batch_size=2, size=(64, 96))
    assert 0 < gflop["backbone_fwd"] < gflop["backbone_fwd_bwd"]
    assert 0 < gflop["transformer_fwd"] < gflop["transformer_fwd_bwd"]
    # Four times the pixels: the backbone's arithmetic grows about fourfold.
    larger = bench_model.arithmetic_gflop(cfg, batch_size=2, size=(128, 192))
    assert larger["backbone_fwd"] == pytest.approx(4 * gflop["backbone_fwd"], rel=0.1)
