"""DataLoaders on the synthetic world: batch layout, resumability, worker independence, rank slices, test shard."""
import numpy as np
import pytest
import torch

from configs.defaults import get_cfg
from data.build import TrainBatches, build_test_loader, build_train_loader, images_per_process
from data.mapper import VGDatasetMapper
from data.samplers import TrainingBatchPlan
from data.synthetic import config_overrides, generate_synthetic_vg
from data.visual_genome import clear_cache, load_vg_split


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic_vg"))
    record = generate_synthetic_vg(out, 30, seed=2, number_of_validation_images=3)
    return config_overrides(out, record)


def make_cfg(world, *extra):
    clear_cache()
    cfg = get_cfg()
    cfg.merge_from_list(list(world) + [
        "INPUT.MIN_SIZE_TRAIN", (64, 80), "INPUT.MAX_SIZE_TRAIN", 112, "INPUT.CROP.SIZE", [96, 160],
        "INPUT.CROP.TYPE", "keep_orientation",  # the layout test counts on crops keeping orientation and relations
        "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 112,
        "SOLVER.IMS_PER_BATCH", 4, "DATALOADER.NUM_WORKERS", 0, "SEED", 11,
    ] + list(extra))
    return cfg


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def same_batch(a, b):
    return len(a) == len(b) and all(
        x["image_id"] == y["image_id"] and torch.equal(x["image"], y["image"])
        and all(torch.equal(x["instances"][k], y["instances"][k]) for k in ("boxes", "labels", "relations"))
        for x, y in zip(a, b)
    )


def test_train_batches_have_the_documented_layout(world):
    cfg = make_cfg(world)
    split = load_vg_split(cfg, "VG_train")
    loader = build_train_loader(cfg)
    epoch = loader.dataset.plan.batches_per_epoch
    mixed = 0
    for batch in take(loader, epoch):
        assert isinstance(batch, list) and len(batch) == 4
        orientations = set()
        for item in batch:
            assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 3
            assert set(item["instances"]) == {"boxes", "labels", "relations"}
            assert item["instances"]["boxes"].dtype == torch.float32
            assert item["instances"]["labels"].dtype == torch.int64
            assert item["instances"]["relations"].shape[1] == 3 and len(item["instances"]["relations"]) >= 1
            index = split.image_ids.tolist().index(item["image_id"])
            assert (item["width"], item["height"]) == (split.widths[index], split.heights[index])
            orientations.add(bool(split.widths[index] < split.heights[index]))
            assert (item["image"].shape[1] > item["image"].shape[2]) <= (split.heights[index] > split.widths[index])
        mixed += len(orientations) > 1
    assert mixed <= 1  # aspect-ratio grouping: only the groups' leftovers share a batch


def test_train_loader_resumes_with_identical_batches(world):
    cfg = make_cfg(world)
    uninterrupted = take(build_train_loader(cfg, start_iter=0), 5)
    resumed = take(build_train_loader(cfg, start_iter=3), 2)
    assert same_batch(uninterrupted[3], resumed[0]) and same_batch(uninterrupted[4], resumed[1])
    assert not same_batch(uninterrupted[0], uninterrupted[1])


def test_train_batches_do_not_depend_on_the_number_of_workers(world):
    in_process = take(build_train_loader(make_cfg(world)), 3)
    with_workers = take(build_train_loader(make_cfg(world, "DATALOADER.NUM_WORKERS", 2)), 3)
    assert all(same_batch(a, b) for a, b in zip(in_process, with_workers))


def test_ranks_take_disjoint_slices_of_the_global_batch(world):
    cfg = make_cfg(world)
    split = load_vg_split(cfg, "VG_train")
    plan = TrainingBatchPlan(np.zeros(len(split), dtype=int), 4, seed=11)
    mapper = VGDatasetMapper(cfg, is_train=True)
    slices = [TrainBatches(split, mapper, plan, 11, rank, 2).indices(5) for rank in (0, 1)]
    assert np.concatenate(slices).tolist() == plan.global_batch(5).tolist()


def test_batch_size_must_divide_over_processes(world):
    cfg = make_cfg(world, "SOLVER.IMS_PER_BATCH", 6)
    assert images_per_process(cfg, 3) == 2
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH \(6\).*processes \(4\)"):
        images_per_process(cfg, 4)


def test_test_loader_yields_every_image_once_resized(world):
    cfg = make_cfg(world)
    split = load_vg_split(cfg, "VG_test")
    seen = []
    for batch in build_test_loader(cfg, "VG_test"):
        assert len(batch) == 1
        item = batch[0]
        h, w = item["image"].shape[1:]
        assert min(h, w) == 64 or max(h, w) == 112
        index = split.image_ids.tolist().index(item["image_id"])
        scale = w / split.widths[index]
        np.testing.assert_allclose(item["instances"]["boxes"].numpy(), split.get_record(index)["boxes"] * scale,
                                   rtol=1e-2, atol=0.5)
        seen.append(item["image_id"])
    assert seen == split.image_ids.tolist()


def test_bgr_format_reverses_the_channels(world):
    rgb = next(iter(build_test_loader(make_cfg(world), "VG_val")))[0]["image"]
    bgr = next(iter(build_test_loader(make_cfg(world, "INPUT.FORMAT", "BGR"), "VG_val")))[0]["image"]
    assert torch.equal(rgb.flip(0), bgr)


def test_missing_jpeg_fails_when_its_record_is_loaded(world, tmp_path):
    import os
    import shutil

    images = tmp_path / "images"
    shutil.copytree(world[1], images)
    cfg = make_cfg(world, "DATASETS.VISUAL_GENOME.IMAGES", str(images))
    split = load_vg_split(cfg, "VG_val")
    missing = int(split.image_ids[1])
    os.remove(images / f"{missing}.jpg")
    loader = iter(build_test_loader(cfg, "VG_val"))
    assert next(loader)[0]["image_id"] == int(split.image_ids[0])
    with pytest.raises(FileNotFoundError, match=f"Image {missing} is missing"):
        next(loader)
