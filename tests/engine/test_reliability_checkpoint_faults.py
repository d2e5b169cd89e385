"""Checkpoint faults of a long run, on the stand-in trainer: --resume over a truncated newest checkpoint (falls back
to the previous one and ends with the weights of a run resumed from it), nothing readable (one error), a disk that
fills up mid-save (one message naming the file, the errno text and the size; nothing left behind), the free-space
warning at start-up, and SOLVER.CHECKPOINT_MAX_TO_KEEP pruning (the files on disk after each save)."""
import errno
import io
import logging
import os
import shutil
from collections import namedtuple

import pytest
import torch

import utils.file_io
from engine.checkpoint import ModelCheckpointer
from engine.defaults import USER_ERRORS, run_command_line
from engine.hooks import PeriodicCheckpointer
from engine.train_loop import HookBase
from tests.engine_standins import StandInTrainer, TinyModel, tiny_cfg, train_stand_in
from utils.file_io import StorageWriteError, atomic_write_bytes

torch.set_num_threads(1)

# TinyModel's state: backbone 4x8 + 8, head 8 + 1, unused 1 + 1 float32 (51 x 4 B) and the int64 step counter.
TINY_MODEL_BYTES = 51 * 4 + 8
TRUNCATION = "is corrupt or truncated (its zip directory is missing)"


def _truncate(path) -> None:
    with open(path, "rb") as f:
        payload = f.read()
    with open(path, "wb") as f:
        f.write(payload[: len(payload) // 2])


def _pth_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".pth"))


@pytest.fixture(scope="module")
def six_iterations(tmp_path_factory):
    """A finished 6-iteration stand-in run (checkpoints after iterations 1, 3, 5 and model_final)."""
    out = str(tmp_path_factory.mktemp("run") / "out")
    train_stand_in(tiny_cfg(out))
    assert _pth_files(out) == ["best_model_final.pth", "model_0000001.pth", "model_0000003.pth",
                               "model_0000005.pth", "model_final.pth"]
    return out


def _killed_after(source, tmp_path, name, iteration):
    """A copy of the finished run as if it had been killed right after saving ``model_<iteration>.pth``."""
    out = str(tmp_path / name)
    shutil.copytree(source, out)
    for stale in [f"model_{i:07d}.pth" for i in range(iteration + 1, 6)] + ["model_final.pth"]:
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write(f"model_{iteration:07d}.pth")
    return out


def test_resume_over_a_truncated_checkpoint_continues_from_the_previous_one(six_iterations, tmp_path, caplog):
    truncated = _killed_after(six_iterations, tmp_path, "truncated", 5)
    _truncate(os.path.join(truncated, "model_0000005.pth"))
    reference = _killed_after(six_iterations, tmp_path, "reference", 3)  # a run resumed from model_0000003

    with caplog.at_level(logging.WARNING):
        trainer = StandInTrainer(tiny_cfg(truncated))
        trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4 and trainer.checkpointer.resumed_from == os.path.join(truncated,
                                                                                         "model_0000003.pth")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert f"checkpoint {truncated}/model_0000005.pth {TRUNCATION}" in warnings, warnings
    assert any("Resuming from" in w and "model_0000003.pth (iteration 3)" in w for w in warnings), warnings
    trainer.train()
    train_stand_in(tiny_cfg(reference), resume=True)

    ours = torch.load(os.path.join(truncated, "model_final.pth"), weights_only=True)
    theirs = torch.load(os.path.join(reference, "model_final.pth"), weights_only=True)
    assert ours["iteration"] == theirs["iteration"] == 5
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key
    assert torch.load(os.path.join(truncated, "model_0000005.pth"), weights_only=True)["iteration"] == 5  # rewritten


def test_eval_only_falls_back_the_same_way_and_nothing_readable_is_an_error(six_iterations, tmp_path):
    out = _killed_after(six_iterations, tmp_path, "out", 5)
    _truncate(os.path.join(out, "model_0000005.pth"))
    checkpointer = ModelCheckpointer(TinyModel(), out, save_to_disk=False)  # what --eval-only --resume builds
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 3
    assert checkpointer.resumed_from == os.path.join(out, "model_0000003.pth")

    for name in ("model_0000001.pth", "model_0000003.pth"):
        _truncate(os.path.join(out, name))
    with pytest.raises(ValueError) as raised:
        ModelCheckpointer(TinyModel(), out, save_to_disk=False).resume_or_load("", resume=True)
    message = str(raised.value)
    assert message.startswith(f"--resume: no readable checkpoint in {out}: checkpoint {out}/model_0000005.pth is "
                              "corrupt or truncated"), message
    for name in ("model_0000001.pth", "model_0000003.pth"):
        assert f"{out}/{name} is corrupt or truncated" in message
    assert "best_model_final.pth" not in message  # the best model is not a point to resume from


