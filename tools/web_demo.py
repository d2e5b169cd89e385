#!/usr/bin/env python
"""A web page to try the scene-graph model on your own pictures (gradio), on the CPU.

    python tools/web_demo.py [--config-file CFG] [--port 7860] [--examples DIR] [MODEL.WEIGHTS W] [KEY VALUE ...]
    make web

Upload an image (or click an example), choose how many triplets to show (top-k) and the lowest triplet score, and
press "Predict": the page shows the boxes drawn on the image, the scene graph picture, a table of the triplets
(subject, predicate, object, score) and the JSON record of ``tools/predict.py`` to download.  Triplets pairing a
box with itself are left out, as in ``tools/predict.py``.

By default it serves the demo model that ``make demo`` trains (``output/demo/config.yaml`` and
``output/demo/model_final.pth``, examples from ``output/demo_data/VG_100K``); ``--config-file`` with
``MODEL.WEIGHTS`` serves any other model.  The page listens on 127.0.0.1 only (``--host 0.0.0.0`` to share it
on your network); nothing is sent anywhere else (gradio's analytics are off).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from typing import List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DEMO_CONFIG = os.path.join("output", "demo", "config.yaml")
DEMO_WEIGHTS = os.path.join("output", "demo", "model_final.pth")
DEMO_EXAMPLES = os.path.join("output", "demo_data", "VG_100K")
TRIPLET_COLUMNS = ["subject", "predicate", "object", "score"]


def draw_boxes(image, record: dict):
    """The image (H, W, 3 uint8) with the boxes of ``record``'s objects and their labels drawn on it (PIL)."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    palette = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
               (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]
    width = max(1, round(max(canvas.size) / 250))
    for obj in record["objects"]:
        colour = palette[obj["index"] % len(palette)]
        x1, y1, x2, y2 = obj["box_xyxy"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        label = f"{obj['label']}#{obj['index']} {obj['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        draw.rectangle([left, top - (bottom - top), right, y1], fill=colour)
        draw.text((x1, y1 - (bottom - top)), label, fill=(255, 255, 255))
    return canvas


class WebDemo:
    """The page's work: one image in, the four outputs out (usable without a browser, as the tests do)."""

    def __init__(self, cfg, config_file: Optional[str], object_threshold: float = 0.3):
        from tools.predict import SceneGraphPredictor

        self.cfg = cfg
        self.predictor = SceneGraphPredictor(cfg)
        self.model_identity = self.predictor.model_identity(config_file)
        self.object_threshold = object_threshold
        self.output_dir = tempfile.mkdtemp(prefix="iterativesg_web_")

    def __call__(self, image, top_k: float, score_threshold: float, name: str = "upload"):
        """``image`` (H, W, 3 uint8 RGB numpy, or None) → (boxes picture, scene graph PNG path, triplet rows,
        JSON path)."""
        import numpy as np
        import torch

        from tools.predict import image_record, model_item, thresholds_of, without_self_pairs
        from visualization import draw_scene_graph, select_triplets

        if image is None:
            raise ValueError("upload an image first (or click an example)")
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
        tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        prediction = without_self_pairs(self.predictor.predict_items([model_item(tensor, self.cfg)])[0])
        thresholds = thresholds_of(self.cfg, int(top_k), float(score_threshold), self.object_threshold, False)
        record = image_record(prediction, self.predictor, name, tensor, self.model_identity, thresholds)
        record["image"] = name
        rows = [[t["subject"] + f"#{t['subject_index']}", t["predicate"], t["object"] + f"#{t['object_index']}",
                 round(t["score"], 4)] for t in record["triplets"]]
        folder = os.path.join(self.output_dir, uuid.uuid4().hex[:12])  # one per request: downloads never mix
        os.makedirs(folder)
        stem = os.path.join(folder, "scene_graph")
        drawn = select_triplets(prediction, top_k=int(top_k), score_threshold=float(score_threshold))
        draw_scene_graph(image, prediction["boxes"].numpy(), prediction["labels"].tolist(), drawn,
                         self.predictor.class_names, self.predictor.predicate_names, stem + ".png")
        json_path = stem + ".json"
        with open(json_path, "w") as f:
            json.dump(record, f, indent=2)
        return draw_boxes(image, record), stem + ".png", rows, json_path


def build_page(demo: WebDemo, examples: Sequence[str] = (), top_k: int = 10, score_threshold: float = 0.0):
    """The gradio page (``gr.Blocks``) around ``demo``."""
    import gradio as gr

    with gr.Blocks(title="IterativeSG scene graphs") as page:
        gr.Markdown("## Scene graph generation (IterativeSG)\nUpload an image or click an example, then *Predict*. "
                    f"Model: `{demo.model_identity['config_file'] or demo.cfg.MODEL.META_ARCHITECTURE}`, weights "
                    f"`{demo.model_identity['weights']}`.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="numpy", label="image", elem_id="input-image", sources=["upload"])
                top_k_slider = gr.Slider(1, 50, value=top_k, step=1, label="top-k triplets", elem_id="top-k")
                threshold = gr.Slider(0.0, 1.0, value=score_threshold, step=0.01, label="score threshold",
                                      elem_id="score-threshold")
                run = gr.Button("Predict", variant="primary", elem_id="predict")
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image], label="examples")
            with gr.Column():
                boxes = gr.Image(type="pil", label="boxes", elem_id="boxes", interactive=False)
                graph = gr.Image(type="filepath", label="scene graph", elem_id="scene-graph", interactive=False)
        table = gr.Dataframe(headers=TRIPLET_COLUMNS, label="triplets", elem_id="triplets", interactive=False)
        download = gr.File(label="JSON", elem_id="json")
        run.click(lambda im, k, t: demo(im, k, t), inputs=[image, top_k_slider, threshold],
                  outputs=[boxes, graph, table, download])
    return page


