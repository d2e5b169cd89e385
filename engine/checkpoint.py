"""Checkpoints: atomic saves, ``weights_only`` loads, weight conversion and strict shape checks.

:class:`ModelCheckpointer` is fvcore's ``Checkpointer`` with four changes:

* ``save`` writes ``<name>.pth`` atomically (temp file, fsync, ``os.replace``) and only then updates the
  ``last_checkpoint`` file (atomically too), so a crash mid-save leaves the previous checkpoint usable;
* files load with ``torch.load(weights_only=True)``: checkpoints hold only tensors and plain Python values;
* a checkpoint written by this engine (it carries :data:`CHECKPOINT_FORMAT`) loads as is; any other weights file
  (``MODEL.WEIGHTS``: released IterativeSG/DETR checkpoints, vovnet/centermask2 weights) goes through
  ``modeling.weight_conversion.convert_to_model_state_dict``, and its report is logged;
* a parameter whose shape differs between checkpoint and model is an error naming the key (fvcore only warns).

and the faults of a long run (docs: README "Troubleshooting"):

* ``resume_or_load(resume=True)`` tries the file ``last_checkpoint`` names; if it is missing, corrupt or
  truncated, it warns naming it and resumes from the newest readable ``model_*.pth`` of the folder instead
  (``resumed_from`` tells which); if none is readable it raises a ``ValueError`` listing what it tried -- never a
  silent restart from iteration 0;
* a save that fails for lack of space, a quota or an I/O error raises
  :class:`utils.file_io.StorageWriteError` naming the file, the reason, the checkpoint's size and the free space;
  the previous checkpoint and ``last_checkpoint`` stay as they were;
* :meth:`ModelCheckpointer.prune` deletes the oldest periodic checkpoints (``model_<iteration>.pth``) beyond a
  number to keep; ``model_final.pth`` and ``best_model_final.pth`` are never deleted.
"""
import errno
import logging
import os
import random
import re
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer

from modeling.weight_conversion import convert_to_model_state_dict
from utils.file_io import StorageWriteError, atomic_write, atomic_write_text, format_bytes, free_bytes
from utils.serialization import SAFE_GLOBALS, UnsafeFileError, load_tensor_file

__all__ = ["ModelCheckpointer", "CHECKPOINT_FORMAT", "capture_rng_state", "restore_rng_state",
           "periodic_checkpoints", "resumable_checkpoint_files", "has_resumable_checkpoint", "probe_checkpoint",
           "tensor_bytes"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "etri-iterativeSG/checkpoint-v1"

# Files --resume may continue from: the periodic checkpoints and model_final.pth (not best_model_final.pth).
_RESUMABLE = re.compile(r"^model_(\d+|final)\.pth$")
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")


def periodic_checkpoints(directory: str) -> List[Tuple[int, str]]:
    """``(iteration, path)`` of every periodic checkpoint ``model_<iteration>.pth`` in ``directory``, oldest
    first (the iteration is read from the name)."""
    if not directory or not os.path.isdir(directory):
        return []
    found = [(int(match.group(1)), os.path.join(directory, name))
             for name in os.listdir(directory) if (match := _PERIODIC.match(name))]
    return sorted(item for item in found if os.path.isfile(item[1]))


def resumable_checkpoint_files(directory: str) -> List[str]:
    """The files ``--resume`` may continue from in ``directory``: ``model_<iteration>.pth`` and
    ``model_final.pth`` (not ``best_model_final.pth``), sorted by name."""
    if not directory or not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if _RESUMABLE.match(name) and os.path.isfile(os.path.join(directory, name)))


def has_resumable_checkpoint(directory: str) -> bool:
    """Whether ``--resume`` finds something in ``directory``: a ``last_checkpoint`` file, or (when it was lost) a
    file of :func:`resumable_checkpoint_files`."""
    return bool(directory) and (os.path.isfile(os.path.join(directory, "last_checkpoint"))
                                or bool(resumable_checkpoint_files(directory)))


def probe_checkpoint(path: str, what: str = "checkpoint") -> Dict[str, Any]:
    """Read ``path``'s structure without loading its tensors (``torch.load(mmap=True)``: the pickle and the zip
    directory, which a truncated file has lost); returns the checkpoint dict (tensors memory-mapped).  Files in
    the legacy (non-zip) format are loaded in full.  Raises ``FileNotFoundError`` or
    :class:`utils.serialization.UnsafeFileError` naming ``what`` and the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}" + (f" ({what})" if what != "checkpoint" else ""))
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"PK" or not head:  # a zip archive cut short, or an empty file
            raise UnsafeFileError(f"{what} {path} is corrupt or truncated (its zip directory is missing)")
        return load_tensor_file(path, what)
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:
            raise UnsafeFileError(f"{what} {path} is corrupt or truncated, or not a tensor-only torch file "
                                  f"({_reason(error)})") from error


def _reason(error: BaseException) -> str:
    """The underlying message of a load failure (torch's, without our wrapper's preamble)."""
    text = str(error.__cause__ or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensor storages reachable from ``obj`` (dicts, lists, tuples), each storage counted once:
    about the size ``torch.save(obj)`` writes."""
    seen, total, stack = set(), 0, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes(), str(item.device))
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


