"""``SGGEvaluator``: detectron2's DatasetEvaluator protocol for sgdet scene-graph recall and detection AP.

Each process validates the images of its own shard as they arrive (:meth:`SGGEvaluator.process`), matches them
in batches of ``MATCH_BATCH_SIZE``, and keeps only a small record per image: the first-hit ranks of its
ground-truth relations, their class triplets, the ground-truth boxes, and the compact predictions (every entity box
plus the relation rows that reach either top-100 list); at most one batch of full score matrices is held.
:meth:`SGGEvaluator.evaluate` gathers the records on rank 0, orders them by dataset position, and computes, prints
and writes everything from those same arrays, so re-evaluating the written predictions file reproduces the numbers
bit for bit.

``TEST.SGG_PROTOCOL`` picks the protocol (:mod:`evaluation.protocols`): ``standard`` or ``iterativesg``; the
printed block and ``sgg_eval.json`` (key ``protocol``) name it. A model output with ``rel_ranking_scores`` has its
graph-constrained rows ordered by them, and the predictions file becomes ``sgg-predictions/v2``.
"""
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch

from data.catalog import get_split, zero_shot_file
from utils import comm
from utils.file_io import atomic_write_text

from .detection_ap import detection_ap
from .predictions_file import (
    FIELDS,
    RANKING_FIELD,
    PredictionsFileError,
    check_image_structure,
    check_many_image_values,
    save_predictions,
)
from .protocols import SGGProtocol, get_protocol
from .report import format_results
from .sgg_metrics import aggregate_recalls, match_images, triplet_keys
from .zero_shot import load_zero_shot_triplets, unseen_triplets

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "sgg_predictions.pt"
RESULTS_FILE = "sgg_eval.json"
# Images matched together: numpy's per-call overhead dominates per-image matching, so batches amortise it.
MATCH_BATCH_SIZE = 64


@dataclass
class ImageResult:
    """What one evaluated image leaves behind (a few kilobytes)."""

    index: int  # position in the split
    image_id: int
    gt_boxes: np.ndarray  # (G, 4) float32
    gt_labels: np.ndarray  # (G,) int64
    gt_triplets: np.ndarray  # (R, 3) int64: subject class, object class, predicate
    graph_ranks: np.ndarray  # (R,) int32 first-hit rank in the graph-constrained list
    free_ranks: np.ndarray  # (R,) int32 first-hit rank in the no-graph-constraint list
    predictions: Dict[str, np.ndarray]  # compact sgg-predictions image entry


def _to_numpy(value, dtype) -> np.ndarray:
    """A model output field as a numpy array of the file dtype (bf16/fp16/float64 tensors are converted).

    Tensors are copied when the conversion would share their memory: records are kept across batches, and a
    model may reuse its output buffers.
    """
    if isinstance(value, torch.Tensor):
        converted = value.detach().to("cpu", torch.float32 if dtype == np.float32 else torch.int64)
        array = converted.numpy()
        return array.copy() if converted.data_ptr() == value.data_ptr() else array
    return np.asarray(value).astype(dtype, copy=False)


def _describe(image_id: int) -> str:
    return f"model output for image_id {image_id}"


def _gather_on_main_process(items: List) -> Optional[List]:
    """All processes' lists concatenated on rank 0 (``None`` elsewhere); the list itself without distribution."""
    gathered = comm.gather(items, dst=0)
    if gathered is None:
        return None
    return [item for part in gathered for item in part]


