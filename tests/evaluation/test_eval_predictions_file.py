"""The sgg-predictions/v1 file: round trip through the offline tool, bad-file errors, the zero-shot set."""
import os

import numpy as np
import pytest
import torch

import tools.evaluate_predictions as evaluate_tool
from configs.defaults import get_cfg
from evaluation import sgg_evaluator
from evaluation.predictions_file import (
    PredictionsFileError,
    check_many_image_values,
    load_predictions,
    order_by_split,
    save_predictions,
)
from evaluation.sgg_evaluator import SGGEvaluator
from evaluation.synthetic import random_prediction, random_split
from evaluation.zero_shot import load_zero_shot_triplets, unseen_triplets

NUM_CLASSES, NUM_PREDICATES = 12, 6


@pytest.fixture
def split():
    return random_split(np.random.default_rng(0), 8, NUM_CLASSES, NUM_PREDICATES, first_image_id=100)


def predictions_for(split, seed=1):
    rng = np.random.default_rng(seed)
    outputs = [random_prediction(rng, r, NUM_CLASSES, NUM_PREDICATES, num_boxes=30, num_rows=160)
               for r in split.records]
    outputs[3] = random_prediction(rng, split.records[3], NUM_CLASSES, NUM_PREDICATES, num_boxes=0, num_rows=0)
    return outputs


def run_evaluator(split, outputs, output_dir, zero_shot):
    evaluator = SGGEvaluator(split, zero_shot_triplets=zero_shot, output_dir=str(output_dir))
    for image_id, output in zip(split.image_ids, outputs):
        as_tensors = {key: torch.from_numpy(value) for key, value in output.items()}
        evaluator.process([{"image_id": int(image_id)}], [dict(as_tensors, image_id=int(image_id))])
    return evaluator.evaluate()


def write_zero_shot(tmp_path, split):
    path = str(tmp_path / "zero_shot.npy")
    first = split.records[0]
    s, o, p = first["relations"][0]
    np.save(path, np.array([[first["labels"][s] + 1, first["labels"][o] + 1, p + 1], [1, 2, 3]]))
    return path


def tool_cfg(zero_shot_path):
    cfg = get_cfg()
    cfg.DATASETS.TEST = ("synthetic_test",)
    cfg.DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS = zero_shot_path
    return cfg


def test_tool_reproduces_live_metrics_bit_for_bit(tmp_path, split, monkeypatch, capsys):
    zero_shot_path = write_zero_shot(tmp_path, split)
    zero_shot = load_zero_shot_triplets(zero_shot_path, NUM_CLASSES, NUM_PREDICATES)
    live = run_evaluator(split, predictions_for(split), tmp_path / "live", zero_shot)
    printed_live = capsys.readouterr().out
    assert live["num_zero_shot_relations"] >= 1 and 0 < live["R@100"] < 1
    assert sorted(os.listdir(tmp_path / "live")) == ["sgg_eval.json", "sgg_predictions.pt"]  # no temp files left

    monkeypatch.setattr(evaluate_tool, "get_split", lambda cfg, name: split)
    offline = evaluate_tool.evaluate_predictions_file(
        tool_cfg(zero_shot_path), str(tmp_path / "live" / "sgg_predictions.pt"), str(tmp_path / "offline")
    )
    assert offline == live  # exact equality of every float, AP included
    assert capsys.readouterr().out == printed_live
    with open(tmp_path / "offline" / "sgg_eval.json") as stream:
        assert stream.read() == open(tmp_path / "live" / "sgg_eval.json").read()


def test_file_layout_and_compaction(tmp_path, split):
    outputs = predictions_for(split)
    run_evaluator(split, outputs, tmp_path, np.zeros((0, 3), dtype=np.int64))
    payload = torch.load(tmp_path / "sgg_predictions.pt", weights_only=True)
    assert payload["format"] == "sgg-predictions/v1" and payload["mode"] == "sgdet"
    assert [image["image_id"] for image in payload["images"]] == split.image_ids.tolist()
    first = payload["images"][0]
    assert first["boxes"].dtype == torch.float32 and first["labels"].dtype == torch.int64
    assert first["rel_pairs"].dtype == torch.int64 and first["rel_scores"].dtype == torch.float32
    assert torch.equal(first["boxes"], torch.from_numpy(outputs[0]["boxes"]))
    # only rows that reach a top-100 list are kept, in their original order
    assert 100 <= len(first["rel_pairs"]) < 160
    assert payload["images"][3]["rel_scores"].shape == (0, NUM_PREDICATES)


def corrupt(tmp_path, split, edit):
    """Save the evaluator's file, apply ``edit(payload)``, write it back; returns its path."""
    run_evaluator(split, predictions_for(split), tmp_path, np.zeros((0, 3), dtype=np.int64))
    path = str(tmp_path / "sgg_predictions.pt")
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


