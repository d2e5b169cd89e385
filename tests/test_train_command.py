"""train_iterative_model.py: the lab's two commands parse verbatim; train / resume / eval-only end to end on CPU
with stand-in parts; --help; clear errors."""
import json
import os
import shlex
import subprocess
import sys

import pytest
import torch

import train_iterative_model
from configs.defaults import get_cfg
from engine.defaults import default_argument_parser, setup_cfg
from tests.engine_standins import StandInTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The two commands of the lab's README, verbatim (placeholders are substituted below).
SEED_TRAIN_COMMAND = (
    "python train_iterative_model.py --resume --num-gpus <NUM_GPUS> --config-file configs/iterative_model.yaml "
    "OUTPUT_DIR <PATH TO CHECKPOINT DIR> DATASETS.VISUAL_GENOME.IMAGES <PATH TO VG_100K IMAGES> "
    "DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY <PATH TO VG-SGG-dicts-with-attri.json> "
    "DATASETS.VISUAL_GENOME.IMAGE_DATA <PATH TO image_data.json> "
    "DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5 <PATH TO VG-SGG-with-attri.h5> MODEL.DETR.OVERSAMPLE_PARAM <Alpha Value> "
    "MODEL.DETR.UNDERSAMPLE_PARAM <Twice the Beta Value> SOLVER.CLIP_GRADIENTS.CLIP_VALUE 0.01 "
    "SOLVER.IMS_PER_BATCH 12 MODEL.DETR.NO_OBJECT_WEIGHT 0.1 MODEL.WEIGHTS <PATH TO DETR Pretrained Model>"
)
SEED_EVAL_COMMAND = (
    "python train_iterative_model.py --resume --eval-only --num-gpus <NUM_GPUS> "
    "--config-file configs/iterative_model.yaml OUTPUT_DIR <PATH TO CHECKPOINT DIR> "
    "DATASETS.VISUAL_GENOME.IMAGES <PATH TO VG_100K IMAGES> "
    "DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY <PATH TO VG-SGG-dicts-with-attri.json> "
    "DATASETS.VISUAL_GENOME.IMAGE_DATA <PATH TO image_data.json> "
    "DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5 <PATH TO VG-SGG-with-attri.h5>"
)


def _substitute(command, tmp_path):
    values = {
        "<NUM_GPUS>": "4",
        "<PATH TO CHECKPOINT DIR>": str(tmp_path / "out"),
        "<PATH TO VG_100K IMAGES>": str(tmp_path / "VG_100K"),
        "<PATH TO VG-SGG-dicts-with-attri.json>": str(tmp_path / "VG-SGG-dicts-with-attri.json"),
        "<PATH TO image_data.json>": str(tmp_path / "image_data.json"),
        "<PATH TO VG-SGG-with-attri.h5>": str(tmp_path / "VG-SGG-with-attri.h5"),
        "<Alpha Value>": "0.07",
        "<Twice the Beta Value>": "1.5",
        "<PATH TO DETR Pretrained Model>": str(tmp_path / "detr_vg.pth"),
    }
    for placeholder, value in values.items():
        command = command.replace(placeholder, shlex.quote(value))
    assert "<" not in command
    return shlex.split(command)[2:]  # drop "python train_iterative_model.py"


@pytest.fixture
def in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands name configs/iterative_model.yaml relative to the repository root


def test_seed_train_command_parses_and_merges(tmp_path, in_repo_root):
    args = default_argument_parser().parse_args(_substitute(SEED_TRAIN_COMMAND, tmp_path))
    assert args.resume and not args.eval_only and args.num_gpus == 4
    assert (args.num_machines, args.machine_rank, args.dist_url) == (1, 0, "auto")
    cfg = setup_cfg(args)
    assert cfg.OUTPUT_DIR == str(tmp_path / "out")
    assert cfg.DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5 == str(tmp_path / "VG-SGG-with-attri.h5")
    assert cfg.DATASETS.VISUAL_GENOME.IMAGE_DATA == str(tmp_path / "image_data.json")
    assert (cfg.MODEL.DETR.OVERSAMPLE_PARAM, cfg.MODEL.DETR.UNDERSAMPLE_PARAM) == (0.07, 1.5)
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.01 and cfg.SOLVER.IMS_PER_BATCH == 12
    assert cfg.MODEL.DETR.NO_OBJECT_WEIGHT == 0.1 and cfg.MODEL.WEIGHTS == str(tmp_path / "detr_vg.pth")
    assert cfg.is_frozen()