class SGGEvaluator:
    """sgdet evaluator over one split (``reset`` / ``process`` / ``evaluate``).

    Args:
        split: the evaluated split (``image_ids``, ``idx_to_label``, ``idx_to_predicate``, ``get_record``).
        zero_shot_triplets: (Z, 3) 0-based (subject class, object class, predicate) array, or a callable returning
            one; a callable is called once, on rank 0, at the first ``evaluate``.
        output_dir: where rank 0 writes ``sgg_predictions.pt`` and ``sgg_eval.json``; ``None`` writes nothing.
        dataset_name: only for messages.
        inference_amp: whether :func:`evaluation.inference_on_dataset` should run the model under bf16 autocast
            on CUDA (``SOLVER.AMP.ENABLED``); the evaluator itself always computes in float64/float32.
        protocol: ``"standard"``, ``"iterativesg"`` or an :class:`~evaluation.protocols.SGGProtocol`
            (``TEST.SGG_PROTOCOL``). A split loaded by ``data.visual_genome`` must have been loaded for a protocol
            with the same ground-truth box convention (its ``sgg_protocol``).
    """

    def __init__(
        self,
        split,
        zero_shot_triplets: Union[np.ndarray, Callable[[], np.ndarray]],
        output_dir: Optional[str] = None,
        dataset_name: str = "",
        inference_amp: bool = False,
        protocol: Union[str, SGGProtocol] = "standard",
    ):
        self.protocol = get_protocol(protocol)
        split_protocol = getattr(split, "sgg_protocol", None)
        if split_protocol is not None and get_protocol(split_protocol).gt_clip_margin != self.protocol.gt_clip_margin:
            raise ValueError(
                f"{dataset_name or 'the split'} was loaded with TEST.SGG_PROTOCOL {split_protocol!r}, whose "
                f"ground-truth boxes do not follow the {self.protocol.name!r} protocol; load it with the same "
                "TEST.SGG_PROTOCOL"
            )
        self.split = split
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.inference_amp = inference_amp
        self.predicate_names = [str(name) for name in split.idx_to_predicate]
        self.num_predicates = len(self.predicate_names)
        self.num_classes = len(split.idx_to_label)
        self._zero_shot_source = zero_shot_triplets
        self._zero_shot_keys: Optional[np.ndarray] = None
        self._position = {int(image_id): i for i, image_id in enumerate(split.image_ids)}
        self._results: List[ImageResult] = []
        self._pending: List[Dict] = []  # validated predictions waiting to be matched
        self._ranked: Optional[bool] = None  # whether the outputs carry rel_ranking_scores (all or none)

    def reset(self) -> None:
        self._results = []
        self._pending = []
        self._ranked = None

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        """Check each image's fields and shapes now; check values and match in batches of ``MATCH_BATCH_SIZE``."""
        for item, output in zip(inputs, outputs):
            image_id = int(output.get("image_id", item["image_id"]))
            if image_id not in self._position:
                raise KeyError(f"image_id {image_id} is not in the evaluated split {self.dataset_name!r}")
            prediction = {field: _to_numpy(output[field], dtype) for field, (dtype, _) in FIELDS.items()}
            ranked = output.get(RANKING_FIELD) is not None
            if self._ranked is None:
                self._ranked = ranked
            elif ranked != self._ranked:
                raise PredictionsFileError(
                    f"{_describe(image_id)}: {RANKING_FIELD!r} is {'present' if ranked else 'absent'} here but "
                    f"{'absent' if ranked else 'present'} in earlier images (all outputs or none must have it)"
                )
            if ranked:
                prediction[RANKING_FIELD] = _to_numpy(output[RANKING_FIELD], np.float32)
            check_image_structure(prediction, _describe(image_id), num_predicates=self.num_predicates)
            prediction["image_id"] = image_id
            self._pending.append(prediction)
            if len(self._pending) >= MATCH_BATCH_SIZE:
                self._match_pending()

    def _match_pending(self) -> None:
        """Check the queued predictions' values, then turn them into per-image records (compact predictions +
        first-hit ranks)."""
        if not self._pending:
            return
        check_many_image_values(self._pending, lambda image: _describe(image["image_id"]), self.num_classes)
        indices = [self._position[prediction["image_id"]] for prediction in self._pending]
        records = [self.split.get_record(index) for index in indices]
        for index, record, prediction, match in zip(
            indices, records, self._pending, match_images(self._pending, records,
                                                          iou_plus_one=self.protocol.iou_plus_one)
        ):
            gt_boxes = np.asarray(record["boxes"], dtype=np.float32).reshape(-1, 4)
            gt_labels = np.asarray(record["labels"], dtype=np.int64)
            gt_relations = np.asarray(record["relations"], dtype=np.int64).reshape(-1, 3)
            gt_triplets = np.concatenate([gt_labels[gt_relations[:, :2]], gt_relations[:, 2:]], axis=1)
            # Only rows that reach a top-100 list are kept; ranking them again gives the same lists, so the
            # predictions file reproduces every number.
            compact = {
                "image_id": prediction["image_id"],
                "boxes": prediction["boxes"].copy(),
                "labels": prediction["labels"].copy(),
                "scores": prediction["scores"].copy(),
                "rel_pairs": prediction["rel_pairs"][match.kept_rows],
                "rel_scores": prediction["rel_scores"][match.kept_rows],
            }
            if RANKING_FIELD in prediction:
                compact[RANKING_FIELD] = prediction[RANKING_FIELD][match.kept_rows]
            self._results.append(
                ImageResult(index, compact["image_id"], gt_boxes, gt_labels, gt_triplets, match.graph_ranks,
                            match.free_ranks, compact)
            )
        self._pending = []

    def _zero_shot(self) -> np.ndarray:
        if self._zero_shot_keys is None:
            source = self._zero_shot_source
            triplets = np.asarray(source() if callable(source) else source, dtype=np.int64).reshape(-1, 3)
            self._zero_shot_keys = np.unique(
                triplet_keys(*triplets.T, num_classes=self.num_classes, num_predicates=self.num_predicates)
            )
        return self._zero_shot_keys

    @property
    def results(self) -> List[ImageResult]:
        """This process's per-image records so far, in processing order."""
        self._match_pending()
        return self._results

    def _unique_in_dataset_order(self, results: List[ImageResult]) -> List[ImageResult]:
        results = sorted(results, key=lambda result: result.index)
        unique = [result for i, result in enumerate(results) if i == 0 or result.index != results[i - 1].index]
        if len(unique) != len(results):
            logger.warning(
                "%d images of %s were evaluated more than once; each counts once",
                len(results) - len(unique),
                self.dataset_name,
            )
        return unique

    def recall_metrics(self, results: List[ImageResult]) -> Dict[str, float]:
        """Every recall number (and the row counts) from per-image records already in dataset order, under the
        evaluator's protocol (its name under ``protocol``)."""
        num_rows = [len(result.gt_triplets) for result in results]
        gt_triplets = np.concatenate([r.gt_triplets for r in results]) if results else np.zeros((0, 3), np.int64)
        keys = triplet_keys(*gt_triplets.T, num_classes=self.num_classes, num_predicates=self.num_predicates)
        zero_shot = np.isin(keys, self._zero_shot())
        without_rows = np.array([len(r.predictions["rel_pairs"]) == 0 for r in results], dtype=bool)
        metrics = aggregate_recalls(
            gt_predicates=gt_triplets[:, 2],
            zero_shot=zero_shot,
            graph_ranks=np.concatenate([r.graph_ranks for r in results]) if results else np.zeros(0, np.int32),
            free_ranks=np.concatenate([r.free_ranks for r in results]) if results else np.zeros(0, np.int32),
            image_index=np.repeat(np.arange(len(results)), num_rows),
            num_images=len(results),
            predicate_names=self.predicate_names,
            skipped_images=without_rows if self.protocol.skip_images_without_rows else None,
            mean_recall_slot0=self.protocol.mean_recall_slot0,
        )
        metrics = {"protocol": self.protocol.name, **metrics}
        metrics["num_images"] = len(results)
        metrics["num_images_without_rows"] = int(without_rows.sum())
        metrics["num_images_scored"] = len(results) - (metrics["num_images_without_rows"]
                                                       if self.protocol.skip_images_without_rows else 0)
        metrics["num_gt_relations"] = int(sum(num_rows))
        metrics["num_zero_shot_relations"] = int(zero_shot.sum())
        return metrics

    def detection_metrics(self, results: List[ImageResult]) -> Dict[str, float]:
        """``AP50`` and ``AP`` of the predicted entity boxes."""
        ground_truth = [{"image_id": r.image_id, "boxes": r.gt_boxes, "labels": r.gt_labels} for r in results]
        ap50, ap = detection_ap(ground_truth, [r.predictions for r in results], self.num_classes)
        return {"AP50": ap50, "AP": ap}

    def summarize(self, results: List[ImageResult]) -> Dict[str, float]:
        """Metrics of per-image records in dataset order, with the block printed."""
        if not results:
            logger.warning("SGGEvaluator on %s received no images", self.dataset_name)
        metrics = {**self.recall_metrics(results), **self.detection_metrics(results)}
        print(format_results(metrics, self.predicate_names), flush=True)
        return metrics

    @staticmethod
    def write_results(output_dir: str, metrics: Dict[str, float]) -> None:
        """Write ``output_dir/sgg_eval.json`` atomically."""
        os.makedirs(output_dir, exist_ok=True)
        atomic_write_text(os.path.join(output_dir, RESULTS_FILE), json.dumps(metrics, indent=2))

    def evaluate(self) -> Dict[str, float]:
        """On rank 0: the flat metric dict, printed, and written with the predictions file to ``output_dir``;
        ``{}`` on other ranks."""
        results = _gather_on_main_process(self.results)
        if results is None:
            return {}
        results = self._unique_in_dataset_order(results)
        metrics = self.summarize(results)
        if self.output_dir:
            self.write_results(self.output_dir, metrics)
            save_predictions(os.path.join(self.output_dir, PREDICTIONS_FILE), [r.predictions for r in results])
        return metrics


