"""A NaN/inf loss of the real model stops training with an error naming the loss terms and the iteration, and
nothing is saved after it: the last checkpoint stays the one before, with finite weights."""
import os

import pytest
import torch

import train_iterative_model
from modeling.scene_graph_criterion import SceneGraphCriterion
from tests.reliability_helpers import TINY_CONFIG, load_checkpoint, make_world, temp_files


@pytest.fixture
def one_thread():
    """Three real iterations: one thread is faster than two on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_nan_and_inf_losses_stop_training_and_nothing_is_saved_after_them(tmp_path, monkeypatch, one_thread):
    world = make_world(str(tmp_path / "world"))
    criterion_forward, calls = SceneGraphCriterion.forward, []

    def poisoned_at_iteration_2(self, outputs, targets):
        losses = criterion_forward(self, outputs, targets)
        calls.append(len(calls))
        if len(calls) == 3:  # the third training forward: iteration 2
            losses["loss_rel_ce_1"] = losses["loss_rel_ce_1"] * float("nan")
            losses["loss_obj_l1_0"] = losses["loss_obj_l1_0"] * float("inf")
        return losses

    monkeypatch.setattr(SceneGraphCriterion, "forward", poisoned_at_iteration_2)
    out = tmp_path / "out"
    argv = ["--config-file", TINY_CONFIG, *world, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "5",
            "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"]
    with pytest.raises(FloatingPointError, match="at iteration 2") as error:
        train_iterative_model.run(argv)
    message = str(error.value)
    assert "'loss_rel_ce_1': nan" in message and "'loss_obj_l1_0': inf" in message
    assert "loss_sub_ce_0" in message  # the finite terms are listed too, for context
    assert len(calls) == 3

    assert sorted(name for name in os.listdir(out) if name.endswith(".pth")) == ["model_0000001.pth"]
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    checkpoint = load_checkpoint(str(out / "model_0000001.pth"))
    assert checkpoint["iteration"] == 1
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values() if value.is_floating_point())
    assert temp_files(str(out)) == []
