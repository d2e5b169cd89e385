#!/usr/bin/env python
"""Predict scene graphs on your own images.

    python tools/predict.py --config-file CFG --input IMG_OR_DIR --output OUT [--top-k 20]
        [--score-threshold 0.0] [--object-threshold 0.3] [--batch-size 1] [--format json|jsonl]
        [--self-pairs] [--overwrite] [--onnx model.onnx] MODEL.WEIGHTS model_final.pth [KEY VALUE ...]

``--format json`` (default) writes, for every image, ``OUT/<name>.json`` — the image's width and height, the
model it came from (config file, weights file and its SHA-256), the thresholds used, the objects (box in
original-image pixels, label name, score) and the top-k triplets (subject / predicate / object names, scores, box
indices into ``objects``) — and ``OUT/<name>.png``, the boxes drawn on the image with the scene graph beside it.
``--format jsonl`` writes the same records, one line per image, to the single file ``OUT`` (no pictures): the
form for big folders.  Class and predicate names are those of the split the model was trained on,
``DATASETS.TRAIN[0]`` of the config (VG150: ``DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY``; a COCO-relations split:
its JSON's categories; docs/DATASETS.md): pass the run's ``OUTPUT_DIR/config.yaml``.

A folder may hold anything: a file that does not decode (truncated, not an image) is reported with its name and
the reason, skipped, and the rest is processed; the summary lists the skipped files and the exit status is 1.
Files without an image extension are ignored (listed once).  A run is resumable: images whose output already
exists are skipped (``--overwrite`` redoes them).  Triplets that pair a box with itself are left out unless
``--self-pairs`` (the evaluation path, ``train_iterative_model.py --eval-only``, always keeps every row).

``--batch-size N`` runs up to N images per forward pass.  Images are grouped by their padded input shape (resized
size rounded up to the backbone's size divisibility, 32 for FPN backbones), so images of different sizes share a
batch while every image sees exactly the padding it would see alone: the outputs equal one-by-one outputs.  (A
DETR-style model is not padding-invariant: its convolutions and normalisation layers see the padding.)

``--onnx model.onnx`` (from ``tools/export_onnx.py``) runs the network on onnxruntime instead of torch; the image
loading, resizing, normalisation and the post-processing (NMS, ranking) are the same Python code.  Runs on
``MODEL.DEVICE`` (cuda or cpu), with a progress bar.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RECORD_FORMAT = "iterativesg-scene-graph/v1"
# Above this many decoded images waiting for their batch to fill, every pending batch is run (bounded memory).
_MAX_PENDING_BATCHES = 4


def list_images(path: str) -> List[str]:
    """The image files named by ``path`` (a file, or every image in a folder, sorted)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not files:
            raise FileNotFoundError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return files
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    return [path]


def ignored_files(path: str) -> List[str]:
    """Names of the visible files in folder ``path`` that :func:`list_images` leaves out (no image extension)."""
    if not os.path.isdir(path):
        return []
    return sorted(f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)) and not f.startswith(".")
                  and not f.lower().endswith(IMAGE_EXTENSIONS))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ImageDecodeError(ValueError):
    """An input file that cannot be turned into an image; the message names the file and the reason."""

    def __init__(self, file_name: str, reason: str):
        super().__init__(f"{file_name}: {reason}")
        self.file_name, self.reason = file_name, reason


def load_image(file_name: str, cfg) -> Tuple["object", dict]:
    """``(RGB uint8 (3, H, W) tensor of the EXIF-transposed image, model batch item)``: the test-time resize of
    ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` and the channel order of ``INPUT.FORMAT``.  Raises
    :class:`ImageDecodeError` naming ``file_name`` when it does not decode."""
    from data.mapper import read_image

    try:
        image = read_image(file_name, image_id=-1, image_format="RGB")
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure (OSError, DecompressionBombError, ...) skips the file
        cause = e.__context__ if isinstance(e, ValueError) and e.__context__ is not None else e
        raise ImageDecodeError(file_name, f"cannot decode ({type(cause).__name__}: {cause})") from None
    return image, model_item(image, cfg)


