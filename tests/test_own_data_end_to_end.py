"""Train on your own data, end to end: the synthetic world as COCO-relations files only (VG150's files removed,
class and predicate names changed), registered in the config; a short CPU training evaluates the COCO test split
(ground truth, zero-shot set and names from the JSONs), predict prints the file's names, and a
broken file stops the run at start-up with the checker's lines."""
import json
import os

import pytest

import train_iterative_model
from data.coco_relations import clear_cache
from data.synthetic import OBJECT_CLASSES, PREDICATES, generate_synthetic_vg
from tools.make_synthetic_vg import write_coco_relations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_cpu.yaml")


def registered(folder, images, test_json="test.json"):
    entries = [{"NAME": "own_train", "JSON": os.path.join(folder, "train.json"), "IMAGES": images},
               {"NAME": "own_val", "JSON": os.path.join(folder, "val.json"), "IMAGES": images},
               {"NAME": "own_test", "JSON": os.path.join(folder, test_json), "IMAGES": images}]
    return ["DATASETS.COCO_RELATIONS", str(entries), "DATASETS.TRAIN", "('own_train',)",
            "DATASETS.VAL", "('own_val',)", "DATASETS.TEST", "('own_test',)"]


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("own"))
    record = generate_synthetic_vg(out, num_images=24, seed=3, number_of_validation_images=2)
    write_coco_relations(out, record, keep_vg_files=False)
    for split in ("train", "val", "test"):  # names only this file knows
        path = os.path.join(out, f"{split}.json")
        with open(path) as f:
            data = json.load(f)
        for entry in data["categories"] + data["rel_categories"]:
            entry["name"] = entry["name"].upper()
        with open(path, "w") as f:
            json.dump(data, f)
    clear_cache()
    return out, record


@pytest.fixture(scope="module")
def trained(own_data, tmp_path_factory):
    out, record = own_data
    run_dir = str(tmp_path_factory.mktemp("run"))
    overrides = registered(out, os.path.join(out, "VG_100K")) + [
        "OUTPUT_DIR", run_dir, "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "100",
        "TEST.EVAL_PERIOD", "0", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
    ]
    results = train_iterative_model.run(["--num-gpus", "1", "--config-file", TINY] + overrides)
    return run_dir, overrides, results


def test_training_and_evaluation_on_coco_relations_files(own_data, trained):
    out, record = own_data
    assert not os.path.exists(os.path.join(out, "VG-SGG-with-attri.h5"))
    run_dir, overrides, results = trained
    metrics = results["own_test"]
    expected = record["splits"]["VG_test"]
    assert metrics["num_images"] == expected["images"] and metrics["num_gt_relations"] == expected["relations"]
    with open(os.path.join(run_dir, "inference", "own_test", "sgg_eval.json")) as f:
        on_disk = json.load(f)
    for key in ("R@20", "R@50", "R@100", "mR@100", "ng-R@50", "zR@100", "AP50"):
        assert 0.0 <= metrics[key] <= 1.0 and on_disk[key] == metrics[key], key
    # The zero-shot set is the test triplets unseen in own_train: the world withholds some from training.
    assert metrics["num_zero_shot_relations"] > 0


def test_predict_names_come_from_the_training_file(own_data, trained, tmp_path):
    out, _ = own_data
    run_dir, _, _ = trained
    from tools.predict import main as predict_main

    image = sorted(os.listdir(os.path.join(out, "VG_100K")))[0]
    rc = predict_main(["--config-file", os.path.join(run_dir, "config.yaml"), "--input",
                       os.path.join(out, "VG_100K", image), "--output", str(tmp_path), "--top-k", "5",
                       "MODEL.WEIGHTS", os.path.join(run_dir, "model_final.pth")])
    assert rc == 0
    with open(tmp_path / (os.path.splitext(image)[0] + ".json")) as f:
        graph = json.load(f)
    assert graph["triplets"] and graph["objects"]
    assert {o["label"] for o in graph["objects"]} <= {name.upper() for name in OBJECT_CLASSES}
    assert {t["predicate"] for t in graph["triplets"]} <= {name.upper() for name in PREDICATES}


def test_a_broken_split_stops_training_at_start_up(own_data, tmp_path, capsys):
    out, _ = own_data
    with open(os.path.join(out, "test.json")) as f:
        data = json.load(f)
    data["rel_annotations"][0]["predicate_id"] = 99
    data["annotations"][1]["bbox"][2] = 0
    with open(tmp_path / "broken_test.json", "w") as f:
        json.dump(data, f)
    broken = str(tmp_path / "broken_test.json")
    images = os.path.join(out, "VG_100K")
    entries = [{"NAME": "own_train", "JSON": os.path.join(out, "train.json"), "IMAGES": images},
               {"NAME": "own_test", "JSON": broken, "IMAGES": images}]
    rc = train_iterative_model.command_line([
        "--config-file", TINY, "OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_ITER", "1",
        "DATASETS.COCO_RELATIONS", str(entries), "DATASETS.TRAIN", "('own_train',)", "DATASETS.VAL", "()",
        "DATASETS.TEST", "('own_test',)"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{broken}: degenerate_box: 1 annotations" in err and f"{broken}: unknown_predicate: 1 relations" in err
    assert not os.path.exists(tmp_path / "run" / "model_final.pth")
