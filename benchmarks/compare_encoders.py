#!/usr/bin/env python
"""The three encoders side by side on the synthetic world under one CPU budget: DETR, CenterMask "tokens" and
CenterMask "paste" (docs/MODEL.md).

    python benchmarks/compare_encoders.py --data-dir output/demo_data --budget-minutes 5 --output-dir output/encoders

Every variant is ``configs/demo_synthetic.yaml`` (the demo's tiny VoVNet-FPN model, images, batch and schedule
shape) with only the encoder changed:

* ``DETR``: the paper's encoder on one FPN level (``MODEL.ENCODER.NAME DETR``, ``IN_FEATURE p4``);
* ``tokens``: our CenterMask fusion (the demo as it ships);
* ``paste``: the lab's fusion (``MODEL.CENTERMASK.FUSION paste``, no DETR encoder, memory = P5 with the SAG-Mask
  maps added).  From scratch there is no pre-trained FCOS to keep frozen, so FCOS trains jointly
  (``FCOS_LOSS_WEIGHT 1.0``; the lab's recipe freezes a pre-trained one).

Equal budget: a short timing run measures each variant's seconds per iteration, then each trains for
``budget / (s/it)`` iterations (learning-rate step at 90 %) and is evaluated on the synthetic test split.  The table
(R@50, mR@50, AP50, s/it, iterations) is printed and written to ``OUTPUT_DIR/encoders.md``.  The machine's load
average is recorded with it: timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {
    "DETR": ["MODEL.ENCODER.NAME", "DETR"],
    "tokens": [],
    "paste": ["MODEL.CENTERMASK.FUSION", "paste", "MODEL.ENCODER.IN_FEATURE", "p5", "MODEL.DETR.ENC_LAYERS", "0",
              "MODEL.CENTERMASK.FCOS_LOSS_WEIGHT", "1.0"],
}
TIMING_ITERS = 40


def _train(data_overrides, output_dir, variant, extra, log_path) -> None:
    command = [sys.executable, os.path.join(ROOT, "train_iterative_model.py"), "--config-file",
               os.path.join(ROOT, "configs", "demo_synthetic.yaml"), *data_overrides, "OUTPUT_DIR", output_dir,
               *VARIANTS[variant], *extra]
    with open(log_path, "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def seconds_per_iteration(metrics_path: str, skip: int = 10) -> float:
    """Median ``time`` (seconds per iteration) logged after the first ``skip`` iterations."""
    times = []
    with open(metrics_path) as f:
        for line in f:
            record = json.loads(line)
            if "time" in record and record.get("iteration", 0) >= skip:
                times.append(record["time"])
    if not times:
        raise ValueError(f"{metrics_path}: no 'time' records after iteration {skip}")
    times.sort()
    return times[len(times) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="output/demo_data", help="the synthetic world (made if missing)")
    parser.add_argument("--output-dir", default="output/encoders")
    parser.add_argument("--budget-minutes", type=float, default=5.0, help="training time per variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)

    from data.synthetic import config_overrides

    record_path = os.path.join(args.data_dir, "synthetic_record.json")
    if not os.path.isfile(record_path):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_synthetic_vg.py"), args.data_dir,
                        "--images", "2000"], check=True)
    with open(record_path) as f:
        data_overrides = [str(v) for v in config_overrides(args.data_dir, json.load(f))]

    os.makedirs(args.output_dir, exist_ok=True)
    rows = []
    for variant in args.variants:
        out = os.path.join(args.output_dir, variant)
        timing_dir = out + "_timing"
        _train(data_overrides, timing_dir, variant,
               ["SOLVER.MAX_ITER", str(TIMING_ITERS), "SOLVER.STEPS", f"({TIMING_ITERS},)", "SOLVER.LOG_PERIOD", "1",
                "SOLVER.CHECKPOINT_PERIOD", "100000", "DATASETS.TEST", "()"], os.path.join(args.output_dir,
                                                                                       f"{variant}_timing.log"))
        s_per_it = seconds_per_iteration(os.path.join(timing_dir, "metrics.json"))
        iterations = max(int(args.budget_minutes * 60 / s_per_it), 20)
        print(f"{variant}: {s_per_it:.3f} s/it -> {iterations} iterations in {args.budget_minutes} min", flush=True)
        start = time.time()
        _train(data_overrides, out, variant,
               ["SOLVER.MAX_ITER", str(iterations), "SOLVER.STEPS", f"({int(iterations * 0.9)},)",
                "SOLVER.CHECKPOINT_PERIOD", str(iterations)], os.path.join(args.output_dir, f"{variant}.log"))
        with open(os.path.join(out, "inference", "VG_test", "sgg_eval.json")) as f:
            metrics = json.load(f)
        rows.append((variant, metrics, seconds_per_iteration(os.path.join(out, "metrics.json")), iterations,
                     (time.time() - start) / 60))

    load = os.getloadavg()[0]
    lines = [f"Synthetic world, configs/demo_synthetic.yaml with the encoder changed, {args.budget_minutes:g} min of "
             f"training each ({time.strftime('%Y-%m-%d')}, load average {load:.1f} on {os.cpu_count()} cores)", "",
             "| encoder | R@50 | mR@50 | AP50 | s/it | iterations | wall min (train + eval) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for variant, metrics, s_per_it, iterations, minutes in rows:
        lines.append(f"| {variant} | {metrics['R@50']:.3f} | {metrics['mR@50']:.3f} | {metrics['AP50']:.3f} | "
                     f"{s_per_it:.3f} | {iterations} | {minutes:.1f} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "encoders.md"), "w") as f:
        f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
