"""Training metrics: an :class:`EventStorage` that hooks and the training step write scalars into, and the
writers that periodically publish them (console with ETA, ``metrics.json``, TensorBoard)."""
import datetime
import json
import logging
import os
import statistics
from collections import defaultdict, deque
from typing import IO, Deque, Dict, List, Optional, Tuple, Union

import torch

from utils.file_io import atomic_write_text

__all__ = ["EventStorage", "EventWriter", "ConsoleMetricPrinter", "JSONWriter", "TensorboardWriter"]

logger = logging.getLogger(__name__)


class EventStorage:
    """Scalars recorded during training, keyed by name, each value tagged with the iteration it belongs to.

    ``smoothing_hint=True`` asks writers to publish the median over their window (noisy per-step losses);
    ``False`` publishes the latest value (learning rate, evaluation metrics).

    A value may be a scalar tensor on any device: it is kept as it is (recording never waits for the device) and
    all tensors recorded since the last read are copied to the host together, in one go, when a scalar is first
    read (by a writer, every log period).
    """

    def __init__(self, start_iter: int = 0, history_length: int = 1000) -> None:
        self.iter = start_iter
        self._history: Dict[str, Deque[Tuple[float, int]]] = defaultdict(lambda: deque(maxlen=history_length))
        self._smoothing_hints: Dict[str, bool] = {}
        self._unread: List[Tuple[str, torch.Tensor, int]] = []  # tensor values not copied to the host yet

    def put_scalar(self, name: str, value: Union[float, torch.Tensor], smoothing_hint: bool = True,
                   iteration: Optional[int] = None) -> None:
        """Record ``value`` for ``iteration`` (default: the current one); a tensor stays where it is until read."""
        iteration = self.iter if iteration is None else int(iteration)
        if isinstance(value, torch.Tensor):
            self._unread.append((name, value.detach().reshape(()), iteration))
        else:
            self._history[name].append((float(value), iteration))
        self._smoothing_hints.setdefault(name, smoothing_hint)

    def put_scalars(self, smoothing_hint: bool = True, iteration: Optional[int] = None,
                    **values: Union[float, torch.Tensor]) -> None:
        for name, value in values.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint, iteration=iteration)

    def _read_tensors(self) -> None:
        """Copy every unread tensor value to the host (one copy per device) and file it in the history."""
        unread, self._unread = self._unread, []
        by_device: Dict[torch.device, List[Tuple[str, torch.Tensor, int]]] = defaultdict(list)
        for entry in unread:
            by_device[entry[1].device].append(entry)
        for entries in by_device.values():
            values = torch.stack([value.float() for _, value, _ in entries]).tolist()
            for (name, _, iteration), value in zip(entries, values):
                self._history[name].append((value, iteration))

    def has(self, name: str) -> bool:
        self._read_tensors()
        return name in self._history and len(self._history[name]) > 0

    def latest(self, name: str) -> Tuple[float, int]:
        """(value, iteration) of the newest record of ``name``."""
        if not self.has(name):
            raise KeyError(f"No scalar named {name!r} was recorded")
        return self._history[name][-1]

    def median(self, name: str, window: int) -> float:
        self._read_tensors()
        values = [value for value, _ in list(self._history[name])[-window:]]
        return statistics.median(values)

    def latest_with_smoothing(self, window: int) -> Dict[str, Tuple[float, int]]:
        """Every scalar's publishable value and the iteration of its newest record."""
        self._read_tensors()
        result = {}
        for name, records in self._history.items():
            if not records:
                continue
            value, iteration = records[-1]
            if self._smoothing_hints[name]:
                value = self.median(name, window)
            result[name] = (value, iteration)
        return result


