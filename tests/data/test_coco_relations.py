"""COCO-relations loader and checks on a hand-written three-image file whose every expected value is worked out by
hand (contiguous remap of non-contiguous ids, crowd boxes, train filters, evaluation ground truth)."""
import copy
import json
import os

import numpy as np
import pytest

from configs.defaults import get_cfg
from data.catalog import DatasetCatalog, MetadataCatalog, get_predicate_counts
from data.coco_relations import (
    check_coco_relations,
    clear_cache,
    format_problems,
    split_to_coco_relations,
)

# Category ids 5/2/9 sort to table(2) -> 0, cup(5) -> 1, person(9) -> 2; predicate ids 3/1/7 sort to
# holding(1) -> 0, on(3) -> 1, next to(7) -> 2.
THREE_IMAGES = {
    "images": [
        {"id": 10, "file_name": "a.jpg", "width": 100, "height": 80},
        {"id": 20, "file_name": "sub/b.jpg", "width": 50, "height": 50},
        {"id": 30, "file_name": "c.jpg", "width": 60, "height": 40},
    ],
    "categories": [{"id": 5, "name": "cup"}, {"id": 2, "name": "table"}, {"id": 9, "name": "person"}],
    "rel_categories": [{"id": 3, "name": "on"}, {"id": 1, "name": "holding"}, {"id": 7, "name": "next to"}],
    "annotations": [
        {"id": 100, "image_id": 10, "category_id": 5, "bbox": [10, 10, 20, 20], "iscrowd": 0},
        {"id": 101, "image_id": 10, "category_id": 2, "bbox": [0, 25, 100, 55]},
        {"id": 102, "image_id": 10, "category_id": 9, "bbox": [60, 0, 30, 50], "iscrowd": 0},
        {"id": 103, "image_id": 10, "category_id": 9, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        {"id": 200, "image_id": 20, "category_id": 5, "bbox": [0, 0, 10, 10]},
        {"id": 201, "image_id": 20, "category_id": 2, "bbox": [30, 30, 20, 20]},
        {"id": 300, "image_id": 30, "category_id": 9, "bbox": [5, 5, 49.5, 30]},
        {"id": 301, "image_id": 30, "category_id": 2, "bbox": [40, 20, 20.5, 20]},  # 0.5 px past the right edge
    ],
    "rel_annotations": [
        {"id": 1, "image_id": 10, "subject_id": 100, "object_id": 101, "predicate_id": 3},  # cup on table
        {"id": 2, "image_id": 10, "subject_id": 102, "object_id": 100, "predicate_id": 1},  # disjoint boxes
        {"id": 3, "image_id": 10, "subject_id": 100, "object_id": 101, "predicate_id": 7},  # same pair again
        {"id": 4, "image_id": 10, "subject_id": 103, "object_id": 101, "predicate_id": 7},  # crowd: skipped
        {"id": 5, "image_id": 20, "subject_id": 200, "object_id": 201, "predicate_id": 7},  # disjoint boxes
        {"id": 6, "image_id": 30, "subject_id": 300, "object_id": 301, "predicate_id": 7},
    ],
}

# TEST.SGG_PROTOCOL standard clamps as VG150 does, to [0, W - 1] x [0, H - 1].
EVAL_BOXES = {
    10: [[10, 10, 30, 30], [0, 25, 99, 79], [60, 0, 90, 50]],
    20: [[0, 0, 10, 10], [30, 30, 49, 49]],
    30: [[5, 5, 54.5, 35], [40, 20, 59, 39]],
}
EVAL_LABELS = {10: [1, 0, 2], 20: [1, 0], 30: [2, 0]}
EVAL_RELATIONS = {10: [[0, 1, 1], [2, 0, 0], [0, 1, 2]], 20: [[0, 1, 2]], 30: [[0, 1, 2]]}


def write_dataset(root, data=THREE_IMAGES, name="d.json", files=("a.jpg", "sub/b.jpg", "c.jpg")):
    images = os.path.join(root, "images")
    for f in files:
        os.makedirs(os.path.dirname(os.path.join(images, f)), exist_ok=True)
        open(os.path.join(images, f), "wb").close()
    path = os.path.join(root, name)
    with open(path, "w") as f:
        json.dump(data, f)
    return path, images


def make_cfg(path, images, train=("mine_train",), *extra):
    cfg = get_cfg()
    cfg.merge_from_list([
        "DATASETS.COCO_RELATIONS", str([{"NAME": "mine_train", "JSON": path, "IMAGES": images},
                                        {"NAME": "mine_test", "JSON": path, "IMAGES": images}]),
        "DATASETS.TRAIN", str(tuple(train)), "MODEL.DETR.NUM_CLASSES", 3, "MODEL.DETR.NUM_RELATION_CLASSES", 3,
        *extra])
    return cfg


@pytest.fixture()
def dataset(tmp_path):
    clear_cache()
    yield write_dataset(str(tmp_path))
    clear_cache()


def test_evaluation_split_keeps_every_relation_with_contiguous_indices(dataset):
    path, images = dataset
    split = DatasetCatalog.get("mine_test", make_cfg(path, images))
    assert split.idx_to_label == ["table", "cup", "person"]
    assert split.idx_to_predicate == ["holding", "on", "next to"]
    assert split.image_ids.tolist() == [10, 20, 30]
    assert split.widths.tolist() == [100, 50, 60] and split.heights.tolist() == [80, 50, 40]
    for i, image_id in enumerate([10, 20, 30]):
        record = split.get_record(i, np.random.default_rng(0))  # evaluation splits never sample
        assert record["image_id"] == image_id
        assert record["boxes"].dtype == np.float32 and record["labels"].dtype == np.int64
        np.testing.assert_array_equal(record["boxes"], np.array(EVAL_BOXES[image_id], dtype=np.float32))
        assert record["labels"].tolist() == EVAL_LABELS[image_id]
        assert record["relations"].tolist() == EVAL_RELATIONS[image_id]
    assert split.get_record(1)["file_name"] == os.path.join(images, "sub/b.jpg")
    assert (split.get_record(0)["width"], split.get_record(0)["height"]) == (100, 80)


def test_clamping_follows_the_sgg_protocol(dataset, tmp_path):
    path, images = dataset
    cfg = make_cfg(path, images, ("mine_train",), "TEST.SGG_PROTOCOL", "iterativesg")
    split = DatasetCatalog.get("mine_test", cfg)
    assert split.sgg_protocol == "iterativesg"
    np.testing.assert_array_equal(split.get_record(0)["boxes"][1], [0, 25, 100, 80])
    np.testing.assert_array_equal(split.get_record(2)["boxes"][1], [40, 20, 60, 40])  # 60.5 clamped to W
    # A box inside the last pixel column has no area after the standard clamp: training drops it with its
    # relation, evaluation keeps both (as VG150's loader does).
    data = copy.deepcopy(THREE_IMAGES)
    data["annotations"].append({"id": 104, "image_id": 10, "category_id": 5, "bbox": [99.5, 60, 0.5, 10]})
    data["rel_annotations"].append({"id": 9, "image_id": 10, "subject_id": 104, "object_id": 101, "predicate_id": 3})
    path, images = write_dataset(str(tmp_path / "edge"), data, "edge.json")
    cfg = make_cfg(path, images)
    test = DatasetCatalog.get("mine_test", cfg).get_record(0)
    assert test["boxes"].tolist()[3] == [99, 60, 99, 70] and test["relations"].tolist()[-1] == [3, 1, 1]
    train = DatasetCatalog.get("mine_train", cfg).get_record(0)
    assert len(train["boxes"]) == 3 and train["relations"].tolist() == [[0, 1, 1], [0, 1, 2]]


def test_training_split_applies_the_vg150_train_filters(dataset):
    path, images = dataset
    cfg = make_cfg(path, images)
    split = DatasetCatalog.get("mine_train", cfg)
    # Image 20's only relation joins disjoint boxes: the image goes; image 10 loses "person holding cup".
    assert split.image_ids.tolist() == [10, 30]
    assert split.get_record(0)["relations"].tolist() == [[0, 1, 1], [0, 1, 2]]
    drawn = {tuple(split.get_record(0, np.random.default_rng(seed))["relations"][0]) for seed in range(40)}
    assert drawn == {(0, 1, 1), (0, 1, 2)}  # one predicate per pair, each drawn sometimes
    assert all(len(split.get_record(0, np.random.default_rng(s))["relations"]) == 1 for s in range(5))
    # Predicate counts (alpha/beta weights): holding 0, on 1, next to 2 (image 10's two rows + image 30).
    assert get_predicate_counts(cfg).tolist() == [0, 1, 2]

    off = make_cfg(path, images, ("mine_train",), "DATASETS.VISUAL_GENOME.FILTER_NON_OVERLAP", False)
    assert DatasetCatalog.get("mine_train", off).image_ids.tolist() == [10, 20, 30]
    assert DatasetCatalog.get("mine_train", off).num_relations == 5


def test_images_without_boxes_or_relations(dataset, tmp_path):
    data = copy.deepcopy(THREE_IMAGES)
    data["images"].append({"id": 40, "file_name": "a.jpg", "width": 10, "height": 10})  # no box
    data["annotations"].append({"id": 500, "image_id": 20, "category_id": 5, "bbox": [1, 1, 2, 2]})
    data["rel_annotations"] = [r for r in data["rel_annotations"] if r["image_id"] != 30]  # 30: boxes only
    path, images = write_dataset(str(tmp_path), data, "e.json")
    assert DatasetCatalog.get("mine_test", make_cfg(path, images)).image_ids.tolist() == [10, 20]
    keep = make_cfg(path, images, ("mine_train",), "DATASETS.VISUAL_GENOME.FILTER_EMPTY_RELATIONS", False)
    split = DatasetCatalog.get("mine_test", keep)
    assert split.image_ids.tolist() == [10, 20, 30]
    assert split.get_record(1)["labels"].tolist() == [1, 0, 1] and split.get_record(2)["relations"].shape == (0, 3)


def test_metadata_and_model_size_errors(dataset):
    path, images = dataset
    cfg = make_cfg(path, images)
    meta = MetadataCatalog.get("mine_test", cfg)
    assert meta.class_names == ("table", "cup", "person") and meta.predicate_names == ("holding", "on", "next to")
    assert meta.evaluator_type == "sgg" and meta.zero_shot_file == ""
    cfg.merge_from_list(["MODEL.DETR.NUM_CLASSES", 150, "MODEL.DETR.NUM_RELATION_CLASSES", 50])
    with pytest.raises(ValueError, match=r"3 object classes and 3 predicates.*set MODEL\.DETR\.NUM_CLASSES 3 "
                                         r"MODEL\.DETR\.NUM_RELATION_CLASSES 3"):
        DatasetCatalog.get("mine_test", cfg)


def test_a_bad_file_stops_the_load_with_the_report(dataset, tmp_path):
    data = copy.deepcopy(THREE_IMAGES)
    data["annotations"][0]["bbox"] = [10, 10, 0, 20]
    data["rel_annotations"][0]["predicate_id"] = 99
    path, images = write_dataset(str(tmp_path), data, "bad.json")
    with pytest.raises(ValueError) as error:
        DatasetCatalog.get("mine_train", make_cfg(path, images))
    message = str(error.value)
    assert "DATASETS.COCO_RELATIONS[0].JSON" in message and "tools/check_dataset.py" in message
    assert f"{path}: degenerate_box: 1 annotations" in message and f"{path}: unknown_predicate: 1 relations" in message
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.COCO_RELATIONS\[0\]\.IMAGES"):
        DatasetCatalog.get("mine_train", make_cfg(path, str(tmp_path / "nowhere")))


def test_written_split_reads_back_identically(dataset, tmp_path):
    path, images = dataset
    split = DatasetCatalog.get("mine_test", make_cfg(path, images))
    written = split_to_coco_relations(split, class_ids=[2, 5, 9], predicate_ids=[1, 3, 7])
    assert check_coco_relations(written, images) == []
    assert [c["id"] for c in written["categories"]] == [2, 5, 9]
    assert len(written["annotations"]) == 7 and len(written["rel_annotations"]) == 5  # the crowd box is gone
    again, again_images = write_dataset(str(tmp_path / "again"), written, "w.json")
    copy_ = DatasetCatalog.get("mine_test", make_cfg(again, images))
    for i in range(3):
        a, b = split.get_record(i), copy_.get_record(i)
        assert a["image_id"] == b["image_id"] and a["file_name"] == b["file_name"]
        for key in ("boxes", "labels", "relations"):
            np.testing.assert_array_equal(a[key], b[key])


# ---------------------------------------------------------------------------------------------------------------
# Every problem kind of the checker
# ---------------------------------------------------------------------------------------------------------------
def _mutated(change):
    data = copy.deepcopy(THREE_IMAGES)
    change(data)
    return data


def _set(entries, index, **values):
    entries[index].update(values)


PROBLEM_CASES = {
    "missing_image_file": (lambda d: _set(d["images"], 2, file_name="gone.jpg"), 1, ["30 (gone.jpg)"]),
    "degenerate_box": (lambda d: (_set(d["annotations"], 0, bbox=[1, 1, 0, 5]),
                                  _set(d["annotations"], 4, bbox=[1, 1, 5, -2])), 2, [100, 200]),
    "box_outside_image": (lambda d: (_set(d["annotations"], 1, bbox=[0, 25, 100, 57]),
                                     _set(d["annotations"], 5, bbox=[-3, 0, 10, 10])), 2, [101, 201]),
    "annotation_unknown_image": (lambda d: _set(d["annotations"], 2, image_id=77), 1, [102]),
    "unknown_category": (lambda d: _set(d["annotations"], 6, category_id=4), 1, [300]),
    "unknown_predicate": (lambda d: _set(d["rel_annotations"], 5, predicate_id=0), 1, [6]),
    "relation_unknown_image": (lambda d: _set(d["rel_annotations"], 4, image_id=99), 1, [5]),
    "relation_unknown_annotation": (lambda d: _set(d["rel_annotations"], 0, object_id=999), 1, [1]),
    "relation_across_images": (lambda d: _set(d["rel_annotations"], 5, object_id=201), 1, [6]),
    "self_relation": (lambda d: _set(d["rel_annotations"], 0, object_id=100), 1, [1]),
    "duplicate_image_id": (lambda d: _set(d["images"], 1, id=10), 1, [10]),
    "duplicate_annotation_id": (lambda d: _set(d["annotations"], 7, id=300), 1, [300]),
    "duplicate_category_id": (lambda d: _set(d["categories"], 1, id=5), 1, [5]),
    "duplicate_predicate_id": (lambda d: _set(d["rel_categories"], 2, id=1), 1, [1]),
    "duplicate_relation_id": (lambda d: _set(d["rel_annotations"], 3, id=2), 1, [2]),
    "malformed_image": (lambda d: _set(d["images"], 0, width=0), 1, [10]),
    "malformed_annotation": (lambda d: _set(d["annotations"], 3, bbox=[0, 0, 1]), 1, [103]),
    "malformed_relation": (lambda d: d["rel_annotations"][2].pop("subject_id"), 1, [3]),
    "malformed_category": (lambda d: _set(d["categories"], 0, name=None), 1, [5]),
    "malformed_predicate": (lambda d: _set(d["rel_categories"], 0, id="3"), 1, ["#0"]),
    "empty_vocabulary": (lambda d: d.update(rel_categories=[]), 1, ["rel_categories"]),
}


@pytest.mark.parametrize("kind", sorted(PROBLEM_CASES))
def test_each_problem_kind_is_reported_with_count_and_ids(kind, tmp_path):
    change, count, examples = PROBLEM_CASES[kind]
    _, images = write_dataset(str(tmp_path))
    problems = {p.kind: p for p in check_coco_relations(_mutated(change), images)}
    assert kind in problems, sorted(problems)
    assert problems[kind].count == count and problems[kind].examples == examples


def test_structural_problems_and_a_clean_file(tmp_path):
    _, images = write_dataset(str(tmp_path))
    assert check_coco_relations(THREE_IMAGES, images) == []
    assert [p.kind for p in check_coco_relations([1, 2])] == ["not_an_object"]
    missing = check_coco_relations({"images": [], "annotations": []})
    assert [(p.kind, p.examples) for p in missing] == [("missing_list", ["categories", "rel_categories",
                                                                          "rel_annotations"])]
    empty = _mutated(lambda d: d.update(images=[], annotations=[], rel_annotations=[]))
    assert [p.kind for p in check_coco_relations(empty)] == ["empty_split"]
    many = _mutated(lambda d: [_set(d["annotations"], i, category_id=1) for i in range(8)])
    line = format_problems("f.json", check_coco_relations(many))
    assert line == ("f.json: unknown_category: 8 annotations have a category_id that is not in categories "
                    "(first annotation ids: 100, 101, 102, 103, 200, ...)")


@pytest.mark.parametrize("data", [
    {"images": [None, 1, "x", {"id": True, "file_name": "a.jpg", "width": 1, "height": 1}], "annotations": [None],
     "categories": [None], "rel_categories": [[1]], "rel_annotations": ["r"]},
    {"images": [{"id": 1, "file_name": "a.jpg", "width": float("nan"), "height": "1"}],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": ["0", 0, 1, 1]},
                     {"id": 2, "image_id": [1], "category_id": {}, "bbox": [0, 0, float("inf"), 1], "iscrowd": "0"}],
     "categories": [{"id": [1], "name": "x"}], "rel_categories": [{"id": 1.5, "name": "y"}],
     "rel_annotations": [{"id": 1, "image_id": 1, "subject_id": [2], "object_id": None, "predicate_id": 1}]},
    {"images": {}, "annotations": "x", "categories": 3, "rel_categories": None, "rel_annotations": []},
])
def test_nonsense_is_reported_never_raised(data):
    problems = check_coco_relations(data)
    assert problems and all(p.count >= 1 and p.examples for p in problems)
    assert all(line.startswith("f.json: ") for line in format_problems("f.json", problems).splitlines())
