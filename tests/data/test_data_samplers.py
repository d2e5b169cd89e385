"""Index plans: sharded inference covers a split exactly once; the training plan is a pure function of the seed."""
import numpy as np
import pytest

from data.samplers import InferenceSampler, IterationSampler, TrainingBatchPlan, shard_range


@pytest.mark.parametrize("size", [0, 1, 5, 13, 100])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_inference_shards_cover_every_index_exactly_once(size, world_size):
    shards = [list(InferenceSampler(size, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert [i for shard in shards for i in shard] == list(range(size))  # contiguous, in rank order
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shard_range_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank 2 outside"):
        shard_range(10, 2, 2)


def test_iteration_sampler_starts_at_start_iter():
    it = iter(IterationSampler(7))
    assert [next(it) for _ in range(3)] == [7, 8, 9]


def test_training_plan_is_a_function_of_seed_and_iteration():
    groups = np.array([0, 1] * 20 + [0] * 7)
    plan = TrainingBatchPlan(groups, batch_size=4, seed=3)
    forward = [plan.global_batch(i).tolist() for i in range(40)]
    fresh = TrainingBatchPlan(groups, batch_size=4, seed=3)
    assert [fresh.global_batch(i).tolist() for i in reversed(range(40))][::-1] == forward
    other = TrainingBatchPlan(groups, batch_size=4, seed=4)
    assert [other.global_batch(i).tolist() for i in range(40)] != forward


def test_training_plan_epochs_do_not_repeat_images_and_group_by_aspect():
    groups = np.array([0] * 13 + [1] * 10)
    plan = TrainingBatchPlan(groups, batch_size=4, seed=0)
    # 13 // 4 + 10 // 4 full batches, leftovers 1 + 2 < 4 form no batch.
    assert plan.batches_per_epoch == 5
    for epoch in range(3):
        batches = [plan.global_batch(epoch * 5 + p) for p in range(5)]
        flat = np.concatenate(batches)
        assert len(set(flat.tolist())) == len(flat) == 20
        assert all(len(set(groups[b].tolist())) == 1 for b in batches)
    epoch0 = np.concatenate([plan.global_batch(p) for p in range(5)])
    epoch1 = np.concatenate([plan.global_batch(5 + p) for p in range(5)])
    assert epoch0.tolist() != epoch1.tolist()


def test_training_plan_mixes_leftovers_of_groups():
    plan = TrainingBatchPlan(np.array([0, 0, 0, 1, 1, 1]), batch_size=4, seed=1)
    assert plan.batches_per_epoch == 1
    assert sorted(set(np.array([0, 0, 0, 1, 1, 1])[plan.global_batch(0)].tolist())) == [0, 1]


def test_training_plan_repeats_a_dataset_smaller_than_a_batch():
    plan = TrainingBatchPlan(np.zeros(3, dtype=int), batch_size=8, seed=0)
    batch = plan.global_batch(10)
    assert len(batch) == 8 and set(batch.tolist()) == {0, 1, 2}


def test_training_plan_rejects_a_negative_seed():
    with pytest.raises(ValueError, match="SEED"):
        TrainingBatchPlan(np.zeros(3, dtype=int), batch_size=2, seed=-1)
