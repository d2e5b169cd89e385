"""VG150 loader: decoding, alignment, every filter, duplicate sampling and the errors on bad input.

A hand-built nine-row file (boxes given at the 1024 scale) makes every expected number computable by hand; the
synthetic world checks the loader's split sizes against the generator's own record.
"""
import json
import os

import numpy as np
import pytest

from configs.defaults import get_cfg
from data.synthetic import config_overrides, generate_synthetic_vg
from data.vg_writer import ranges_from_counts, vocabulary_dicts, write_json, write_vg_h5
from data.visual_genome import (
    CORRUPTED_IMAGE_IDS,
    clear_cache,
    decode_boxes,
    get_predicate_counts,
    load_vg_split,
    sample_one_predicate_per_pair,
)

# Rows of the hand-built file: split, image size, boxes (cx, cy, w, h at 1024), 1-based labels, relations
# (local subject, local object, 1-based predicate).
B_OUTSIDE = (1100, 500, 40, 40)  # right of a 100x100 image: empty after clamping
A_INSIDE = (500, 500, 400, 400)
C_ACROSS = (850, 500, 500, 400)  # overlaps A and B
ROWS = [
    dict(split=0, size=(1024, 768), boxes=[(100, 100, 50, 50), (120, 100, 50, 50)], labels=[1, 2], rels=[(0, 1, 1)]),
    dict(split=0, size=(640, 480), boxes=[(100, 100, 50, 50)], labels=[3], rels=[]),
    dict(split=0, size=(200, 100), boxes=[(101, 51, 41, 21), (111, 51, 20, 20), (500, 300, 50, 50), (1, 1, 5, 5)],
         labels=[1, 2, 3, 1], rels=[(0, 1, 2), (0, 2, 1)]),
    dict(split=0, size=(1024, 1024), boxes=[(100, 100, 20, 20), (500, 500, 20, 20)], labels=[1, 1], rels=[(0, 1, 1)]),
    dict(split=0, size=(100, 100), boxes=[B_OUTSIDE, A_INSIDE, C_ACROSS], labels=[1, 2, 3],
         rels=[(0, 2, 1), (1, 2, 2)]),
    dict(split=2, size=(300, 200), boxes=[(100, 100, 50, 50), (120, 100, 50, 50)], labels=[1, 2],
         rels=[(0, 1, 1), (0, 1, 1), (0, 1, 2)]),
    dict(split=0, size=(300, 200), boxes=[], labels=[], rels=[]),
    dict(split=2, size=(100, 100), boxes=[B_OUTSIDE, A_INSIDE, C_ACROSS], labels=[1, 2, 3],
         rels=[(0, 2, 1), (1, 2, 2)]),
    dict(split=0, size=(300, 200), boxes=[(100, 100, 50, 50), (120, 100, 50, 50)], labels=[2, 3],
         rels=[(0, 1, 1), (0, 1, 1), (0, 1, 2), (1, 0, 2)]),
]


def image_id(row: int) -> int:
    return 10 * row + 7


def write_tiny_vg(out_dir, rows=ROWS, drop_field=None, extra_entries=0, labels=None, predicates=None):
    """Write the three VG files for ``rows`` (corrupted ids interleaved in image_data.json); return the overrides."""
    os.makedirs(os.path.join(out_dir, "VG_100K"), exist_ok=True)
    first_box, last_box = ranges_from_counts([len(r["boxes"]) for r in rows])
    first_rel, last_rel = ranges_from_counts([len(r["rels"]) for r in rows])
    boxes = np.array([b for r in rows for b in r["boxes"]], dtype=np.int32).reshape(-1, 4)
    rels = np.array([(first_box[i] + s, first_box[i] + o) for i, r in enumerate(rows) for s, o, _ in r["rels"]])
    fields = {
        "split": [r["split"] for r in rows],
        "img_to_first_box": first_box, "img_to_last_box": last_box,
        "img_to_first_rel": first_rel, "img_to_last_rel": last_rel,
        "labels": labels if labels is not None else [c for r in rows for c in r["labels"]],
        "boxes_1024": boxes, "boxes_512": boxes // 2,
        "relationships": rels.reshape(-1, 2),
        "predicates": predicates if predicates is not None else [p for r in rows for _, _, p in r["rels"]],
        "attributes": np.zeros((len(boxes), 10)), "active_object_mask": np.ones(len(boxes), bool),
    }
    h5_path = os.path.join(out_dir, "VG-SGG-with-attri.h5")
    write_vg_h5(h5_path, fields)
    if drop_field:
        import h5py

        with h5py.File(h5_path, "a") as f:
            del f[drop_field]
    entries = [{"image_id": image_id(i), "width": r["size"][0], "height": r["size"][1]} for i, r in enumerate(rows)]
    for k, position in enumerate((1, 3, len(entries) + 2, len(entries) + 3)):
        entries.insert(position, {"image_id": CORRUPTED_IMAGE_IDS[k], "width": 10, "height": 10})
    entries += [{"image_id": 90000 + k, "width": 10, "height": 10} for k in range(extra_entries)]
    write_json(os.path.join(out_dir, "image_data.json"), entries)
    counts = {"object": {}, "predicate": {}, "attribute": {}}
    write_json(os.path.join(out_dir, "VG-SGG-dicts-with-attri.json"),
               vocabulary_dicts(["a", "b", "c"], ["p", "q"], ["x"], counts))
    record = {"number_of_validation_images": 1, "num_classes": 3, "num_relation_classes": 2}
    return config_overrides(str(out_dir), record)


