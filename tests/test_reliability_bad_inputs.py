"""Bad input through the user-facing commands: ``train_iterative_model.py`` (its ``command_line``, in-process) and
``tools/evaluate_predictions.py``, ``tools/predict.py``, ``tools/convert_weights.py`` (their ``main``).  Each case
must end with exit status 2 and ONE ``error: ...`` message on stderr naming the file or config key, no traceback,
and no partial file (no checkpoint, no temporary file; a config error creates no OUTPUT_DIR at all).

The loaders' and the config's own unit tests (tests/data/, tests/configs/, tests/evaluation/)
check the checks; these cases check what a user sees."""
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

import train_iterative_model
from configs.defaults import get_cfg
from engine.checkpoint import CHECKPOINT_FORMAT
from evaluation.predictions_file import save_predictions
from tests.reliability_helpers import TINY_CONFIG, make_world, temp_files
from tools import convert_weights, evaluate_predictions, predict

VG = "DATASETS.VISUAL_GENOME."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(folder, config overrides) of a tiny synthetic world; cases corrupt copies of its files, never the files."""
    folder = str(tmp_path_factory.mktemp("world"))
    return folder, make_world(folder)


@pytest.fixture(scope="module")
def tiny_weights(world, tmp_path_factory):
    """A state dict of the tiny model on the world (keys and shapes are what the cases need, not the values)."""
    import modeling

    cfg = get_cfg()
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(world[1])
    torch.manual_seed(0)
    state = modeling.build_model(cfg).state_dict()
    path = str(tmp_path_factory.mktemp("weights") / "tiny.pth")
    torch.save({"format": CHECKPOINT_FORMAT, "model": state}, path)
    return path, state


def _override(overrides, key, value):
    """``overrides`` with ``key`` set to ``value`` (replacing the world's value when it has the key)."""
    overrides = list(overrides)
    if key in overrides[0::2]:
        overrides[overrides.index(key) + 1] = value
    else:
        overrides += [key, value]
    return overrides


def _copy(world, tmp_path, name):
    """A copy of the world file ``name`` in ``tmp_path``, to be corrupted."""
    copy = str(tmp_path / name)
    shutil.copyfile(os.path.join(world[0], name), copy)
    return copy


def _train_argv(world, tmp_path, *extra):
    """The training command of a case: leading options of ``extra`` (``--config-file X`` replaces tiny_cpu.yaml),
    the world, a one-iteration run into ``tmp_path/out``, then the rest of ``extra`` (overrides, which win)."""
    extra, flags, config_file = list(extra), [], TINY_CONFIG
    while extra and extra[0].startswith("--"):
        flag = extra.pop(0)
        if flag == "--config-file":
            config_file = extra.pop(0)
        else:
            flags.append(flag)
    return [*flags, "--config-file", config_file, *world[1], "OUTPUT_DIR", str(tmp_path / "out"),
            "SOLVER.MAX_ITER", "1", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MAX_SIZE_TRAIN", "96", *extra]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _edit_h5(world, tmp_path, edit):
    path = _copy(world, tmp_path, "VG-SGG-with-attri.h5")
    with h5py.File(path, "a") as f:
        edit(f)
    return [VG + "VG_ATTRIBUTE_H5", path]


def _relations_leave_their_image(f):
    relationships = f["relationships"][:]
    relationships[:, 1] = len(f["labels"]) - 1  # the last box, in the last image
    f["relationships"][:] = relationships


def _garbage_images(world, tmp_path):
    folder = tmp_path / "VG_100K"
    folder.mkdir()
    for name in os.listdir(os.path.join(world[0], "VG_100K")):
        (folder / name).write_bytes(b"\xff\xd8 not a JPEG")
    return [VG + "IMAGES", str(folder)]


def _wrong_shape_weights(tiny_weights, tmp_path):
    _, state = tiny_weights
    state = dict(state, **{"query_embed.weight": torch.zeros(31, 64)})
    path = str(tmp_path / "wrong_shapes.pth")
    torch.save({"format": CHECKPOINT_FORMAT, "model": state}, path)
    return ["MODEL.WEIGHTS", path]


def _last_checkpoint_naming_a_missing_file(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "last_checkpoint").write_text("model_0000999.pth")
    return ["--resume"]


# id -> (argv builder (world, tmp_path, tiny_weights) -> extra arguments of the training command, message parts,
#        whether the error comes before any OUTPUT_DIR is created)
TRAIN_CASES = {
    "config-file-missing": (lambda w, t, _: ["--config-file", str(t / "nope.yaml")], ["Config file not found",
                                                                                        "nope.yaml"], True),
    "base-points-nowhere": (lambda w, t, _: ["--config-file", _write(t, "child.yaml", "_BASE_: gone.yaml\n")],
                            ["child.yaml", "_BASE_", "gone.yaml"], True),
    "yaml-syntax-error": (lambda w, t, _: ["--config-file", _write(t, "broken.yaml", "SOLVER:\n  STEPS: [1,\n")],
                          ["broken.yaml", "not valid YAML"], True),
    "key-typo-in-file": (lambda w, t, _: ["--config-file", _write(t, "typo.yaml", "SOLVER:\n  BASE_LRR: 0.1\n")],
                         ["typo.yaml", "SOLVER.BASE_LRR", "did you mean SOLVER.BASE_LR"], True),
    "wrong-type-in-file": (lambda w, t, _: ["--config-file", _write(t, "type.yaml", "SOLVER:\n  MAX_ITER: ten\n")],
                           ["type.yaml", "SOLVER.MAX_ITER", "expects type int"], True),
    "key-typo-on-command-line": (lambda w, t, _: ["SOLVER.MAX_ITR", "5"], ["SOLVER.MAX_ITR", "command line"], True),
    "wrong-type-on-command-line": (lambda w, t, _: ["SOLVER.MAX_ITER", "abc"], ["SOLVER.MAX_ITER", "int"], True),
    "odd-number-of-overrides": (lambda w, t, _: ["SOLVER.MAX_ITER"], ["KEY VALUE pairs", "odd number"], True),
    "unknown-device": (lambda w, t, _: ["MODEL.DEVICE", "tpu"], ["MODEL.DEVICE", "tpu"], True),
    "output-dir-through-a-file": (lambda w, t, _: ["OUTPUT_DIR", _write(t, "a_file", "") + "/out"],
                                  ["OUTPUT_DIR", "a_file/out"], True),
    "h5-missing": (lambda w, t, _: [VG + "VG_ATTRIBUTE_H5", str(t / "absent.h5")],
                   [VG + "VG_ATTRIBUTE_H5", "absent.h5"], False),
    "h5-corrupt": (lambda w, t, _: [VG + "VG_ATTRIBUTE_H5", _write(t, "corrupt.h5", "not HDF5")],
                   [VG + "VG_ATTRIBUTE_H5", "corrupt.h5", "cannot open"], False),
    "h5-lacks-a-dataset": (lambda w, t, _: _edit_h5(w, t, lambda f: f.__delitem__("predicates")),
                           [VG + "VG_ATTRIBUTE_H5", "predicates"], False),
    "h5-relation-outside-its-image": (lambda w, t, _: _edit_h5(w, t, _relations_leave_their_image),
                                      [VG + "VG_ATTRIBUTE_H5", "relationship row", "outside its image"], False),
    "dicts-json-corrupt": (lambda w, t, _: [VG + "MAPPING_DICTIONARY", _write(t, "dicts.json", "{not json")],
                           [VG + "MAPPING_DICTIONARY", "dicts.json"], False),
    "image-data-missing": (lambda w, t, _: [VG + "IMAGE_DATA", str(t / "no_image_data.json")],
                           [VG + "IMAGE_DATA", "no_image_data.json"], False),
    "image-folder-missing": (lambda w, t, _: [VG + "IMAGES", str(t / "no_images")],
                             [VG + "IMAGES", "no_images"], False),
    "empty-split-after-filters": (lambda w, t, _: [VG + "NUMBER_OF_VALIDATION_IMAGES", "1000"],
                                  ["VG_train is empty after the filters", "NUMBER_OF_VALIDATION_IMAGES=1000"], False),
    "weights-missing": (lambda w, t, _: ["MODEL.WEIGHTS", str(t / "no_weights.pth")],
                        ["Checkpoint not found", "no_weights.pth"], False),
    "weights-with-wrong-shapes": (lambda w, t, weights: _wrong_shape_weights(weights, t),
                                  ["wrong_shapes.pth", "query_embed.weight", "(31, 64)", "(30, 64)"], False),
    "last-checkpoint-names-a-missing-file": (lambda w, t, _: _last_checkpoint_naming_a_missing_file(t),
                                             ["last_checkpoint", "model_0000999.pth"], False),
    "eval-only-without-weights": (lambda w, t, _: ["--eval-only"], ["--eval-only needs weights"], False),
    "images-that-do-not-decode": (lambda w, t, _: _garbage_images(w, t), ["cannot decode", "VG_100K"], False),
}


def _the_error(capsys, returncode):
    """The one ``error: ...`` message of a command that must have failed with exit status 2."""
    err = capsys.readouterr().err
    assert returncode == 2, err
    assert "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1, err
    return err[err.index("error: "):]


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_training_command_rejects_bad_input(case, world, tiny_weights, tmp_path, capsys):
    build, parts, before_output_dir = TRAIN_CASES[case]
    argv = _train_argv(world, tmp_path, *build(world, tmp_path, tiny_weights))
    message = _the_error(capsys, train_iterative_model.command_line(argv))
    for part in parts:
        assert part in message, (part, message)
    out = tmp_path / "out"
    if before_output_dir:
        assert not out.exists()
    assert temp_files(str(tmp_path)) == []
    assert not out.exists() or not [name for name in os.listdir(out) if name.endswith(".pth")]


def test_more_processes_than_gpus(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    argv = ["--num-gpus", "3", *_train_argv(world, tmp_path, "MODEL.DEVICE", "cuda", "SOLVER.IMS_PER_BATCH", "3")]
    message = _the_error(capsys, train_iterative_model.command_line(argv))
    assert "--num-gpus 3 asks for more GPUs than this machine has (1)" in message
    assert not (tmp_path / "out").exists()


def test_cuda_device_without_a_gpu(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = _the_error(capsys, train_iterative_model.command_line(_train_argv(world, tmp_path, "MODEL.DEVICE",
                                                                                "cuda")))
    assert 'MODEL.DEVICE is "cuda" but no GPU' in message
    assert not (tmp_path / "out").exists()


def _predictions_file(tmp_path, name, scores=1.0):
    image = {"image_id": 1, "boxes": np.zeros((1, 4), np.float32), "labels": np.zeros(1, np.int64),
             "scores": np.full(1, scores, np.float32), "rel_pairs": np.zeros((1, 2), np.int64),
             "rel_scores": np.full((1, 10), 0.1, np.float32)}
    path = str(tmp_path / name)
    save_predictions(path, [image])
    return path


def _truncated(path):
    with open(path, "rb") as f:
        payload = f.read()
    with open(path, "wb") as f:
        f.write(payload[: len(payload) // 2])
    return path


@pytest.mark.parametrize("case, parts", [
    ("truncated", ["preds.pt", "not a readable sgg-predictions file"]),
    ("nan-scores", ["preds.pt", "images[0]", "'scores' contains NaN"]),
    ("images-of-another-split", ["preds.pt", "not in the evaluated split"]),
])
def test_evaluate_predictions_rejects_a_malformed_file(case, parts, world, tmp_path, capsys):
    path = _predictions_file(tmp_path, "preds.pt", scores=float("nan") if case == "nan-scores" else 1.0)
    if case == "truncated":
        _truncated(path)
    argv = ["--predictions", path, "--config-file", TINY_CONFIG, "--output-dir", str(tmp_path / "eval"), *world[1]]
    message = _the_error(capsys, evaluate_predictions.main(argv))
    for part in parts:
        assert part in message, (part, message)
    assert not (tmp_path / "eval").exists() and temp_files(str(tmp_path)) == []


def test_predict_rejects_an_image_that_does_not_decode(world, tiny_weights, tmp_path, capsys):
    image = tmp_path / "broken.jpg"
    image.write_bytes(b"\xff\xd8 not a JPEG")
    argv = ["--config-file", TINY_CONFIG, "--input", str(image), "--output", str(tmp_path / "graphs"), *world[1],
            "MODEL.WEIGHTS", tiny_weights[0]]
    message = _the_error(capsys, predict.main(argv))
    assert "cannot decode" in message and "broken.jpg" in message
    assert os.listdir(tmp_path / "graphs") == []  # nothing half-written for it


def test_convert_weights_rejects_a_file_that_is_not_a_state_dict(world, tmp_path, capsys):
    source = tmp_path / "list.pth"
    torch.save([1, 2, 3], source)
    argv = ["--input", str(source), "--output", str(tmp_path / "converted.pth"), "--config-file", TINY_CONFIG,
            *world[1]]
    message = _the_error(capsys, convert_weights.main(argv))
    assert "list.pth" in message and "expected a dict" in message
    assert sorted(os.listdir(tmp_path)) == ["list.pth"]