def set_field(position, field, value):
    def edit(payload):
        payload["images"][position][field] = value
    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(format="sgg-predictions/v0"), "format tag"),
        (lambda p: p.update(mode="predcls"), "mode must be"),
        (lambda p: p["images"].append(p["images"][0]), "duplicate image_id 100"),
        (set_field(1, "image_id", "101"), "'image_id' must be an int"),
        (set_field(1, "boxes", torch.zeros(30, 4, dtype=torch.float64)), "'boxes' must be float32"),
        (set_field(1, "rel_scores", torch.zeros(5, NUM_PREDICATES + 1)), "'rel_scores' has shape"),
        (set_field(1, "labels", torch.zeros(29, dtype=torch.int64)), "'labels' has shape"),
        (set_field(1, "rel_pairs", torch.zeros(5, 3, dtype=torch.int64)), "'rel_pairs' has shape (5, 3)"),
        (set_field(1, "rel_pairs", torch.zeros(0, 2, dtype=torch.int64)), "'rel_scores' has shape"),
        (set_field(2, "scores", torch.full((30,), float("nan"))), "NaN"),
        (lambda p: p["images"][1]["rel_pairs"].__setitem__((0, 1), 30), "'rel_pairs' must index the 30 boxes"),
        (lambda p: p["images"][1]["rel_scores"].__setitem__((0, 0), float("nan")), "'rel_scores' contains NaN"),
        (lambda p: p["images"][1].pop("scores"), "missing field 'scores'"),
        (set_field(1, "labels", torch.full((30,), NUM_CLASSES)), "'labels' must be [0, 12)"),
    ],
)
def test_bad_file_errors_name_the_file(tmp_path, split, edit, message):
    path = corrupt(tmp_path, split, edit)
    with pytest.raises(PredictionsFileError) as error:
        load_predictions(path, num_predicates=NUM_PREDICATES, num_classes=NUM_CLASSES)
    assert path in str(error.value) and message in str(error.value)


def test_missing_and_unknown_images_are_reported(tmp_path, split):
    path = corrupt(tmp_path, split, lambda p: p["images"].pop(5))
    images = load_predictions(path)
    with pytest.raises(PredictionsFileError, match="1 of the split's 8 images are missing, e.g. image ids \\[105\\]"):
        order_by_split(images, split.image_ids, path)
    with pytest.raises(PredictionsFileError, match="not in the evaluated split"):
        order_by_split(images, split.image_ids[:4], path)
    shuffled = images[::-1]
    assert [i["image_id"] for i in order_by_split(shuffled, split.image_ids[np.arange(8) != 5], path)] == \
        [100, 101, 102, 103, 104, 106, 107]


def write_config(tmp_path, split):
    config = tmp_path / "config.yaml"
    config.write_text(f"DATASETS:\n  TEST: [synthetic_test]\n  VISUAL_GENOME:\n"
                      f"    ZERO_SHOT_TRIPLETS: '{write_zero_shot(tmp_path, split)}'\n")
    return str(config)


