#!/usr/bin/env python
"""Row A's full-size transformer path, eager vs ``torch.compile``, on a stand-in feature map (no backbone).

    python benchmarks/bench_transformer_path.py --device cpu --threads 2 [--compile] [--mode reduce-overhead]

What a training step of ``configs/iterative_model.yaml`` does after its backbone: the 1×1 input projection of a
fixed random res5 map (batch 3 at 800×1216 → 2048 × 25 × 38), the DETR encoder (6 layers), the three 6-layer
iterative decoders and heads, the Hungarian matcher (one host copy), the losses, backward (no optimizer step);
inference is the same forward in eval mode at batch 1 plus post-processing.  With ``--compile`` the model compiles
its parts as the trainer does (``IterativeSceneGraphModel.compile_parts``); the first step and the first inference
(compiling) are timed separately.  Prints one JSON object: medians in ms, the first calls in s and the ATen
operators dispatched per training step (a compiled graph dispatches only its extern kernels).
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import bench_model  # noqa: E402
from engine.trainer import compile_options  # noqa: E402

STRIDE = 32


class StandInBackbone(nn.Module):
    """Returns (the first B images' rows of) one fixed random ``res5`` map, made outside any compiled region."""

    def __init__(self, batch: int, height: int, width: int, channels: int = 2048):
        super().__init__()
        self.channels = channels
        self.size_divisibility = STRIDE
        generator = torch.Generator().manual_seed(0)
        shape = (batch, channels, -(-height // STRIDE), -(-width // STRIDE))
        self.register_buffer("feature", torch.randn(shape, generator=generator), persistent=False)

    def output_shape(self):
        return {"res5": (self.channels, STRIDE)}

    def forward(self, images: torch.Tensor):
        return {"res5": self.feature[:images.shape[0]]}


def build(cfg, batch: int, height: int, width: int):
    from modeling.iterative_model import IterativeSceneGraphModel

    return IterativeSceneGraphModel(cfg, StandInBackbone(batch, height, width)).to(cfg.MODEL.DEVICE)


def timed(fn, device, warmup, iters):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        bench_model._synchronize(device)
        start = time.perf_counter()
        fn()
        bench_model._synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=bench_model.VG_RECIPE_SIZE)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--mode", default="", help="MODEL.COMPILE_MODE (e.g. reduce-overhead)")
    parser.add_argument("--static", action="store_true", help="MODEL.STATIC_SHAPES.ENABLED")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    opts = ["MODEL.COMPILE_MODE", args.mode, "MODEL.STATIC_SHAPES.ENABLED", args.static or bool(args.mode),
            "INPUT.MIN_SIZE_TRAIN", (args.size[0],), "INPUT.MAX_SIZE_TRAIN", args.size[1],
            "INPUT.MIN_SIZE_TEST", args.size[0], "INPUT.MAX_SIZE_TEST", args.size[1]]
    cfg = bench_model.load_config(os.path.join(ROOT, "configs", "iterative_model.yaml"), args.device, opts,
                                  args.compile)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(cfg, args.batch, *args.size).train()
    if cfg.MODEL.COMPILE:
        model.compile_parts(**compile_options(cfg))
    batch = bench_model.synthetic_training_batch(cfg, args.batch, *args.size)

    def step():
        losses = model(batch)
        sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)

    start = time.perf_counter()
    step()
    bench_model._synchronize(device)
    first_step = time.perf_counter() - start
    step_ms = timed(step, device, args.warmup, args.iters)
    with torch.profiler.profile() as prof:
        step()
    events = prof.events()
    ops = sum(1 for e in events if e.name.startswith("aten::") and e.name not in bench_model.VIEW_OPERATORS
              and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")))

    model.eval()
    item = bench_model.resize_for_inference(bench_model.synthetic_original_image(*args.size), *args.size)

    @torch.no_grad()
    def infer():
        return [{k: v.cpu() for k, v in out.items()} for out in model([item])]

    start = time.perf_counter()
    infer()
    first_inference = time.perf_counter() - start
    infer_ms = timed(infer, device, args.warmup, args.iters)
    print(json.dumps({
        "device": args.device, "threads": torch.get_num_threads(), "compiled": bool(cfg.MODEL.COMPILE),
        "mode": args.mode, "batch": args.batch, "size": list(args.size), "train_step_ms": round(step_ms, 1),
        "first_step_s": round(first_step, 1), "inference_ms": round(infer_ms, 1),
        "first_inference_s": round(first_inference, 1), "aten_ops_per_step": ops,
        "load_average": os.getloadavg(), "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