def default_examples(cfg, limit: int = 4) -> List[str]:
    """A few images of the model's dataset folder (``DATASETS.VISUAL_GENOME.IMAGES``), or of the demo world."""
    from tools.predict import IMAGE_EXTENSIONS

    for folder in (cfg.DATASETS.VISUAL_GENOME.IMAGES, DEMO_EXAMPLES):
        if folder and os.path.isdir(folder):
            names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
            if names:
                return [os.path.join(folder, f) for f in names[:limit]]
    return []


def load_config(config_file: Optional[str], opts: Sequence[str]):
    """The config to serve: ``config_file`` + ``opts`` on the CPU, or the ``make demo`` model (clear error when
    it is not there)."""
    from configs.defaults import get_cfg

    opts = list(opts)
    if config_file is None:
        config_file = DEMO_CONFIG
        missing = [path for path in (DEMO_CONFIG, DEMO_WEIGHTS) if not os.path.isfile(path)]
        if missing and "MODEL.WEIGHTS" not in opts[0::2]:
            raise FileNotFoundError(
                f"{missing[0]} is missing: run `make demo` first (it trains the demo model, about 15 minutes on the "
                "CPU), or serve another model with --config-file CFG MODEL.WEIGHTS W")
        if "MODEL.WEIGHTS" not in opts[0::2]:
            opts += ["MODEL.WEIGHTS", DEMO_WEIGHTS]
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file}: no such file")
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts + ["MODEL.DEVICE", "cpu"])
    cfg.freeze()
    return cfg, config_file


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=None, help=f"the model's YAML config (default {DEMO_CONFIG})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--examples", default=None, help="folder of example images (default: the dataset's)")
    parser.add_argument("--top-k", type=int, default=10, help="initial top-k slider value")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="initial score threshold")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS x.pth")
    args = parser.parse_args(argv)
    from engine.defaults import run_command_line

    def run() -> None:
        from tools.predict import list_images

        cfg, config_file = load_config(args.config_file, args.opts)
        examples = list_images(args.examples)[:8] if args.examples else default_examples(cfg)
        page = build_page(WebDemo(cfg, config_file), examples, args.top_k, args.score_threshold)
        print(f"serving http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
        page.launch(server_name=args.host, server_port=args.port, share=False, show_error=True)

    return run_command_line(run)


if __name__ == "__main__":
    sys.exit(main())
