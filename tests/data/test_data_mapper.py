"""Mapper: image reading, augmentation keeping boxes/labels/relations consistent, test resize, bad images."""
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from configs.defaults import get_cfg
from data.mapper import VGDatasetMapper, read_image
from data.transforms import shortest_edge_size

RED = (230, 20, 20)


def mapper_cfg(**input_overrides):
    cfg = get_cfg()
    cfg.merge_from_list([
        "INPUT.MIN_SIZE_TRAIN", (32, 48, 64), "INPUT.MAX_SIZE_TRAIN", 96,
        "INPUT.MIN_SIZE_TEST", 48, "INPUT.MAX_SIZE_TEST", 80,
        "INPUT.CROP.SIZE", [16, 48], "INPUT.CROP.PROB", 0.5,
        "INPUT.CROP.TYPE", "keep_orientation",  # the released "detr" crop: tests/data/test_detr_augmentation.py
    ])
    for key, value in input_overrides.items():
        cfg.merge_from_list([f"INPUT.{key}", value])
    return cfg


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mapper_images"))


def write_scene(image_dir, width, height, red_box, name="scene.png"):
    """White image with ``red_box`` filled red (PNG, lossless); returns its path."""
    array = np.full((height, width, 3), 255, dtype=np.uint8)
    x1, y1, x2, y2 = (int(round(v)) for v in red_box)
    array[y1:y2, x1:x2] = RED
    path = os.path.join(image_dir, name)
    Image.fromarray(array).save(path)
    return path


@st.composite
def scenes(draw):
    width, height = draw(st.integers(40, 120)), draw(st.integers(40, 120))
    num_boxes = draw(st.integers(1, 6))
    boxes = []
    for _ in range(num_boxes):
        x1, y1 = draw(st.integers(0, width - 14)), draw(st.integers(0, height - 14))
        x2, y2 = draw(st.integers(x1 + 12, width)), draw(st.integers(y1 + 12, height))
        boxes.append([x1, y1, x2, y2])
    pairs = st.tuples(st.integers(0, num_boxes - 1), st.integers(0, num_boxes - 1), st.integers(0, 9))
    relations = draw(st.lists(pairs, max_size=8))
    return width, height, boxes, relations, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scene=scenes(), image_format=st.sampled_from(["RGB", "BGR"]))
def test_train_mapper_keeps_boxes_labels_relations_and_pixels_consistent(image_dir, scene, image_format):
    width, height, boxes, relations, seed = scene
    path = write_scene(image_dir, width, height, boxes[0])
    record = {
        "image_id": 7, "file_name": path, "width": width, "height": height,
        "boxes": np.array(boxes, dtype=np.float32), "labels": np.arange(len(boxes)),  # label = original index
        "relations": np.array(relations, dtype=np.int64).reshape(-1, 3),
    }
    mapper = VGDatasetMapper(mapper_cfg(FORMAT=image_format, **{"CROP.PROB": 0.7}), is_train=True)
    item = mapper(record, np.random.default_rng(seed))
    again = mapper(record, np.random.default_rng(seed))
    assert torch.equal(item["image"], again["image"])  # a function of the generator only

    image, inst = item["image"], item["instances"]
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    h, w = image.shape[1:]
    assert (item["height"], item["width"], item["image_id"]) == (height, width, 7)
    assert min(h, w) in (32, 48, 64) or max(h, w) == 96
    assert not (h > w and height <= width) and not (h < w and height > width)  # crops keep the orientation
    b = inst["boxes"]
    assert b.dtype == torch.float32 and len(b) == len(inst["labels"]) >= 1
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert (b[:, :2] >= 0).all() and (b[:, 2] <= w + 1e-4).all() and (b[:, 3] <= h + 1e-4).all()

    # Relations: exactly the input rows whose two boxes survived, re-indexed, in order.
    kept = inst["labels"].tolist()
    expected = [[kept.index(s), kept.index(o), p] for s, o, p in relations if s in kept and o in kept]
    assert inst["relations"].tolist() == expected
    if relations:
        assert len(expected) >= 1  # a crop that would remove every relation is not applied

    # Pixels: the red box (label 0), wherever crop/resize/flip moved it, still covers red pixels.
    if 0 in kept:
        x1, y1, x2, y2 = b[kept.index(0)].tolist()
        if x2 - x1 > 6 and y2 - y1 > 6:
            patch = image[:, int(y1) + 2:int(np.ceil(y2)) - 2, int(x1) + 2:int(np.ceil(x2)) - 2].float()
            red, green, blue = patch.mean(dim=(1, 2)).tolist() if image_format == "RGB" else \
                patch.mean(dim=(1, 2)).flip(0).tolist()
            assert red > 180 and green < 90 and blue < 90


def test_test_mapper_resizes_deterministically_and_keeps_every_box(image_dir):
    path = write_scene(image_dir, 100, 60, [10, 10, 40, 30], name="test_scene.png")
    record = {
        "image_id": 3, "file_name": path, "width": 100, "height": 60,
        "boxes": np.array([[10, 10, 40, 30], [0, 0, 99, 59], [50, 20, 50, 20]], dtype=np.float32),
        "labels": np.array([4, 5, 6]), "relations": np.array([[0, 1, 2], [0, 1, 2], [2, 0, 1]]),
    }
    item = VGDatasetMapper(mapper_cfg(), is_train=False)(record)
    assert shortest_edge_size(60, 100, 48, 80) == (48, 80)
    assert tuple(item["image"].shape) == (3, 48, 80)
    np.testing.assert_allclose(item["instances"]["boxes"].numpy(), record["boxes"] * 0.8, rtol=1e-6)
    assert item["instances"]["relations"].tolist() == record["relations"].tolist()
    assert item["instances"]["labels"].tolist() == [4, 5, 6]


def test_shortest_edge_size_respects_the_long_side_cap():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(200, 1000, 800, 1333) == (267, 1333)


def test_read_image_applies_exif_orientation(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = RED  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = str(tmp_path / "rotated.jpg")
    Image.fromarray(array).save(path, exif=exif, quality=95)
    image = read_image(path, 1, "RGB")
    assert tuple(image.shape) == (3, 40, 20)
    assert image[0, :15].float().mean() > 180  # the red half is on top after the rotation


def test_missing_image_names_its_id_and_the_key(tmp_path):
    record = {"image_id": 4242, "file_name": str(tmp_path / "4242.jpg"), "width": 10, "height": 10,
              "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
              "relations": np.zeros((0, 3), np.int64)}
    with pytest.raises(FileNotFoundError, match="Image 4242 is missing.*4242.jpg.*DATASETS.VISUAL_GENOME.IMAGES"):
        VGDatasetMapper(mapper_cfg(), is_train=False)(record)


def test_corrupt_image_names_its_file(tmp_path):
    path = tmp_path / "77.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match=r"Image 77: cannot decode .*77\.jpg"):
        read_image(str(path), 77)


def test_bad_input_settings_name_their_key():
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        VGDatasetMapper(mapper_cfg(FORMAT="YUV"), is_train=True)
    with pytest.raises(ValueError, match="INPUT.RANDOM_FLIP"):
        VGDatasetMapper(mapper_cfg(RANDOM_FLIP="diagonal"), is_train=True)
    with pytest.raises(ValueError, match="INPUT.CROP.SIZE"):
        VGDatasetMapper(mapper_cfg(**{"CROP.SIZE": [50, 20]}), is_train=True)