def model_item(image, cfg) -> dict:
    """The model's batch item for an RGB uint8 (3, H, W) tensor: resized as at test time, in ``INPUT.FORMAT``."""
    import torch

    from data import transforms as T

    h, w = image.shape[-2:]
    size = T.shortest_edge_size(h, w, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
    resized, _ = T.resize(*T.as_tv_tensors(image, torch.zeros(0, 4)), size)
    model_input = resized.as_subclass(torch.Tensor)
    if cfg.INPUT.FORMAT == "BGR":
        model_input = model_input.flip(0)
    return {"image": model_input.contiguous(), "height": int(h), "width": int(w), "image_id": -1}


def normalised_image(item: dict, cfg):
    """(1, 3, h, w) float32: the item's resized image minus ``MODEL.PIXEL_MEAN``, divided by ``PIXEL_STD`` (the
    ONNX graph's input; the torch model does the same in ``preprocess_images``)."""
    import torch

    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
    return ((item["image"].float() - mean) / std)[None].contiguous()


class SceneGraphPredictor:
    """The model of ``cfg`` with ``MODEL.WEIGHTS`` loaded (or the ONNX network ``onnx_path``), turning image files
    into ``sgg-predictions/v1`` entries."""

    def __init__(self, cfg, onnx_path: Optional[str] = None):
        import torch

        from data.catalog import MetadataCatalog

        if not cfg.DATASETS.TRAIN:
            raise ValueError("DATASETS.TRAIN is empty: the class and predicate names are those of the training "
                             "split (pass the run's OUTPUT_DIR/config.yaml)")
        metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0], cfg)
        self.class_names, self.predicate_names = list(metadata.class_names), list(metadata.predicate_names)
        if len(self.class_names) != cfg.MODEL.DETR.NUM_CLASSES or \
                len(self.predicate_names) != cfg.MODEL.DETR.NUM_RELATION_CLASSES:
            raise ValueError(
                f"{cfg.DATASETS.TRAIN[0]} ({metadata.source}) has {len(self.class_names)} classes / "
                f"{len(self.predicate_names)} predicates but "
                f"MODEL.DETR.NUM_CLASSES / NUM_RELATION_CLASSES are {cfg.MODEL.DETR.NUM_CLASSES} / "
                f"{cfg.MODEL.DETR.NUM_RELATION_CLASSES}")
        self.cfg = cfg
        self.onnx_path = onnx_path
        self.device = torch.device(cfg.MODEL.DEVICE)
        if onnx_path:
            from modeling.postprocess import SceneGraphPostProcessor
            from tools.export_onnx import OnnxSceneGraphNetwork

            self.network = OnnxSceneGraphNetwork(onnx_path, cuda=self.device.type == "cuda")
            self.postprocessor = SceneGraphPostProcessor(cfg.TEST.NMS_THRESH, cfg.TEST.RELATIONS_PER_IMAGE)
            self.size_divisibility = self.network.size_divisibility
            self.model = None
        else:
            from engine.checkpoint import ModelCheckpointer
            from modeling import build_model

            if not cfg.MODEL.WEIGHTS:
                raise ValueError("MODEL.WEIGHTS is empty: pass the checkpoint to predict with, e.g. "
                                 "MODEL.WEIGHTS output/model_final.pth")
            self.model = build_model(cfg)
            ModelCheckpointer(self.model, save_to_disk=False).load(cfg.MODEL.WEIGHTS, checkpointables=[])
            self.model.eval()
            self.size_divisibility = int(self.model.size_divisibility)

    def model_identity(self, config_file: Optional[str]) -> dict:
        """Where the predictions came from: config file, weights (path + SHA-256) or ONNX file, architecture."""
        weights = self.cfg.MODEL.WEIGHTS
        identity = {
            "config_file": os.path.abspath(config_file) if config_file else None,
            "meta_architecture": self.cfg.MODEL.META_ARCHITECTURE,
            "encoder": self.cfg.MODEL.ENCODER.NAME,
            "weights": os.path.abspath(weights) if weights else None,
            "weights_sha256": file_sha256(weights) if weights and os.path.isfile(weights) else None,
            "runtime": "onnxruntime" if self.onnx_path else "torch",
        }
        if self.onnx_path:
            identity.update(onnx=os.path.abspath(self.onnx_path), onnx_sha256=file_sha256(self.onnx_path))
        return identity

    def batch_key(self, item: dict) -> Tuple[int, int]:
        """The padded (H, W) the network sees for ``item`` alone: images with equal keys batch exactly."""
        divisor = max(self.size_divisibility, 1)
        h, w = item["image"].shape[-2:]
        return -(-int(h) // divisor) * divisor, -(-int(w) // divisor) * divisor

    def predict_items(self, items: Sequence[dict]) -> List[dict]:
        """One ``sgg-predictions/v1`` entry (tensors on the CPU) per batch item."""
        import torch

        with torch.no_grad():
            if self.model is not None:
                outputs = self.model(list(items))
            else:
                outputs = []
                for item in items:  # the ONNX graph takes one image size per call
                    network_outputs = self.network(normalised_image(item, self.cfg))
                    outputs += self.postprocessor(network_outputs, [(int(item["height"]), int(item["width"]))],
                                                  [tuple(int(v) for v in item["image"].shape[-2:])])
        return [{k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in out.items()} for out in outputs]

    def __call__(self, file_name: str) -> tuple:
        """``(image RGB uint8 HxWx3 numpy array, sgg-predictions/v1 entry)`` for one image file."""
        image, item = load_image(file_name, self.cfg)
        return image.permute(1, 2, 0).numpy(), self.predict_items([item])[0]


def without_self_pairs(prediction: dict) -> dict:
    """``prediction`` without the relation rows (every ``rel_*`` entry) whose subject and object are the same
    box."""
    keep = prediction["rel_pairs"][:, 0] != prediction["rel_pairs"][:, 1]
    return {key: value[keep] if key.startswith("rel_") else value for key, value in prediction.items()}


def scene_graph_json(prediction: dict, class_names, predicate_names, top_k: int, score_threshold: float,
                     object_threshold: float, file_name: str) -> dict:
    """Objects and top-k triplets with names, scores and box indices (the core of the JSON of one image)."""
    from visualization import select_triplets

    triplets = select_triplets(prediction, top_k=top_k, score_threshold=score_threshold)
    scores = prediction["scores"].tolist()
    keep = sorted({t["subject"] for t in triplets} | {t["object"] for t in triplets} |
                  {i for i, s in enumerate(scores) if s >= object_threshold})
    new_index = {old: new for new, old in enumerate(keep)}
    boxes = prediction["boxes"].tolist()
    labels = prediction["labels"].tolist()
    return {
        "image": os.path.abspath(file_name),
        "objects": [{"index": new_index[i], "box_xyxy": [round(v, 2) for v in boxes[i]],
                     "label": class_names[labels[i]], "score": round(scores[i], 4)} for i in keep],
        "triplets": [{"subject": class_names[labels[t["subject"]]], "predicate": predicate_names[t["predicate"]],
                      "object": class_names[labels[t["object"]]], "subject_index": new_index[t["subject"]],
                      "object_index": new_index[t["object"]], "score": round(t["score"], 4),
                      "predicate_score": round(t["predicate_score"], 4)} for t in triplets],
    }


def image_record(prediction: dict, predictor: SceneGraphPredictor, file_name: str, image, model: dict,
                 thresholds: dict) -> dict:
    """The JSON of one image (format ``iterativesg-scene-graph/v1``): file name, original ``width`` and
    ``height``, the ``model`` identity, the ``thresholds`` used, then objects and triplets."""
    record = {"format": RECORD_FORMAT, "file_name": os.path.basename(file_name), "width": int(image.shape[2]),
              "height": int(image.shape[1]), "model": model, "thresholds": thresholds}
    record.update(scene_graph_json(prediction, predictor.class_names, predictor.predicate_names,
                                   thresholds["top_k"], thresholds["score_threshold"],
                                   thresholds["object_threshold"], file_name))
    return record


def thresholds_of(cfg, top_k: int, score_threshold: float, object_threshold: float, self_pairs: bool) -> dict:
    """The settings that shaped a record's triplets (stored in it)."""
    return {"top_k": top_k, "score_threshold": score_threshold, "object_threshold": object_threshold,
            "self_pairs": self_pairs, "nms_thresh": float(cfg.TEST.NMS_THRESH),
            "relations_per_image": int(cfg.TEST.RELATIONS_PER_IMAGE)}


@dataclasses.dataclass
class PredictionRun:
    """What :func:`predict` did: outputs written, images left as they were (resumed), files skipped."""

    written: List[str] = dataclasses.field(default_factory=list)  # JSON paths (json) or image paths (jsonl)
    existing: List[str] = dataclasses.field(default_factory=list)  # inputs whose output was already there
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (file, reason)


def output_stems(files: Sequence[str]) -> Dict[str, str]:
    """Output name (without extension) of every input: its stem, or its whole file name when two inputs share a
    stem (``a.jpg`` and ``a.png`` → ``a.jpg``, ``a.png``)."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    return {f: (os.path.basename(f) if stems.count(s) > 1 else s) for f, s in zip(files, stems)}


def _read_jsonl(path: str) -> List[str]:
    """The complete lines of an existing JSONL output (a line cut short by a killed run is dropped)."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "image" in record:
                lines.append(line if line.endswith("\n") else line + "\n")
    return lines


class _Writer:
    """Writes the records of one run: a JSON + PNG per image, or lines appended to one JSONL file."""

    def __init__(self, output: str, output_format: str, files: Sequence[str], overwrite: bool, draw_top_k: int):
        from utils.file_io import atomic_write_text

        self.output, self.format, self.draw_top_k = output, output_format, draw_top_k
        self.stems = output_stems(files)
        self.done: set = set()
        if output_format == "jsonl":
            if os.path.isdir(output):
                raise ValueError(f"--output {output}: with --format jsonl the output is one file, not a folder")
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            lines = [] if overwrite or not os.path.isfile(output) else _read_jsonl(output)
            self.done = {json.loads(line)["image"] for line in lines}
            atomic_write_text(output, "".join(lines))  # drops a torn last line; starts empty with --overwrite
        else:
            if os.path.isfile(output):
                raise ValueError(f"--output {output} is a file; with --format json it must be a folder")
            os.makedirs(output, exist_ok=True)
            if not overwrite:
                self.done = {os.path.abspath(f) for f in files if all(
                    os.path.isfile(os.path.join(output, self.stems[f] + ext)) for ext in (".json", ".png"))}

    def exists(self, file_name: str) -> bool:
        return os.path.abspath(file_name) in self.done

    def write(self, file_name: str, record: dict, image, prediction: dict, triplet_options: dict,
              class_names, predicate_names) -> str:
        from utils.file_io import atomic_write_text
        from visualization import draw_scene_graph, select_triplets

        if self.format == "jsonl":
            with open(self.output, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return file_name
        stem = os.path.join(self.output, self.stems[file_name])
        # The picture first: a run killed between the two files leaves no JSON, so resuming redoes the image.
        drawn = select_triplets(prediction, top_k=min(triplet_options["top_k"], self.draw_top_k),
                                score_threshold=triplet_options["score_threshold"])
        draw_scene_graph(image.permute(1, 2, 0).numpy(), prediction["boxes"].numpy(), prediction["labels"].tolist(),
                         drawn, class_names, predicate_names, stem + ".png", title=os.path.basename(file_name))
        atomic_write_text(stem + ".json", json.dumps(record, indent=2))
        return stem + ".json"


def predict(cfg, inputs: Iterable[str], output: str, top_k: int = 20, score_threshold: float = 0.0,
            object_threshold: float = 0.3, draw_top_k: int = 10, batch_size: int = 1, output_format: str = "json",
            overwrite: bool = False, self_pairs: bool = False, onnx_path: Optional[str] = None,
            config_file: Optional[str] = None, predictor: Optional[SceneGraphPredictor] = None,
            log=None) -> PredictionRun:
    """Run the predictor over ``inputs`` (see the module docstring); returns what was written and skipped.

    A file that does not decode is skipped (reported through ``log``, default stderr) unless it is the only input,
    when :class:`ImageDecodeError` is raised.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if output_format not in ("json", "jsonl"):
        raise ValueError(f"--format must be 'json' or 'jsonl', got {output_format!r}")
    files = list(inputs)
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    predictor = predictor or SceneGraphPredictor(cfg, onnx_path)
    writer = _Writer(output, output_format, files, overwrite, draw_top_k)
    run = PredictionRun()
    model = predictor.model_identity(config_file)
    thresholds = thresholds_of(cfg, top_k, score_threshold, object_threshold, self_pairs)
    triplet_options = {"top_k": top_k, "score_threshold": score_threshold}

    def finish(file_name: str, image, prediction: dict) -> None:
        if not self_pairs:
            prediction = without_self_pairs(prediction)
        record = image_record(prediction, predictor, file_name, image, model, thresholds)
        run.written.append(writer.write(file_name, record, image, prediction, triplet_options,
                                        predictor.class_names, predictor.predicate_names))

    def run_batch(batch: List[tuple]) -> None:
        try:
            predictions = predictor.predict_items([item for _, _, item in batch])
        except Exception as e:  # noqa: BLE001 - one image the network cannot take must not stop the folder
            if len(batch) > 1:
                for entry in batch:
                    run_batch([entry])
                return
            run.skipped.append((batch[0][0], f"inference failed ({type(e).__name__}: {e})"))
            log(f"skipped {batch[0][0]}: {run.skipped[-1][1]}")
            return
        for (file_name, image, _), prediction in zip(batch, predictions):
            finish(file_name, image, prediction)
        progress.update(len(batch))

    todo = []
    for file_name in files:
        (run.existing if writer.exists(file_name) else todo).append(file_name)
    if run.existing:
        log(f"{len(run.existing)} of {len(files)} images already have their output in {output} (kept; "
            "--overwrite redoes them)")
    pending: Dict[Tuple[int, int], List[tuple]] = {}
    with tqdm(total=len(todo), desc="predict", unit="image", file=sys.stderr) as progress:
        for file_name in todo:
            try:
                image, item = load_image(file_name, cfg)
            except ImageDecodeError as e:
                if len(files) == 1:
                    raise
                run.skipped.append((file_name, e.reason))
                log(f"skipped {e}")
                progress.update(1)
                continue
            bucket = pending.setdefault(predictor.batch_key(item), [])
            bucket.append((file_name, image, item))
            if len(bucket) == batch_size:
                run_batch(pending.pop(predictor.batch_key(item)))
            elif sum(len(b) for b in pending.values()) >= _MAX_PENDING_BATCHES * batch_size:
                for key in list(pending):
                    run_batch(pending.pop(key))
        for key in list(pending):
            run_batch(pending.pop(key))
    return run


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the YAML config the model was trained with")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True,
                        help="folder for <name>.json and <name>.png (--format json) or the .jsonl file (jsonl)")
    parser.add_argument("--top-k", type=int, default=20, help="triplets per image in the JSON (default 20)")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="drop triplets whose score (subject x object x predicate) is below this")
    parser.add_argument("--object-threshold", type=float, default=0.3,
                        help="also list objects outside the triplets whose score is at least this")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per forward pass (grouped by padded size; outputs equal one-by-one)")
    parser.add_argument("--format", choices=("json", "jsonl"), default="json",
                        help="json: <name>.json + <name>.png per image; jsonl: one line per image in one file")
    parser.add_argument("--self-pairs", action=argparse.BooleanOptionalAction, default=False,
                        help="keep triplets whose subject and object are the same box (default: --no-self-pairs)")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose output already exists")
    parser.add_argument("--onnx", default=None, help="run this ONNX network (tools/export_onnx.py) on onnxruntime")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS x.pth")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    from configs.defaults import get_cfg
    from engine.defaults import run_command_line

    status = {"code": 0}

    def run() -> None:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.freeze()
        if args.onnx and not os.path.isfile(args.onnx):
            raise FileNotFoundError(f"--onnx {args.onnx}: no such file")
        files = list_images(args.input)
        ignored = ignored_files(args.input)
        if ignored:
            print(f"ignored {len(ignored)} files without an image extension: {', '.join(ignored[:10])}"
                  + (" ..." if len(ignored) > 10 else ""), file=sys.stderr)
        result = predict(cfg, files, args.output, args.top_k, args.score_threshold, args.object_threshold,
                         batch_size=args.batch_size, output_format=args.format, overwrite=args.overwrite,
                         self_pairs=args.self_pairs, onnx_path=args.onnx, config_file=args.config_file)
        what = "scene graphs (.json + .png)" if args.format == "json" else "lines"
        print(f"wrote {len(result.written)} {what} to {args.output}"
              + (f"; {len(result.existing)} already there" if result.existing else ""))
        if result.skipped:
            print(f"skipped {len(result.skipped)} of {len(files)} files:", file=sys.stderr)
            for file_name, reason in result.skipped:
                print(f"  {file_name}: {reason}", file=sys.stderr)
            status["code"] = 1

    code = run_command_line(run)
    return code or status["code"]


if __name__ == "__main__":
    sys.exit(main())
