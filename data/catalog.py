"""Named dataset splits (detectron2's ``DatasetCatalog``/``MetadataCatalog`` convention).

``DATASETS.TRAIN/VAL/TEST`` name splits; :meth:`DatasetCatalog.get` turns a name into a split object with
VGSplit's interface (``len``, ``get_record(i, rng)``, ``image_ids``, ``widths``/``heights``, ``relations``,
``idx_to_label``, ``idx_to_predicate``, docs/ARCHITECTURE.md) and :meth:`MetadataCatalog.get` into its
:class:`Metadata` (class and predicate names, evaluator, zero-shot file, predicate counts).

Registered names:

* ``VG_train``, ``VG_val``, ``VG_test``: VG150 from ``DATASETS.VISUAL_GENOME`` (``data.visual_genome``);
* ``PSG_train``, ``PSG_test``: OpenPSG's psg.json from ``DATASETS.PSG`` (``data.psg``);
* every entry of ``DATASETS.COCO_RELATIONS``, a list of ``{NAME, JSON, IMAGES}`` (``data.coco_relations``)::

      DATASETS:
        COCO_RELATIONS:
          - {NAME: shelf_train, JSON: /data/shelf/train.json, IMAGES: /data/shelf/images}
          - {NAME: shelf_test, JSON: /data/shelf/test.json, IMAGES: /data/shelf/images}
        TRAIN: ("shelf_train",)
        TEST: ("shelf_test",)

* names registered in Python: :func:`register_coco_relations` ``(name, json_file, image_root)``, or
  :meth:`DatasetCatalog.register` ``(name, loader)`` with ``loader(cfg) -> split`` for any other source.

Config entries are read from the ``cfg`` of each call, so two configs in one process do not interfere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .coco_relations import _CACHE, _identity, cached, load_coco_relations_split, read_coco_relations
from .psg import PSG_SPLITS, load_psg_split, psg_vocabulary
from .visual_genome import SPLIT_NAMES as VG_SPLITS
from .visual_genome import _read_vocabulary, _require_file, load_vg_split

__all__ = [
    "Metadata",
    "DatasetCatalog",
    "MetadataCatalog",
    "register_coco_relations",
    "coco_relations_entries",
    "get_split",
    "get_predicate_counts",
    "zero_shot_file",
]

BUILTIN_NAMES = tuple(VG_SPLITS) + tuple(PSG_SPLITS)
_CONFIG_KEY = "DATASETS.COCO_RELATIONS"


@dataclass(frozen=True)
class Metadata:
    """What the rest of the framework needs to know about a split besides its records."""

    name: str
    class_names: Tuple[str, ...]
    predicate_names: Tuple[str, ...]
    evaluator_type: str = "sgg"  # scene-graph recall + box AP (evaluation.SGGEvaluator)
    zero_shot_file: str = ""  # (Z, 3) 1-based triplets; "" = test triplets unseen in DATASETS.TRAIN[0]
    source: str = ""  # the files, for messages

    def predicate_counts(self, cfg) -> np.ndarray:
        """Relation rows per predicate (0-based) of this split as loaded (the f_c of the alpha/beta weights)."""
        split = DatasetCatalog.get(self.name, cfg)
        return np.bincount(split.relations[:, 2], minlength=len(self.predicate_names)).astype(np.int64)


@dataclass(frozen=True)
class _Registration:
    loader: Callable  # loader(cfg) -> split
    metadata: Optional[Callable] = None  # metadata(cfg) -> Metadata; None = from the loaded split
    source: str = ""


_REGISTERED: Dict[str, _Registration] = {}


def coco_relations_entries(cfg) -> Dict[str, Tuple[str, str, str]]:
    """``{NAME: (JSON, IMAGES, config key)}`` of ``DATASETS.COCO_RELATIONS``, checked."""
    entries = {}
    for i, entry in enumerate(cfg.DATASETS.COCO_RELATIONS):
        key = f"{_CONFIG_KEY}[{i}]"
        if not (hasattr(entry, "keys") and set(entry.keys()) == {"NAME", "JSON", "IMAGES"}
                and all(isinstance(entry[k], str) and entry[k] for k in ("NAME", "JSON", "IMAGES"))):
            raise ValueError(f"{key} must be a mapping of exactly NAME, JSON and IMAGES (non-empty strings), "
                             f"got {entry!r}")
        name = entry["NAME"]
        if name in BUILTIN_NAMES:
            raise ValueError(f"{key}.NAME {name!r} is a built-in dataset name; choose another")
        if name in entries:
            raise ValueError(f"{key}.NAME {name!r} is registered twice in {_CONFIG_KEY}")
        entries[name] = (entry["JSON"], entry["IMAGES"], f"{key}.JSON")
    return entries


def _coco_registration(json_file: str, image_root: str, what: str) -> _Registration:
    def load(cfg, name):
        return load_coco_relations_split(cfg, name, json_file, image_root, what)

    def metadata(cfg, name):
        # The names need the JSON only (predicting on another machine needs no training images): the parse the
        # loader memoised, else a parse checked without the image files.
        if not json_file or not os.path.isfile(json_file):
            raise FileNotFoundError(f"{what}: file not found: {json_file!r}")
        key = ("coco", _identity(json_file), os.path.abspath(image_root))
        parsed = _CACHE[key] if key in _CACHE else cached(
            ("coco", _identity(json_file), None), lambda: read_coco_relations(json_file, None, what))
        return Metadata(name, tuple(parsed.class_names), tuple(parsed.predicate_names), source=json_file)

    return _Registration(load, metadata, json_file)


def _vg_metadata(cfg, name: str) -> Metadata:
    vg = cfg.DATASETS.VISUAL_GENOME
    path = _require_file("MAPPING_DICTIONARY", vg.MAPPING_DICTIONARY)
    classes, predicates = _read_vocabulary(path)
    return Metadata(name, tuple(classes), tuple(predicates), zero_shot_file=str(vg.ZERO_SHOT_TRIPLETS),
                    source=path)


def _psg_metadata(cfg, name: str) -> Metadata:
    from .coco_relations import read_json

    path = cfg.DATASETS.PSG.JSON
    classes, predicates = cached(("psg-vocabulary",) + (_identity(path) if path and os.path.isfile(path) else ()),
                                 lambda: psg_vocabulary(read_json(path, "DATASETS.PSG.JSON"), path))
    return Metadata(name, tuple(classes), tuple(predicates), source=path)


def _registration(name: str, cfg) -> _Registration:
    if name in VG_SPLITS:
        return _Registration(lambda c, n: load_vg_split(c, n), _vg_metadata, "DATASETS.VISUAL_GENOME")
    if name in PSG_SPLITS:
        return _Registration(lambda c, n: load_psg_split(c, n), _psg_metadata, "DATASETS.PSG")
    entries = coco_relations_entries(cfg)
    if name in entries and name in _REGISTERED:
        raise ValueError(f"dataset {name!r} is registered both in {_CONFIG_KEY} and in Python "
                         f"({_REGISTERED[name].source}); rename one")
    if name in entries:
        return _coco_registration(*entries[name])
    if name in _REGISTERED:
        return _REGISTERED[name]
    known = list(BUILTIN_NAMES) + sorted(entries) + sorted(_REGISTERED)
    raise KeyError(f"Dataset {name!r} is not registered; known datasets: {', '.join(known)} (add your own with "
                   f"{_CONFIG_KEY} entries {{NAME, JSON, IMAGES}} or data.catalog.register_coco_relations)")


class DatasetCatalog:
    """Name -> split loader.  Built-in names and ``DATASETS.COCO_RELATIONS`` entries need no registration."""

    @staticmethod
    def register(name: str, loader: Callable, metadata: Optional[Callable] = None, source: str = "") -> None:
        """Register ``loader(cfg) -> split`` (and optionally ``metadata(cfg) -> Metadata``) under ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"dataset names are non-empty strings, got {name!r}")
        if name in BUILTIN_NAMES or name in _REGISTERED:
            raise ValueError(f"dataset {name!r} is already registered")
        _REGISTERED[name] = _Registration(
            lambda cfg, _name: loader(cfg),
            (lambda cfg, _name: metadata(cfg)) if metadata is not None else None,
            source or getattr(loader, "__name__", "a Python loader"))

    @staticmethod
    def remove(name: str) -> None:
        """Forget a Python registration (built-in names stay)."""
        if name not in _REGISTERED:
            raise KeyError(f"dataset {name!r} was not registered in Python")
        del _REGISTERED[name]

    @staticmethod
    def names(cfg=None) -> List[str]:
        """Every name :meth:`get` resolves (config entries only when ``cfg`` is given)."""
        entries = list(coco_relations_entries(cfg)) if cfg is not None else []
        return list(BUILTIN_NAMES) + entries + [n for n in _REGISTERED if n not in entries]

    @staticmethod
    def get(name: str, cfg):
        """The split ``name`` as configured by ``cfg`` (each loader memoises its files)."""
        return _registration(name, cfg).loader(cfg, name)