def make_cfg(overrides, *extra):
    clear_cache()
    cfg = get_cfg()
    cfg.merge_from_list(list(overrides) + list(extra))
    return cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_vg(str(tmp_path_factory.mktemp("tiny_vg")))


def ids(split):
    return split.image_ids.tolist()


def record_of(split, row, rng=None):
    return split.get_record(ids(split).index(image_id(row)), rng)


def test_decode_boxes_truncates_toward_zero_like_the_reference():
    decoded = decode_boxes(np.array([[5, 5, 3, 3], [1, 2, 5, 4], [10, 10, 4, 6], [101, 51, 41, 21]]))
    # x1 = trunc(cx - w / 2): 5 - 1.5 -> 3 (not 4 as cx - w // 2 would give), 1 - 2.5 -> -1 (not -2 as floor).
    assert decoded.tolist() == [[3, 3, 6, 6], [-1, 0, 4, 4], [8, 7, 12, 13], [80, 40, 121, 61]]
    assert decoded.dtype == np.int32


def test_split_membership_follows_the_protocol(tiny):
    cfg = make_cfg(tiny)
    # val = first filtered split-0 image; row 1 has no relation, row 6 no box, row 3 only a non-overlapping pair.
    assert ids(load_vg_split(cfg, "VG_val")) == [image_id(0)]
    assert ids(load_vg_split(cfg, "VG_train")) == [image_id(2), image_id(4), image_id(8)]
    assert ids(load_vg_split(cfg, "VG_test")) == [image_id(5), image_id(7)]


def test_number_of_validation_images_moves_the_boundary(tiny):
    cfg = make_cfg(tiny, "DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES", 2)
    assert ids(load_vg_split(cfg, "VG_val")) == [image_id(0), image_id(2)]
    assert ids(load_vg_split(cfg, "VG_train")) == [image_id(4), image_id(8)]


def test_boxes_are_decoded_scaled_and_clamped(tiny):
    train = load_vg_split(make_cfg(tiny), "VG_train")
    record = record_of(train, 2)
    assert record["width"] == 200 and record["height"] == 100
    assert record["file_name"].endswith(os.path.join("VG_100K", f"{image_id(2)}.jpg"))
    # (101, 51, 41, 21) -> xyxy (80, 40, 121, 61) at 1024 -> x 200 / 1024.
    np.testing.assert_array_equal(record["boxes"][0], [15.625, 7.8125, 23.6328125, 11.9140625])
    # (1, 1, 5, 5) -> (-1, -1, 4, 4) -> clamped at 0; x2 = 4 * 0.1953125 (a floor would give 3).
    np.testing.assert_array_equal(record["boxes"][3], [0.0, 0.0, 0.78125, 0.78125])
    assert record["boxes"].dtype == np.float32
    assert record["labels"].tolist() == [0, 1, 2, 0]


