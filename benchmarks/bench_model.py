#!/usr/bin/env python
"""Speed and memory of the model against its own backbone, on synthetic inputs (no dataset files).

    python benchmarks/bench_model.py --config-file configs/iterative_model.yaml \\
        configs/iterative_vovnet99_centermask.yaml --device cuda [--amp | --no-amp] [--compile] [KEY VALUE ...]
    python benchmarks/bench_model.py --device cpu            # the tiny config at its small sizes (< 2 min)

For every config, on the same device and in one process, after ``--warmup`` untimed iterations the median of
``--iters`` timed ones (``torch.cuda.synchronize`` before each clock read on a GPU) of:

* ``bb_fb``: the model's own backbone, forward + backward on the training batch (loss = sum of the means of the
  output maps the model uses: ``MODEL.ENCODER.IN_FEATURE``, or every level with the CenterMask encoder);
* ``step``: one full training step as the trainer runs it (``engine.train_loop.SimpleTrainer.run_step``: host-to-
  device copy, forward, targets, Hungarian matcher (the step's one host sync), losses, backward, gradient clipping,
  AdamW step; the losses and gradient norm are read back every ``SOLVER.LOG_PERIOD`` steps, as in the trainer),
  and ``img/s`` = batch / step; ``1st s``: the first step (compiling, with ``--compile``); ``ops``: ATen operators
  dispatched per step (views excluded; a compiled graph dispatches only its extern kernels); ``syncs``: the host-
  device synchronisations a GPU would make per step (:func:`count_step_syncs`);
* ``bb_f``: the backbone's inference forward at batch 1 on the inference image;
* ``infer``: end-to-end inference of one image as ``tools/predict.py`` does it: resize of the uint8 original on the
  host (``data.transforms``), normalisation and padding, the model, post-processing, results copied to the host;
  ``prep`` is the host resize alone (part of ``infer``).

Precision is the trainer's: bf16 autocast on CUDA with ``--amp`` (default: ``SOLVER.AMP.ENABLED``), fp32 otherwise
(autocast is never used on the CPU, as in the trainer).  ``--compile`` sets ``MODEL.COMPILE``: the model compiles its
parts around the matcher as in the trainer (``MODEL.COMPILE_MODE`` / ``MODEL.COMPILE_BACKEND`` overrides pick
e.g. ``reduce-overhead``), and the backbone baselines are compiled too.  Peak memory (one extra
untimed iteration of each phase): ``torch.cuda.max_memory_allocated`` on a GPU (weights and optimizer state
included); on the CPU the rise of the process's resident set size over the iteration.

Inputs: a batch of ``--batch`` uint8 images of ``--size SHORT MAX`` (height x width; image i is 16·i px narrower,
so padding is exercised) with 10 boxes and 7 distinct relations each, random but valid; the inference image
is a 3/4-scale original resized back to that size.  Trailing ``KEY VALUE`` pairs override every config (config
files are the arguments of ``--config-file`` ending in .yaml/.yml; the first other argument starts the overrides).

The table has one row per config; its LAST line is ``train_ratio_to_backbone=<a> infer_ratio_to_backbone=<b>``
for the FIRST config (step / bb_fb and infer / bb_f).  ``--profile`` prints, before the table, a torch.profiler
top-15 table of training steps of the first config and the host time of its parts (forward, backbone,
transformer, CenterMask, targets, matcher, criterion, loss reduction, clip, optimizer; backward is the rest); on a
GPU also the host-device synchronisations of one step and where they happen; on any device the ATen operators
dispatched per step (a proxy of kernel launches) and the operators that wait for a GPU, by part.  ``--flops`` only
counts the arithmetic of backbone and transformer on meta tensors (the floor of step / bb_fb), without timing.
``--json-out`` writes every number.
"""
import argparse
import contextlib
import datetime
import functools
import itertools
import json
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from configs.defaults import get_cfg  # noqa: E402
from data import transforms as T  # noqa: E402
from utils.file_io import atomic_write_text  # noqa: E402
from engine.solver import build_optimizer, clip_gradients  # noqa: E402
from engine.trainer import compile_options  # noqa: E402
from engine.train_loop import SimpleTrainer  # noqa: E402
from modeling import build_model  # noqa: E402

