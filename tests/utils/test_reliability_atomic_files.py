"""Atomic outputs, file by file: written files get the umask's permissions (``mkstemp`` alone gives 0600, which
hides checkpoints from the rest of a cluster group), the converted-weights file is renamed into place, and the
clean-up of temporary files left by a killed run removes only those.  (The training outputs are traced through a
real run in tests/engine/test_reliability_resume.py.)"""
import os

import pytest
import torch

from utils.file_io import atomic_write, atomic_write_bytes, atomic_write_text, remove_stale_temp_files
from tests.reliability_helpers import TINY_CONFIG, make_world
from tools import convert_weights


@pytest.fixture
def restore_umask():
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)],
                         ids=["umask-022", "umask-027", "umask-002", "umask-077"])
def test_written_files_follow_the_umask(tmp_path, restore_umask, mask, expected):
    os.umask(mask)
    atomic_write_text(str(tmp_path / "last_checkpoint"), "model_final.pth")
    atomic_write(str(tmp_path / "model_final.pth"), lambda f: torch.save({"w": torch.zeros(2)}, f))
    for name in ("last_checkpoint", "model_final.pth"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected, name


def test_durable_writes_fsync_file_and_folder_and_bulk_writes_do_not(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write_bytes(str(tmp_path / "a.jpg"), b"durable")
    assert len(synced) == 2  # the file, then its folder
    atomic_write_bytes(str(tmp_path / "b.jpg"), b"bulk", durable=False)
    assert len(synced) == 2
    assert (tmp_path / "a.jpg").read_bytes() == b"durable" and (tmp_path / "b.jpg").read_bytes() == b"bulk"
    assert sorted(os.listdir(tmp_path)) == ["a.jpg", "b.jpg"]  # no temporary file left behind


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "inference").mkdir()
    stale = [tmp_path / ".model_0000003.pth.k2j_9xq1.tmp", tmp_path / ".last_checkpoint.a1b2c3d4.tmp"]
    kept = [tmp_path / "model_0000001.pth", tmp_path / "notes.tmp", tmp_path / ".hidden.tmp",
            tmp_path / "events.out.tfevents.1.host", tmp_path / "inference" / ".sgg_eval.json.a1b2c3d4.tmp"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert remove_stale_temp_files(str(tmp_path)) == sorted(map(str, stale))
    assert all(path.exists() for path in kept) and not any(path.exists() for path in stale)  # not below it


def test_converted_weights_are_renamed_into_place(tmp_path, monkeypatch, capsys):
    world = make_world(str(tmp_path / "world"))
    import modeling
    from configs.defaults import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(world)
    source = tmp_path / "released.pth"
    torch.save({"model": modeling.build_model(cfg).state_dict()}, source)
    renames = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((src, dst)), replace(src, dst))[1])
    output = tmp_path / "out" / "converted.pth"
    assert convert_weights.main(["--input", str(source), "--output", str(output), "--config-file", TINY_CONFIG,
                                 *world]) == 0
    assert [dst for _, dst in renames] == [str(output)]
    temporary = os.path.basename(renames[0][0])
    assert os.path.dirname(renames[0][0]) == str(output.parent) and temporary.startswith(".converted.pth.")
    assert os.listdir(output.parent) == ["converted.pth"]
    converted, original = (torch.load(path, weights_only=True)["model"] for path in (output, source))
    assert converted.keys() == original.keys()