def build_zero_shot_source(
    cfg, dataset_name: str, num_classes: int, num_predicates: int
) -> Union[np.ndarray, Callable[[], np.ndarray]]:
    """The zero-shot set of ``dataset_name``: its metadata's file (VG150: ``DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS``)
    read (and validated) now when set, else a callable computing the split's triplets never seen in
    ``DATASETS.TRAIN[0]`` when first needed (on rank 0 only)."""
    path = zero_shot_file(cfg, dataset_name)
    if path:
        return load_zero_shot_triplets(path, num_classes, num_predicates)
    train_name = cfg.DATASETS.TRAIN[0]

    def unseen_in_training() -> np.ndarray:
        logger.info("Zero-shot set: triplets of %s never seen in %s", dataset_name, train_name)
        return unseen_triplets(get_split(cfg, train_name), get_split(cfg, dataset_name))

    return unseen_in_training


def build_sgg_evaluator(cfg, dataset_name: str, output_dir: Optional[str]) -> SGGEvaluator:
    """The evaluator of split ``dataset_name`` (any registered name: ``VG_test``, ``PSG_test``, a
    ``DATASETS.COCO_RELATIONS`` entry, ...) writing to ``output_dir``."""
    split = get_split(cfg, dataset_name)
    zero_shot = build_zero_shot_source(cfg, dataset_name, len(split.idx_to_label), len(split.idx_to_predicate))
    return SGGEvaluator(
        split,
        zero_shot_triplets=zero_shot,
        output_dir=output_dir,
        dataset_name=dataset_name,
        inference_amp=bool(cfg.SOLVER.AMP.ENABLED),
        protocol=cfg.TEST.SGG_PROTOCOL,
    )