def test_tool_command_line_prints_the_block(tmp_path, split, monkeypatch, capsys):
    live = run_evaluator(split, predictions_for(split), tmp_path, np.zeros((0, 3), dtype=np.int64))
    capsys.readouterr()
    monkeypatch.setattr(evaluate_tool, "get_split", lambda cfg, name: split)
    evaluate_tool.main(["--predictions", str(tmp_path / "sgg_predictions.pt"), "--config-file",
                        write_config(tmp_path, split), "--output-dir", str(tmp_path / "offline"),
                        "MODEL.DEVICE", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SGG eval protocol: standard (Scene-Graph-Benchmark")  # the default protocol
    assert lines[1] == (f"SGG eval:     R @ 20: {live['R@20']:.4f};     R @ 50: {live['R@50']:.4f};     "
                        f"R @ 100: {live['R@100']:.4f};  for mode=sgdet, type=Recall(Main).")
    assert lines[-1].startswith("Detection evaluation mAp=") and len(lines) == 10
    assert (tmp_path / "offline" / "sgg_eval.json").is_file()


def test_tool_exits_with_a_clear_message(tmp_path, split, monkeypatch, capsys):
    path = corrupt(tmp_path, split, lambda p: p.update(format="other"))
    monkeypatch.setattr(evaluate_tool, "get_split", lambda cfg, name: split)
    config = write_config(tmp_path, split)
    assert evaluate_tool.main(["--predictions", path, "--config-file", config, "MODEL.DEVICE", "cpu"]) == 2
    assert f"error: {path}: format tag" in capsys.readouterr().err
    assert evaluate_tool.main(["--predictions", str(tmp_path / "absent.pt"), "--config-file", config]) == 2
    assert "Predictions file not found" in capsys.readouterr().err


def test_not_a_predictions_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a pickle")
    with pytest.raises(PredictionsFileError, match="junk.pt: not a readable"):
        load_predictions(str(path))


def test_save_predictions_is_atomic_and_loadable(tmp_path):
    image = {"image_id": 7, "boxes": np.zeros((1, 4), np.float32), "labels": np.zeros(1, np.int64),
             "scores": np.ones(1, np.float32), "rel_pairs": np.zeros((1, 2), np.int64),
             "rel_scores": np.full((1, 3), 0.5, np.float32)}
    path = str(tmp_path / "out" / "p.pt")
    save_predictions(path, [image])
    assert os.listdir(tmp_path / "out") == ["p.pt"]
    loaded = load_predictions(path, num_predicates=3)
    assert loaded[0]["image_id"] == 7 and np.array_equal(loaded[0]["rel_scores"], image["rel_scores"])


def test_zero_shot_file_is_validated(tmp_path):
    good = np.array([[1, 2, 3], [12, 12, 6]])
    np.save(tmp_path / "good.npy", good)
    torch.save(torch.from_numpy(good), tmp_path / "good.pt")
    for name in ("good.npy", "good.pt"):
        triplets = load_zero_shot_triplets(str(tmp_path / name), NUM_CLASSES, NUM_PREDICATES)
        assert triplets.tolist() == [[0, 1, 2], [11, 11, 5]]
    cases = {
        "zero_based.npy": (np.array([[0, 1, 1]]), "row 0 = \\[0, 1, 1\\] is out of range; ids are 1-based"),
        "big_predicate.npy": (np.array([[1, 1, 7]]), "out of range"),
        "shape.npy": (np.array([[1, 2]]), "must be a \\(Z, 3\\) array"),
        "float.npy": (np.array([[1.0, 2.0, 3.0]]), "must hold integers"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(ValueError, match=message) as error:
            load_zero_shot_triplets(str(tmp_path / name), NUM_CLASSES, NUM_PREDICATES)
        assert name in str(error.value) and "ZERO_SHOT_TRIPLETS" in str(error.value)
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        load_zero_shot_triplets(str(tmp_path / "absent.npy"), NUM_CLASSES, NUM_PREDICATES)


def test_unseen_triplets_from_training_split(monkeypatch):
    rng = np.random.default_rng(4)
    train = random_split(rng, 30, num_classes=3, num_predicates=2, boxes_per_image=3, relations_per_image=2)
    test = random_split(rng, 10, num_classes=4, num_predicates=3, boxes_per_image=3, relations_per_image=3)
    seen = {(r["labels"][s], r["labels"][o], p) for r in train.records for s, o, p in r["relations"]}
    occurring = {(r["labels"][s], r["labels"][o], p) for r in test.records for s, o, p in r["relations"]}
    expected = sorted(occurring - seen)
    assert expected and len(expected) < len(occurring)
    assert unseen_triplets(train, test).tolist() == [list(t) for t in expected]

    # build_zero_shot_source without a file: computed lazily from DATASETS.TRAIN[0]
    loaded = []
    monkeypatch.setattr(sgg_evaluator, "get_split",
                        lambda cfg, name: loaded.append(name) or (train if name == "VG_train" else test))
    source = sgg_evaluator.build_zero_shot_source(get_cfg(), "VG_test", 4, 3)
    assert loaded == []
    assert source().tolist() == [list(t) for t in expected] and loaded == ["VG_train", "VG_test"]


@pytest.mark.parametrize(
    "field, position, value, message",
    [
        ("boxes", (0, 0), np.inf, "'boxes' contains NaN or infinite"),
        ("boxes", (0, 2), -5.0, "'boxes' must be xyxy with x2 >= x1"),
        ("scores", (1,), np.nan, "'scores' contains NaN"),
        ("scores", (1,), -0.5, "'scores' must be non-negative"),
        ("rel_scores", (2, 1), np.nan, "'rel_scores' contains NaN"),
        ("rel_pairs", (3, 0), 30, "'rel_pairs' must index the 30 boxes"),
        ("rel_pairs", (3, 1), -1, "'rel_pairs' must index"),
        ("labels", (4,), NUM_CLASSES, "'labels' must be \\[0, 12\\)"),
    ],
)
def test_batched_value_check_names_the_bad_image(split, field, position, value, message):
    images = [dict(prediction, image_id=int(image_id))
              for prediction, image_id in zip(predictions_for(split), split.image_ids)]
    check_many_image_values(images, lambda image: f"image {image['image_id']}", NUM_CLASSES)
    images[5][field] = images[5][field].copy()
    images[5][field][position] = value
    with pytest.raises(PredictionsFileError, match=f"^image 105: {message}"):
        check_many_image_values(images, lambda image: f"image {image['image_id']}", NUM_CLASSES)