TINY_CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.yaml")
GPU_DEFAULT_CONFIG = os.path.join(ROOT, "configs", "iterative_model.yaml")
VG_RECIPE_SIZE = (800, 1216)  # batch 3 per GPU at 800x1216: the speed reference of benchmarks/RESULTS.md
BOXES_PER_IMAGE, RELATIONS_PER_IMAGE = 10, 7
PROFILE_ROWS = 15


@dataclass
class Result:
    """The numbers of one config (times in milliseconds, memory in MiB)."""

    config: str
    device: str
    precision: str
    compiled: bool
    batch: int
    size: Tuple[int, int]
    backbone_fwd_bwd_ms: float
    train_step_ms: float
    images_per_s: float
    backbone_fwd_ms: float
    inference_ms: float
    preprocess_ms: float
    train_peak_mib: float
    inference_peak_mib: float
    first_step_s: float = 0.0  # the first training step (with --compile: compiling the training graphs)
    first_inference_s: float = 0.0  # the first inference (with --compile: compiling the inference graph)
    aten_ops_per_step: float = 0.0  # ATen operators dispatched by one training step (views excluded)
    syncs_per_step: float = 0.0  # host-device synchronisations a GPU would make in one training step

    @property
    def train_ratio(self) -> float:
        return self.train_step_ms / self.backbone_fwd_bwd_ms

    @property
    def inference_ratio(self) -> float:
        return self.inference_ms / self.backbone_fwd_ms


# ----------------------------------------------------------------------------------------------------------------
# Synthetic inputs
# ----------------------------------------------------------------------------------------------------------------
def random_instances(generator: torch.Generator, height: int, width: int, num_classes: int,
                     num_predicates: int, num_boxes: int = BOXES_PER_IMAGE,
                     num_relations: int = RELATIONS_PER_IMAGE) -> Dict[str, torch.Tensor]:
    """Valid training annotations of one image: boxes xyxy inside it (sides >= 8 px), labels in
    ``[0, num_classes)``, relations ``(subject, object, predicate)`` between distinct boxes, no pair twice."""
    if num_boxes < 2:
        raise ValueError(f"need at least 2 boxes to relate, got {num_boxes}")
    num_relations = min(num_relations, num_boxes * (num_boxes - 1))
    size = torch.tensor([width, height, width, height], dtype=torch.float32)
    corners = torch.rand(num_boxes, 2, 2, generator=generator)
    low, high = corners.min(1).values, corners.max(1).values
    boxes = torch.cat([low, high], 1) * size
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 8).minimum(size[2:])
    boxes[:, :2] = torch.minimum(boxes[:, :2], boxes[:, 2:] - 8)
    pairs = torch.cartesian_prod(torch.arange(num_boxes), torch.arange(num_boxes))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = pairs[torch.randperm(len(pairs), generator=generator)[:num_relations]]
    predicates = torch.randint(num_predicates, (num_relations, 1), generator=generator)
    return {
        "boxes": boxes,
        "labels": torch.randint(num_classes, (num_boxes,), generator=generator),
        "relations": torch.cat([pairs, predicates], 1),
    }


def synthetic_training_batch(cfg, batch_size: int, height: int, width: int, seed: int = 0) -> List[dict]:
    """``batch_size`` training items in the data contract's layout (host tensors, as the loader gives them)."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for index in range(batch_size):
        item_width = max(32, width - 16 * index)
        items.append({
            "image": torch.randint(0, 256, (3, height, item_width), dtype=torch.uint8, generator=generator),
            "height": height,
            "width": item_width,
            "image_id": index,
            "instances": random_instances(generator, height, item_width, cfg.MODEL.DETR.NUM_CLASSES,
                                          cfg.MODEL.DETR.NUM_RELATION_CLASSES),
        })
    return items


def synthetic_original_image(height: int, width: int, seed: int = 1) -> torch.Tensor:
    """A uint8 (3, H, W) 'original' image at 3/4 of the model's input size (resizing it is part of inference)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, round(height * 0.75), round(width * 0.75)), dtype=torch.uint8,
                         generator=generator)


def resize_for_inference(image: torch.Tensor, short: int, max_size: int) -> dict:
    """The inference batch item of ``tools/predict.py``: the original resized on the host (shorter side
    ``short``, longer at most ``max_size``), with the original size for the post-processing."""
    height, width = image.shape[-2:]
    size = T.shortest_edge_size(height, width, short, max_size)
    resized, _ = T.resize(*T.as_tv_tensors(image, torch.zeros(0, 4)), size)
    return {"image": resized.as_subclass(torch.Tensor), "height": int(height), "width": int(width), "image_id": 0}


