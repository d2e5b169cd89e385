#!/usr/bin/env python
"""Export the scene-graph network to ONNX and check it against torch with onnxruntime.

    python tools/export_onnx.py --config-file CFG --output model.onnx [--check-sizes 224x320,160x288]
        MODEL.WEIGHTS model_final.pth [KEY VALUE ...]

The graph is the network only: a normalised image ``images`` (B, 3, h, w) float32 — the resized image minus
``MODEL.PIXEL_MEAN``, divided by ``MODEL.PIXEL_STD``, any h and w — is zero-padded inside the graph to the
backbone's size divisibility (with its padding mask, as ``ImageList`` does), then backbone, encoder, the three
iterative decoders and the heads give the last decoder layer's ``subject_logits``, ``object_logits``,
``relation_logits`` (B, Q, C + 1) and ``subject_boxes``, ``object_boxes``, ``relation_boxes`` (B, Q, 4) normalised
(cx, cy, w, h).  Resizing and the scene-graph post-processing (its NMS and ranking) stay in Python
(``tools/predict.py --onnx`` runs them, the same code as the torch path).  Every image of a batch shares one size
(one call per size otherwise).

After writing the file the export is checked: onnxruntime and torch run random images of the ``--check-sizes``
and the largest absolute difference per output is printed; it fails (exit status 1) above ``--tolerance``
(default 1e-4).  Both encoders export: DETR, and CenterMask with either fusion ("tokens" or "paste"), whose FCOS
detection selection is part of the graph (top-k per level, class-aware NMS as ONNX ``NonMaxSuppression``, the K
best per image in fixed slots, RoIAlign).  That NMS is torchvision's traced form (boxes offset per image and
class, one NMS); eager torch runs the same up to torchvision's cut-off (1,000 candidate boxes on the CPU) and one
NMS per image and class above it, which can differ only where float rounding of the offset boxes tips an IoU
exactly at ``MODEL.CENTERMASK.NMS_THRESH``.
Uses the TorchScript exporter (opset 17).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OUTPUT_NAMES = ("subject_logits", "object_logits", "relation_logits", "subject_boxes", "object_boxes",
                "relation_boxes")
OPSET = 17
# Stored in the ONNX file's metadata, read back by OnnxSceneGraphNetwork.
_METADATA_KEY = "iterativesg"


def exportable_network(model):
    """``model`` (an ``IterativeSceneGraphModel`` in eval mode) as a module ``images (B, 3, h, w) -> OUTPUT_NAMES``
    of the last decoder layer; the padding to ``model.size_divisibility`` and its mask are part of it."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ExportableNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
            batch, _, height, width = images.shape
            divisor = max(int(self.model.size_divisibility), 1)
            pad_h = (height + divisor - 1) // divisor * divisor - height
            pad_w = (width + divisor - 1) // divisor * divisor - width
            padded = F.pad(images, (0, pad_w, 0, pad_h))
            mask = F.pad(torch.zeros_like(images[:, 0], dtype=torch.bool), (0, pad_w, 0, pad_h), value=True)
            # The sizes as a (B, 2) tensor computed from the input's shape (a Python list would be frozen into the
            # graph): the CenterMask encoder clips its detections to them.
            sizes = torch.stack([torch.as_tensor(height), torch.as_tensor(width)])[None].expand(batch, 2)
            outputs, _ = self.model.network(padded, mask, sizes)
            return tuple(outputs[name][-1] for name in OUTPUT_NAMES)

    return ExportableNetwork().eval()


def export(cfg, output: str, example_size: Tuple[int, int] = (224, 320)) -> str:
    """Build ``cfg``'s model, load ``MODEL.WEIGHTS`` and write the ONNX graph to ``output`` (atomically)."""
    import torch

    from engine.checkpoint import ModelCheckpointer
    from modeling import build_model
    from utils.file_io import atomic_write_path

    if cfg.MODEL.META_ARCHITECTURE != "IterativeSceneGraphModel":
        raise ValueError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}: only IterativeSceneGraphModel "
                         "is exported")
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: pass the checkpoint to export, e.g. MODEL.WEIGHTS model_final.pth")
    model = build_model(cfg).to("cpu").eval()
    ModelCheckpointer(model, save_to_disk=False).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    network = exportable_network(model)
    example = torch.zeros(1, 3, *example_size)

    def write(path: str) -> None:
        import warnings

        import onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(network, (example,), path, dynamo=False, opset_version=OPSET, input_names=["images"],
                              output_names=list(OUTPUT_NAMES),
                              dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                            **{name: {0: "batch"} for name in OUTPUT_NAMES}})
        graph = onnx.load(path)
        metadata = {"size_divisibility": int(model.size_divisibility), "outputs": list(OUTPUT_NAMES),
                    "weights": os.path.abspath(cfg.MODEL.WEIGHTS)}
        graph.metadata_props.add(key=_METADATA_KEY, value=json.dumps(metadata))
        onnx.save(graph, path)

    with torch.no_grad():
        atomic_write_path(output, write)
    return output


