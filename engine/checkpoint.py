"""Checkpoints: atomic saves, ``weights_only`` loads, weight conversion and strict shape checks.

:class:`ModelCheckpointer` is fvcore's ``Checkpointer`` with four changes:

* ``save`` writes ``<name>.pth`` atomically (temp file, fsync, ``os.replace``) and only then updates the
  ``last_checkpoint`` file (atomically too), so a crash mid-save leaves the previous checkpoint usable;
* files load with ``torch.load(weights_only=True)``: checkpoints hold only tensors and plain Python values;
* a checkpoint written by this engine (it carries :data:`CHECKPOINT_FORMAT`) loads as is; any other weights file
  (``MODEL.WEIGHTS``: released IterativeSG/DETR checkpoints, vovnet/centermask2 weights) goes through
  ``modeling.weight_conversion.convert_to_model_state_dict``, and its report is logged;
* a parameter whose shape differs between checkpoint and model is an error naming the key (fvcore only warns).
"""
import logging
import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer

from modeling.weight_conversion import convert_to_model_state_dict
from utils.file_io import atomic_write, atomic_write_text
from utils.serialization import load_tensor_file

__all__ = ["ModelCheckpointer", "CHECKPOINT_FORMAT", "capture_rng_state", "restore_rng_state"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "etri-iterativeSG/checkpoint-v1"


class ModelCheckpointer(Checkpointer):
    """Saves and loads the model and the checkpointables (optimizer, scheduler, hooks with state)."""

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, save_to_disk: bool = True,
                 **checkpointables: Any) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logger
        self._loading_path = ""  # the file being loaded, for error messages

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
        atomic_write(path, lambda f: torch.save(data, f))
        if tag_last_checkpoint:
            self.tag_last_checkpoint(basename)

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
