"""What a user sees when a ``--num-gpus 2`` run (two gloo CPU processes) meets a user error: one ``error:`` line,
exit status 2, no torch.multiprocessing traceback -- whether the mistake is caught once before the processes start
(a training split that the filters empty) or inside both spawned processes (``--eval-only --resume`` over an
OUTPUT_DIR whose only checkpoint is truncated).  Both commands run side by side as real subprocesses."""
import os
import re

import torch

from tests.reliability_helpers import TINY_CONFIG, TrainingProcess, make_world, temp_files


def _the_error(returncode, output):
    """The one ``error: ...`` line of a command that must have failed with exit status 2."""
    assert returncode == 2, output[-3000:]
    assert "Traceback" not in output and "terminated with" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def test_two_process_errors_are_one_line(tmp_path):
    world = make_world(str(tmp_path / "world"))
    common = ["--num-gpus", "2", "--config-file", TINY_CONFIG, *world, "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "1",
              "TEST.EVAL_PERIOD", "0", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
              "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]

    empty_out = str(tmp_path / "empty")
    empty_train = TrainingProcess(common + ["OUTPUT_DIR", empty_out,
                                            "DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES", "1000"],
                                  str(tmp_path / "empty.log"))

    truncated_out = tmp_path / "truncated"
    truncated_out.mkdir()
    torch.save({"iteration": 0, "model": {"w": torch.zeros(1000)}}, truncated_out / "model_0000000.pth")
    payload = (truncated_out / "model_0000000.pth").read_bytes()
    (truncated_out / "model_0000000.pth").write_bytes(payload[: len(payload) // 2])
    (truncated_out / "last_checkpoint").write_text("model_0000000.pth")
    eval_truncated = TrainingProcess(["--eval-only", "--resume"] + common + ["OUTPUT_DIR", str(truncated_out)],
                                     str(tmp_path / "truncated.log"))

    message = _the_error(*empty_train.wait())
    assert message.startswith("error: VG_train is empty after the filters"), message  # before any process starts
    assert "NUMBER_OF_VALIDATION_IMAGES=1000" in message
    assert not os.path.exists(empty_out)

    message = _the_error(*eval_truncated.wait())
    # Each process finds it; whichever reports first, the line names the rank(s) and the file.
    assert re.match(r"error: ranks? (0|1|0, 1) of 2: --resume: no readable checkpoint in ", message), message
    assert f"checkpoint {truncated_out}/model_0000000.pth is corrupt or truncated (its zip directory is missing)" \
        in message
    assert temp_files(str(tmp_path)) == []
