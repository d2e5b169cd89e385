"""One host-device synchronisation per training step: only the matcher's cost-matrix copy waits for the device.

Counted on a profiled CPU step of the tiny config (``benchmarks/bench_model.py``'s ``count_step_syncs``): every
operator that would wait for a GPU (``item``/``int()``, ``nonzero`` / boolean-mask indexing, ``unique``, …) outside
the parts that work on host tensors by design, plus the matcher's copy.  A new sync anywhere in the forward, the
loss, the backward, the loss bookkeeping or the clipping fails the test.
"""
import os
import sys

import torch

from modeling.scene_graph_criterion import SceneGraphCriterion
from tests.model_helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_model  # noqa: E402

ONE_COPY = {("matcher_copy", "cost matrix copy to the host"): 1}


def _bench():
    torch.manual_seed(0)
    cfg = bench_model.load_config(bench_model.TINY_CONFIG, "cpu", [], compile_model=False)
    bench = bench_model.BenchmarkedModel(cfg, amp_dtype=None)
    bench.set_training_batch(bench_model.synthetic_training_batch(cfg, batch_size=2, height=64, width=96))
    return bench


def _syncs_of_one_step(bench):
    prof = bench_model.profile_steps(bench, warmup=1, steps=1)
    return bench_model.count_step_syncs(prof.events(), steps=1)


def test_a_training_step_of_the_tiny_model_syncs_once(monkeypatch):
    torch.set_num_threads(1)
    bench = _bench()
    syncs = _syncs_of_one_step(bench)
    assert syncs == ONE_COPY
    # The losses of these steps are still on the device: read back (and checked) only at the next flush.
    assert len(bench.trainer._pending_losses) == 2 and not bench.trainer.storage.has("total_loss")


def test_a_new_sync_in_the_loss_is_counted(monkeypatch):
    torch.set_num_threads(1)
    losses = SceneGraphCriterion.losses

    def losses_with_an_item(self, *args):
        result = losses(self, *args)
        if float(result["loss_sub_ce_0"].detach()) < 0:  # a read-back: waits for the device
            raise AssertionError("negative cross-entropy")
        return result

    monkeypatch.setattr(SceneGraphCriterion, "losses", losses_with_an_item)
    syncs = _syncs_of_one_step(_bench())
    assert syncs == {**ONE_COPY, ("criterion", "item / int()"): 1}