def test_a_lost_last_checkpoint_resumes_from_the_newest_checkpoint(six_iterations, tmp_path, caplog):
    out = _killed_after(six_iterations, tmp_path, "out", 3)
    os.remove(os.path.join(out, "last_checkpoint"))
    with caplog.at_level(logging.WARNING):
        trainer = StandInTrainer(tiny_cfg(out))
        trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4
    assert "last_checkpoint is missing" in caplog.text


def _full_disk_open(fail_for: str, after_bytes: int):
    """``open`` for utils.file_io whose files for ``fail_for`` raise ENOSPC once ``after_bytes`` are written."""

    class FullDisk(io.FileIO):
        written = 0

        def write(self, data):
            if self.written + len(data) > after_bytes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return super().write(data)

    def fake_open(path, mode="r", *args, **kwargs):
        if mode == "wb" and os.path.basename(path).startswith(f".{fail_for}."):
            return FullDisk(path, "wb")
        return open(path, mode, *args, **kwargs)

    return fake_open


def test_a_full_disk_mid_save_is_one_message_and_leaves_nothing_behind(tmp_path, monkeypatch):
    checkpointer = ModelCheckpointer(TinyModel(), str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()
    monkeypatch.setattr(utils.file_io, "open", _full_disk_open("model_0000003.pth", 100), raising=False)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(utils.file_io.shutil, "disk_usage", lambda path: Usage(10 ** 9, 10 ** 9 - 100, 100))

    with pytest.raises(StorageWriteError) as raised:  # torch.save reports "unexpected pos"; the errno is found
        checkpointer.save("model_0000003", iteration=3)
    assert str(raised.value) == (
        f"cannot save checkpoint {tmp_path}/model_0000003.pth: No space left on device (ENOSPC); it needs about "
        f"{TINY_MODEL_BYTES} B, 100 B are free in {tmp_path}. The partial file was removed and last_checkpoint "
        "still names model_0000001.pth; free space (or lower SOLVER.CHECKPOINT_MAX_TO_KEEP) and rerun with --resume")
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, USER_ERRORS)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temporary file
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == before


@pytest.mark.parametrize("code, text", [(errno.EDQUOT, "Disk quota exceeded (EDQUOT)"),
                                        (errno.EIO, "Input/output error (EIO)")])
def test_quota_and_io_errors_name_the_file_and_the_reason(tmp_path, monkeypatch, code, text):
    def write_then_fail(f):
        f.write(b"x" * 1500)
        raise OSError(code, os.strerror(code))

    with pytest.raises(StorageWriteError) as raised:
        utils.file_io.atomic_write(str(tmp_path / "sgg_eval.json"), write_then_fail)
    assert str(raised.value) == (f"cannot write {tmp_path}/sgg_eval.json: {text} after 1.5 kB were written; "
                                 f"{tmp_path}/sgg_eval.json was left as it was and the partial file was removed")
    assert os.listdir(tmp_path) == []
    atomic_write_bytes(str(tmp_path / "ok.bin"), b"1")  # a plain failure of the data is not a storage error
    with pytest.raises(TypeError):
        utils.file_io.atomic_write(str(tmp_path / "ok.bin"), lambda f: f.write("not bytes"))
    assert os.listdir(tmp_path) == ["ok.bin"]


def test_the_training_command_reports_a_full_disk_as_one_error_line(tmp_path, monkeypatch, capsys, caplog):
    """The save after iteration 3 finds the disk full: the run stops with one ``error:`` line (exit status 2), the
    log says why without a traceback, and the checkpoint of iteration 1 is what --resume will use."""
    out = str(tmp_path / "out")
    monkeypatch.setattr(utils.file_io, "open", _full_disk_open("model_0000003.pth", 100), raising=False)
    with caplog.at_level(logging.ERROR):
        status = run_command_line(train_stand_in, tiny_cfg(out, "TEST.EVAL_PERIOD", 0))
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("Exception during training at iteration 3: cannot save checkpoint ")
    assert record.exc_info is None and "Traceback" not in caplog.text
    err = capsys.readouterr().err
    assert status == 2
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    # model 212 B + AdamW's two moments 408 B and six 4-byte step counters + the RNG states (torch 5056 B,
    # numpy's 624 keys as int64 4992 B) = 10692 B
    assert lines[0].startswith(f"error: cannot save checkpoint {out}/model_0000003.pth: No space left on device "
                               f"(ENOSPC); it needs about 10.7 kB, "), lines
    assert _pth_files(out) == ["model_0000001.pth"]
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read() == "model_0000001.pth"


