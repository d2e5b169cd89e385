"""PSG_train / PSG_test from a small hand-written file in OpenPSG's psg.json layout."""
import copy
import json
import os

import numpy as np
import pytest

from configs.defaults import get_cfg
from data.catalog import DatasetCatalog, MetadataCatalog, get_predicate_counts
from data.coco_relations import clear_cache

PSG = {
    "thing_classes": ["person", "dog"],
    "stuff_classes": ["grass"],
    "predicate_classes": ["on", "looking at"],
    "test_image_ids": ["2", "4"],
    "data": [
        {"image_id": "1", "file_name": "train2017/000000000001.jpg", "width": 40, "height": 30,
         "pan_seg_file_name": "panoptic/1.png", "segments_info": [{"id": 1, "category_id": 0, "isthing": 1}] * 3,
         "annotations": [{"bbox": [0, 0, 10, 20], "bbox_mode": 0, "category_id": 0},
                         {"bbox": [5, 5, 25, 25], "bbox_mode": 0, "category_id": 1},
                         {"bbox": [0, 15, 40, 30], "bbox_mode": 0, "category_id": 2}],
         "relations": [[0, 1, 1], [1, 2, 0], [1, 2, 0], [1, 2, 1]]},
        {"image_id": "2", "file_name": "val2017/000000000002.jpg", "width": 20, "height": 20,
         "annotations": [{"bbox": [0, 0, 8, 8], "category_id": 1}, {"bbox": [0, 4, 20, 20], "category_id": 2}],
         "relations": [[0, 1, 0], [0, 1, 0], [0, 1, 1]]},
        {"image_id": "3", "file_name": "train2017/000000000003.jpg", "width": 20, "height": 20,
         "annotations": [{"bbox": [0, 0, 8, 8], "category_id": 1}], "relations": []},
        {"image_id": "4", "file_name": "val2017/000000000004.jpg", "width": 30, "height": 30,
         "annotations": [{"bbox": [0, 0, 5, 5], "category_id": 0}, {"bbox": [10, 10, 20, 20], "category_id": 1}],
         "relations": [[0, 1, 0]]},
    ],
}


def make_cfg(tmp_path, data=PSG, num_classes=3, num_predicates=2):
    path = tmp_path / "psg.json"
    path.write_text(json.dumps(data))
    (tmp_path / "coco").mkdir(exist_ok=True)
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.PSG.JSON", str(path), "DATASETS.PSG.IMAGES", str(tmp_path / "coco"),
                         "DATASETS.TRAIN", "('PSG_train',)", "DATASETS.TEST", "('PSG_test',)",
                         "MODEL.DETR.NUM_CLASSES", num_classes, "MODEL.DETR.NUM_RELATION_CLASSES", num_predicates])
    return cfg


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def test_psg_splits_follow_openpsg(tmp_path):
    cfg = make_cfg(tmp_path)
    train, test = DatasetCatalog.get("PSG_train", cfg), DatasetCatalog.get("PSG_test", cfg)
    assert train.image_ids.tolist() == [1]  # image 3 has no relation; 2 and 4 are test images
    record = train.get_record(0)
    # The grass box ends at the image border: clamped to [0, W - 1] x [0, H - 1] (TEST.SGG_PROTOCOL standard).
    np.testing.assert_array_equal(record["boxes"], np.array([[0, 0, 10, 20], [5, 5, 25, 25], [0, 15, 39, 29]],
                                                            dtype=np.float32))
    assert record["labels"].tolist() == [0, 1, 2]  # thing classes, then stuff classes
    assert record["relations"].tolist() == [[0, 1, 1], [1, 2, 0], [1, 2, 0], [1, 2, 1]]
    assert record["file_name"] == os.path.join(str(tmp_path / "coco"), "train2017/000000000001.jpg")
    sampled = [train.get_record(0, np.random.default_rng(s))["relations"] for s in range(30)]
    assert all(len(r) == 2 and r[0].tolist() == [0, 1, 1] for r in sampled)  # one predicate per pair
    assert {int(r[1, 2]) for r in sampled} == {0, 1}
    assert get_predicate_counts(cfg).tolist() == [2, 2]

    assert test.image_ids.tolist() == [2, 4]
    assert test.get_record(0)["relations"].tolist() == [[0, 1, 0], [0, 1, 1]]  # exact duplicate removed
    assert test.get_record(1)["relations"].tolist() == [[0, 1, 0]]  # disjoint boxes kept (no non-overlap filter)
    assert test.get_record(0, np.random.default_rng(0))["relations"].shape == (2, 3)  # test never samples

    meta = MetadataCatalog.get("PSG_test", cfg)
    assert meta.class_names == ("person", "dog", "grass") and meta.predicate_names == ("on", "looking at")


def test_psg_errors_name_the_file_and_image(tmp_path):
    with pytest.raises(ValueError, match=r"set MODEL\.DETR\.NUM_CLASSES 3 MODEL\.DETR\.NUM_RELATION_CLASSES 2"):
        DatasetCatalog.get("PSG_train", make_cfg(tmp_path, num_classes=133, num_predicates=56))
    bad = copy.deepcopy(PSG)
    bad["data"][3]["relations"] = [[0, 5, 1]]
    with pytest.raises(ValueError, match=r"DATASETS\.PSG\.JSON .*psg\.json: image_id 4: a relation indexes outside"):
        DatasetCatalog.get("PSG_test", make_cfg(tmp_path, bad))
    bad = copy.deepcopy(PSG)
    bad["data"][0]["annotations"][1]["category_id"] = 3
    with pytest.raises(ValueError, match=r"image_id 1: category_id outside 0\.\.2"):
        DatasetCatalog.get("PSG_train", make_cfg(tmp_path, bad))
    cfg = get_cfg()
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.PSG\.JSON is not set"):
        DatasetCatalog.get("PSG_test", cfg)


def test_psg_test_is_evaluated_by_the_scene_graph_evaluator(tmp_path, capsys):
    from evaluation import build_sgg_evaluator

    cfg = make_cfg(tmp_path)
    evaluator = build_sgg_evaluator(cfg, "PSG_test", None)
    evaluator.reset()
    split = DatasetCatalog.get("PSG_test", cfg)
    for i in range(len(split)):
        record = split.get_record(i)
        pairs = np.unique(record["relations"][:, :2], axis=0)
        rel_scores = np.zeros((len(pairs), 2), dtype=np.float32)
        for s, o, p in record["relations"]:
            rel_scores[(pairs == [s, o]).all(axis=1), p] = 0.9
        output = {"image_id": record["image_id"], "boxes": record["boxes"], "labels": record["labels"],
                  "scores": np.ones(len(record["labels"]), np.float32), "rel_pairs": pairs, "rel_scores": rel_scores}
        evaluator.process([{"image_id": record["image_id"]}], [output])
    metrics = evaluator.evaluate()
    # Image 2 has one pair with two predicates: one prediction per pair finds 1 of its 2 rows (image recall 1/2),
    # image 4 its only row; without the graph constraint both rows of image 2 are found.
    assert metrics["R@20"] == 0.75 and metrics["ng-R@20"] == 1.0 and metrics["num_gt_relations"] == 3
    # Zero-shot: test triplets never seen in PSG_train (dog on / looking at grass are seen there): person on dog.
    assert metrics["num_zero_shot_relations"] == 1 and metrics["zR@20"] == 1.0
    assert "R @ 20" in capsys.readouterr().out
