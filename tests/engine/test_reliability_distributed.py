"""Distributed faults without a supervisor: when one rank of a job started by ``torchrun`` (or on another
machine) is SIGKILLed or freezes, the surviving rank exits with an error -- at once when the peer's connection
closes, after the process-group timeout when the peer is frozen -- instead of hanging; and a ``--num-gpus 2``
training job whose second process is SIGKILLed ends with an error.  (tests/engine/test_engine_launch.py covers a rank
that raises under ``launch``.)"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from engine.launch import find_free_port
from tests.reliability_helpers import ROOT, TINY_CONFIG, make_world, run_training, temp_files

# One rank of a 2-process gloo job, joined through the torchrun environment variables; rank 1 SIGKILLs or
# SIGSTOPs itself after the first barrier, rank 0 then waits for it in an all_reduce.
RANK_PROGRAM = """
import os, signal, sys
from datetime import timedelta
import torch
import torch.distributed as dist
from utils import comm
from engine.launch import launch

def main(fault):
    comm.synchronize()
    if comm.get_rank() == 1:
        os.kill(os.getpid(), getattr(signal, fault))
    dist.all_reduce(torch.ones(1))
    print("all_reduce returned")

launch(main, 1, device="cpu", args=(sys.argv[1],), timeout=timedelta(seconds=float(sys.argv[2])))
"""

TIMEOUT_S = 4


def _start_rank(rank, port, fault):
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-c", RANK_PROGRAM, fault, str(TIMEOUT_S)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("fault, survivor_message", [
    ("SIGKILL", r"Connection closed by peer|Connection reset by peer"),
    ("SIGSTOP", r"Timed out waiting \d+ms"),
])
def test_surviving_rank_exits_with_an_error_instead_of_hanging(fault, survivor_message):
    port = find_free_port()
    ranks = [_start_rank(rank, port, fault) for rank in (0, 1)]
    try:
        start = time.monotonic()
        output, _ = ranks[0].communicate(timeout=90)
        elapsed = time.monotonic() - start
        assert ranks[0].returncode not in (0, None), output
        assert "all_reduce returned" not in output
        assert re.search(survivor_message, output), output[-3000:]
        if fault == "SIGSTOP":
            assert elapsed >= TIMEOUT_S - 1  # it waited for the timeout, not less
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()  # SIGKILL also ends a stopped process
            process.communicate()
    assert ranks[1].returncode == -signal.SIGKILL


def test_training_job_stops_when_one_of_its_processes_is_killed(tmp_path):
    """``--num-gpus 2`` on the CPU (gloo DDP, the real model): rank 1 is SIGKILLed mid-iteration; the job ends
    with an error naming the killed process instead of waiting for it, and writes no checkpoint."""
    world = make_world(str(tmp_path / "world"))
    out = str(tmp_path / "out")
    argv = ["--num-gpus", "2", "--config-file", TINY_CONFIG, *world, "OUTPUT_DIR", out, "MODEL.DEVICE", "cpu",
            "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "MODEL.DDP_FIND_UNUSED_PARAMETERS", "True"]
    start = time.monotonic()
    returncode, output = run_training(argv, str(tmp_path / "log.txt"), kill_at="step:0@1")
    assert time.monotonic() - start < 150
    assert returncode not in (0, -signal.SIGKILL), output[-3000:]
    assert re.search(r"process 1 terminated with signal SIGKILL|Connection closed by peer", output), output[-3000:]
    assert not [name for name in os.listdir(out) if name.endswith(".pth")] and temp_files(out) == []