class ModelCheckpointer(Checkpointer):
    """Saves and loads the model and the checkpointables (optimizer, scheduler, hooks with state)."""

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, save_to_disk: bool = True,
                 **checkpointables: Any) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logger
        self._loading_path = ""  # the file being loaded, for error messages
        self.resumed_from: Optional[str] = None  # the checkpoint resume_or_load continued from

    def save(self, name: str, tag_last_checkpoint: bool = True, **extra: Any) -> None:
        """Atomically write ``save_dir/<name>.pth``; then, unless told not to, point ``last_checkpoint`` at it."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict()}
        for key, checkpointable in self.checkpointables.items():
            data[key] = checkpointable.state_dict()
        data.update(extra)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        try:
            atomic_write(path, lambda f: torch.save(data, f))
        except StorageWriteError as error:
            raise self._save_failed(path, error, tensor_bytes(data)) from error
        if tag_last_checkpoint:
            self.tag_last_checkpoint(basename)

    def _save_failed(self, path: str, error: StorageWriteError, needed: int) -> StorageWriteError:
        free = free_bytes(self.save_dir)
        last = super().get_checkpoint_file() if super().has_checkpoint() else ""
        kept = (f"last_checkpoint still names {os.path.basename(last)}" if last
                else "there is no earlier checkpoint")
        message = (
            f"cannot save checkpoint {path}: {error.strerror} "
            f"({errno.errorcode.get(error.errno, error.errno)}); it needs about {format_bytes(needed)}"
            + (f", {format_bytes(free)} are free in {self.save_dir}" if free is not None else "")
            + f". The partial file was removed and {kept}; free space (or lower SOLVER.CHECKPOINT_MAX_TO_KEEP) "
            "and rerun with --resume"
        )
        return StorageWriteError(error.errno, message, path)

    def estimate_checkpoint_bytes(self) -> int:
        """About the size of the next checkpoint: the model's tensors, and the optimizer's state (before the first
        step, when it is still empty: two tensors per trainable parameter, as AdamW keeps)."""
        total = tensor_bytes(self.model.state_dict())
        for checkpointable in self.checkpointables.values():
            if isinstance(checkpointable, torch.optim.Optimizer):
                if checkpointable.state:
                    total += tensor_bytes(checkpointable.state_dict()["state"])
                else:
                    total += 2 * sum(p.numel() * p.element_size() for group in checkpointable.param_groups
                                     for p in group["params"] if p.requires_grad)
        return total

    def prune(self, max_to_keep: int, newest_iteration: int) -> List[str]:
        """Delete the periodic checkpoints ``model_<i>.pth`` with ``i <= newest_iteration`` beyond the
        ``max_to_keep`` newest (0 keeps all); later-numbered files (left by an abandoned run this one resumed
        before) are not touched, nor ``model_final.pth`` and ``best_model_final.pth``.  Returns the deleted paths."""
        if max_to_keep <= 0 or not self.save_dir or not self.save_to_disk:
            return []
        candidates = [path for iteration, path in periodic_checkpoints(self.save_dir) if iteration <= newest_iteration]
        last = super().get_checkpoint_file() if super().has_checkpoint() else ""
        deleted = []
        for path in candidates[: max(len(candidates) - max_to_keep, 0)]:
            if os.path.abspath(path) == os.path.abspath(last):
                continue
            try:
                os.remove(path)
            except OSError as error:
                self.logger.warning("Could not delete the old checkpoint %s: %s", path, error)
                continue
            deleted.append(path)
        if deleted:
            self.logger.info("Deleted %d old checkpoint(s) (SOLVER.CHECKPOINT_MAX_TO_KEEP %d): %s", len(deleted),
                             max_to_keep, ", ".join(os.path.basename(path) for path in deleted))
        return deleted

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def get_checkpoint_file(self) -> str:
        path = super().get_checkpoint_file()
        if path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"{os.path.join(self.save_dir, 'last_checkpoint')} names {os.path.basename(path)}, "
                f"which does not exist in {self.save_dir}"
            )
        return path

    def has_checkpoint(self) -> bool:
        """Whether ``--resume`` has something to continue from: a ``last_checkpoint`` file, or (when it was lost)
        a ``model_<iteration>.pth`` / ``model_final.pth`` in the folder."""
        return super().has_checkpoint() or bool(resumable_checkpoint_files(self.save_dir))

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """With ``resume`` and a checkpoint in ``save_dir``: load the one to continue from (model and
        checkpointables; see :meth:`resume`).  Otherwise load only the model from ``path`` ("" = nothing).
        ``resumed_from`` is then the file resumed from, or None."""
        self.resumed_from = None
        if resume and self.has_checkpoint():
            return self.resume()
        return self.load(path, checkpointables=[])

    def resume(self) -> Dict[str, Any]:
        """Load the checkpoint ``last_checkpoint`` names; if it is missing or unreadable (corrupt, truncated),
        warn naming it and load the newest readable ``model_*.pth`` of ``save_dir`` (newest by the iteration it
        holds).  Raises ``ValueError`` naming every file tried when none can be read."""
        problems: List[str] = []
        tried = set()
        last_file = os.path.join(self.save_dir, "last_checkpoint")
        named = super().get_checkpoint_file() if super().has_checkpoint() else ""
        if named:
            tried.add(os.path.abspath(named))
            if not os.path.isfile(named):
                problem = f"{last_file} names {os.path.basename(named)}, which does not exist in {self.save_dir}"
            else:
                checkpoint, problem = self._try_load(named)
                if problem is None:
                    return checkpoint
            self.logger.warning("%s", problem)
            problems.append(problem)
        else:
            self.logger.warning("%s is missing: resuming from the newest readable checkpoint in %s",
                                last_file, self.save_dir)

        candidates = []  # (iteration, is model_final, path) of the readable fallbacks
        for candidate in resumable_checkpoint_files(self.save_dir):
            if os.path.abspath(candidate) in tried:
                continue
            try:
                iteration = probe_checkpoint(candidate).get("iteration")
            except (UnsafeFileError, FileNotFoundError) as error:
                problem = str(error)
                self.logger.warning("%s", problem)
                problems.append(problem)
                continue
            if not isinstance(iteration, int):
                problems.append(f"{candidate} holds no iteration")
                continue
            candidates.append((iteration, candidate.endswith("model_final.pth"), candidate))
        for iteration, _, candidate in sorted(candidates, reverse=True):
            checkpoint, problem = self._try_load(candidate)
            if problem is None:
                self.logger.warning("Resuming from %s (iteration %d) instead of the unreadable checkpoint",
                                    candidate, iteration)
                return checkpoint
            self.logger.warning("%s", problem)
            problems.append(problem)
        raise ValueError(
            f"--resume: no readable checkpoint in {self.save_dir}: " + "; ".join(problems or ["no model_*.pth"])
            + ". Copy a good checkpoint there, or remove OUTPUT_DIR's checkpoints (or drop --resume) to start "
            "from iteration 0"
        )

    def _try_load(self, path: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """(checkpoint, None) after loading ``path`` into the model and checkpointables, or (None, the problem)
        when the file cannot be read; other errors (shape mismatches) propagate."""
        try:
            probe_checkpoint(path)  # cheap, and names a truncation plainly
        except UnsafeFileError as error:
            return None, str(error)
        try:
            checkpoint = self.load(path)
        except UnsafeFileError as error:
            return None, f"checkpoint {path} is corrupt or truncated ({_reason(error)})"
        self.resumed_from = path
        return checkpoint, None

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint not found: {path}")
        self._loading_path = path
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        checkpoint = load_tensor_file(filename, "checkpoint")
        if not isinstance(checkpoint, dict):
            raise ValueError(f"{filename}: expected a dict (a state dict or a checkpoint), got {type(checkpoint)}")
        if "model" not in checkpoint:  # a bare state dict
            checkpoint = {"model": checkpoint}
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            checkpoint["model"] = self._convert_foreign_weights(checkpoint["model"], filename)
        return checkpoint

    def _convert_foreign_weights(self, state_dict: Dict[str, Any], filename: str) -> Dict[str, Any]:
        try:
            converted, report = convert_to_model_state_dict(state_dict, self.model)
        except ValueError as error:  # e.g. shape mismatches, which the converter names key by key
            raise ValueError(f"{filename}: {error}") from error
        self.logger.info("Weight conversion of %s: %s", filename, report)
        return converted

    def _load_model(self, checkpoint: Dict[str, Any]):
        model_state = self.model.state_dict()
        mismatched = [
            f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(model_state[key].shape)}"
            for key, value in checkpoint["model"].items()
            if key in model_state and hasattr(value, "shape") and tuple(value.shape) != tuple(model_state[key].shape)
        ]
        if mismatched:
            raise ValueError(
                f"Shape mismatch loading {self._loading_path}:\n  " + "\n  ".join(mismatched)
            )
        return super()._load_model(checkpoint)


def capture_rng_state() -> Dict[str, Any]:
    """This process's Python, numpy, torch (and CUDA) generator states, as tensors and plain values."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state["numpy"]
    np.random.set_state((
        numpy_state["name"],
        numpy_state["keys"].numpy().astype(np.uint32),
        numpy_state["position"],
        numpy_state["has_gauss"],
        numpy_state["cached_gaussian"],
    ))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
