"""Synthetic VG world: file format of docs/PROTOCOL.md section 1, determinism, the promised features, and the two
tools."""
import json
import os
import sys

import h5py
import numpy as np
import pytest

from data.synthetic import OBJECT_CLASSES, PREDICATES, generate_synthetic_vg
from data.vg_writer import H5_DTYPES

from tests import ROOT
NUM_IMAGES = 80


def load_tool(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    assert load_tool("make_synthetic_vg").main([out, "--images", str(NUM_IMAGES), "--seed", "4"]) == 0
    with open(os.path.join(out, "synthetic_record.json")) as f:
        record = json.load(f)
    with h5py.File(os.path.join(out, "VG-SGG-with-attri.h5"), "r") as f:
        h5 = {k: f[k][()] for k in f}
    return out, record, h5


def test_h5_has_every_field_with_the_spec_dtype_and_shape(world):
    _, _, h5 = world
    assert set(h5) == set(H5_DTYPES)
    for name, dtype in H5_DTYPES.items():
        assert h5[name].dtype == dtype, name
    n, r = len(h5["labels"]), len(h5["predicates"])
    assert h5["split"].shape == (NUM_IMAGES,)
    assert h5["labels"].shape == (n, 1) and h5["attributes"].shape == (n, 10)
    assert h5["boxes_1024"].shape == (n, 4) and h5["boxes_512"].shape == (n, 4)
    assert h5["relationships"].shape == (r, 2) and h5["predicates"].shape == (r, 1)
    assert h5["split"].tolist() == [0] * int(0.7 * NUM_IMAGES) + [2] * (NUM_IMAGES - int(0.7 * NUM_IMAGES))
    assert 1 <= h5["labels"].min() and h5["labels"].max() <= 12
    assert 1 <= h5["predicates"].min() and h5["predicates"].max() <= 10
    # Relationship rows are global object rows inside their image's box range.
    first, last = h5["img_to_first_rel"], h5["img_to_last_rel"]
    for row in np.flatnonzero(first >= 0):
        pairs = h5["relationships"][first[row]:last[row] + 1]
        assert (pairs >= h5["img_to_first_box"][row]).all() and (pairs <= h5["img_to_last_box"][row]).all()


def test_rows_without_relations_and_without_boxes_exist(world):
    _, _, h5 = world
    no_box = h5["img_to_first_box"] < 0
    no_rel = h5["img_to_first_rel"] < 0
    assert no_box.sum() == 2 and (h5["img_to_last_box"][no_box] == -1).all()
    assert (no_rel & ~no_box).sum() >= 2 and (h5["img_to_last_rel"][no_rel] == -1).all()


def test_dicts_and_image_data_follow_the_vg_layout(world):
    out, _, h5 = world
    with open(os.path.join(out, "VG-SGG-dicts-with-attri.json")) as f:
        dicts = json.load(f)
    assert set(dicts) == {"label_to_idx", "idx_to_label", "predicate_to_idx", "idx_to_predicate", "attribute_to_idx",
                          "idx_to_attribute", "object_count", "predicate_count", "attribute_count"}
    assert [dicts["idx_to_label"][str(i)] for i in range(1, 13)] == list(OBJECT_CLASSES)
    assert [dicts["idx_to_predicate"][str(i)] for i in range(1, 11)] == list(PREDICATES)
    assert dicts["label_to_idx"]["red circle"] == OBJECT_CLASSES.index("red circle") + 1
    with open(os.path.join(out, "image_data.json")) as f:
        entries = json.load(f)
    assert len(entries) == NUM_IMAGES + 4
    ids = [e["image_id"] for e in entries]
    assert {1592, 1722, 4616, 4617} <= set(ids)
    kept = [e for e in entries if e["image_id"] not in (1592, 1722, 4616, 4617)]
    files = set(os.listdir(os.path.join(out, "VG_100K")))
    assert files == {f"{e['image_id']}.jpg" for e in kept}
    from PIL import Image

    for e in kept[:5]:
        with Image.open(os.path.join(out, "VG_100K", f"{e['image_id']}.jpg")) as im:
            assert im.format == "JPEG" and im.size == (e["width"], e["height"])
            assert 256 <= max(im.size) <= 320


def test_generation_is_deterministic_per_seed(world, tmp_path):
    out, record, h5 = world
    again = generate_synthetic_vg(str(tmp_path / "a"), NUM_IMAGES, seed=4, write_images=False)
    assert again == record
    with h5py.File(tmp_path / "a" / "VG-SGG-with-attri.h5", "r") as f:
        assert all(np.array_equal(f[k][()], h5[k]) for k in h5)
    generate_synthetic_vg(str(tmp_path / "b"), 12, seed=4)
    first_id = sorted(os.listdir(tmp_path / "b" / "VG_100K"))[0]
    assert (tmp_path / "b" / "VG_100K" / first_id).read_bytes() == \
        open(os.path.join(out, "VG_100K", first_id), "rb").read()
    other = generate_synthetic_vg(str(tmp_path / "c"), NUM_IMAGES, seed=5, write_images=False)
    assert other["splits"] != record["splits"] or other["zero_shot_triplets"] != record["zero_shot_triplets"]


def test_world_has_long_tail_multi_predicates_duplicates_and_zero_shot(tmp_path):
    record = generate_synthetic_vg(str(tmp_path), 400, seed=0, write_images=False)
    with h5py.File(tmp_path / "VG-SGG-with-attri.h5", "r") as f:
        h5 = {k: f[k][()] for k in ("split", "img_to_first_rel", "relationships", "predicates", "labels")}
    counts = np.bincount(h5["predicates"][:, 0], minlength=11)[1:]
    assert counts.min() > 0 and counts.max() >= 5 * counts.min()  # long tail, every predicate present
    pairs = [tuple(p) for p in h5["relationships"].tolist()]
    rows = [(s, o, p) for (s, o), p in zip(pairs, h5["predicates"][:, 0].tolist())]
    assert len(set(rows)) < len(rows)  # exact duplicate rows
    predicates_per_pair = {}
    for s, o, p in set(rows):
        predicates_per_pair.setdefault((s, o), set()).add(p)
    share_multi = np.mean([len(v) > 1 for v in predicates_per_pair.values()])
    assert 0.01 < share_multi < 0.12
    labels = h5["labels"][:, 0]
    triplets = [(labels[s], labels[o], p) for s, o, p in rows]
    num_split0 = int(0.7 * 400)
    first_rel_of_test = h5["img_to_first_rel"][num_split0:][h5["img_to_first_rel"][num_split0:] >= 0][0]
    train_triplets, test_triplets = set(triplets[:first_rel_of_test]), set(triplets[first_rel_of_test:])
    zero_shot = {tuple(t) for t in record["zero_shot_triplets"]}
    assert zero_shot and not zero_shot & train_triplets
    assert zero_shot & test_triplets


def test_dataset_stats_prints_the_record_counts(world, capsys):
    out, record, _ = world
    args = [
        "DATASETS.VISUAL_GENOME.IMAGES", os.path.join(out, "VG_100K"),
        "DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY", os.path.join(out, "VG-SGG-dicts-with-attri.json"),
        "DATASETS.VISUAL_GENOME.IMAGE_DATA", os.path.join(out, "image_data.json"),
        "DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5", os.path.join(out, "VG-SGG-with-attri.h5"),
        "DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES", str(record["number_of_validation_images"]),
        "MODEL.DETR.NUM_CLASSES", "12", "MODEL.DETR.NUM_RELATION_CLASSES", "10",
    ]
    assert load_tool("dataset_stats").main(["--predicates"] + args) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, c in record["splits"].items():
        assert f"{name}: images={c['images']} objects={c['objects']} relations={c['relations']}" in lines
    assert any(line.strip().startswith("on ") for line in lines)


def test_loader_benchmark_runs_on_a_small_file(tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import bench_vg_loader
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    assert bench_vg_loader.main(["--workdir", str(tmp_path), "--images", "2000", "--objects", "20000",
                                 "--relations", "10000"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2000 rows" in out and "VG_test: images=" in out and "first load" in out