# ----------------------------------------------------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call of ``fn`` in MiB: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the
    largest rise of the resident set size over its start (sampled every millisecond by a thread)."""
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    start = _resident_bytes()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return (max(peak[0], _resident_bytes()) - start) / 2**20


# ----------------------------------------------------------------------------------------------------------------
# The measurements of one config
# ----------------------------------------------------------------------------------------------------------------
def load_config(path: str, device: str, opts: Sequence[str], compile_model: bool):
    """Defaults + ``path`` + ``opts``, on ``device``; ``compile_model`` sets ``MODEL.COMPILE``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config-file {path}: no such file")
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = device
    if compile_model:
        cfg.MODEL.COMPILE = True
    cfg.freeze()
    return cfg


def _used_features(model) -> List[str]:
    """The backbone outputs the model consumes (the others get no gradient in a training step either)."""
    return [model.in_feature] if model.centermask is None else sorted(model.backbone.output_shape())


def _autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


class BenchmarkedModel:
    """The model of ``cfg`` with the trainer's optimizer, clipping and step, plus its backbone baselines."""

    def __init__(self, cfg, amp_dtype: Optional[torch.dtype]):
        self.cfg = cfg
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.amp_dtype = amp_dtype
        self.model = build_model(cfg)
        self.optimizer = build_optimizer(cfg, self.model)
        self.train_model = self.model
        self.backbone = self.model.backbone
        if cfg.MODEL.COMPILE:  # as the trainer: the model compiles its parts around the matcher
            options = compile_options(cfg)
            self.backbone = torch.compile(self.model.backbone, **options)  # the baseline, compiled on its own
            self.model.compile_parts(**options)
        self.used_features = _used_features(self.model)
        # Metrics are read back every SOLVER.LOG_PERIOD steps, as in the trainer (not a per-step sync).
        self.trainer = SimpleTrainer(self.train_model, None, self.optimizer,
                                     clip_gradients=functools.partial(clip_gradients, cfg), amp_dtype=amp_dtype,
                                     metrics_period=cfg.SOLVER.LOG_PERIOD)
        self.trainer.max_iter = 1 << 62  # run_step flushes after the last iteration: there is none here

    def set_training_batch(self, batch: List[dict]) -> None:
        self.trainer.data_loader = itertools.repeat(batch)
        self.trainer._data_iter = None
        self.model.train()
        with torch.no_grad():
            self.train_images = self.model.preprocess_images(batch)[0]

    def train_step(self) -> None:
        self.trainer.run_step()

    def backbone_forward_backward(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device, self.amp_dtype):
            features = self.backbone(self.train_images)
        loss = sum(features[name].float().mean() for name in self.used_features)
        loss.backward()

    def set_inference_image(self, original: torch.Tensor) -> None:
        self.original = original
        self.short, self.max_size = int(self.cfg.INPUT.MIN_SIZE_TEST), int(self.cfg.INPUT.MAX_SIZE_TEST)
        self.model.eval()
        with torch.no_grad():
            item = resize_for_inference(original, self.short, self.max_size)
            self.inference_image = self.model.preprocess_images([item])[0]

    def preprocess(self) -> dict:
        return resize_for_inference(self.original, self.short, self.max_size)

    @torch.no_grad()
    def backbone_forward(self) -> None:
        with _autocast(self.device, self.amp_dtype):
            self.backbone(self.inference_image)

    @torch.no_grad()
    def inference(self) -> List[dict]:
        item = self.preprocess()
        with _autocast(self.device, self.amp_dtype):
            outputs = self.train_model([item])
        return [{k: v.cpu() for k, v in output.items()} for output in outputs]