class MetadataCatalog:
    """Name -> :class:`Metadata` (the vocabulary is read without building the split where the format allows)."""

    @staticmethod
    def get(name: str, cfg) -> Metadata:
        registration = _registration(name, cfg)
        if registration.metadata is not None:
            return registration.metadata(cfg, name)
        split = registration.loader(cfg, name)
        return Metadata(name, tuple(split.idx_to_label), tuple(split.idx_to_predicate), source=registration.source)


def register_coco_relations(name: str, json_file: str, image_root: str) -> None:
    """Register a COCO-relations file (one split) under ``name``, e.g. from a training script."""
    if name in BUILTIN_NAMES or name in _REGISTERED:
        raise ValueError(f"dataset {name!r} is already registered")
    _REGISTERED[name] = _coco_registration(json_file, image_root, f"register_coco_relations({name!r}) json_file")


def get_split(cfg, name: str):
    """``DatasetCatalog.get(name, cfg)``, after checking that ``name`` has the vocabulary of
    ``DATASETS.TRAIN[0]`` (the model's classes) whenever both are readable."""
    split = DatasetCatalog.get(name, cfg)
    train = tuple(cfg.DATASETS.TRAIN)
    if train and name != train[0]:
        try:
            reference = MetadataCatalog.get(train[0], cfg)
        except (FileNotFoundError, KeyError):
            return split  # no training set configured (e.g. evaluating with only DATASETS.TEST set)
        for what, ours, theirs in (("classes", split.idx_to_label, reference.class_names),
                                   ("predicates", split.idx_to_predicate, reference.predicate_names)):
            if tuple(ours) != tuple(theirs):
                raise ValueError(
                    f"dataset {name!r} and DATASETS.TRAIN[0] {train[0]!r} have different {what} "
                    f"({len(ours)} vs {len(theirs)}; first difference at index "
                    f"{next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))})"
                    "; every split must list the same categories and rel_categories")
    return split


def get_predicate_counts(cfg, name: Optional[str] = None) -> np.ndarray:
    """Relation rows per predicate of the training split (``DATASETS.TRAIN[0]`` unless ``name``), duplicates
    included: the f_c of the alpha/beta weights."""
    if name is None:
        if not cfg.DATASETS.TRAIN:
            raise ValueError("DATASETS.TRAIN is empty: the predicate counts come from the training split")
        name = cfg.DATASETS.TRAIN[0]
    return MetadataCatalog.get(name, cfg).predicate_counts(cfg)


def zero_shot_file(cfg, name: str) -> str:
    """The zero-shot triplet file of split ``name`` ("" = derive the set from ``DATASETS.TRAIN[0]``), without
    reading any dataset file: ``DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS`` for VG150 (and for splits the catalog
    does not know, e.g. in-memory splits handed straight to the evaluator); "" for PSG and COCO-relations splits;
    the registered metadata's for Python registrations that give one."""
    if name in PSG_SPLITS or name in coco_relations_entries(cfg):
        return ""
    registration = _REGISTERED.get(name)
    if registration is not None:
        return registration.metadata(cfg, name).zero_shot_file if registration.metadata is not None else ""
    return str(cfg.DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS)