def test_non_overlap_filter_is_train_only(tiny):
    train = load_vg_split(make_cfg(tiny), "VG_train")
    assert record_of(train, 2)["relations"].tolist() == [[0, 1, 1]]  # (0, 2) do not intersect
    off = load_vg_split(make_cfg(tiny, "DATASETS.VISUAL_GENOME.FILTER_NON_OVERLAP", False), "VG_train")
    assert ids(off) == [image_id(2), image_id(3), image_id(4), image_id(8)]
    assert record_of(off, 2)["relations"].tolist() == [[0, 1, 1], [0, 2, 0]]


def test_train_drops_boxes_empty_after_clamping_and_reindexes(tiny):
    cfg = make_cfg(tiny)
    train_record = record_of(load_vg_split(cfg, "VG_train"), 4)
    assert train_record["labels"].tolist() == [1, 2]  # box B (label 0) is gone
    assert train_record["relations"].tolist() == [[0, 1, 1]]  # A-C, re-indexed; B-C dropped with B
    test_record = record_of(load_vg_split(cfg, "VG_test"), 7)
    assert test_record["labels"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(test_record["boxes"][0], [99, 480 * 100 / 1024, 99, 520 * 100 / 1024], rtol=1e-6)
    assert test_record["relations"].tolist() == [[0, 2, 0], [1, 2, 1]]


def test_filter_empty_relations_off_keeps_images_without_relations(tiny):
    cfg = make_cfg(tiny, "DATASETS.VISUAL_GENOME.FILTER_EMPTY_RELATIONS", False,
                   "DATASETS.VISUAL_GENOME.FILTER_NON_OVERLAP", False)
    train = load_vg_split(cfg, "VG_train")
    assert ids(train) == [image_id(r) for r in (1, 2, 3, 4, 8)]
    assert record_of(train, 1)["relations"].shape == (0, 3)


def test_eval_splits_keep_every_relation_row(tiny):
    test = load_vg_split(make_cfg(tiny), "VG_test")
    rows = record_of(test, 5, rng=np.random.default_rng(0))["relations"].tolist()
    assert rows == [[0, 1, 0], [0, 1, 0], [0, 1, 1]]


def test_duplicate_sampling_draws_one_predicate_per_pair_at_each_load(tiny):
    train = load_vg_split(make_cfg(tiny), "VG_train")
    assert record_of(train, 8)["relations"].tolist() == [[0, 1, 0], [0, 1, 0], [0, 1, 1], [1, 0, 1]]
    rng = np.random.default_rng(123)
    first_predicate = []
    for _ in range(900):
        rows = record_of(train, 8, rng)["relations"]
        assert rows.shape == (2, 3)
        assert rows[1].tolist() == [1, 0, 1]  # the other pair keeps its only row, original order preserved
        first_predicate.append(int(rows[0, 2]))
    # Pair (0, 1) has rows with predicates 0, 0, 1: predicate 0 with probability 2/3 (sd 14 over 900 loads).
    assert 540 < first_predicate.count(0) < 660


def test_sample_one_predicate_per_pair_is_uniform_over_rows():
    relations = np.array([[0, 1, 3], [2, 0, 1], [0, 1, 4], [0, 1, 5]])
    seen = set()
    for seed in range(60):
        kept = sample_one_predicate_per_pair(relations, np.random.default_rng(seed))
        assert sorted(map(tuple, kept[:, :2].tolist())) == [(0, 1), (2, 0)]
        seen.add(int(kept[(kept[:, 0] == 0) & (kept[:, 1] == 1), 2][0]))
    assert seen == {3, 4, 5}


def test_predicate_counts_of_train_include_duplicates(tiny):
    # Train rows: image 2 -> predicate 1; image 4 -> predicate 1; image 8 -> 0, 0, 1, 1.
    counts = get_predicate_counts(make_cfg(tiny))
    assert counts.tolist() == [2, 4] and counts.dtype == np.int64


def test_loader_counts_match_the_generator_record(tmp_path):
    record = generate_synthetic_vg(str(tmp_path), 60, seed=5, write_images=False)
    with open(tmp_path / "synthetic_record.json") as f:
        assert json.load(f) == record
    cfg = make_cfg(config_overrides(str(tmp_path), record))
    for name, expected in record["splits"].items():
        split = load_vg_split(cfg, name)
        assert {"images": len(split), "objects": split.num_objects, "relations": split.num_relations} == expected
    assert get_predicate_counts(cfg).tolist() == record["train_predicate_counts"]


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, name", [
    ("VG_ATTRIBUTE_H5", "VG-SGG-with-attri.h5"),
    ("MAPPING_DICTIONARY", "VG-SGG-dicts-with-attri.json"),
    ("IMAGE_DATA", "image_data.json"),
])
def test_missing_file_names_key_and_path(tmp_path, key, name):
    overrides = write_tiny_vg(str(tmp_path))
    os.remove(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=f"DATASETS.VISUAL_GENOME.{key}.*{name}"):
        load_vg_split(make_cfg(overrides), "VG_train")


