"""Reading ``.pt``/``.pth`` files without running pickled code: ``torch.load(weights_only=True)`` with one
allow-list for the whole project.

Checkpoints, weight files, prediction files and zero-shot files hold only tensors and plain Python values; the one
extra type allowed is ``argparse.Namespace``, which the original DETR / IterativeSG checkpoints store as ``args``.
"""
import argparse
from typing import Any

import torch

__all__ = ["SAFE_GLOBALS", "load_tensor_file", "UnsafeFileError"]

# The only non-plain types a file may contain.
SAFE_GLOBALS = [argparse.Namespace]


class UnsafeFileError(ValueError):
    """The file holds Python objects that a tensor-only load refuses (or is not a torch file at all)."""


def load_tensor_file(path: str, what: str = "file") -> Any:
    """``torch.load(path)`` on the CPU with ``weights_only=True`` and :data:`SAFE_GLOBALS`.

    Raises ``FileNotFoundError`` (missing file) or :class:`UnsafeFileError` (a ``ValueError``) naming ``what`` and
    ``path`` for a file that cannot be read as tensors and plain values (unsafe pickle, truncated, not a torch file).
    """
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} not found: {path}") from None
        except Exception as error:  # unpickling and zip errors come in many types
            raise UnsafeFileError(
                f"{what} {path} cannot be read as a tensor-only torch file (torch.load(weights_only=True)): {error}"
            ) from error
