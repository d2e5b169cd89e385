"""INPUT.CROP.TYPE "detr": the released DETR mapper (flip; with p 0.5 the plain resize, else resize to 400/500/600,
absolute crop with independent height/width draws, resize); boxes empty after the crop are dropped with their
relations and the crop is kept even when nothing is left."""
import numpy as np
import pytest
import torch
from PIL import Image

from configs.defaults import get_cfg
from data.mapper import VGDatasetMapper
from data.transforms import sample_detr_crop


def test_crop_sides_are_independent_uniform_draws_within_the_capped_bounds():
    rng = np.random.default_rng(0)
    draws = np.array([sample_detr_crop(rng, 500, 750, (384, 600)) for _ in range(4000)])
    top, left, height, width = draws.T
    # height uniform on [min(500, 384), min(500, 600)] = [384, 500]; width on [384, 600]; bounds included.
    assert (height.min(), height.max(), width.min(), width.max()) == (384, 500, 384, 600)
    assert abs(height.mean() - 442) < 3 and abs(width.mean() - 492) < 4
    assert abs(np.corrcoef(height, width)[0, 1]) < 0.05  # independent draws
    assert (height > width).mean() > 0.2  # a landscape image can become portrait (the released behaviour)
    assert (top >= 0).all() and (top <= 500 - height).all() and (left <= 750 - width).all()
    assert top.max() >= 100 and left.max() >= 300  # the position is uniform over the free room
    # A side shorter than the lower bound is kept whole: h = 300 -> the height is always 300, the top always 0.
    small = np.array([sample_detr_crop(rng, 300, 1000, (384, 600)) for _ in range(200)])
    assert (small[:, 2] == 300).all() and (small[:, 0] == 0).all()
    assert small[:, 3].min() >= 384 and small[:, 3].max() <= 600


class ScriptedRng:
    """Stands in for numpy's Generator: ``random()`` and ``integers()`` return the scripted values in order."""

    def __init__(self, randoms, integers):
        self.randoms, self.ints = list(randoms), list(integers)

    def random(self):
        return self.randoms.pop(0)

    def integers(self, low, high=None, size=None):
        value = self.ints.pop(0)
        low, high = (0, low) if high is None else (low, high)
        assert low <= value < high, (value, low, high)
        return value


def detr_cfg(**extra):
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (100, 120), "INPUT.MAX_SIZE_TRAIN", 1000, "INPUT.CROP.SIZE",
                         [100, 300], "INPUT.CROP.TYPE", "detr"])
    for key, value in extra.items():
        cfg.merge_from_list([f"INPUT.{key}", value])
    return cfg


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("detr_aug") / "scene.png")
    Image.fromarray(np.full((200, 300, 3), 128, dtype=np.uint8)).save(path)  # h 200, w 300
    return {"image_id": 1, "file_name": path, "width": 300, "height": 200,
            "boxes": np.array([[10, 10, 100, 100], [160, 20, 280, 180], [140, 50, 200, 150]], dtype=np.float32),
            "labels": np.array([4, 5, 6]), "relations": np.array([[0, 1, 0], [1, 2, 1], [2, 0, 2]])}


def test_crop_drops_empty_boxes_with_their_relations(record):
    # no flip (0.9), crop (0.1 < 0.5); 400 first (x2: 400 x 600); crop h 200, w 300 at top 0, left 300, i.e. the
    # original's x in [150, 300); then the short side to 100 (x0.5).  Box A (x < 100) is gone with relations
    # (A, B) and (C, A); (B, C) stays, re-indexed to (0, 1).
    rng = ScriptedRng([0.9, 0.1], [0, 200, 300, 0, 300, 0])
    item = VGDatasetMapper(detr_cfg(), is_train=True)(record, rng)
    assert tuple(item["image"].shape) == (3, 100, 150)
    inst = item["instances"]
    assert inst["labels"].tolist() == [5, 6] and inst["relations"].tolist() == [[0, 1, 1]]
    # B: x2 560 - 300 = 260, y 40..360 clipped to the 200-px crop -> x0.5; C: x1 280 - 300 < 0 clipped to 0.
    torch.testing.assert_close(inst["boxes"], torch.tensor([[10.0, 20.0, 130.0, 100.0], [0.0, 50.0, 50.0, 100.0]]))


