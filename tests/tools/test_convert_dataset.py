"""tools/convert_dataset.py and make_synthetic_vg.py --format: VG150 -> COCO-relations -> loader gives the VG
loader's records (images, boxes, labels, relations, duplicate sampling) on the synthetic world; and back."""
import json
import os

import numpy as np
import pytest

from configs.defaults import get_cfg
from data.catalog import DatasetCatalog, get_predicate_counts
from data.coco_relations import clear_cache
from data.synthetic import config_overrides, generate_synthetic_vg
from data.visual_genome import load_vg_split
from tools.convert_dataset import main as convert_main
from tools.make_synthetic_vg import main as synthetic_main

PAIRS = (("VG_train", "syn_train"), ("VG_val", "syn_val"), ("VG_test", "syn_test"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    record = generate_synthetic_vg(out, num_images=50, seed=11, number_of_validation_images=5)
    return out, record


def coco_cfg(folder, images, record):
    cfg = get_cfg()
    cfg.merge_from_list([
        "DATASETS.COCO_RELATIONS", str([{"NAME": f"syn_{k}", "JSON": os.path.join(folder, f"{k}.json"),
                                         "IMAGES": images} for k in ("train", "val", "test")]),
        "DATASETS.TRAIN", "('syn_train',)", "MODEL.DETR.NUM_CLASSES", record["num_classes"],
        "MODEL.DETR.NUM_RELATION_CLASSES", record["num_relation_classes"]])
    return cfg


def assert_same_records(a, b):
    assert len(a) == len(b) and a.idx_to_label == b.idx_to_label and a.idx_to_predicate == b.idx_to_predicate
    for i in range(len(a)):
        for rng_a, rng_b in ((None, None), (np.random.default_rng(i), np.random.default_rng(i))):
            ra, rb = a.get_record(i, rng_a), b.get_record(i, rng_b)
            assert ra.keys() == rb.keys()
            for key, value in ra.items():
                if isinstance(value, np.ndarray):
                    assert value.dtype == rb[key].dtype and np.array_equal(value, rb[key]), (a.name, i, key)
                else:
                    assert value == rb[key], (a.name, i, key)


def test_vg150_to_coco_relations_round_trip(world, tmp_path, capsys):
    out, record = world
    clear_cache()
    assert convert_main(["vg-to-coco", "--vg-dir", out, "--output", str(tmp_path / "coco"),
                         "DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES", "5"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'coco' / 'test.json'}: {record['splits']['VG_test']['images']} images" in printed
    assert f"- {{NAME: vg150_train, JSON: {tmp_path / 'coco' / 'train.json'}, IMAGES: {out}/VG_100K}}" in printed

    vg_cfg = get_cfg()
    vg_cfg.merge_from_list(config_overrides(out, record))
    cfg = coco_cfg(str(tmp_path / "coco"), os.path.join(out, "VG_100K"), record)
    for vg_name, coco_name in PAIRS:
        assert_same_records(load_vg_split(vg_cfg, vg_name), DatasetCatalog.get(coco_name, cfg))
    assert get_predicate_counts(cfg).tolist() == record["train_predicate_counts"]
    with open(tmp_path / "coco" / "train.json") as f:
        train = json.load(f)
    # Written before the train-only non-overlap filter (the "above" pairs), which the loader applies again.
    assert len(train["rel_annotations"]) > record["splits"]["VG_train"]["relations"]

    # ... and back to VG150's files: same images, labels and relations; boxes within VG150's integer rounding.
    coco = tmp_path / "coco"
    assert convert_main(["coco-to-vg", "--train", str(coco / "train.json"), "--val", str(coco / "val.json"),
                         "--test", str(coco / "test.json"), "--images", os.path.join(out, "VG_100K"),
                         "--output", str(tmp_path / "back")]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES 5 MODEL.DETR.NUM_CLASSES 12" in line
    back = get_cfg()
    back.merge_from_list(line.split())
    for name in ("VG_train", "VG_val", "VG_test"):
        a, b = load_vg_split(vg_cfg, name), load_vg_split(back, name)
        assert a.image_ids.tolist() == b.image_ids.tolist() and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.relations, b.relations) and np.array_equal(a.box_offsets, b.box_offsets)
        assert np.abs(a.boxes - b.boxes).max() <= 1.0
        assert os.path.realpath(b.get_record(0)["file_name"]) == os.path.realpath(a.get_record(0)["file_name"])


def test_converter_errors_are_one_line(world, tmp_path, capsys):
    out, _ = world
    assert convert_main(["vg-to-coco", "--vg-dir", str(tmp_path / "none"), "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --vg-dir: folder not found: {tmp_path / 'none'}\n"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    assert convert_main(["coco-to-vg", "--train", str(bad), "--test", str(bad), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --train: {bad} has 1 kind(s) of problem")
    assert f"{bad}: missing_list: 4 required lists are missing" in err


def test_synthetic_world_in_coco_relations_format(tmp_path, capsys):
    out = str(tmp_path / "syn")
    assert synthetic_main([out, "--images", "30", "--seed", "2", "--format", "coco"]) == 0
    assert sorted(os.listdir(out)) == ["VG_100K", "synthetic_record.json", "test.json", "train.json", "val.json"]
    with open(os.path.join(out, "synthetic_record.json")) as f:
        record = json.load(f)
    cfg = coco_cfg(out, os.path.join(out, "VG_100K"), record)
    for vg_name, coco_name in PAIRS:
        split = DatasetCatalog.get(coco_name, cfg)
        expected = record["splits"][vg_name]
        assert (len(split), split.num_objects, split.num_relations) == (
            expected["images"], expected["objects"], expected["relations"])
    assert "COCO-relations files: set DATASETS.COCO_RELATIONS" in capsys.readouterr().out
