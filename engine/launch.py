"""Start one training process per device, on one or several machines, or join a ``torchrun`` job.

``launch(main, num_gpus_per_machine, ...)`` is detectron2's entry point: with one process in total it calls
``main`` directly; otherwise it spawns ``num_gpus_per_machine`` processes with ``torch.multiprocessing``, each of
which joins the process group (NCCL on GPUs, gloo on CPUs) and calls ``main(*args)``.  When the environment
already describes a process group (``torchrun`` exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) the
current process joins it through ``env://`` instead of spawning.

The process group gets a finite timeout, so when one process dies the others fail at their next collective
instead of waiting forever (``torch.multiprocessing`` also stops the siblings of a process that raised).

A user error (one of :data:`USER_ERRORS`: bad data, config or file) raised in a spawned process is not
``torch.multiprocessing``'s "Process N terminated with the following error: Traceback ...": the process writes its
message to a report file and exits with status 2; ``launch`` then raises :class:`RankError` with that message and
the rank ("rank 1 of 2: ..."), which ``engine.defaults.run_command_line`` prints as one ``error:`` line.  Any
other exception is a bug and keeps torch's traceback.  Under ``torchrun`` every process raises its own
:class:`RankError`.
"""
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from datetime import timedelta
from typing import Any, Callable, Dict, List, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch.multiprocessing.spawn import ProcessException

from utils import comm
from utils.file_io import StorageWriteError, atomic_write_text

__all__ = ["launch", "LaunchError", "RankError", "USER_ERRORS", "DEFAULT_TIMEOUT", "find_free_port",
           "launched_by_torchrun", "user_error_message"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# The exit status of a spawned process that stopped on a user error (argparse's status for bad usage).
USER_ERROR_EXIT_STATUS = 2


class LaunchError(RuntimeError):
    """The job cannot start as asked (more processes than GPUs, no GPU): the user changes the command."""


class RankError(RuntimeError):
    """A user error raised in process ``rank`` of a multi-process job; the message is that process's, after
    ``rank R of N:``."""


# Errors the user fixes by changing the command, the config or the input files (the project raises them with a
# message naming the file or config key), or by freeing disk space (StorageWriteError).  Any other exception is a
# bug and keeps its traceback.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               LaunchError, RankError, StorageWriteError, yaml.YAMLError)


def user_error_message(error: BaseException) -> str:
    """The text a user error prints after ``error:`` (a ``KeyError``'s own message, not its quoted repr)."""
    return str(error.args[0] if isinstance(error, KeyError) and error.args else error)


def find_free_port() -> int:
    """A TCP port that is free on this machine right now (for single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (or any ``env://`` launcher) started this process."""
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: Sequence[Any] = (),
    device: str = "cuda",
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> Any:
    """Run ``main_func(*args)`` in every process of the job; returns its result in a single-process run.

    Args:
        num_gpus_per_machine: processes per machine (one per GPU; on CPU, the number of gloo processes).
        num_machines, machine_rank: multi-node layout; every machine runs the same command with its own rank.
        dist_url: rendezvous address, e.g. "tcp://10.0.0.1:29500"; "auto" picks a free local port (one machine
            only); "env://" reads MASTER_ADDR/MASTER_PORT.
        device: "cuda" (NCCL, one GPU per process) or "cpu" (gloo).
        timeout: process-group timeout; a process whose peers stop answering fails after this long.
    """
    device_type = _device_type(device)
    if launched_by_torchrun():
        if num_gpus_per_machine not in (1, int(os.environ.get("LOCAL_WORLD_SIZE", num_gpus_per_machine))):
            logger.warning("Running under torchrun: --num-gpus %d is ignored (torchrun started %s processes here)",
                           num_gpus_per_machine, os.environ.get("LOCAL_WORLD_SIZE", "?"))
        return _run_in_torchrun_process(main_func, args, device_type, timeout)

    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(f"--num-gpus and --num-machines must be >= 1, got {num_gpus_per_machine}, {num_machines}")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank must be in [0, {num_machines}), got {machine_rank}")
    if device_type == "cuda":
        available = torch.cuda.device_count()
        if num_gpus_per_machine > available:
            raise LaunchError(
                f"--num-gpus {num_gpus_per_machine} asks for more GPUs than this machine has ({available}); "
                "lower --num-gpus, or set MODEL.DEVICE cpu to run that many CPU processes"
            )

    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)

    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError('--dist-url "auto" works on one machine only; give tcp://<host of rank 0>:<port>')
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("tcp://127.0.0.1"):
        logger.warning("--dist-url %s is a loopback address: other machines cannot reach it", dist_url)

    report_dir = tempfile.mkdtemp(prefix="launch-errors-")
    try:
        context = mp.start_processes(
            _distributed_worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, device_type, timeout,
                  report_dir),
            daemon=False,
            start_method="spawn",
            join=False,
        )
        quiet = _QuietAfterUserError(report_dir)
        spawn_logger = logging.getLogger(ProcessException.__module__)
        spawn_logger.addFilter(quiet)
        try:
            while not context.join():
                pass
        except ProcessException:
            reports = _read_reports(report_dir)
            if not reports:
                raise  # a bug or a killed process: torch's message (with the traceback) says which
            raise RankError(_rank_error_message(reports, world_size)) from None
        finally:
            spawn_logger.removeFilter(quiet)
    finally:
        shutil.rmtree(report_dir, ignore_errors=True)
    return None


