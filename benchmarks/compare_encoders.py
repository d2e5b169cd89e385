#!/usr/bin/env python
"""The three encoders side by side on the synthetic world under one CPU budget: DETR, CenterMask "tokens" and
CenterMask "paste" (docs/MODEL.md).

    python benchmarks/compare_encoders.py --data-dir output/demo_data --budget-minutes 5 --output-dir output/encoders

Every variant is ``configs/demo_synthetic.yaml`` (the demo's tiny VoVNet-FPN model, images, batch and schedule
shape) with only the encoder changed:

* ``DETR``: the paper's encoder on one FPN level (``MODEL.ENCODER.NAME DETR``, ``IN_FEATURE p4``);
* ``tokens``: our CenterMask fusion (the demo as it ships);
* ``paste``: the lab's fusion (``MODEL.CENTERMASK.FUSION paste``, no DETR encoder, memory = P5 with the SAG-Mask
  maps added).  From scratch there is no pre-trained FCOS to keep frozen, so FCOS trains jointly as in the demo
  (its ``FCOS_LOSS_WEIGHT``; the lab's recipe freezes a pre-trained one).

Equal budget, in CPU time (robust to a shared machine): each variant runs single-threaded; two short timing runs
(20 and 60 iterations) give its CPU seconds per iteration (their difference cancels start-up), then it trains for
``budget / (CPU s/it)`` iterations (learning-rate step at 90 %) and is evaluated on the synthetic test split.  The
table (R@50, mR@50, AP50, CPU s/it, iterations) is printed and written to ``OUTPUT_DIR/encoders.md`` with the
load average.  ``--parallel`` runs the variants side by side (each still single-threaded).
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
    "paste": ["MODEL.CENTERMASK.FUSION", "paste", "MODEL.ENCODER.IN_FEATURE", "p5", "MODEL.DETR.ENC_LAYERS", "0"],
}
TIMING_ITERS = (20, 60)


def _train(data_overrides, output_dir, variant, extra, log_path) -> float:
    """Run one training (single-threaded); returns the CPU seconds (user + system) it used."""
    command = [sys.executable, os.path.join(ROOT, "train_iterative_model.py"), "--config-file",
               os.path.join(ROOT, "configs", "demo_synthetic.yaml"), *data_overrides, "OUTPUT_DIR", output_dir,
               *VARIANTS[variant], *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{variant}: training failed, see {log_path}")
    return usage.ru_utime + usage.ru_stime


def run_variant(variant: str, data_overrides, output_dir: str, budget_cpu_s: float) -> tuple:
    """Timing runs, then the budgeted training + test evaluation: (variant, metrics, CPU s/it, iterations,
    CPU minutes of the training run, wall minutes)."""
    cpu = []
    for iterations in TIMING_ITERS:
        cpu.append(_train(data_overrides, os.path.join(output_dir, f"{variant}_timing{iterations}"), variant,
                          ["SOLVER.MAX_ITER", str(iterations), "SOLVER.STEPS", f"({iterations},)",
                           "SOLVER.CHECKPOINT_PERIOD", "100000", "DATASETS.TEST", "()"],
                          os.path.join(output_dir, f"{variant}_timing{iterations}.log")))
    cpu_per_it = max((cpu[1] - cpu[0]) / (TIMING_ITERS[1] - TIMING_ITERS[0]), 1e-3)
    iterations = max(int(budget_cpu_s / cpu_per_it), 20)
    print(f"{variant}: {cpu_per_it:.3f} CPU s/it -> {iterations} iterations", flush=True)
    start = time.time()
    out = os.path.join(output_dir, variant)
    used = _train(data_overrides, out, variant,
                  ["SOLVER.MAX_ITER", str(iterations), "SOLVER.STEPS", f"({int(iterations * 0.9)},)",
                   "SOLVER.CHECKPOINT_PERIOD", str(iterations)], os.path.join(output_dir, f"{variant}.log"))
    with open(os.path.join(out, "inference", "VG_test", "sgg_eval.json")) as f:
        metrics = json.load(f)
    return variant, metrics, cpu_per_it, iterations, used / 60, (time.time() - start) / 60


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
    parser.add_argument("--budget-minutes", type=float, default=10.0,
                        help="CPU minutes of training per variant (single-threaded)")
    parser.add_argument("--parallel", action="store_true", help="run the variants at the same time")
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
    budget = args.budget_minutes * 60
    if args.parallel:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(args.variants)) as pool:
            rows = list(pool.map(lambda v: run_variant(v, data_overrides, args.output_dir, budget), args.variants))
    else:
        rows = [run_variant(v, data_overrides, args.output_dir, budget) for v in args.variants]

    load = os.getloadavg()[0]
    lines = [f"Synthetic world, configs/demo_synthetic.yaml with the encoder changed, {args.budget_minutes:g} CPU "
             f"minutes of single-threaded training each ({time.strftime('%Y-%m-%d')}, load average {load:.1f} on "
             f"{os.cpu_count()} cores at the end)", "",
             "| encoder | R@50 | mR@50 | AP50 | CPU s/it | iterations | CPU min (train + eval) | wall min |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for variant, metrics, cpu_per_it, iterations, cpu_minutes, wall_minutes in rows:
        lines.append(f"| {variant} | {metrics['R@50']:.3f} | {metrics['mR@50']:.3f} | {metrics['AP50']:.3f} | "
                     f"{cpu_per_it:.3f} | {iterations} | {cpu_minutes:.1f} | {wall_minutes:.1f} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "encoders.md"), "w") as f:
        f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
