"""Start one training process per device, on one or several machines, or join a ``torchrun`` job.

``launch(main, num_gpus_per_machine, ...)`` is detectron2's entry point: with one process in total it calls
``main`` directly; otherwise it spawns ``num_gpus_per_machine`` processes with ``torch.multiprocessing``, each of
which joins the process group (NCCL on GPUs, gloo on CPUs) and calls ``main(*args)``.  When the environment
already describes a process group (``torchrun`` exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) the
current process joins it through ``env://`` instead of spawning.

The process group gets a finite timeout, so when one process dies the others fail at their next collective
instead of waiting forever (``torch.multiprocessing`` also stops the siblings of a process that raised).
"""
import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils import comm

__all__ = ["launch", "LaunchError", "DEFAULT_TIMEOUT", "find_free_port", "launched_by_torchrun"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class LaunchError(RuntimeError):
    """The job cannot start as asked (more processes than GPUs, no GPU): the user changes the command."""


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

    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, device_type, timeout),
        daemon=False,
        start_method="spawn",
    )
    return None


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
) -> None:
    comm.set_local_process_info(local_rank, num_gpus_per_machine)
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    _init_process_group(device_type, dist_url, world_size, global_rank, timeout)
    try:
        comm.synchronize()
        main_func(*args)
    finally:
        dist.destroy_process_group()


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
    finally:
        dist.destroy_process_group()
