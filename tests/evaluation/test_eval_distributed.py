"""One process and two gloo processes give identical metrics and predictions files."""
import json
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from evaluation.sgg_evaluator import SGGEvaluator
from evaluation.synthetic import random_prediction, random_split

NUM_CLASSES, NUM_PREDICATES, NUM_IMAGES = 10, 5, 9
ZERO_SHOT = np.array([[0, 1, 2], [3, 4, 0], [5, 5, 1]])


def make_split_and_outputs():
    rng = np.random.default_rng(11)
    split = random_split(rng, NUM_IMAGES, NUM_CLASSES, NUM_PREDICATES, boxes_per_image=8, relations_per_image=6)
    outputs = [random_prediction(rng, r, NUM_CLASSES, NUM_PREDICATES, num_boxes=20, num_rows=140)
               for r in split.records]
    return split, outputs


def evaluate_shard(output_dir: str, rank: int, world_size: int) -> dict:
    split, outputs = make_split_and_outputs()
    evaluator = SGGEvaluator(split, zero_shot_triplets=ZERO_SHOT, output_dir=output_dir)
    shard = list(range(rank, NUM_IMAGES, world_size))[::-1]  # arrival order must not matter
    for i in shard:
        image_id = int(split.image_ids[i])
        evaluator.process([{"image_id": image_id}], [dict(outputs[i], image_id=image_id)])
    return evaluator.evaluate()


def _worker(rank: int, world_size: int, init_file: str, output_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        metrics = evaluate_shard(output_dir, rank, world_size)
        with open(os.path.join(output_dir, f"returned_by_rank{rank}.json"), "w") as stream:
            json.dump(metrics, stream)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one(tmp_path):
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    single = evaluate_shard(str(single_dir), rank=0, world_size=1)
    os.makedirs(multi_dir)
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), str(multi_dir)), nprocs=2, join=True)

    with open(multi_dir / "sgg_eval.json") as stream:
        assert json.load(stream) == json.loads(json.dumps(single))
    with open(multi_dir / "returned_by_rank1.json") as stream:
        assert json.load(stream) == {}
    single_file = torch.load(single_dir / "sgg_predictions.pt", weights_only=True)
    multi_file = torch.load(multi_dir / "sgg_predictions.pt", weights_only=True)
    assert [i["image_id"] for i in multi_file["images"]] == [i["image_id"] for i in single_file["images"]]
    for a, b in zip(single_file["images"], multi_file["images"]):
        assert all(torch.equal(a[key], b[key]) for key in ("boxes", "labels", "scores", "rel_pairs", "rel_scores"))
    assert 0 < single["R@100"] < 1
