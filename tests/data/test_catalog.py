"""The dataset catalog: built-in names (VG150 exactly as before), config and Python registrations, errors."""
import copy
import os

import numpy as np
import pytest

from configs.defaults import get_cfg
from data import visual_genome
from data.catalog import (
    DatasetCatalog,
    MetadataCatalog,
    get_predicate_counts,
    get_split,
    register_coco_relations,
    zero_shot_file,
)
from data.coco_relations import clear_cache
from data.synthetic import OBJECT_CLASSES, PREDICATES, config_overrides, generate_synthetic_vg
from tests.data.test_coco_relations import THREE_IMAGES, write_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    record = generate_synthetic_vg(out, num_images=40, seed=5, number_of_validation_images=4, write_images=False)
    return out, record


def vg_cfg(world, *extra):
    cfg = get_cfg()
    cfg.merge_from_list(config_overrides(*world) + list(extra))
    return cfg


def test_vg150_names_give_the_vg_loader_splits_unchanged(world):
    out, record = world
    cfg = vg_cfg(world)
    for name in ("VG_train", "VG_val", "VG_test"):
        split = DatasetCatalog.get(name, cfg)
        assert split is visual_genome.load_vg_split(cfg, name)  # the same memoised object: same records
        assert get_split(cfg, name) is split
        expected = record["splits"][name]
        assert (len(split), split.num_objects, split.num_relations) == (
            expected["images"], expected["objects"], expected["relations"])
    assert get_predicate_counts(cfg).tolist() == record["train_predicate_counts"]
    assert get_predicate_counts(cfg).tolist() == visual_genome.get_predicate_counts(cfg).tolist()
    meta = MetadataCatalog.get("VG_test", vg_cfg(world, "DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS", "z.npy"))
    assert meta.class_names == OBJECT_CLASSES and meta.predicate_names == PREDICATES
    assert meta.zero_shot_file == "z.npy" and meta.evaluator_type == "sgg"
    assert meta.source == os.path.join(out, "VG-SGG-dicts-with-attri.json")


def test_unknown_names_and_bad_entries_are_clear_errors(world, tmp_path):
    cfg = vg_cfg(world)
    with pytest.raises(KeyError, match=r"Dataset 'VG_tset' is not registered; known datasets: VG_train, VG_val, "
                                       r"VG_test, PSG_train, PSG_test .*DATASETS\.COCO_RELATIONS"):
        DatasetCatalog.get("VG_tset", cfg)
    with pytest.raises(KeyError, match="not registered"):
        MetadataCatalog.get("nothing", cfg)
    for entries, message in (
        ([{"NAME": "VG_test", "JSON": "a.json", "IMAGES": "i"}], r"\[0\]\.NAME 'VG_test' is a built-in"),
        ([{"NAME": "a", "JSON": "a.json", "IMAGES": "i"}, {"NAME": "a", "JSON": "b.json", "IMAGES": "i"}],
         r"\[1\]\.NAME 'a' is registered twice"),
        ([{"NAME": "a", "JSON": "a.json"}], r"COCO_RELATIONS\[0\] must be a mapping of exactly NAME, JSON and IMAGES"),
    ):
        bad = vg_cfg(world, "DATASETS.COCO_RELATIONS", str(entries))
        with pytest.raises(ValueError, match=message):
            DatasetCatalog.get("a", bad)
    (tmp_path / "imgs").mkdir()
    missing = [{"NAME": "a", "JSON": str(tmp_path / "no.json"), "IMAGES": str(tmp_path / "imgs")}]
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.COCO_RELATIONS\[0\]\.JSON: file not found"):
        DatasetCatalog.get("a", vg_cfg(world, "DATASETS.COCO_RELATIONS", str(missing)))