def test_missing_image_folder_names_key_and_path(tmp_path):
    overrides = write_tiny_vg(str(tmp_path))
    os.rmdir(tmp_path / "VG_100K")
    with pytest.raises(FileNotFoundError, match="DATASETS.VISUAL_GENOME.IMAGES.*VG_100K"):
        load_vg_split(make_cfg(overrides), "VG_val")


def test_missing_h5_field_is_named(tmp_path):
    overrides = write_tiny_vg(str(tmp_path), drop_field="img_to_first_rel")
    with pytest.raises(KeyError, match="VG_ATTRIBUTE_H5.*VG-SGG-with-attri.h5.*img_to_first_rel"):
        load_vg_split(make_cfg(overrides), "VG_train")


def test_image_data_row_mismatch_reports_both_counts(tmp_path):
    overrides = write_tiny_vg(str(tmp_path), extra_entries=2)
    with pytest.raises(ValueError, match=r"IMAGE_DATA.*lists 11 images.*VG_ATTRIBUTE_H5.*has 9 rows"):
        load_vg_split(make_cfg(overrides), "VG_train")


def test_label_out_of_range_names_key_and_path(tmp_path):
    labels = [c for r in ROWS for c in r["labels"]]
    labels[0] = 4
    overrides = write_tiny_vg(str(tmp_path), labels=labels)
    with pytest.raises(ValueError, match=r"VG_ATTRIBUTE_H5.*VG-SGG-with-attri.h5.*object label 4 outside 1\.\.3"):
        load_vg_split(make_cfg(overrides), "VG_val")


def test_predicate_out_of_range_names_key_and_path(tmp_path):
    predicates = [p for r in ROWS for _, _, p in r["rels"]]
    predicates[-1] = 0
    overrides = write_tiny_vg(str(tmp_path), predicates=predicates)
    with pytest.raises(ValueError, match=r"VG_ATTRIBUTE_H5.*predicate 0 outside 1\.\.2"):
        load_vg_split(make_cfg(overrides), "VG_train")


def test_vocabulary_size_must_match_the_model(tiny):
    with pytest.raises(ValueError, match="MAPPING_DICTIONARY.*3 object classes.*MODEL.DETR.NUM_CLASSES is 150"):
        load_vg_split(make_cfg(tiny, "MODEL.DETR.NUM_CLASSES", 150), "VG_train")
    with pytest.raises(ValueError, match="2 predicates.*MODEL.DETR.NUM_RELATION_CLASSES is 50"):
        load_vg_split(make_cfg(tiny, "MODEL.DETR.NUM_RELATION_CLASSES", 50), "VG_train")


def test_filters_that_empty_a_split_are_reported(tiny):
    cfg = make_cfg(tiny, "DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES", 10)
    with pytest.raises(ValueError, match="VG_train is empty.*NUMBER_OF_VALIDATION_IMAGES=10"):
        load_vg_split(cfg, "VG_train")


def test_unreadable_h5_names_key_and_path(tmp_path):
    overrides = write_tiny_vg(str(tmp_path))
    (tmp_path / "VG-SGG-with-attri.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="VG_ATTRIBUTE_H5: cannot open HDF5 file .*VG-SGG-with-attri.h5"):
        load_vg_split(make_cfg(overrides), "VG_train")


def test_relationship_outside_its_image_is_reported(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[0] = dict(rows[0], rels=[(0, 2, 1)])  # object row 2 belongs to the next image
    overrides = write_tiny_vg(str(tmp_path), rows=rows)
    with pytest.raises(ValueError, match=r"VG_ATTRIBUTE_H5: relationship row 0 points at object rows \[0, 2\]"):
        load_vg_split(make_cfg(overrides), "VG_val")