def benchmark_config(cfg, config_name: str, amp_dtype: Optional[torch.dtype], batch_size: int,
                     size: Tuple[int, int], warmup: int, iters: int, profile: bool, count_ops: bool = False
                     ) -> Result:
    """Every measurement of one config; with ``profile`` also prints the training-step profile.  A progress line
    after each phase (with the seconds since the start, compilation included) shows where a slow run is."""
    start = time.perf_counter()

    def measured(phase: str, value: float, unit: str = "ms") -> float:
        print(f"  {config_name}: {phase} {value:.2f} {unit}  [{time.perf_counter() - start:.0f} s]", flush=True)
        return value

    bench = BenchmarkedModel(cfg, amp_dtype)
    device = bench.device
    height, width = size
    bench.set_training_batch(synthetic_training_batch(cfg, batch_size, height, width))
    backbone_fwd_bwd = measured("backbone fwd+bwd", median_ms(bench.backbone_forward_backward, device, warmup, iters))
    first_step = measured("first training step (compiling with --compile)",
                          median_ms(bench.train_step, device, 0, 1) / 1000.0, "s")
    train_step = measured("training step", median_ms(bench.train_step, device, max(warmup - 1, 0), iters))
    train_peak = measured("training peak memory", peak_memory_mib(bench.train_step, device), "MiB")
    aten_ops = syncs = 0.0
    if count_ops:  # one profiled step
        counted = profile_steps(bench, warmup=0, steps=1)
        aten_ops = measured("ATen operators per step", sum(count_dispatched_operators(counted.events()).values()), "")
        syncs = measured("host-device syncs per step", sum(count_step_syncs(counted.events(), 1).values()), "")
    if profile:
        profile_training_step(bench, warmup=1, steps=max(1, min(iters, 3)))

    # The caller sets INPUT.MIN/MAX_SIZE_TEST to ``size``: the 3/4-scale original is resized back to it.
    bench.set_inference_image(synthetic_original_image(height, width))
    preprocess = measured("host resize", median_ms(bench.preprocess, torch.device("cpu"), warmup, iters))
    backbone_fwd = measured("backbone forward", median_ms(bench.backbone_forward, device, warmup, iters))
    first_inference = measured("first inference (compiling with --compile)",
                               median_ms(bench.inference, device, 0, 1) / 1000.0, "s")
    inference = measured("inference", median_ms(bench.inference, device, max(warmup - 1, 0), iters))
    inference_peak = measured("inference peak memory", peak_memory_mib(bench.inference, device), "MiB")
    return Result(
        config=config_name, device=str(device), precision="bf16" if amp_dtype is not None else "fp32",
        compiled=bool(cfg.MODEL.COMPILE), batch=batch_size, size=(height, width),
        backbone_fwd_bwd_ms=backbone_fwd_bwd, train_step_ms=train_step,
        images_per_s=1000.0 * batch_size / train_step, backbone_fwd_ms=backbone_fwd, inference_ms=inference,
        preprocess_ms=preprocess, train_peak_mib=train_peak, inference_peak_mib=inference_peak,
        first_step_s=first_step, first_inference_s=first_inference, aten_ops_per_step=aten_ops,
        syncs_per_step=syncs,
    )


