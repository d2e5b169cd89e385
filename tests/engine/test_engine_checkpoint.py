"""ModelCheckpointer: atomic saves, weights_only loads, MODEL.WEIGHTS conversion and shape errors."""
import logging
import os

import pytest
import torch

import engine.checkpoint
from engine.checkpoint import ModelCheckpointer, capture_rng_state, restore_rng_state
from tests.engine_standins import TinyModel


def test_crash_mid_save_keeps_previous_checkpoint_and_last_checkpoint(tmp_path, monkeypatch):
    model = TinyModel()
    checkpointer = ModelCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    before = torch.load(tmp_path / "model_0000001.pth", weights_only=True)

    def crash_while_writing(obj, f):
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(engine.checkpoint.torch, "save", crash_while_writing)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    with pytest.raises(OSError, match="simulated"):
        checkpointer.save("model_0000002", iteration=2)

    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temp file left behind
    after = torch.load(checkpointer.get_checkpoint_file(), weights_only=True)
    assert after["iteration"] == 1 and torch.equal(after["model"]["head.weight"], before["model"]["head.weight"])


def test_resume_restores_model_and_optimizer(tmp_path):
    model = TinyModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model([{"x": torch.ones(4), "y": torch.tensor(1.0)}])["loss_mse"].backward()
    optimizer.step()
    ModelCheckpointer(model, str(tmp_path), optimizer=optimizer).save("model_0000000", iteration=0)

    fresh = TinyModel()
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.5)
    extra = ModelCheckpointer(fresh, str(tmp_path), optimizer=fresh_optimizer).resume_or_load("", resume=True)
    assert extra["iteration"] == 0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh_optimizer.param_groups[0]["lr"] == 0.1
    state, fresh_state = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert all(torch.equal(state[k]["exp_avg"], fresh_state[k]["exp_avg"]) for k in state)


def test_weights_shape_mismatch_is_an_error_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(engine.checkpoint, "convert_to_model_state_dict", lambda state, model: (dict(state), {}))
    state = TinyModel().state_dict()
    state["head.weight"] = torch.zeros(3, 8)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"(?s)weights.pth.*head.weight: checkpoint \(3, 8\) vs model \(1, 8\)"):
        ModelCheckpointer(TinyModel()).resume_or_load(str(path), resume=False)


def test_foreign_weights_go_through_the_converter_and_its_report_is_logged(tmp_path, monkeypatch, caplog):
    source = TinyModel()
    path = tmp_path / "released.pth"
    torch.save({"model": {f"detr.{k}": v for k, v in source.state_dict().items()}}, path)
    calls = []

    def convert(state_dict, model):
        calls.append(model)
        return {k[len("detr."):]: v for k, v in state_dict.items()}, {"renamed": len(state_dict), "missing": []}

    monkeypatch.setattr(engine.checkpoint, "convert_to_model_state_dict", convert)
    target = TinyModel()
    with caplog.at_level(logging.INFO):
        ModelCheckpointer(target).resume_or_load(str(path), resume=False)
    assert calls == [target]
    assert torch.equal(target.head.weight, source.head.weight)
    assert "'renamed': 7" in caplog.text


def test_converter_errors_name_the_weights_file(tmp_path, monkeypatch):
    def convert(state_dict, model):
        raise ValueError("shape mismatch: head.weight (3, 8) vs (1, 8)")

    monkeypatch.setattr(engine.checkpoint, "convert_to_model_state_dict", convert)
    torch.save(TinyModel().state_dict(), tmp_path / "released.pth")
    with pytest.raises(ValueError, match=r"released.pth: shape mismatch: head.weight"):
        ModelCheckpointer(TinyModel()).resume_or_load(str(tmp_path / "released.pth"), resume=False)


def test_own_checkpoints_are_not_converted(tmp_path, monkeypatch):
    ModelCheckpointer(TinyModel(), str(tmp_path)).save("model_final")
    monkeypatch.setattr(engine.checkpoint, "convert_to_model_state_dict", lambda *a: pytest.fail("converter called"))
    ModelCheckpointer(TinyModel()).resume_or_load(str(tmp_path / "model_final.pth"), resume=False)


def test_missing_weights_file_and_pickled_objects_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        ModelCheckpointer(TinyModel()).resume_or_load(str(tmp_path / "nowhere.pth"), resume=False)
    path = tmp_path / "pickled.pth"
    torch.save({"model": TinyModel().state_dict(), "extra": logging.getLogger("x")}, path)
    with pytest.raises(ValueError, match="pickled.pth.*weights_only=True"):
        ModelCheckpointer(TinyModel()).resume_or_load(str(path), resume=False)


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = capture_rng_state()
    first = (random.random(), float(np.random.rand()), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == first