class OnnxSceneGraphNetwork:
    """An exported network on onnxruntime: ``network(images)`` → ``{name: (B, Q, ·) torch tensor}`` of the last
    decoder layer, the input of ``SceneGraphPostProcessor``."""

    def __init__(self, path: str, cuda: bool = False, threads: Optional[int] = None):
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model {path}: no such file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ValueError(f"ONNX model {path}: onnxruntime cannot load it ({e})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map.get(_METADATA_KEY)
        if metadata is None:
            raise ValueError(f"ONNX model {path} was not written by tools/export_onnx.py (no '{_METADATA_KEY}' "
                             "metadata)")
        self.metadata = json.loads(metadata)
        self.size_divisibility = int(self.metadata["size_divisibility"])

    def __call__(self, images) -> Dict[str, "object"]:
        import torch

        outputs = self.session.run(list(OUTPUT_NAMES), {"images": np.ascontiguousarray(images.numpy())})
        return {name: torch.from_numpy(value) for name, value in zip(OUTPUT_NAMES, outputs)}


def check(cfg, onnx_path: str, sizes: Sequence[Tuple[int, int]], seed: int = 0) -> Dict[str, float]:
    """Largest absolute difference per output between onnxruntime and torch on random normalised images of
    ``sizes`` (the maximum over the sizes)."""
    import torch

    from engine.checkpoint import ModelCheckpointer
    from modeling import build_model

    model = build_model(cfg).to("cpu").eval()
    ModelCheckpointer(model, save_to_disk=False).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    network = exportable_network(model)
    runtime = OnnxSceneGraphNetwork(onnx_path)
    generator = torch.Generator().manual_seed(seed)
    worst = {name: 0.0 for name in OUTPUT_NAMES}
    for height, width in sizes:
        images = torch.randn(1, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = dict(zip(OUTPUT_NAMES, network(images)))
        got = runtime(images)
        for name in OUTPUT_NAMES:
            if got[name].shape != expected[name].shape:
                raise ValueError(f"{onnx_path}: {name} has shape {tuple(got[name].shape)} at {height}x{width}, "
                                 f"torch gives {tuple(expected[name].shape)}")
            worst[name] = max(worst[name], float((got[name] - expected[name]).abs().max()))
    return worst


def _sizes(text: str) -> List[Tuple[int, int]]:
    try:
        sizes = [tuple(int(v) for v in part.lower().split("x")) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW[,HxW...], got {text!r}") from None
    if any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected HxW[,HxW...] with positive sizes, got {text!r}")
    return sizes


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the YAML config the model was trained with")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--check-sizes", type=_sizes, default=None,
                        help="HxW,... image sizes of the onnxruntime-vs-torch check (default: "
                             "INPUT.MIN_SIZE_TEST x MAX_SIZE_TEST and a smaller odd size)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed absolute difference")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS x.pth")
    args = parser.parse_args(argv)
    from configs.defaults import get_cfg
    from engine.defaults import run_command_line

    status = {"code": 0}

    def run() -> None:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts + ["MODEL.DEVICE", "cpu"])
        cfg.freeze()
        short, long = int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)
        sizes = args.check_sizes or [(short, long), (short * 3 // 4 + 1, long * 2 // 3 + 3)]
        export(cfg, args.output, example_size=sizes[0])
        worst = check(cfg, args.output, sizes)
        print(f"wrote {args.output}; onnxruntime vs torch at {', '.join(f'{h}x{w}' for h, w in sizes)}: max abs "
              "diff " + ", ".join(f"{name} {value:.2e}" for name, value in worst.items()))
        if max(worst.values()) > args.tolerance:
            print(f"error: the difference exceeds --tolerance {args.tolerance}", file=sys.stderr)
            status["code"] = 1

    return run_command_line(run) or status["code"]


if __name__ == "__main__":
    sys.exit(main())
