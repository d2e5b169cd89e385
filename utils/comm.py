"""Process-group helpers: rank, world size, barrier and object gathering.

Every function degrades to the single-process answer when ``torch.distributed`` is not initialised, so the same
code runs in a plain ``python`` process, under :func:`engine.launch.launch` and under ``torchrun``.
"""
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

# Set by engine.launch (from its own arguments, or from torchrun's LOCAL_RANK / LOCAL_WORLD_SIZE).
_LOCAL_RANK: int = 0
_LOCAL_WORLD_SIZE: int = 1


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def set_local_process_info(local_rank: int, local_world_size: int) -> None:
    """Record this process's index among the processes of its machine (called by the launcher)."""
    global _LOCAL_RANK, _LOCAL_WORLD_SIZE
    _LOCAL_RANK, _LOCAL_WORLD_SIZE = int(local_rank), int(local_world_size)


def get_local_rank() -> int:
    """Index of this process on its machine; it is also the index of the GPU the process drives."""
    return _LOCAL_RANK


def get_local_world_size() -> int:
    """Number of processes on this machine."""
    return _LOCAL_WORLD_SIZE


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier over all processes (no-op in a single process)."""
    if get_world_size() > 1:
        if dist.get_backend() == dist.Backend.NCCL:
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather(obj: Any) -> List[Any]:
    """Every process's picklable ``obj``, as a list indexed by rank, on every process."""
    if get_world_size() == 1:
        return [obj]
    gathered: List[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every process."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Mean over processes of a dict of scalar tensors, as Python floats: one collective and one device sync.

    Every process must pass the same keys.
    """
    if not values:
        return {}
    names = sorted(values)
    stacked = torch.stack([values[name].detach().float().reshape(()) for name in names])
    if get_world_size() > 1:
        dist.all_reduce(stacked)
        stacked /= get_world_size()
    return dict(zip(names, stacked.tolist()))


def gather(obj: Any, dst: int = 0) -> Optional[List[Any]]:
    """Every process's picklable ``obj`` as a list indexed by rank on process ``dst``; ``None`` on the others
    (``[obj]`` in a single process)."""
    if get_world_size() == 1:
        return [obj]
    gathered: Optional[List[Any]] = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


def average_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all processes (a new tensor; ``tensor`` itself in a single process).

    Used for loss normalisers (e.g. the number of target boxes), so that every process divides by the same number.
    """
    if get_world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total / get_world_size()