def arithmetic_gflop(cfg, batch_size: int, size: Tuple[int, int]) -> Dict[str, float]:
    """GFLOP of the backbone and of the input projection + transformer (forward, and forward + backward) for a
    batch of ``batch_size`` images of ``size``, counted by ``torch.utils.flop_counter`` on meta tensors (shapes
    only: instant on any machine).  Their ratio is the floor of step / bb_fb if every kernel were equally efficient
    (the matcher, losses and optimizer add little arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "meta"
    model = build_model(cfg)
    images = torch.empty(batch_size, 3, *size, device="meta")
    counts = {}
    with FlopCounterMode(display=False) as counter:
        features = model.backbone(images)
        counts["backbone_fwd"] = counter.get_total_flops()
        sum(features[name].float().mean() for name in _used_features(model)).backward()
        counts["backbone_fwd_bwd"] = counter.get_total_flops()
    feature = features[model.in_feature].detach()
    tokens = feature.shape[-2] * feature.shape[-1]
    pos = torch.empty(batch_size, tokens, cfg.MODEL.DETR.HIDDEN_DIM, device="meta")
    mask = torch.zeros(batch_size, tokens, dtype=torch.bool, device="meta")
    with FlopCounterMode(display=False) as counter:
        src = model.input_proj(feature).flatten(2).transpose(1, 2)
        outputs = model.transformer(src, pos, mask, model.query_embed.weight, model.object_query_embed.weight,
                                    model.relation_query_embed.weight)
        counts["transformer_fwd"] = counter.get_total_flops()
        sum(value.float().mean() for value in outputs.values()).backward()
        counts["transformer_fwd_bwd"] = counter.get_total_flops()
    return {name: value / 1e9 for name, value in counts.items()}


def format_arithmetic(name: str, gflop: Dict[str, float]) -> str:
    share = gflop["transformer_fwd_bwd"] / gflop["backbone_fwd_bwd"]
    return (f"{name}: backbone {gflop['backbone_fwd']:.0f} GFLOP forward, {gflop['backbone_fwd_bwd']:.0f} forward+"
            f"backward; transformer (CenterMask head not counted) {gflop['transformer_fwd']:.0f} / "
            f"{gflop['transformer_fwd_bwd']:.0f}: step / bb_fb >= {1 + share:.2f} at equal efficiency")


# ----------------------------------------------------------------------------------------------------------------
# Profile of the training step
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _labelled(obj, attribute: str, label: str):
    """Temporarily wrap ``obj.attribute`` (a callable) in a ``torch.profiler.record_function(label)`` range."""
    original = getattr(obj, attribute)
    had_own = attribute in vars(obj)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        with torch.profiler.record_function(label):
            return original(*args, **kwargs)

    setattr(obj, attribute, wrapper)
    try:
        yield
    finally:
        if had_own:
            setattr(obj, attribute, original)
        else:
            delattr(obj, attribute)


def profile_steps(bench: BenchmarkedModel, warmup: int, steps: int) -> torch.profiler.profile:
    """The torch profile of ``steps`` training steps (after ``warmup`` unprofiled ones), the parts of the step
    labelled ``bench::<part>`` (the parts inside a compiled region are not labelled: they are one graph)."""
    import modeling.iterative_model as iterative_model

    model, trainer = bench.model, bench.trainer
    matcher = model.criterion.matcher
    labels = [(trainer, "run_step", "step"), (model, "forward", "forward"),
              (iterative_model, "relation_targets", "targets"), (matcher, "forward", "matcher"),
              (matcher, "to_host", "matcher_copy"), (matcher, "assign", "matcher_assign"),
              (model.criterion, "forward", "criterion"), (trainer, "_record_losses", "loss_record"),
              (trainer, "flush_metrics", "metrics_flush"), (trainer, "clip_gradients", "clip")]
    if not bench.cfg.MODEL.COMPILE:
        labels += [(model.backbone, "forward", "backbone"), (model.transformer, "forward", "transformer")]
        if model.centermask is not None:
            labels.append((model.centermask, "forward", "centermask"))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with contextlib.ExitStack() as stack:
        for obj, attribute, label in labels:
            stack.enter_context(_labelled(obj, attribute, f"bench::{label}"))
        for _ in range(warmup):
            bench.train_step()
        _synchronize(bench.device)
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(steps):
                bench.train_step()
            _synchronize(bench.device)
    return prof


def profile_training_step(bench: BenchmarkedModel, warmup: int, steps: int) -> None:
    """Print a top-15 self-time operator table of ``steps`` training steps and the host time of their parts."""
    prof = profile_steps(bench, warmup, steps)
    on_gpu = bench.device.type == "cuda"
    averages = prof.key_averages()
    sort_by = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    print(f"\n== profile: {steps} training steps of {bench.cfg.MODEL.BACKBONE.NAME}/{bench.cfg.MODEL.ENCODER.NAME}, "
          f"operators by {sort_by} (top {PROFILE_ROWS})")
    print(averages.table(sort_by=sort_by, row_limit=PROFILE_ROWS))
    host_ms = {event.key[len("bench::"):]: event.cpu_time_total / 1000.0 / steps
               for event in averages if event.key.startswith("bench::")}
    for name, event in ((e.key, e) for e in averages):
        if name.startswith("Optimizer.step#"):
            host_ms["optimizer"] = event.cpu_time_total / 1000.0 / steps
        if name.startswith("Optimizer.zero_grad#"):
            host_ms["zero_grad"] = event.cpu_time_total / 1000.0 / steps
    print(format_profile_parts(host_ms))
    events = prof.events()
    print(format_dispatched_operators(count_dispatched_operators(events), steps))
    print(format_sync_operators(count_sync_operators(events), steps))
    print(format_step_syncs(count_step_syncs(events, steps)))
    if on_gpu:
        print(format_sync_sites(count_host_syncs(bench)))


def format_profile_parts(host_ms: Dict[str, float]) -> str:
    """One line per part of the step (host wall time per step, nested parts indented) and backward as the rest."""
    step = host_ms.get("step", 0.0)
    top_level = ("forward", "loss_record", "metrics_flush", "zero_grad", "clip", "optimizer")
    backward = step - sum(host_ms.get(name, 0.0) for name in top_level)
    lines = ["host time per training step (ms; forward's parts indented; backward = step - the rest):"]
    for name, indent in (("step", 0), ("forward", 2), ("backbone", 4), ("transformer", 4), ("centermask", 4),
                         ("targets", 4), ("criterion", 4), ("matcher", 6), ("matcher_copy", 8),
                         ("matcher_assign", 8), ("loss_record", 2), ("metrics_flush", 2), ("zero_grad", 2),
                         ("backward", 2), ("clip", 2), ("optimizer", 2)):
        value = backward if name == "backward" else host_ms.get(name)
        if value is None:
            continue
        share = f"{100.0 * value / step:5.1f} %" if step > 0 else ""
        lines.append(f"{' ' * indent}{name:<{20 - indent}} {value:9.2f}  {share}")
    return "\n".join(lines)


# Operators that only make views or allocate (no kernel on a GPU).
VIEW_OPERATORS = {f"aten::{name}" for name in (
    "as_strided", "view", "reshape", "transpose", "t", "permute", "expand", "expand_as", "unsqueeze", "squeeze",
    "select", "slice", "empty", "empty_strided", "empty_like", "_unsafe_view", "alias", "detach", "resolve_conj",
    "resolve_neg", "lift_fresh", "split", "split_with_sizes", "unbind", "narrow", "flatten", "unflatten",
    "_reshape_alias", "view_as", "chunk", "movedim", "contiguous", "to", "_to_copy")}
# Operators that make the host wait for the device when their inputs live on a GPU (data-dependent output size
# or a value read back); boolean-mask indexing runs aten::nonzero.
SYNC_OPERATORS = {"aten::nonzero": "nonzero / boolean-mask indexing", "aten::_local_scalar_dense": "item / int()",
                  "aten::unique_dim": "unique", "aten::_unique2": "unique", "aten::masked_select": "masked_select",
                  "torchvision::nms": "nms", "aten::repeat_interleave": "repeat_interleave"}


def _part_of(event) -> str:
    """The innermost ``bench::`` range, backward pass or optimizer step around a profiled event."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("bench::"):
            return parent.name[len("bench::"):]
        if parent.name.startswith("autograd::engine::"):
            return "backward"
        if parent.name.startswith("Optimizer."):
            return "optimizer"
        parent = parent.cpu_parent
    return "other"


