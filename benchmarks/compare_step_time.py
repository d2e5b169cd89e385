#!/usr/bin/env python
"""Training-step time of config variants on the CPU, measured in turns in one process (fair on a noisy machine).

    python benchmarks/compare_step_time.py --config-file configs/demo_synthetic.yaml --batch 4 \\
        --variant 128 144 --variant 112 128 MODEL.CENTERMASK.HEAD_CONVS 2 --rounds 12

Each ``--variant H W [KEY VALUE ...]`` is the config file with those overrides, fed a synthetic batch of ``--batch``
images of H x W (``bench_model.synthetic_training_batch``) and stepped as the trainer steps it
(``bench_model.BenchmarkedModel.train_step``: forward, matcher, losses, backward, clipping, AdamW).  After
``--warmup`` steps of each, every round times one step of each variant in turn, so a change of load hits all of
them alike; the table gives the median and the minimum per variant and the median relative to the first.  Timing
two configs in separate runs on a loaded machine gives differences of +-30 % that are not theirs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_model  # noqa: E402


def parse_variant(words: list[str]) -> tuple[int, int, list[str]]:
    """``["112", "128", KEY, VALUE, ...]`` -> (112, 128, [KEY, VALUE, ...]), with errors that name the option."""
    if len(words) < 2 or not all(w.isdigit() and int(w) > 0 for w in words[:2]):
        raise SystemExit(f"error: --variant needs a height and a width in pixels first, got {' '.join(words)!r}")
    if len(words) % 2:
        raise SystemExit(f"error: --variant {' '.join(words)!r}: the overrides after H W must be KEY VALUE pairs")
    return int(words[0]), int(words[1]), words[2:]


def time_variants(config_file: str, variants: list[tuple[int, int, list[str]]], batch: int, warmup: int,
                  rounds: int) -> list[list[float]]:
    """Seconds of each timed step, per variant."""
    benches = []
    for height, width, opts in variants:
        try:  # a missing file, an unknown key or a value the model rejects: one line naming it, no traceback
            cfg = bench_model.load_config(config_file, "cpu", opts, False)
            bench = bench_model.BenchmarkedModel(cfg, None)
        except (FileNotFoundError, KeyError, ValueError) as error:
            words = " ".join([str(height), str(width)] + list(opts))
            raise SystemExit(f"error: --variant {words} of {config_file}: {error}") from None
        bench.set_training_batch(bench_model.synthetic_training_batch(cfg, batch, height, width))
        for _ in range(warmup):
            bench.train_step()
        benches.append(bench)
    times: list[list[float]] = [[] for _ in benches]
    for _ in range(rounds):
        for bench, record in zip(benches, times):
            start = time.perf_counter()
            bench.train_step()
            record.append(time.perf_counter() - start)
    return times


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="H W [KEY VALUE]")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--batch, --rounds and --threads must be >= 1 and --warmup >= 0")
    variants = [parse_variant(words) for words in args.variant]
    torch.set_num_threads(args.threads)
    times = time_variants(args.config_file, variants, args.batch, args.warmup, args.rounds)
    rows = []
    print(f"{args.config_file}, batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds after "
          f"{args.warmup} warm-up steps, load average {os.getloadavg()[0]:.2f}")
    reference = statistics.median(times[0])
    for (height, width, opts), record in zip(variants, times):
        row = {"variant": " ".join([str(height), str(width)] + opts), "median_ms": 1000 * statistics.median(record),
               "min_ms": 1000 * min(record), "relative": statistics.median(record) / reference}
        rows.append(row)
        print(f"  {row['median_ms']:8.0f} ms median  {row['min_ms']:8.0f} ms min  {row['relative']:5.2f}x  "
              f"{row['variant']}")
    return rows


if __name__ == "__main__":
    main()
