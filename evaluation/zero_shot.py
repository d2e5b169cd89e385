"""The zero-shot triplet set used by zR: read from a file or derived as evaluation triplets unseen in training.

Files hold a (Z, 3) integer array of **1-based** (subject class, object class, predicate) rows, like the standard
``zeroshot_triplets.npy`` (5,971 rows on VG150), as ``.npy`` or ``.pt``. In memory the set is 0-based.
"""
import os

import numpy as np
import torch

from utils.serialization import load_tensor_file


def load_zero_shot_triplets(path: str, num_classes: int, num_predicates: int) -> np.ndarray:
    """Read and validate a zero-shot file; returns a (Z, 3) int64 array of 0-based triplets.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file for a missing file, an unknown extension, a
    wrong shape or dtype, or ids outside 1..num_classes / 1..num_predicates.
    """
    where = f"zero-shot triplets file {path!r} (DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS)"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where} does not exist")
    if path.endswith(".npy"):
        array = np.load(path, allow_pickle=False)
    elif path.endswith(".pt"):
        loaded = load_tensor_file(path, where)
        if not isinstance(loaded, torch.Tensor):
            raise ValueError(f"{where} must hold a tensor, found {type(loaded).__name__}")
        array = loaded.numpy()
    else:
        raise ValueError(f"{where} must be a .npy or .pt file")
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{where} must be a (Z, 3) array of (subject, object, predicate), found shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where} must hold integers, found dtype {array.dtype}")
    array = array.astype(np.int64)
    limits = np.array([num_classes, num_classes, num_predicates])
    bad = np.flatnonzero(((array < 1) | (array > limits)).any(axis=1))
    if bad.size:
        raise ValueError(
            f"{where}: row {bad[0]} = {array[bad[0]].tolist()} is out of range; ids are 1-based, subject/object in "
            f"1..{num_classes}, predicate in 1..{num_predicates} ({bad.size} bad rows)"
        )
    return array - 1


def _split_triplets(split) -> np.ndarray:
    """Unique 0-based (subject class, object class, predicate) rows over every relation row of a split."""
    rows = []
    for i in range(len(split)):
        record = split.get_record(i, rng=None)
        relations, labels = record["relations"], record["labels"]
        if len(relations):
            rows.append(np.stack([labels[relations[:, 0]], labels[relations[:, 1]], relations[:, 2]], axis=1))
    if not rows:
        return np.zeros((0, 3), dtype=np.int64)
    return np.unique(np.concatenate(rows).astype(np.int64), axis=0)


def unseen_triplets(train_split, eval_split) -> np.ndarray:
    """(Z, 3) int64 0-based triplets of ``eval_split`` that never occur in ``train_split`` (all rows, rng=None)."""
    seen = set(map(tuple, _split_triplets(train_split).tolist()))
    evaluated = _split_triplets(eval_split)
    unseen = np.array([tuple(row) not in seen for row in evaluated.tolist()], dtype=bool)
    return evaluated[unseen]
