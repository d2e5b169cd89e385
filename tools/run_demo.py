#!/usr/bin/env python
"""``make demo``: the whole pipeline on the synthetic VG-format world, on the CPU, in about a quarter of an hour.

1. writes the synthetic world (``tools/make_synthetic_vg.py``) unless ``--data-dir`` already holds it;
2. trains ``configs/demo_synthetic.yaml`` with ``train_iterative_model.py`` (progress lines with ETA; an
   interrupted demo continues where it stopped, ``--resume``), which ends by evaluating the synthetic test split
   and printing the SGG block and the detection AP;
3. draws the training curves and the predicted scene graphs of a few test images (``tools/predict.py``) under
   ``OUTPUT_DIR/demo/``, and prints a summary.
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


def dataset_overrides(data_dir: str) -> list:
    from data.synthetic import config_overrides

    with open(os.path.join(data_dir, "synthetic_record.json")) as f:
        record = json.load(f)
    return [str(v) for v in config_overrides(data_dir, record)]


def training_threads(cores: int, load: float) -> int:
    """CPU threads for training: the cores the machine's 1-minute load leaves idle, at least 1 (two threads on
    a busy machine wait for each other at every parallel operator, which slowed steps several-fold here)."""
    return max(1, min(cores, int(cores - load + 0.5)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="output/demo_data", help="where the synthetic world is written")
    parser.add_argument("--output-dir", default="output/demo", help="OUTPUT_DIR of the demo run")
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs", "demo_synthetic.yaml"))
    parser.add_argument("--images", type=int, default=None,
                        help="size of the synthetic world (default 2000, what configs/demo_synthetic.yaml is tuned for)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-drawn", type=int, default=4, help="test images whose scene graph is drawn")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides (KEY VALUE ...)")
    args = parser.parse_args(argv)
    python = sys.executable
    start = time.time()

    record_path = os.path.join(args.data_dir, "synthetic_record.json")
    if not os.path.isfile(record_path):
        images = args.images or 2000
        print(f"==> [1/3] writing the synthetic VG-format world ({images} images) to {args.data_dir}", flush=True)
        subprocess.run([python, os.path.join(ROOT, "tools", "make_synthetic_vg.py"), args.data_dir,
                        "--images", str(images), "--seed", str(args.seed)], check=True)
    else:
        print(f"==> [1/3] using the synthetic world in {args.data_dir}", flush=True)

    overrides = dataset_overrides(args.data_dir) + ["OUTPUT_DIR", args.output_dir] + list(args.opts)
    print(f"==> [2/3] training {os.path.relpath(args.config_file, ROOT)} on the CPU, then evaluating VG_test",
          flush=True)
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        cores, load = os.cpu_count() or 1, os.getloadavg()[0]
        env["OMP_NUM_THREADS"] = str(training_threads(cores, load))
        print(f"    {env['OMP_NUM_THREADS']} training thread(s): load {load:.1f} on {cores} cores "
              "(OMP_NUM_THREADS overrides)", flush=True)
    subprocess.run([python, os.path.join(ROOT, "train_iterative_model.py"), "--resume", "--num-gpus", "1",
                    "--config-file", args.config_file] + overrides, check=True, env=env)

    print(f"==> [3/3] drawing training curves and scene graphs under {args.output_dir}/demo", flush=True)
    from configs.defaults import get_cfg
    from tools.predict import predict
    from visualization import plot_training_curves

    demo_dir = os.path.join(args.output_dir, "demo")
    plot_training_curves(os.path.join(args.output_dir, "metrics.json"),
                         os.path.join(demo_dir, "training_curves.png"))
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(args.output_dir, "config.yaml"))
    cfg.merge_from_list(["MODEL.WEIGHTS", os.path.join(args.output_dir, "model_final.pth")])
    from data.visual_genome import load_vg_split

    test = load_vg_split(cfg, "VG_test")
    files = [test.get_record(i)["file_name"] for i in range(min(args.num_drawn, len(test)))]
    predict(cfg, files, demo_dir, top_k=10, score_threshold=0.05)  # confident triplets only in the pictures

    with open(os.path.join(args.output_dir, "inference", "VG_test", "sgg_eval.json")) as f:
        metrics = json.load(f)
    minutes = (time.time() - start) / 60
    print("\n==> demo finished in %.1f min" % minutes)
    for prefix in ("R", "ng-R", "zR", "mR"):
        print(f"    {prefix:>5} @ 20/50/100: " + " / ".join(f"{metrics[f'{prefix}@{k}']:.4f}" for k in (20, 50, 100)))
    print(f"    detection AP50 {metrics['AP50']:.4f}, AP {metrics['AP']:.4f}")
    print(f"    pictures: {demo_dir}/training_curves.png and {demo_dir}/<image id>.png (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
