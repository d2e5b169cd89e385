"""Untrusted files: a checkpoint, weights file or predictions file whose pickle would run code when loaded (a
malicious ``__reduce__``) is refused by every loader (they use ``torch.load(weights_only=True)``), through the
commands a user runs, and the code never runs."""
import os

import pytest
import torch

import train_iterative_model
from evaluation.predictions_file import FORMAT, MODE
from tests.reliability_helpers import TINY_CONFIG, make_world
from tools import convert_weights, evaluate_predictions


class _MakesADirectoryWhenUnpickled:
    """Unpickling this object calls ``os.mkdir(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(str(tmp_path_factory.mktemp("world")))


def _malicious(tmp_path, name, payload_around):
    """``tmp_path/name`` holding ``payload_around(exploit)``; returns (path, marker the exploit would create)."""
    marker = str(tmp_path / f"{name}.code-ran")
    path = str(tmp_path / name)
    torch.save(payload_around(_MakesADirectoryWhenUnpickled(marker)), path)
    return path, marker


def test_the_exploit_runs_code_when_loaded_without_weights_only(tmp_path):
    """Control: the file really is malicious, so the refusals below mean something."""
    path, marker = _malicious(tmp_path, "control.pth", lambda exploit: {"model": {}, "extra": exploit})
    torch.load(path, weights_only=False)
    assert os.path.isdir(marker)


def _refused(capsys, returncode, path, marker):
    err = capsys.readouterr().err
    assert returncode == 2, err
    assert path in err and "weights_only" in err, err
    assert not os.path.exists(marker)


def test_checkpoint_loader_refuses_it(world, tmp_path, capsys):
    path, marker = _malicious(tmp_path, "evil.pth",
                              lambda exploit: {"model": {"query_embed.weight": torch.zeros(30, 64)}, "x": exploit})
    argv = ["--eval-only", "--config-file", TINY_CONFIG, *world, "OUTPUT_DIR", str(tmp_path / "out"),
            "MODEL.WEIGHTS", path, "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]
    _refused(capsys, train_iterative_model.command_line(argv), path, marker)


def test_weight_conversion_loader_refuses_it(world, tmp_path, capsys):
    path, marker = _malicious(tmp_path, "evil_detr.pth", lambda exploit: {"model": {"w": torch.zeros(1)}, "x": exploit})
    argv = ["--input", path, "--output", str(tmp_path / "converted.pth"), "--config-file", TINY_CONFIG, *world]
    _refused(capsys, convert_weights.main(argv), path, marker)
    assert not os.path.exists(tmp_path / "converted.pth")


def test_predictions_loader_refuses_it(world, tmp_path, capsys):
    path, marker = _malicious(tmp_path, "evil_predictions.pt",
                              lambda exploit: {"format": FORMAT, "mode": MODE, "images": [exploit]})
    argv = ["--predictions", path, "--config-file", TINY_CONFIG, *world]
    _refused(capsys, evaluate_predictions.main(argv), path, marker)
