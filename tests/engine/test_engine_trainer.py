"""The trainer on a tiny stand-in model: schedule, clipping, checkpoints, exact resume, best model, NaN, logs."""
import glob
import json
import os

import pytest
import torch

from tests.engine_standins import StandInTrainer, tiny_cfg, train_stand_in

torch.set_num_threads(1)


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_lr_follows_warmup_then_steps_and_backbone_gets_multiplier(tmp_path):
    cfg = tiny_cfg(str(tmp_path), "SOLVER.MAX_ITER", 8, "SOLVER.STEPS", (5,), "SOLVER.WARMUP_ITERS", 4,
                   "SOLVER.WARMUP_FACTOR", 0.2, "SOLVER.GAMMA", 0.5, "SOLVER.BACKBONE_MULTIPLIER", 0.1,
                   "TEST.EVAL_PERIOD", 0)
    trainer = train_stand_in(cfg)
    lrs = {row["iteration"]: row["lr"] for row in _metrics(cfg.OUTPUT_DIR) if "lr" in row}
    base = cfg.SOLVER.BASE_LR
    expected = [base * (0.2 + 0.8 * i / 4) for i in range(4)] + [base] + [base * 0.5] * 3
    assert [lrs[i] for i in range(8)] == pytest.approx(expected)
    groups = trainer.optimizer.param_groups
    backbone_ids = {id(p) for p in trainer.model.backbone.parameters()}
    backbone_group = next(g for g in groups if id(g["params"][0]) in backbone_ids)
    other_group = next(g for g in groups if id(g["params"][0]) not in backbone_ids)
    assert backbone_group["lr"] == pytest.approx(other_group["lr"] * 0.1)
    assert all(g["weight_decay"] == cfg.SOLVER.WEIGHT_DECAY for g in groups)
    assert cfg.SOLVER.AMP.ENABLED and trainer.amp_dtype is None  # AMP is bf16 autocast on CUDA only


def test_full_model_gradient_clipping_is_applied_before_the_step(tmp_path):
    clip = 0.05
    cfg = tiny_cfg(str(tmp_path), "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", clip, "TEST.EVAL_PERIOD", 0)
    trainer = StandInTrainer(cfg)
    norms_at_step = []

    def record_norm(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms_at_step.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    trainer.optimizer.register_step_pre_hook(record_norm)
    trainer.resume_or_load(resume=False)
    trainer.train()
    recorded = [row["grad_norm"] for row in _metrics(cfg.OUTPUT_DIR) if "grad_norm" in row]
    assert len(norms_at_step) == cfg.SOLVER.MAX_ITER
    assert all(norm <= clip * (1 + 1e-4) for norm in norms_at_step)
    assert max(recorded) > clip  # the clip had something to do


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    StandInTrainer.METRIC_BY_STEP = {2: 0.5, 4: 0.9, 6: 0.7}
    full_cfg = tiny_cfg(str(tmp_path / "full"))
    train_stand_in(full_cfg)

    crashed_cfg = tiny_cfg(str(tmp_path / "crashed"))
    StandInTrainer.CRASH_AT = 5
    with pytest.raises(RuntimeError, match="simulated crash at iteration 5"):
        train_stand_in(crashed_cfg)
    StandInTrainer.CRASH_AT = None
    with open(os.path.join(crashed_cfg.OUTPUT_DIR, "last_checkpoint")) as f:
        assert f.read() == "model_0000003.pth"

    resumed = StandInTrainer(crashed_cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    # Optimizer and scheduler state equal those of the uninterrupted run at the same iteration.
    reference = torch.load(os.path.join(full_cfg.OUTPUT_DIR, "model_0000003.pth"), weights_only=True)
    _assert_same_tree(resumed.optimizer.state_dict(), reference["optimizer"])
    assert resumed.scheduler.last_epoch == reference["scheduler"]["last_epoch"] == 4
    assert resumed.checkpointer.checkpointables["best_checkpointer"].best_value == 0.9
    torch.manual_seed(12345)  # the resumed run must not depend on the global RNG at start-up
    resumed.train()

    full = torch.load(os.path.join(full_cfg.OUTPUT_DIR, "model_final.pth"), weights_only=True)
    again = torch.load(os.path.join(crashed_cfg.OUTPUT_DIR, "model_final.pth"), weights_only=True)
    _assert_same_tree(again["model"], full["model"])
    _assert_same_tree(again["optimizer"], full["optimizer"])
    assert again["iteration"] == full["iteration"] == 5
    # Best model: 0.9 at iteration 3 stays the best after resuming (0.7 at iteration 5 is worse).
    best = torch.load(os.path.join(crashed_cfg.OUTPUT_DIR, "best_model_final.pth"), weights_only=True)
    assert best["iteration"] == 3 and best["best_metric"]["value"] == 0.9
    assert again["best_checkpointer"] == {"best_value": 0.9, "best_iteration": 3}
    # metrics.json reads as one run: the crashed run's line of iteration 4 was replaced by the resumed run's.
    assert [row["iteration"] for row in _metrics(crashed_cfg.OUTPUT_DIR)] == list(range(6))


def _assert_same_tree(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_tree(x, y)
    else:
        assert a == b


def test_checkpoint_holds_only_tensors_and_plain_values(tmp_path):
    cfg = tiny_cfg(str(tmp_path))
    train_stand_in(cfg)
    checkpoint = torch.load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"), weights_only=True)
    assert {"model", "optimizer", "scheduler", "iteration", "rng_states", "best_checkpointer"} <= checkpoint.keys()
    assert len(checkpoint["rng_states"]) == 1
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(cfg.OUTPUT_DIR, "*.pth")))
    assert names == ["best_model_final.pth", "model_0000001.pth", "model_0000003.pth", "model_0000005.pth",
                     "model_final.pth"]
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")) as f:
        assert f.read() == "model_final.pth"


def test_nan_loss_stops_training_naming_terms_and_iteration_and_saves_nothing_after(tmp_path):
    StandInTrainer.NAN_AT = 2
    cfg = tiny_cfg(str(tmp_path), "SOLVER.CHECKPOINT_PERIOD", 1, "TEST.EVAL_PERIOD", 0)
    with pytest.raises(FloatingPointError, match=r"iteration 2.*loss_l1.*loss_mse"):
        train_stand_in(cfg)
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(cfg.OUTPUT_DIR, "*.pth")))
    assert names == ["model_0000000.pth", "model_0000001.pth"]
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")) as f:
        assert f.read() == "model_0000001.pth"