# Parts of the step whose operators run on host tensors by design (the loader's annotations, the matcher's host
# side after its one copy, the optimizer's CPU step counters): their item()/nonzero never wait for a GPU.
HOST_PARTS = ("targets", "matcher_copy", "matcher_assign", "optimizer")
# Read back every SOLVER.LOG_PERIOD steps (losses, gradient norm), not per step.
PERIODIC_PARTS = ("metrics_flush",)


def count_step_syncs(events, steps: int) -> Counter:
    """Per training step, the host-device synchronisations a GPU would make, by ``(part, what)``: the matcher's one
    cost-matrix copy (``matcher_copy`` calls; a copy of a CPU tensor dispatches nothing to count) plus every
    :data:`SYNC_OPERATORS` call outside :data:`HOST_PARTS` and :data:`PERIODIC_PARTS`.  A ``.cpu()``/``.tolist()``
    of a device tensor is invisible in a CPU profile; on a GPU :func:`count_host_syncs` sees every sync."""
    counts: Counter = Counter()
    for event in events:
        if event.name == "bench::matcher_copy":
            counts[("matcher_copy", "cost matrix copy to the host")] += 1
        elif event.name in SYNC_OPERATORS:
            part = _part_of(event)
            if part not in HOST_PARTS and part not in PERIODIC_PARTS:
                counts[(part, SYNC_OPERATORS[event.name])] += 1
    return Counter({key: count / steps for key, count in counts.items()})


def format_step_syncs(counts: Counter) -> str:
    lines = [f"host-device synchronisations per training step on a GPU (the matcher's copy + sync operators outside "
             f"{', '.join(HOST_PARTS)}; losses and gradient norm are read every SOLVER.LOG_PERIOD steps): "
             f"{sum(counts.values()):g}"]
    lines += [f"  {count:6.1f}  {part:<16} {what}" for (part, what), count in counts.most_common()]
    return "\n".join(lines)


def count_sync_operators(events) -> Counter:
    """``(part of the step, operator)`` counts of :data:`SYNC_OPERATORS` among profiled ``events``."""
    return Counter((_part_of(event), SYNC_OPERATORS[event.name]) for event in events if event.name in SYNC_OPERATORS)