class _QuietAfterUserError(logging.Filter):
    """Drops torch's "Terminating process N via signal SIGTERM" (the peers of a process that stopped on a user
    error are stopped as a matter of course; the user error is the report)."""

    def __init__(self, report_dir: str) -> None:
        super().__init__()
        self.report_dir = report_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Terminating process") and os.path.isdir(self.report_dir)
                    and any(name.endswith(".json") for name in os.listdir(self.report_dir)))


def _report_user_error(report_dir: str, rank: int, error: BaseException) -> None:
    atomic_write_text(os.path.join(report_dir, f"rank{rank}.json"),
                      json.dumps({"rank": rank, "type": type(error).__name__, "message": user_error_message(error)}))


def _read_reports(report_dir: str) -> List[Dict[str, Any]]:
    reports = []
    for name in sorted(os.listdir(report_dir)) if os.path.isdir(report_dir) else []:
        if name.startswith("rank") and name.endswith(".json"):
            try:
                with open(os.path.join(report_dir, name)) as f:
                    reports.append(json.load(f))
            except (OSError, ValueError):
                continue
    return sorted(reports, key=lambda report: report["rank"])


def _rank_error_message(reports: List[Dict[str, Any]], world_size: int) -> str:
    """``rank 0 of 2: <message>`` for the lowest rank that reported; ranks with the same message are listed."""
    message = reports[0]["message"]
    ranks = [str(report["rank"]) for report in reports if report["message"] == message]
    return f"{'ranks ' + ', '.join(ranks) if len(ranks) > 1 else 'rank ' + ranks[0]} of {world_size}: {message}"


def _device_type(device: str) -> str:
    device_type = str(device).split(":")[0]
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f'MODEL.DEVICE must be "cuda" or "cpu", got {device!r}')
    if device_type == "cuda" and not torch.cuda.is_available():
        raise LaunchError('MODEL.DEVICE is "cuda" but no GPU is available; set MODEL.DEVICE cpu')
    return device_type


def _init_process_group(device_type: str, init_method: str, world_size: int, rank: int, timeout: timedelta) -> None:
    backend = "nccl" if device_type == "cuda" else "gloo"
    try:
        dist.init_process_group(
            backend=backend, init_method=init_method, world_size=world_size, rank=rank, timeout=timeout
        )
    except Exception as error:
        raise RuntimeError(
            f"Process group initialisation failed (backend {backend}, url {init_method}): {error}"
        ) from error


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
    device_type: str,
    timeout: timedelta,
    report_dir: str,
) -> None:
    comm.set_local_process_info(local_rank, num_gpus_per_machine)
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    _init_process_group(device_type, dist_url, world_size, global_rank, timeout)
    user_error = False
    try:
        comm.synchronize()
        main_func(*args)
    except USER_ERRORS as error:
        _report_user_error(report_dir, global_rank, error)  # for the parent, before the peers notice
        user_error = True
    finally:
        dist.destroy_process_group()
    if user_error:
        sys.stdout.flush()
        sys.exit(USER_ERROR_EXIT_STATUS)  # SystemExit: torch.multiprocessing records no traceback


def _run_in_torchrun_process(
    main_func: Callable[..., Any], args: Sequence[Any], device_type: str, timeout: timedelta
) -> Any:
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    comm.set_local_process_info(local_rank, local_world_size)
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise LaunchError(
                f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "lower torchrun --nproc-per-node"
            )
        torch.cuda.set_device(local_rank)
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if world_size == 1:
        return main_func(*args)
    _init_process_group(device_type, "env://", world_size, rank, timeout)
    try:
        comm.synchronize()
        return main_func(*args)
    except USER_ERRORS as error:
        raise RankError(f"rank {rank} of {world_size}: {user_error_message(error)}") from error
    finally:
        dist.destroy_process_group()