def test_logs_metrics_json_and_tensorboard_events(tmp_path):
    cfg = tiny_cfg(str(tmp_path), "SOLVER.LOG_PERIOD", 2, "TEST.EVAL_PERIOD", 3)
    StandInTrainer.METRIC_BY_STEP = {3: 0.25, 6: 0.5}
    train_stand_in(cfg)
    rows = _metrics(cfg.OUTPUT_DIR)
    assert [row["iteration"] for row in rows] == [1, 2, 3, 5]  # log every 2 iterations + evaluations at 2 and 5
    logged = [row for row in rows if row["iteration"] % 2]
    assert all({"total_loss", "loss_mse", "loss_l1", "lr", "time"} <= row.keys() for row in logged)
    assert [row.get("VG_val/mR@100") for row in rows if "VG_val/mR@100" in row] == [0.25, 0.5]
    assert glob.glob(os.path.join(cfg.OUTPUT_DIR, "events.out.tfevents.*"))


def test_unknown_best_metric_is_a_clear_error(tmp_path):
    cfg = tiny_cfg(str(tmp_path), "TEST.BEST_METRIC", "mR@1000")
    with pytest.raises(KeyError, match=r"TEST.BEST_METRIC.*VG_val/mR@1000.*VG_val/mR@100"):
        train_stand_in(cfg)


class _CompiledStandIn(torch.nn.Module):
    """What torch.compile returns, minus the compiling: the original module under ``_orig_mod``."""

    def __init__(self, module):
        super().__init__()
        self._orig_mod = module

    def forward(self, *args):
        return self._orig_mod(*args)


def test_model_compile_wraps_only_the_training_forward(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or _CompiledStandIn(module))
    cfg = tiny_cfg(str(tmp_path), "MODEL.COMPILE", True)
    trainer = train_stand_in(cfg)
    assert compiled == [trainer.checkpointer.model] and isinstance(trainer.model, _CompiledStandIn)
    checkpoint = torch.load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"), weights_only=True)
    assert checkpoint["model"].keys() == trainer.checkpointer.model.state_dict().keys()  # no "_orig_mod." prefix