def test_seed_eval_command_parses_and_merges(tmp_path, in_repo_root):
    args = default_argument_parser().parse_args(_substitute(SEED_EVAL_COMMAND, tmp_path))
    assert args.resume and args.eval_only and args.num_gpus == 4
    cfg = setup_cfg(args)
    assert cfg.DATASETS.VISUAL_GENOME.IMAGES == str(tmp_path / "VG_100K")
    assert cfg.DATASETS.TEST == ("VG_test",)


def test_multi_node_flags_parse():
    args = default_argument_parser().parse_args(
        "--num-machines 2 --machine-rank 1 --num-gpus 8 --dist-url tcp://10.1.2.3:29500 SEED 3".split())
    assert (args.num_machines, args.machine_rank, args.num_gpus) == (2, 1, 8)
    assert args.dist_url == "tcp://10.1.2.3:29500" and args.opts == ["SEED", "3"]


def _cpu_command(output_dir, *extra):
    return [
        "OUTPUT_DIR", str(output_dir), "MODEL.DEVICE", "cpu", "SEED", "3", "SOLVER.MAX_ITER", "4",
        "SOLVER.STEPS", "(3,)", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.LOG_PERIOD", "1",
        "TEST.EVAL_PERIOD", "2", *extra,
    ]


def test_train_then_resume_then_eval_only_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(train_iterative_model, "SceneGraphTrainer", StandInTrainer)
    monkeypatch.setattr(train_iterative_model, "check_inputs", lambda cfg, args: None)  # stand-ins read no dataset
    monkeypatch.setattr(StandInTrainer, "METRIC_BY_STEP", {2: 0.3, 4: 0.6, 6: 0.45})
    out = tmp_path / "out"
    results = train_iterative_model.run(_cpu_command(out))
    assert results["VG_test"]["mR@100"] == 0.6
    assert results["VG_test"]["output_dir"] == str(out / "inference" / "VG_test")
    assert (out / "inference" / "VG_test").is_dir()
    for name in ("config.yaml", "log.txt", "metrics.json", "model_final.pth", "best_model_final.pth"):
        assert (out / name).is_file(), name
    saved = get_cfg()
    saved.merge_from_file(str(out / "config.yaml"))
    assert (saved.SOLVER.MAX_ITER, saved.MODEL.DEVICE, saved.OUTPUT_DIR) == (4, "cpu", str(out))
    assert "eta:" in (out / "log.txt").read_text()
    assert [json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()] == [0, 1, 2, 3]

    # --resume on a finished run trains nothing more; longer MAX_ITER continues from the stored iteration.
    train_iterative_model.run(["--resume", *_cpu_command(out, "SOLVER.MAX_ITER", "6")])
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 5
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [0, 1, 2, 3, 4, 5]

    evaluated = train_iterative_model.run(["--resume", "--eval-only", *_cpu_command(out)])
    assert list(evaluated) == ["VG_test"] and evaluated["VG_test"]["mR@100"] == 0.45  # the weights of step 6


def test_eval_only_without_any_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(train_iterative_model, "SceneGraphTrainer", StandInTrainer)
    monkeypatch.setattr(train_iterative_model, "check_inputs", lambda cfg, args: None)  # stand-ins read no dataset
    with pytest.raises(ValueError, match="--eval-only needs weights"):
        train_iterative_model.run(["--resume", "--eval-only", *_cpu_command(tmp_path)])


def test_too_many_gpus_fails_before_starting_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(train_iterative_model, "check_inputs", lambda cfg, args: None)  # no dataset files here
    with pytest.raises(RuntimeError, match="--num-gpus 3 asks for more GPUs than this machine has"):
        train_iterative_model.run(["--num-gpus", "3", "OUTPUT_DIR", str(tmp_path)])
    assert not os.listdir(tmp_path)


def test_help_lists_the_flags():
    result = subprocess.run([sys.executable, "train_iterative_model.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--config-file", "--resume", "--eval-only", "--num-gpus", "--num-machines", "--machine-rank",
                 "--dist-url", "KEY VALUE"):
        assert flag in result.stdout


def test_default_setup_draws_a_negative_seed_writes_config_and_turns_on_determinism(tmp_path):
    from engine.defaults import default_setup

    cfg = get_cfg()
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "SEED", "-1", "DETERMINISTIC", "True", "MODEL.DEVICE", "cpu"])
    cfg.freeze()
    try:
        used = default_setup(cfg)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert used.SEED >= 0 and used.is_frozen() and cfg.SEED == -1
    saved = get_cfg()
    saved.merge_from_file(str(tmp_path / "config.yaml"))
    assert saved.SEED == used.SEED
    assert f"randomly drawn seed {used.SEED}" in (tmp_path / "log.txt").read_text()
