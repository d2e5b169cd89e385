"""engine.launch: a 2-process gloo DDP run on CPU, a failing rank, torchrun environments and argument errors."""
import os
import time
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp

from utils import comm
from engine.defaults import default_setup, run_command_line
from engine.launch import USER_ERRORS, RankError, _rank_error_message, find_free_port, launch
from tests.engine_standins import StandInTrainer, tiny_cfg


def _ddp_training_worker(output_dir: str) -> None:
    torch.set_num_threads(1)
    cfg = default_setup(tiny_cfg(output_dir, "TEST.EVAL_PERIOD", 0, "SOLVER.MAX_ITER", 3, "DETERMINISTIC", False,
                                 "MODEL.DDP_FIND_UNUSED_PARAMETERS", True))  # TinyModel.unused gets no gradient
    trainer = StandInTrainer(cfg)
    initial = {k: v.clone() for k, v in trainer.checkpointer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    torch.save(
        {"world_size": comm.get_world_size(), "initial": initial, "final": trainer.checkpointer.model.state_dict()},
        os.path.join(output_dir, f"rank{comm.get_rank()}.pt"),
    )


def test_two_process_gloo_ddp_keeps_parameters_identical(tmp_path):
    dist_url = f"tcp://127.0.0.1:{find_free_port()}"  # an explicit --dist-url (the failure test below uses "auto")
    launch(_ddp_training_worker, 2, dist_url=dist_url, args=(str(tmp_path),), device="cpu")
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    for key, value in rank0["final"].items():
        assert torch.equal(value, rank1["final"][key]), key
    assert not torch.equal(rank0["final"]["head.weight"], rank0["initial"]["head.weight"])  # it trained
    assert (tmp_path / "model_final.pth").exists() and (tmp_path / "log.txt.rank1").exists()
    assert (tmp_path / "config.yaml").exists()


def _rank_one_fails(error_type=RuntimeError) -> None:
    if comm.get_rank() == 1:
        raise error_type("rank 1 failed on purpose")
    comm.synchronize()  # rank 0 waits for a peer that is gone: it must not hang


def test_a_failing_rank_stops_the_job_instead_of_hanging():
    start = time.monotonic()
    # A bug (not a user error) keeps torch's report with the traceback.  Whichever process is reported first
    # (rank 1's own error, or rank 0 losing its peer), the job fails fast.
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 failed on purpose|Connection reset|Connection closed"):
        launch(_rank_one_fails, 2, dist_url="auto", device="cpu", timeout=timedelta(seconds=30))
    assert time.monotonic() - start < 30


def test_a_user_error_in_one_rank_is_one_line_naming_the_rank(capsys):
    """A ValueError in rank 1 (rank 0 meanwhile loses its peer with a gloo error): the job's error is rank 1's
    message after "rank 1 of 2:", printed by run_command_line as one line, exit status 2, no traceback."""
    status = run_command_line(launch, _rank_one_fails, 2, 1, 0, "auto", (ValueError,), "cpu", timedelta(seconds=30))
    err = capsys.readouterr().err
    assert status == 2, err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: rank 1 of 2: rank 1 failed on purpose"], err
    assert "Traceback" not in err and "Terminating process" not in err


def test_ranks_with_the_same_user_error_are_reported_once():
    reports = [{"rank": 0, "message": "VG_train is empty"}, {"rank": 1, "message": "VG_train is empty"},
               {"rank": 3, "message": "other"}]
    assert _rank_error_message(reports, 4) == "ranks 0, 1 of 4: VG_train is empty"
    assert _rank_error_message(reports[2:], 4) == "rank 3 of 4: other"
    assert issubclass(RankError, USER_ERRORS)


def test_torchrun_environment_runs_in_this_process(monkeypatch):
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(name, value)
    assert launch(lambda x: (x, os.getpid(), comm.get_local_rank()), 4, args=(3,), device="cpu") == (3, os.getpid(), 0)


def test_single_process_calls_main_directly():
    assert launch(lambda: os.getpid(), 1, device="cpu") == os.getpid()


def test_more_processes_than_gpus_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match=r"--num-gpus 2 asks for more GPUs than this machine has \(1\)"):
        launch(pytest.fail, 2, device="cuda")


def test_cuda_without_gpu_and_bad_layouts_are_clear_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="MODEL.DEVICE is \"cuda\" but no GPU"):
        launch(pytest.fail, 1, device="cuda")
    with pytest.raises(ValueError, match="MODEL.DEVICE"):
        launch(pytest.fail, 1, device="tpu")
    with pytest.raises(ValueError, match="one machine only"):
        launch(pytest.fail, 1, num_machines=2, device="cpu")
    with pytest.raises(ValueError, match="--machine-rank"):
        launch(pytest.fail, 1, num_machines=2, machine_rank=2, device="cpu", dist_url="tcp://10.0.0.1:1234")
