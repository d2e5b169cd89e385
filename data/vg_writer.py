"""Writers for the three VG150 files (docs/PROTOCOL.md), used by the synthetic world and the loader benchmark.

Everything is written atomically (``utils.file_io``: temporary file in the target folder, fsync, ``os.replace``),
so a reader never sees a half-written file.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from utils.file_io import atomic_write_bytes, atomic_write_path

__all__ = [
    "H5_DTYPES",
    "atomic_write_bytes",
    "write_json",
    "encode_boxes",
    "ranges_from_counts",
    "write_vg_h5",
    "vocabulary_dicts",
]

# Every dataset of VG-SGG-with-attri.h5 with the dtype of the released file (shapes are checked in write_vg_h5).
H5_DTYPES = {
    "split": np.int32,
    "img_to_first_box": np.int32,
    "img_to_last_box": np.int32,
    "img_to_first_rel": np.int32,
    "img_to_last_rel": np.int32,
    "labels": np.int64,
    "boxes_1024": np.int32,
    "boxes_512": np.int32,
    "relationships": np.int32,
    "predicates": np.int64,
    "attributes": np.int64,
    "active_object_mask": np.bool_,
}


def write_json(path: str, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj).encode("utf-8"))


def encode_boxes(xyxy: np.ndarray, widths: np.ndarray, heights: np.ndarray, box_scale: int) -> np.ndarray:
    """xyxy boxes in original-image pixels -> int32 (cx, cy, w, h) at a longer side of ``box_scale``.

    ``widths``/``heights`` are per box (the size of the box's image).
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    k = box_scale / np.maximum(np.asarray(widths, np.float64), np.asarray(heights, np.float64))
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2.0 * k[:, None]
    size = (xyxy[:, 2:] - xyxy[:, :2]) * k[:, None]
    return np.round(np.concatenate([centre, size], axis=1)).astype(np.int32)


def ranges_from_counts(counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive (first, last) rows of consecutive blocks of ``counts`` elements; -1/-1 for an empty block."""
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    first = np.where(counts > 0, ends - counts, -1)
    last = np.where(counts > 0, ends - 1, -1)
    return first.astype(np.int32), last.astype(np.int32)


def write_vg_h5(path: str, fields: dict) -> None:
    """Write ``VG-SGG-with-attri.h5`` from a dict holding every dataset of ``H5_DTYPES``."""
    import h5py

    missing = sorted(set(H5_DTYPES) - set(fields))
    if missing:
        raise KeyError(f"write_vg_h5({path}): missing dataset(s) {missing}")
    num_images = len(fields["split"])
    num_objects = len(fields["labels"])
    num_relations = len(fields["predicates"])
    shapes = {
        "labels": (num_objects, 1),
        "boxes_1024": (num_objects, 4),
        "boxes_512": (num_objects, 4),
        "attributes": (num_objects, 10),
        "active_object_mask": (num_objects, 1),
        "relationships": (num_relations, 2),
        "predicates": (num_relations, 1),
    }
    shapes.update({k: (num_images,) for k in ("split",) + tuple(k for k in H5_DTYPES if k.startswith("img_to"))})

    def write(tmp_path: str) -> None:
        with h5py.File(tmp_path, "w") as f:
            for name, dtype in H5_DTYPES.items():
                array = np.asarray(fields[name]).astype(dtype).reshape(shapes[name])
                f.create_dataset(name, data=array)

    atomic_write_path(path, write)


def vocabulary_dicts(labels: Sequence[str], predicates: Sequence[str], attributes: Sequence[str], counts: dict) -> dict:
    """The content of ``VG-SGG-dicts-with-attri.json``: 1-based ``*_to_idx``/``idx_to_*`` maps and raw counts.

    ``counts`` maps ``"object"``, ``"predicate"`` and ``"attribute"`` to ``{name: count}``.
    """
    out = {}
    for kind, names in (("label", labels), ("predicate", predicates), ("attribute", attributes)):
        out[f"{kind}_to_idx"] = {name: i + 1 for i, name in enumerate(names)}
        out[f"idx_to_{kind}"] = {str(i + 1): name for i, name in enumerate(names)}
    out["object_count"] = dict(counts["object"])
    out["predicate_count"] = dict(counts["predicate"])
    out["attribute_count"] = dict(counts["attribute"])
    return out