def test_start_up_warns_when_the_disk_cannot_hold_the_kept_checkpoints(tmp_path, monkeypatch, caplog):
    trainer = StandInTrainer(tiny_cfg(str(tmp_path), "SOLVER.CHECKPOINT_MAX_TO_KEEP", 3))
    hook = next(h for h in trainer._hooks if isinstance(h, PeriodicCheckpointer))
    Usage = namedtuple("Usage", "total used free")
    # Before the first step AdamW holds no state: 2 x the 204 B of trainable parameters are counted for it.
    estimate = TINY_MODEL_BYTES + 2 * 51 * 4
    assert trainer.checkpointer.estimate_checkpoint_bytes() == estimate == 620
    monkeypatch.setattr(utils.file_io.shutil, "disk_usage", lambda path: Usage(10 ** 9, 0, 5 * estimate))
    assert hook.check_free_space() is None  # 620 B x (3 + 2) fit exactly
    monkeypatch.setattr(utils.file_io.shutil, "disk_usage", lambda path: Usage(10 ** 9, 0, 3000))
    with caplog.at_level(logging.WARNING):
        trainer.resume_or_load(resume=False)
        trainer.train()
    assert (f"Only 3.0 kB free in OUTPUT_DIR {tmp_path}, but this run's checkpoints need about 3.1 kB: 620 B each x "
            "(SOLVER.CHECKPOINT_MAX_TO_KEEP 3 + 2 for model_final.pth/best_model_final.pth and the file being "
            "written)") in caplog.text


class _RecordCheckpointFiles(HookBase):
    """Registered after the checkpointer: the .pth files on disk after each iteration that saved one."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir, self.after_save = output_dir, []

    def after_step(self) -> None:
        files = _pth_files(self.output_dir)
        if not self.after_save or files != self.after_save[-1]:
            self.after_save.append(files)


@pytest.mark.parametrize("max_to_keep, expected", [
    (1, [["model_0000000.pth"],
         ["best_model_final.pth", "model_0000001.pth"],
         ["best_model_final.pth", "model_0000002.pth"],
         ["best_model_final.pth", "model_0000003.pth", "model_final.pth"]]),
    (2, [["model_0000000.pth"],
         ["best_model_final.pth", "model_0000000.pth", "model_0000001.pth"],
         ["best_model_final.pth", "model_0000001.pth", "model_0000002.pth"],
         ["best_model_final.pth", "model_0000002.pth", "model_0000003.pth", "model_final.pth"]]),
    (0, [["model_0000000.pth"],
         ["best_model_final.pth", "model_0000000.pth", "model_0000001.pth"],
         ["best_model_final.pth", "model_0000000.pth", "model_0000001.pth", "model_0000002.pth"],
         ["best_model_final.pth", "model_0000000.pth", "model_0000001.pth", "model_0000002.pth",
          "model_0000003.pth", "model_final.pth"]]),
])
def test_checkpoint_max_to_keep_prunes_the_oldest_periodic_checkpoints(tmp_path, max_to_keep, expected):
    out = str(tmp_path)
    cfg = tiny_cfg(out, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 1, "SOLVER.CHECKPOINT_MAX_TO_KEEP",
                   max_to_keep)  # evaluation (and the first best model) after iterations 1 and 3
    trainer = StandInTrainer(cfg)
    recorder = _RecordCheckpointFiles(out)
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert recorder.after_save == expected
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read() == "model_final.pth"


def test_pruning_spares_checkpoints_newer_than_the_one_just_saved(tmp_path):
    """After a resume from iteration 3, model_0000009.pth of the abandoned run is overwritten later, not pruned."""
    checkpointer = ModelCheckpointer(TinyModel(), str(tmp_path))
    for iteration in (1, 3, 5, 9):
        (tmp_path / f"model_{iteration:07d}.pth").write_bytes(b"")
    (tmp_path / "model_final.pth").write_bytes(b"")
    deleted = checkpointer.prune(1, 5)
    assert [os.path.basename(path) for path in deleted] == ["model_0000001.pth", "model_0000003.pth"]
    assert _pth_files(tmp_path) == ["model_0000005.pth", "model_0000009.pth", "model_final.pth"]
    with pytest.raises(ValueError, match="SOLVER.CHECKPOINT_MAX_TO_KEEP must be >= 0"):
        StandInTrainer(tiny_cfg(str(tmp_path / "bad"), "SOLVER.CHECKPOINT_MAX_TO_KEEP", -1))
