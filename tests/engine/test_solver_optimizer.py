"""engine.solver.build_optimizer: the parameter groups and AdamW's fused kernel (same update as the loop)."""
import copy
import math

import pytest
import torch
from torch import nn

from configs.defaults import get_cfg
from engine.solver import build_optimizer


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.frozen(self.head(torch.relu(self.backbone(x))))


def _cfg():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 1e-2
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    return cfg


def test_groups_and_fused_kernel_on_cpu():
    model = _Toy()
    optimizer = build_optimizer(_cfg(), model)
    assert optimizer.defaults["fused"] is True
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(1e-2), pytest.approx(1e-3)]
    assert [len(group["params"]) for group in optimizer.param_groups] == [2, 2]  # head w/b; backbone w/b


def test_fused_update_equals_the_per_parameter_loop():
    torch.manual_seed(0)
    model = _Toy()
    reference_model = copy.deepcopy(model)
    optimizer = build_optimizer(_cfg(), model)
    groups = [{"params": list(reference_model.head.parameters()), "lr": 1e-2},
              {"params": list(reference_model.backbone.parameters()), "lr": 1e-3}]
    reference = torch.optim.AdamW(groups, lr=1e-2, weight_decay=1e-4, foreach=False, fused=False)
    for _ in range(5):
        x = torch.randn(4, 6)
        for net, opt in ((model, optimizer), (reference_model, reference)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for (name, got), want in zip(model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(model.head.weight, _Toy().head.weight)


def test_checkpoint_of_the_loop_optimizer_resumes_unchanged():
    """A checkpoint written before the fused kernel (same groups, per-parameter loop) loads and steps identically."""
    torch.manual_seed(1)
    model = _Toy()
    groups = [{"params": list(model.head.parameters()), "lr": 1e-2},
              {"params": list(model.backbone.parameters()), "lr": 1e-3}]
    loop = torch.optim.AdamW(groups, lr=1e-2, weight_decay=1e-4, fused=False)
    model(torch.randn(2, 6)).pow(2).sum().backward()
    loop.step()
    twin = copy.deepcopy(model)
    twin_loop = torch.optim.AdamW([{"params": list(twin.head.parameters()), "lr": 1e-2},
                                   {"params": list(twin.backbone.parameters()), "lr": 1e-3}],
                                  lr=1e-2, weight_decay=1e-4, fused=False)
    twin_loop.load_state_dict(copy.deepcopy(loop.state_dict()))
    fused = build_optimizer(_cfg(), model)
    fused.load_state_dict(copy.deepcopy(loop.state_dict()))  # (state_dict shares its tensors)
    x = torch.randn(2, 6)
    for net, opt in ((model, fused), (twin, twin_loop)):
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()
    for got, want in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _lrs(cfg, iterations):
    from engine.solver import build_lr_scheduler

    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(iterations):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_schedule_after_the_warmup():
    cfg = _cfg()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.LR_SCHEDULER_NAME = 100, 10, "WarmupCosineLR"
    cfg.SOLVER.BASE_LR_END = 1e-4
    lrs = _lrs(cfg, 100)
    assert lrs[0] == pytest.approx(1e-2 * cfg.SOLVER.WARMUP_FACTOR)
    assert lrs[50] == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5)  # half-way: the mean of the two ends
    assert lrs[99] == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 0.99)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # decreasing after the warm-up


def test_multistep_is_the_default_and_bad_schedules_name_their_key():
    cfg = _cfg()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.STEPS = 20, 0, (10,)
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR"
    lrs = _lrs(cfg, 20)
    assert lrs[9] == pytest.approx(1e-2) and lrs[10] == pytest.approx(1e-3)
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    with pytest.raises(ValueError, match="SOLVER.LR_SCHEDULER_NAME"):
        _lrs(cfg, 1)
    cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.BASE_LR_END = "WarmupCosineLR", 1.0
    with pytest.raises(ValueError, match="SOLVER.BASE_LR_END"):
        _lrs(cfg, 1)