def test_python_registrations(world, tmp_path):
    clear_cache()
    path, images = write_dataset(str(tmp_path))
    cfg = vg_cfg(world, "MODEL.DETR.NUM_CLASSES", 3, "MODEL.DETR.NUM_RELATION_CLASSES", 3)
    register_coco_relations("mine_py", path, images)
    try:
        assert "mine_py" in DatasetCatalog.names(cfg)
        assert DatasetCatalog.get("mine_py", cfg).image_ids.tolist() == [10, 20, 30]
        assert MetadataCatalog.get("mine_py", cfg).predicate_names == ("holding", "on", "next to")
        with pytest.raises(ValueError, match="already registered"):
            register_coco_relations("mine_py", path, images)
        both = vg_cfg(world, "DATASETS.COCO_RELATIONS", str([{"NAME": "mine_py", "JSON": path, "IMAGES": images}]))
        with pytest.raises(ValueError, match="registered both in DATASETS.COCO_RELATIONS and in Python"):
            DatasetCatalog.get("mine_py", both)
    finally:
        DatasetCatalog.remove("mine_py")
    with pytest.raises(KeyError):
        DatasetCatalog.get("mine_py", cfg)

    split = DatasetCatalog.get("VG_test", vg_cfg(world))
    DatasetCatalog.register("custom", lambda c: split)
    try:
        assert DatasetCatalog.get("custom", cfg) is split
        assert MetadataCatalog.get("custom", cfg).class_names == OBJECT_CLASSES  # from the loaded split
        with pytest.raises(ValueError, match="already registered"):
            DatasetCatalog.register("VG_train", lambda c: split)
    finally:
        DatasetCatalog.remove("custom")
    with pytest.raises(KeyError, match="was not registered in Python"):
        DatasetCatalog.remove("VG_train")


def test_evaluation_split_must_share_the_training_vocabulary(tmp_path):
    clear_cache()
    path, images = write_dataset(str(tmp_path))
    other = copy.deepcopy(THREE_IMAGES)
    other["categories"][2]["name"] = "human"
    other_path, _ = write_dataset(str(tmp_path), other, "other.json")
    cfg = get_cfg()
    cfg.merge_from_list([
        "DATASETS.COCO_RELATIONS", str([{"NAME": "tr", "JSON": path, "IMAGES": images},
                                        {"NAME": "te", "JSON": other_path, "IMAGES": images},
                                        {"NAME": "ok", "JSON": path, "IMAGES": images}]),
        "DATASETS.TRAIN", "('tr',)", "MODEL.DETR.NUM_CLASSES", 3, "MODEL.DETR.NUM_RELATION_CLASSES", 3])
    assert len(get_split(cfg, "ok")) == 3
    with pytest.raises(ValueError, match=r"'te' and DATASETS\.TRAIN\[0\] 'tr' have different classes .*index 2"):
        get_split(cfg, "te")
    assert np.array_equal(DatasetCatalog.get("te", cfg).image_ids, [10, 20, 30])  # the catalog itself loads it
    clear_cache()


def test_names_need_no_image_files_and_zero_shot_files(world, tmp_path):
    clear_cache()
    path, images = write_dataset(str(tmp_path))
    entries = [{"NAME": "tr", "JSON": path, "IMAGES": str(tmp_path / "elsewhere")}]  # e.g. predicting elsewhere
    cfg = vg_cfg(world, "DATASETS.COCO_RELATIONS", str(entries), "DATASETS.TRAIN", "('tr',)",
                 "DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS", "vg_zs.npy")
    assert MetadataCatalog.get("tr", cfg).class_names == ("table", "cup", "person")
    with pytest.raises(FileNotFoundError, match=r"COCO_RELATIONS\[0\]\.IMAGES: image folder not found"):
        DatasetCatalog.get("tr", cfg)  # loading the split for training or evaluation does need them
    assert zero_shot_file(cfg, "VG_test") == "vg_zs.npy"
    assert zero_shot_file(cfg, "tr") == "" and zero_shot_file(cfg, "PSG_test") == ""
    clear_cache()


def test_the_vg150_evaluators_get_the_same_ground_truth(world):
    from evaluation import build_sgg_evaluator
    from evaluation.detection_evaluator import build_detection_evaluator

    cfg = vg_cfg(world)
    for name in ("VG_val", "VG_test"):
        assert build_sgg_evaluator(cfg, name, None).split is visual_genome.load_vg_split(cfg, name)
        assert build_detection_evaluator(cfg, name, None).split is visual_genome.load_vg_split(cfg, name)