class EventWriter:
    """Publishes the contents of an :class:`EventStorage`; ``write`` is called every ``SOLVER.LOG_PERIOD``."""

    def begin(self, start_iter: int) -> None:
        """Called once before the first write, with the iteration training starts (or resumes) at."""

    def write(self, storage: EventStorage) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NewScalarsWriter(EventWriter):
    """Base for writers that publish each (scalar, iteration) once."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._last_written: Dict[str, int] = {}

    def _new_scalars(self, storage: EventStorage) -> Dict[int, Dict[str, float]]:
        by_iteration: Dict[int, Dict[str, float]] = defaultdict(dict)
        for name, (value, iteration) in storage.latest_with_smoothing(self.window).items():
            if iteration > self._last_written.get(name, -1):
                by_iteration[iteration][name] = value
                self._last_written[name] = iteration
        return dict(sorted(by_iteration.items()))


class JSONWriter(_NewScalarsWriter):
    """Appends one JSON object per iteration with new scalars to ``path`` (``OUTPUT_DIR/metrics.json``).

    ``begin(start_iter)`` first drops the lines of iterations >= ``start_iter``: on a resumed run those the
    interrupted run wrote after its last checkpoint (so the file reads as one uninterrupted run), on a fresh run
    (``start_iter`` 0) every line of an earlier run in the same OUTPUT_DIR.
    """

    def __init__(self, path: str, window: int = 20) -> None:
        super().__init__(window)
        self.path = path
        self._file: Optional[IO[str]] = None

    def begin(self, start_iter: int) -> None:
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                lines = f.readlines()
            kept = [line for line in lines if _iteration_of(line) is not None and _iteration_of(line) < start_iter]
            if len(kept) != len(lines):
                atomic_write_text(self.path, "".join(kept))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, storage: EventStorage) -> None:
        if self._file is None:  # used without begin(): append, trimming nothing
            self._file = open(self.path, "a", encoding="utf-8")
        for iteration, scalars in self._new_scalars(storage).items():
            self._file.write(json.dumps({"iteration": iteration, **scalars}, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _iteration_of(line: str) -> Optional[int]:
    """The iteration of a metrics.json line; None for a blank or torn line (a crash mid-write)."""
    try:
        return int(json.loads(line)["iteration"])
    except (ValueError, KeyError, TypeError):
        return None


class TensorboardWriter(_NewScalarsWriter):
    """Writes scalars as TensorBoard events into ``log_dir``; a resumed run purges the events the interrupted run
    wrote after its last checkpoint (``purge_step``)."""

    def __init__(self, log_dir: str, window: int = 20) -> None:
        super().__init__(window)
        self.log_dir = log_dir
        self._writer = None

    def begin(self, start_iter: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when a trainer logs

        self._writer = SummaryWriter(log_dir=self.log_dir, purge_step=start_iter if start_iter > 0 else None)

    def write(self, storage: EventStorage) -> None:
        if self._writer is None:  # used without begin(): purge nothing
            self.begin(0)
        for iteration, scalars in self._new_scalars(storage).items():
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, iteration)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ConsoleMetricPrinter(EventWriter):
    """Logs ``eta  iter  losses  time  data_time  lr  max_mem`` for the latest iteration."""

    def __init__(self, max_iter: int, window: int = 20) -> None:
        self.max_iter = max_iter
        self.window = window

    def write(self, storage: EventStorage) -> None:
        iteration = storage.iter
        parts = []
        eta = self._eta_seconds(storage)
        if eta is not None:
            parts.append(f"eta: {datetime.timedelta(seconds=int(eta))}")
        parts.append(f"iter: {iteration}")
        losses = {
            name: value
            for name, (value, _) in storage.latest_with_smoothing(self.window).items()
            if "loss" in name and "/" not in name
        }
        parts.extend(f"{name}: {value:.4g}" for name, value in sorted(losses.items()))
        for name in ("time", "data_time"):
            if storage.has(name):
                parts.append(f"{name}: {storage.median(name, self.window):.4f}")
        if storage.has("lr"):
            parts.append(f"lr: {storage.latest('lr')[0]:.5g}")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 1024 ** 2:.0f}M")
        logger.info("  ".join(parts))

    def _eta_seconds(self, storage: EventStorage) -> Optional[float]:
        if not storage.has("time"):
            return None
        return storage.median("time", self.window) * max(self.max_iter - storage.iter - 1, 0)
