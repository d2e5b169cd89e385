#!/usr/bin/env python
"""Predict scene graphs on your own images.

    python tools/predict.py --config-file CFG --input IMG_OR_DIR --output DIR [--top-k 20]
        [--score-threshold 0.0] [--object-threshold 0.3] MODEL.WEIGHTS model_final.pth [KEY VALUE ...]

For every image it writes ``DIR/<name>.json`` — the objects (box in original-image pixels, label name, score) and
the top-k triplets (subject / predicate / object names, scores, box indices into ``objects``) — and
``DIR/<name>.png``, the boxes drawn on the image with the scene graph laid out beside it. Class and predicate
names come from ``DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY`` (the dicts json the model was trained with).
Runs on ``MODEL.DEVICE`` (cuda or cpu), one image at a time, with a progress bar.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(path: str) -> List[str]:
    """The image files named by ``path`` (a file, or every image in a folder, sorted)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return files
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    return [path]


class SceneGraphPredictor:
    """A model built from ``cfg`` with ``MODEL.WEIGHTS`` loaded, turning image files into scene graphs."""

    def __init__(self, cfg):
        import torch

        from data.visual_genome import _read_vocabulary
        from engine.checkpoint import ModelCheckpointer
        from modeling import build_model

        vocab = cfg.DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY
        if not vocab or not os.path.isfile(vocab):
            raise FileNotFoundError(
                f"DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY: {vocab!r} is not a file (the class and predicate "
                "names of the model are read from it)")
        self.class_names, self.predicate_names = _read_vocabulary(vocab)
        if len(self.class_names) != cfg.MODEL.DETR.NUM_CLASSES or \
                len(self.predicate_names) != cfg.MODEL.DETR.NUM_RELATION_CLASSES:
            raise ValueError(
                f"{vocab} has {len(self.class_names)} classes / {len(self.predicate_names)} predicates but "
                f"MODEL.DETR.NUM_CLASSES / NUM_RELATION_CLASSES are {cfg.MODEL.DETR.NUM_CLASSES} / "
                f"{cfg.MODEL.DETR.NUM_RELATION_CLASSES}")
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("MODEL.WEIGHTS is empty: pass the checkpoint to predict with, e.g. "
                             "MODEL.WEIGHTS output/model_final.pth")
        self.cfg = cfg
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model = build_model(cfg)
        ModelCheckpointer(self.model, save_to_disk=False).load(cfg.MODEL.WEIGHTS, checkpointables=[])
        self.model.eval()

    def __call__(self, file_name: str) -> tuple:
        """``(image RGB uint8 HxWx3 numpy array, sgg-predictions/v1 entry)`` for one image file."""
        import torch

        from data import transforms as T
        from data.mapper import read_image

        image = read_image(file_name, image_id=-1, image_format="RGB")
        h, w = image.shape[-2:]
        size = T.shortest_edge_size(h, w, int(self.cfg.INPUT.MIN_SIZE_TEST), int(self.cfg.INPUT.MAX_SIZE_TEST))
        resized, _ = T.resize(*T.as_tv_tensors(image, torch.zeros(0, 4)), size)
        model_input = resized.as_subclass(torch.Tensor)
        if self.cfg.INPUT.FORMAT == "BGR":
            model_input = model_input.flip(0)
        item = {"image": model_input.contiguous(), "height": int(h), "width": int(w), "image_id": -1}
        with torch.no_grad():
            output = self.model([item])[0]
        output = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in output.items()}
        return image.permute(1, 2, 0).numpy(), output


def scene_graph_json(prediction: dict, class_names, predicate_names, top_k: int, score_threshold: float,
                     object_threshold: float, file_name: str) -> dict:
    """The JSON written for one image: objects and top-k triplets with names, scores and box indices."""
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


def predict(cfg, inputs: Iterable[str], output_dir: str, top_k: int = 20, score_threshold: float = 0.0,
            object_threshold: float = 0.3, draw_top_k: int = 10) -> List[str]:
    """Run the predictor over ``inputs``; returns the JSON paths written (a PNG lies beside each)."""
    from tqdm import tqdm

    from engine.file_io import atomic_write_text
    from visualization import draw_scene_graph, select_triplets

    predictor = SceneGraphPredictor(cfg)
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for file_name in tqdm(list(inputs), desc="predict", unit="image"):
        image, prediction = predictor(file_name)
        record = scene_graph_json(prediction, predictor.class_names, predictor.predicate_names, top_k,
                                  score_threshold, object_threshold, file_name)
        stem = os.path.splitext(os.path.basename(file_name))[0]
        json_path = os.path.join(output_dir, stem + ".json")
        atomic_write_text(json_path, json.dumps(record, indent=2))
        drawn = select_triplets(prediction, top_k=min(top_k, draw_top_k), score_threshold=score_threshold)
        draw_scene_graph(image, prediction["boxes"].numpy(), prediction["labels"].tolist(), drawn,
                         predictor.class_names, predictor.predicate_names,
                         os.path.join(output_dir, stem + ".png"), title=os.path.basename(file_name))
        written.append(json_path)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the YAML config the model was trained with")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="folder for <name>.json and <name>.png")
    parser.add_argument("--top-k", type=int, default=20, help="triplets per image in the JSON (default 20)")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="drop triplets whose score (subject x object x predicate) is below this")
    parser.add_argument("--object-threshold", type=float, default=0.3,
                        help="also list objects outside the triplets whose score is at least this")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS x.pth")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    from configs.defaults import get_cfg
    from engine.defaults import run_command_line

    def run() -> None:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.freeze()
        written = predict(cfg, list_images(args.input), args.output, args.top_k, args.score_threshold,
                          args.object_threshold)
        print(f"wrote {len(written)} scene graphs (.json + .png) to {args.output}")

    return run_command_line(run)


if __name__ == "__main__":
    sys.exit(main())
