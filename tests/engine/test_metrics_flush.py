"""Training metrics are read back from the device only when flushed (every SOLVER.LOG_PERIOD, before a checkpoint,
at the end): a NaN/inf loss is still reported with its own iteration and nothing is saved after it."""
import glob
import os

import pytest
import torch

from tests.engine_standins import StandInTrainer, tiny_cfg
from utils.events import EventStorage


@pytest.fixture(autouse=True)
def _reset_stand_in_switches():
    yield
    StandInTrainer.NAN_AT = StandInTrainer.CRASH_AT = None


def test_event_storage_keeps_tensors_until_a_scalar_is_read():
    storage = EventStorage(start_iter=3)
    value = torch.tensor(2.5)
    storage.put_scalar("grad_norm", value)
    storage.put_scalar("grad_norm", torch.tensor([4.0]), iteration=5)
    assert storage._unread and not storage._history  # nothing copied yet
    value.fill_(1.0)  # recorded by reference: the read sees the tensor as it is then (the step's value on a GPU)
    assert storage.latest("grad_norm") == (4.0, 5)
    assert storage.median("grad_norm", 2) == 2.5 and not storage._unread
    assert storage.latest_with_smoothing(1)["grad_norm"] == (4.0, 5)


def test_losses_are_recorded_under_their_own_iterations_at_each_flush(tmp_path):
    cfg = tiny_cfg(str(tmp_path), "SOLVER.LOG_PERIOD", 3, "SOLVER.MAX_ITER", 5, "SOLVER.CHECKPOINT_PERIOD", 100,
                   "TEST.EVAL_PERIOD", 0)
    trainer = StandInTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage._history
    assert [iteration for _, iteration in history["total_loss"]] == [0, 1, 2, 3, 4]
    assert [iteration for _, iteration in history["grad_norm"]] == [0, 1, 2, 3, 4]
    assert not trainer._pending_losses


def test_a_nan_between_flushes_names_its_iteration_and_stops_before_the_next_checkpoint(tmp_path):
    StandInTrainer.NAN_AT = 1
    cfg = tiny_cfg(str(tmp_path), "SOLVER.LOG_PERIOD", 20, "SOLVER.CHECKPOINT_PERIOD", 3, "SOLVER.MAX_ITER", 6,
                   "TEST.EVAL_PERIOD", 0)
    trainer = StandInTrainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError, match=r"at iteration 1: .*loss_l1"):
        trainer.train()
    assert trainer.iter == 2  # read back at the checkpoint of iteration 2, which is then not written
    assert glob.glob(os.path.join(cfg.OUTPUT_DIR, "*.pth")) == []
