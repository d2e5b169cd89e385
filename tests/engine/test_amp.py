"""Mixed precision: SOLVER.AMP.PRECISION picks bf16 (no scaler) or fp16 with a GradScaler whose skipped steps are
counted and logged; the fp16 path runs here on CPU (autocast and GradScaler both support it)."""
import logging

import pytest
import torch
from torch import nn

from configs.defaults import get_cfg
from engine.train_loop import SimpleTrainer
from engine.trainer import build_amp


def amp_cfg(*extra):
    cfg = get_cfg()
    cfg.merge_from_list(list(extra))
    return cfg


def test_precision_key_picks_the_dtype_and_the_scaler():
    assert get_cfg().SOLVER.AMP.PRECISION == "bfloat16"
    dtype, scaler = build_amp(amp_cfg("MODEL.DEVICE", "cuda"))
    assert dtype == torch.bfloat16 and scaler is None
    dtype, scaler = build_amp(amp_cfg("SOLVER.AMP.PRECISION", "float16"), device_type="cpu")
    assert (dtype, scaler) == (None, None)  # mixed precision is a GPU setting; CPU training stays fp32
    assert build_amp(amp_cfg("SOLVER.AMP.ENABLED", False, "MODEL.DEVICE", "cuda")) == (None, None)
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION"):
        build_amp(amp_cfg("SOLVER.AMP.PRECISION", "fp8"))


class ScaledProduct(nn.Module):
    """loss = 3 * p * x[0] + sum(linear(x)) * 0: the gradient of p is 3 * x[0]; the linear layer shows the dtype
    autocast gives a matmul."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.ones(()))
        self.linear = nn.Linear(2, 2)
        self.matmul_dtypes = []

    def forward(self, batch):
        x = batch[0]
        out = self.linear(torch.ones(1, 2))
        self.matmul_dtypes.append(out.dtype)
        return {"loss": 3.0 * self.p * x[0] + out.float().sum() * 0.0}


def make_trainer(data, init_scale=1024.0):
    model = ScaledProduct()
    seen_grads = []

    def clip(parameters):
        grads = [p.grad.clone() for p in parameters if p.grad is not None]
        seen_grads.append(grads[0].item())  # model.p's gradient as the clipping sees it
        return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))

    trainer = SimpleTrainer(model, data, torch.optim.SGD(model.parameters(), lr=0.1), clip_gradients=clip,
                            amp_dtype=torch.float16, grad_scaler=torch.amp.GradScaler("cpu", init_scale=init_scale),
                            amp_device="cpu")
    return trainer, model, seen_grads


def test_fp16_step_unscales_before_clipping_and_updates_like_fp32():
    data = [[torch.tensor([1.0, 2.0])]] * 2
    trainer, model, seen = make_trainer(data)
    trainer.train(0, 2)
    assert model.matmul_dtypes == [torch.float16, torch.float16]  # autocast ran in fp16
    assert seen == [3.0, 3.0]  # clipping saw the true gradient 3, not 3 x 1024
    assert model.p.item() == pytest.approx(1.0 - 2 * 0.1 * 3.0)  # two SGD steps: 1 - 0.6 = 0.4
    assert trainer.amp_skipped_steps == 0 and trainer.grad_scaler.get_scale() == 1024.0
    assert trainer.storage.latest("amp_skipped_steps")[0] == 0


def test_fp16_step_with_overflowing_gradients_is_skipped_counted_and_logged(caplog):
    # x[0] = 1e36: the loss 3e36 is finite in fp32, but its scaled gradient 3e36 x 1024 overflows to inf.
    data = [[torch.tensor([1e36, 0.0])], [torch.tensor([1.0, 0.0])]]
    trainer, model, _ = make_trainer(data)
    with caplog.at_level(logging.WARNING, logger="engine.train_loop"):
        trainer.train(0, 1)
    assert model.p.item() == 1.0  # step skipped
    assert trainer.amp_skipped_steps == 1 and trainer.grad_scaler.get_scale() == 512.0  # scale halved
    assert trainer.storage.latest("amp_skipped_steps")[0] == 1
    assert trainer.storage.latest("amp_loss_scale")[0] == 512.0
    assert any("step skipped" in r.getMessage() and "1024 -> 512" in r.getMessage() for r in caplog.records)
    trainer.train(1, 2)  # the next, finite step goes through at the lower scale
    assert model.p.item() == pytest.approx(1.0 - 0.1 * 3.0)


def test_trainer_checkpoints_and_resumes_the_grad_scaler(tmp_path, monkeypatch):
    # fp16 autocast needs a GPU in the trainer; the scaler's bookkeeping (scaled backward, unscale, step, state in
    # the checkpoint) is the same on the CPU, so the trainer is given a CPU GradScaler here.
    from engine import trainer as trainer_module
    from tests.engine_standins import StandInTrainer, tiny_cfg

    monkeypatch.setattr(trainer_module, "build_amp",
                        lambda cfg: (None, torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=4)))
    cfg = tiny_cfg(str(tmp_path))
    torch.manual_seed(cfg.SEED)
    trainer = StandInTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # 6 finite steps with growth every 4: the scale doubled once, nothing was skipped.
    assert trainer.grad_scaler.get_scale() == 512.0 and trainer.amp_skipped_steps == 0
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert saved["grad_scaler"]["scale"] == 512.0 and saved["grad_scaler"]["_growth_tracker"] == 2
    early = torch.load(tmp_path / "model_0000001.pth", weights_only=True)["grad_scaler"]
    assert early["scale"] == 256.0 and early["_growth_tracker"] == 2
    resumed = StandInTrainer(cfg)
    resumed.checkpointer.load(str(tmp_path / "model_0000001.pth"))
    assert resumed.grad_scaler.get_scale() == 256.0 and resumed.grad_scaler._get_growth_tracker() == 2
