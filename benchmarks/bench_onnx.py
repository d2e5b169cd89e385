#!/usr/bin/env python
"""CPU latency of the exported network on onnxruntime against the same network in torch, same threads.

    python benchmarks/bench_onnx.py --config-file configs/iterative_model.yaml --size 800 1216 --threads 2
    python benchmarks/bench_onnx.py --config-file configs/tiny_cpu.yaml --size 224 320

Builds the config's model with random weights (latency does not depend on their values), exports it with
``tools/export_onnx.py`` to a temporary file, then times batch-1 inference of one normalised image of ``--size``
(height x width) through ``exportable_network`` in torch (eval, ``torch.no_grad``) and through onnxruntime
(``intra_op_num_threads`` = ``torch.set_num_threads`` = ``--threads``; DETR or CenterMask encoder): the median
of ``--iters`` runs after ``--warmup`` (torch and onnxruntime runs alternate, so both see the same machine load).  Pre-processing (resize,
normalisation) and post-processing (NMS, ranking) are the same Python code for both runtimes and are not part of
the timing.  Prints one line per runtime and the max abs difference.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _median_seconds(functions, warmup: int, iters: int) -> list:
    """Median seconds of each function; the runs alternate so that both see the same machine load."""
    for _ in range(warmup):
        for function in functions:
            function()
    times = [[] for _ in functions]
    for _ in range(iters):
        for function, samples in zip(functions, times):
            start = time.perf_counter()
            function()
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size (default INPUT.MIN_SIZE_TEST x MAX_SIZE_TEST)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    import torch

    from configs.defaults import get_cfg
    from engine.checkpoint import CHECKPOINT_FORMAT
    from modeling import build_model
    from tools.export_onnx import OUTPUT_NAMES, OnnxSceneGraphNetwork, export, exportable_network

    torch.set_num_threads(args.threads)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts) + ["MODEL.DEVICE", "cpu"])
    height, width = args.size or (int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        weights = os.path.join(folder, "weights.pth")
        torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict()}, weights)
        cfg.merge_from_list(["MODEL.WEIGHTS", weights])
        network = exportable_network(model)
        images = torch.randn(1, 3, height, width)
        name = os.path.relpath(args.config_file, ROOT)
        start = time.perf_counter()
        path = export(cfg, os.path.join(folder, "model.onnx"), example_size=(height, width))
        export_s = time.perf_counter() - start
        runtime = OnnxSceneGraphNetwork(path, threads=args.threads)
        with torch.no_grad():
            torch_s, ort_s = _median_seconds([lambda: network(images), lambda: runtime(images)], args.warmup,
                                             args.iters)
            expected = dict(zip(OUTPUT_NAMES, network(images)))
        got = runtime(images)
        diff = max(float((got[k] - expected[k]).abs().max()) for k in OUTPUT_NAMES)
        size_mb = os.path.getsize(path) / 2**20
    print(f"{name} {height}x{width} batch 1, {args.threads} threads (export {export_s:.1f} s, {size_mb:.0f} MiB)")
    print(f"  torch       {torch_s * 1000:9.1f} ms")
    print(f"  onnxruntime {ort_s * 1000:9.1f} ms  ({torch_s / ort_s:.2f}x)")
    print(f"  max abs diff {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