def test_flip_comes_first_and_a_crop_that_leaves_nothing_is_kept(record):
    # flip (0.1): x -> 300 - x, so A = [200, 10, 290, 100], B = [20, 20, 140, 180], C = [100, 50, 160, 150].
    # resize to 500 (x2.5: 500 x 750), crop h 100, w 100 at top 400, left 0 -> the original's y in [160, 200),
    # x in [0, 40): only B reaches y >= 160 and x < 40, and B keeps its relations (none with itself): none left.
    rng = ScriptedRng([0.1, 0.1], [1, 100, 100, 400, 0, 1])
    item = VGDatasetMapper(detr_cfg(), is_train=True)(record, rng)
    inst = item["instances"]
    assert tuple(item["image"].shape) == (3, 120, 120)  # 100 x 100 crop, short side 120
    assert inst["labels"].tolist() == [5] and inst["relations"].shape == (0, 3)
    # B in the crop: x 50..350 -> 50..100, y 50..450 -> -350..50 -> 0..50; then x1.2.
    torch.testing.assert_close(inst["boxes"], torch.tensor([[60.0, 0.0, 120.0, 60.0]]))
    # A window with no box at all: every box and relation is dropped, the image stays cropped.
    rng = ScriptedRng([0.9, 0.1], [0, 100, 100, 300, 0, 0])  # x2, crop at (300, 0): original x < 50, y >= 150
    item = VGDatasetMapper(detr_cfg(), is_train=True)(record, rng)
    assert item["instances"]["boxes"].shape == (0, 4) and item["instances"]["relations"].shape == (0, 3)
    assert tuple(item["image"].shape) == (3, 100, 100)


def test_without_the_crop_branch_it_is_flip_and_resize_and_the_options_are_checked(record):
    rng = ScriptedRng([0.9, 0.7], [1])  # no flip, no crop (0.7 >= 0.5), short side 120
    item = VGDatasetMapper(detr_cfg(), is_train=True)(record, rng)
    assert tuple(item["image"].shape) == (3, 120, 180) and item["instances"]["relations"].tolist() == [
        [0, 1, 0], [1, 2, 1], [2, 0, 2]]
    torch.testing.assert_close(item["instances"]["boxes"], torch.as_tensor(record["boxes"]) * 0.6)
    with pytest.raises(ValueError, match="INPUT.CROP.TYPE"):
        VGDatasetMapper(detr_cfg(**{"CROP.TYPE": "random"}), is_train=True)
    with pytest.raises(ValueError, match="INPUT.CROP.RESIZE_BEFORE_CROP"):
        VGDatasetMapper(detr_cfg(**{"CROP.RESIZE_BEFORE_CROP": ()}), is_train=True)


def test_seeded_detr_mapping_covers_drops_and_keeps_boxes_inside_the_image(record):
    mapper = VGDatasetMapper(detr_cfg(), is_train=True)
    dropped = 0
    for seed in range(40):
        item = mapper(record, np.random.default_rng(seed))
        again = mapper(record, np.random.default_rng(seed))
        assert torch.equal(item["image"], again["image"])
        h, w = item["image"].shape[1:]
        assert min(h, w) in (100, 120)
        boxes, kept = item["instances"]["boxes"], item["instances"]["labels"].tolist()
        assert ((boxes[:, 2] - boxes[:, 0]) > 1e-5).all() and ((boxes[:, 3] - boxes[:, 1]) > 1e-5).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all()
        original = {4: 0, 5: 1, 6: 2}
        expected = [[kept.index(l_s), kept.index(l_o), p] for (s, o, p) in record["relations"].tolist()
                    for l_s, l_o in [(4 + s, 4 + o)] if l_s in kept and l_o in kept]
        assert item["instances"]["relations"].tolist() == expected and all(l in original for l in kept)
        dropped += len(kept) < 3
    assert dropped > 0