def count_dispatched_operators(events) -> Counter:
    """Per part of the step, the ATen operators called from Python (not from inside another operator), views
    excluded: a proxy of the kernel launches, whose host cost dominates small GPU work."""
    counts: Counter = Counter()
    for event in events:
        if not event.name.startswith("aten::") or event.name in VIEW_OPERATORS:
            continue
        if event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::"):
            continue
        counts[_part_of(event)] += 1
    return counts


def format_dispatched_operators(counts: Counter, steps: int) -> str:
    parts = ", ".join(f"{part} {count / steps:.0f}" for part, count in counts.most_common())
    return (f"ATen operators dispatched per training step (views excluded; forward parts, backward, optimizer): "
            f"{sum(counts.values()) / steps:.0f} = {parts}")


def format_sync_operators(counts: Counter, steps: int) -> str:
    lines = ["operators that would wait for the device on a GPU if their inputs lived there, per training step, by "
             "part (in a CPU run: 'targets', 'matcher_copy'/'matcher_assign' and the CPU optimizer's per-parameter "
             "item() work on host tensors):"]
    lines += [f"  {count / steps:6.1f}  {part:<16} {operator}" for (part, operator), count in counts.most_common()]
    return "\n".join(lines)


def count_host_syncs(bench: BenchmarkedModel) -> Counter:
    """Host-device synchronisations of one training step, by Python call site (``torch.cuda`` sync debug mode)."""
    sites: Counter = Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            bench.train_step()
            _synchronize(bench.device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for warning in caught:
        if "synchroniz" in str(warning.message):
            path = warning.filename
            path = os.path.relpath(path, ROOT) if path.startswith(ROOT) else os.path.join(*path.split(os.sep)[-2:])
            sites[f"{path}:{warning.lineno}"] += 1
    return sites


def format_sync_sites(sites: Counter) -> str:
    lines = [f"host-device synchronisations in one training step: {sum(sites.values())}"]
    lines += [f"  {count:4d}  {site}" for site, count in sites.most_common(PROFILE_ROWS)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------
COLUMNS = [("config", "{}"), ("prec", "{}"), ("compile", "{}"), ("batch", "{}"), ("size", "{}"),
           ("bb_fb ms", "{:.2f}"), ("step ms", "{:.2f}"), ("img/s", "{:.2f}"), ("step/bb_fb", "{:.2f}"),
           ("bb_f ms", "{:.2f}"), ("infer ms", "{:.2f}"), ("prep ms", "{:.2f}"), ("infer/bb_f", "{:.2f}"),
           ("train MiB", "{:.0f}"), ("infer MiB", "{:.0f}"), ("1st step s", "{:.1f}"), ("1st infer s", "{:.1f}"),
           ("ops", "{:.0f}"), ("syncs", "{:g}")]


def format_table(results: Sequence[Result]) -> str:
    rows = []
    for r in results:
        values = [r.config, r.precision, "yes" if r.compiled else "no", r.batch, f"{r.size[0]}x{r.size[1]}",
                  r.backbone_fwd_bwd_ms, r.train_step_ms, r.images_per_s, r.train_ratio, r.backbone_fwd_ms,
                  r.inference_ms, r.preprocess_ms, r.inference_ratio, r.train_peak_mib, r.inference_peak_mib,
                  r.first_step_s, r.first_inference_s, r.aten_ops_per_step, r.syncs_per_step]
        rows.append([fmt.format(v) for (_, fmt), v in zip(COLUMNS, values)])
    headers = [name for name, _ in COLUMNS]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def ratio_line(result: Result) -> str:
    return f"train_ratio_to_backbone={result.train_ratio:.3f} infer_ratio_to_backbone={result.inference_ratio:.3f}"


def environment(device: torch.device) -> Dict[str, object]:
    """What the numbers depend on besides the code: machine, load, library versions, math settings."""
    info: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", nargs="+", default=[], metavar="CFG",
                        help="config files (default: configs/tiny_cpu.yaml on the CPU, configs/iterative_model.yaml "
                             "on a GPU); arguments after them not ending in .yaml/.yml are KEY VALUE overrides")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="default: cuda if available, else cpu")
    parser.add_argument("--batch", type=int, default=3, help="training images per step (default 3, per GPU)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("SHORT", "MAX"), default=None,
                        help="image height and width (default 800 1216 on a GPU; the config's MIN/MAX_SIZE_TEST "
                             "on the CPU); MIN/MAX_SIZE_TEST are set to them for the inference resize")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (at least 2 with --compile)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast on CUDA (default: SOLVER.AMP.ENABLED of each config)")
    parser.add_argument("--compile", action="store_true", help="MODEL.COMPILE True: torch.compile the model")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--profile", action="store_true",
                        help="print a torch.profiler top-15 table of the first config's training step")
    parser.add_argument("--count-ops", action="store_true",
                        help="profile one training step per config: ATen operators and host-device syncs per step "
                             "(columns ops, syncs; implied by --profile)")
    parser.add_argument("--flops", action="store_true",
                        help="only count the arithmetic (GFLOP) of backbone and transformer on meta tensors, no timing")
    parser.add_argument("--json-out", default="", help="also write the results and environment to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    configs = list(args.config_file)
    split = next((i for i, path in enumerate(configs) if not path.endswith((".yaml", ".yml"))), len(configs))
    args.config_file, args.opts = configs[:split], configs[split:] + list(args.opts)
    if len(args.opts) % 2 != 0:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    if not args.config_file:
        args.config_file = [GPU_DEFAULT_CONFIG if args.device == "cuda" else TINY_CONFIG]
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        parser.error("--batch and --iters must be >= 1 and --warmup >= 0")
    if args.compile and args.warmup < 2:
        parser.error("--compile needs --warmup >= 2 (the first calls compile)")
    return args


def write_json(path: str, info: Dict[str, object], args: argparse.Namespace, results: Sequence[Result]) -> None:
    """Every number, the arguments and the environment, written atomically (after each config)."""
    payload = {"environment": info, "args": vars(args),
               "results": [dict(asdict(r), train_ratio=r.train_ratio, inference_ratio=r.inference_ratio)
                           for r in results]}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results: List[Result] = []
    for index, path in enumerate(args.config_file):
        cfg = load_config(path, args.device, args.opts, args.compile)
        size = tuple(args.size) if args.size else (
            VG_RECIPE_SIZE if device.type == "cuda" else (int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)))
        cfg.defrost()
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = size
        cfg.freeze()
        name = os.path.splitext(os.path.basename(path))[0]
        if args.flops:
            print(format_arithmetic(f"{name} (batch {args.batch}, {size[0]}x{size[1]})",
                                    arithmetic_gflop(cfg, args.batch, size)))
            continue
        amp = cfg.SOLVER.AMP.ENABLED if args.amp is None else args.amp
        if amp and device.type != "cuda":
            print(f"{path}: bf16 autocast is used on CUDA only (as in the trainer): running fp32 on the CPU")
        amp_dtype = torch.bfloat16 if amp and device.type == "cuda" else None
        result = benchmark_config(cfg, name, amp_dtype, args.batch, size, args.warmup, args.iters,
                                  profile=args.profile and index == 0, count_ops=args.count_ops or args.profile)
        results.append(result)
        print(f"done {name}: step {result.train_step_ms:.2f} ms, backbone fwd+bwd {result.backbone_fwd_bwd_ms:.2f} ms, "
              f"inference {result.inference_ms:.2f} ms, backbone fwd {result.backbone_fwd_ms:.2f} ms", flush=True)
        if args.json_out:  # after every config, so a run stopped by a time limit keeps what it measured
            write_json(args.json_out, environment(device), args, results)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.flops:
        return 0
    info = environment(device)
    tf32 = f", TF32 matmul {info['tf32_matmul']} / cuDNN {info['tf32_cudnn']}" if "gpu" in info else ""
    print(f"\n== bench_model on {info.get('gpu', 'cpu')} ({args.device}{tf32}), torch {info['torch']}, "
          f"{info['threads']} threads, load average {' '.join(f'{x:.2f}' for x in info['load_average'])}, "
          f"{info['date']}; median of {args.iters} after {args.warmup} warm-up")
    print("bb_fb: backbone fwd+bwd on the training batch; step: full training step; bb_f: backbone forward, batch "
          "1; infer: end-to-end batch-1 inference (prep = host resize, included); MiB: peak "
          + ("max_memory_allocated" if device.type == "cuda" else "RSS rise"))
    print(format_table(results))
    print(f"(ratios of the first config, {results[0].config}:)")
    print(ratio_line(results[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
