#!/usr/bin/env python
"""``make demo``: the whole pipeline on the synthetic VG-format world, on the CPU.

1. writes the synthetic world (``tools/make_synthetic_vg.py``) unless ``--data-dir`` already holds it;
2. with ``--two-stage`` only: pre-trains the FCOS detector (``configs/demo_synthetic_detector.yaml``) on its boxes,
   prints its box AP on VG_val, and converts it into an initialisation of the scene-graph model
   (``tools/convert_weights.py``: backbone, FPN and FCOS head) - the lab's recipe in miniature: CenterMask is
   trained as a detector first, then frozen under the decoders (``configs/demo_synthetic_two_stage.yaml``);
3. trains the scene-graph model (``configs/demo_synthetic.yaml``: everything from scratch in one stage) with
   ``train_iterative_model.py`` (progress lines with ETA; an interrupted demo continues where it stopped: finished
   stages are skipped and training resumes, ``--resume``), which ends by evaluating the synthetic test split and
   printing the SGG block and the detection AP.  Both trainings (steps 2 and 3) run in two gloo processes of one
   thread each when two cores are idle (``--num-gpus 2`` on the CPU; ``--processes`` overrides);
4. draws the training curves and the predicted scene graphs of a few test images (``tools/predict.py``) under
   ``OUTPUT_DIR/demo/``, and prints a summary with the time of each stage.

What each variant reaches, and in how long: README, "The CPU demo".
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

DETECTOR_CONFIG = os.path.join(ROOT, "configs", "demo_synthetic_detector.yaml")
SCENE_GRAPH_CONFIG = os.path.join(ROOT, "configs", "demo_synthetic.yaml")
TWO_STAGE_CONFIG = os.path.join(ROOT, "configs", "demo_synthetic_two_stage.yaml")


def dataset_overrides(data_dir: str) -> list:
    from data.synthetic import config_overrides

    with open(os.path.join(data_dir, "synthetic_record.json")) as f:
        record = json.load(f)
    return [str(v) for v in config_overrides(data_dir, record)]


def training_threads(cores: int, load: float) -> int:
    """CPU threads for training: the cores that ``load`` (busy cores) leaves idle, at least 1 (two threads on
    a busy machine wait for each other at every parallel operator, which slowed steps several-fold here)."""
    return max(1, min(cores, int(cores - load + 0.5)))


def training_processes(threads: int, requested: int | None = None) -> tuple[int, int]:
    """(processes, threads per process) for ``threads`` idle cores: ``requested`` processes, else two gloo processes
    (``--num-gpus 2`` on the CPU, half the batch each) as soon as two cores are free - each step has a long
    single-threaded stretch (small operators, the matcher, the optimizer) that one process per core overlaps: 0.62
    vs 0.70 s/it for the demo on 2 cores (README, "The CPU demo").  The idle cores are shared out, one at least."""
    processes = requested or (2 if threads >= 2 else 1)
    return processes, max(1, threads // processes)


def busy_cores(window_s: float = 1.0, stat_path: str = "/proc/stat") -> float:
    """How many cores other programs keep busy now: the non-idle share of the CPU time over ``window_s`` seconds
    (``stat_path``'s first line) times the cores.  Not the 1-minute load average, which still counts the demo's
    own world generation that just finished; that average is the fallback where ``stat_path`` cannot be read."""
    def sample():
        with open(stat_path) as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return sum(fields), idle

    cores = os.cpu_count() or 1
    try:
        total0, idle0 = sample()
        time.sleep(window_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    elapsed = total1 - total0
    return cores * (1.0 - (idle1 - idle0) / elapsed) if elapsed > 0 else 0.0


def _train(python: str, config_file: str, overrides: list, env: dict, processes: int = 1) -> None:
    subprocess.run([python, os.path.join(ROOT, "train_iterative_model.py"), "--resume", "--num-gpus", str(processes),
                    "--config-file", config_file] + overrides, check=True, env=env)


def pretrain_detector(python: str, args, data_overrides: list, env: dict, processes: int = 1) -> str:
    """Step 2: train the detector config into ``OUTPUT_DIR/detector`` (skipped when its ``model_final.pth``
    exists) and convert it for ``--config-file``; returns the converted weights file."""
    detector_dir = os.path.join(args.output_dir, "detector")
    init_file = os.path.join(detector_dir, "scene_graph_init.pth")
    if not os.path.isfile(os.path.join(detector_dir, "model_final.pth")):
        _train(python, args.detector_config_file, data_overrides + ["OUTPUT_DIR", detector_dir], env, processes)
    if not os.path.isfile(init_file):
        from tools.convert_weights import main as convert_weights

        if convert_weights(["--input", detector_dir, "--output", init_file, "--config-file", args.config_file]
                           + data_overrides) != 0:
            raise SystemExit(f"error: could not convert the detector run {detector_dir} into {init_file}")
    return init_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="output/demo_data", help="where the synthetic world is written")
    parser.add_argument("--output-dir", default="output/demo", help="OUTPUT_DIR of the demo run")
    parser.add_argument("--two-stage", action="store_true",
                        help="pre-train the detector first, then train the scene-graph model on it frozen (defaults "
                             "--config-file and --detector-config-file to the two-stage configs)")
    parser.add_argument("--config-file", default=None,
                        help="the scene-graph model's config (default configs/demo_synthetic.yaml, or "
                             "configs/demo_synthetic_two_stage.yaml with --two-stage)")
    parser.add_argument("--detector-config-file", default=None,
                        help="a detector to pre-train first and start the scene-graph model from (default: none, "
                             "or configs/demo_synthetic_detector.yaml with --two-stage)")
    parser.add_argument("--images", type=int, default=None,
                        help="size of the synthetic world (default 2000, what the demo configs are tuned for)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-drawn", type=int, default=4, help="test images whose scene graph is drawn")
    parser.add_argument("--processes", type=int, default=None,
                        help="training processes (gloo; SOLVER.IMS_PER_BATCH is split between them).  Default: 2 when "
                             "at least two cores are idle, else 1 - or 1 when OMP_NUM_THREADS is set")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="extra config overrides (KEY VALUE ...) for the scene-graph model")
    args = parser.parse_args(argv)
    if args.config_file is None:
        args.config_file = TWO_STAGE_CONFIG if args.two_stage else SCENE_GRAPH_CONFIG
    if args.detector_config_file is None:
        args.detector_config_file = DETECTOR_CONFIG if args.two_stage else ""
    for flag, path in (("--config-file", args.config_file), ("--detector-config-file", args.detector_config_file)):
        if path and not os.path.isfile(path):
            raise SystemExit(f"error: {flag} {path} does not exist")
    if args.processes is not None and args.processes < 1:
        raise SystemExit(f"error: --processes must be at least 1, got {args.processes}")
    python = sys.executable
    start = time.time()
    stages = {}

    record_path = os.path.join(args.data_dir, "synthetic_record.json")
    if not os.path.isfile(record_path):
        images = args.images or 2000
        print(f"==> [1/4] writing the synthetic VG-format world ({images} images) to {args.data_dir}", flush=True)
        subprocess.run([python, os.path.join(ROOT, "tools", "make_synthetic_vg.py"), args.data_dir,
                        "--images", str(images), "--seed", str(args.seed)], check=True)
    else:
        print(f"==> [1/4] using the synthetic world in {args.data_dir}", flush=True)
    stages["world"] = time.time() - start

    data_overrides = dataset_overrides(args.data_dir)
    env = dict(os.environ)
    if "OMP_NUM_THREADS" in env:
        processes = args.processes or 1
    else:
        cores, busy = os.cpu_count() or 1, busy_cores()
        processes, threads = training_processes(training_threads(cores, busy), args.processes)
        env["OMP_NUM_THREADS"] = str(threads)
        print(f"    {processes} training process(es) x {threads} thread(s): {busy:.1f} of {cores} cores busy "
              "(--processes and OMP_NUM_THREADS override)", flush=True)

    overrides = data_overrides + ["OUTPUT_DIR", args.output_dir]
    mark = time.time()
    if args.detector_config_file:
        print(f"==> [2/4] pre-training the detector {os.path.relpath(args.detector_config_file, ROOT)} on the CPU",
              flush=True)
        overrides += ["MODEL.WEIGHTS", pretrain_detector(python, args, data_overrides, env, processes)]
    else:
        print("==> [2/4] no detector pre-training (one stage; --two-stage pre-trains the detector first)", flush=True)
    stages["detector"] = time.time() - mark

    mark = time.time()
    print(f"==> [3/4] training {os.path.relpath(args.config_file, ROOT)} on the CPU, then evaluating VG_test",
          flush=True)
    _train(python, args.config_file, overrides + list(args.opts), env, processes)
    stages["scene graph"] = time.time() - mark

    mark = time.time()
    print(f"==> [4/4] drawing training curves and scene graphs under {args.output_dir}/demo", flush=True)
    from configs.defaults import get_cfg
    from data.visual_genome import load_vg_split
    from tools.predict import predict
    from visualization import plot_training_curves

    demo_dir = os.path.join(args.output_dir, "demo")
    plot_training_curves(os.path.join(args.output_dir, "metrics.json"),
                         os.path.join(demo_dir, "training_curves.png"))
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(args.output_dir, "config.yaml"))
    cfg.merge_from_list(["MODEL.WEIGHTS", os.path.join(args.output_dir, "model_final.pth")])
    test = load_vg_split(cfg, "VG_test")
    files = [test.get_record(i)["file_name"] for i in range(min(args.num_drawn, len(test)))]
    predict(cfg, files, demo_dir, top_k=10, score_threshold=0.05)  # confident triplets only in the pictures
    stages["drawings"] = time.time() - mark

    with open(os.path.join(args.output_dir, "inference", "VG_test", "sgg_eval.json")) as f:
        metrics = json.load(f)
    minutes = (time.time() - start) / 60
    print("\n==> demo finished in %.1f min (%s)" % (
        minutes, ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in stages.items())))
    detector_eval = os.path.join(args.output_dir, "detector", "inference", "VG_val", "detection_eval.json")
    if args.detector_config_file and os.path.isfile(detector_eval):
        with open(detector_eval) as f:
            detector = json.load(f)
        print(f"    pre-trained detector on VG_val: AP50 {detector['AP50']:.4f}, AP {detector['AP']:.4f}")
    for prefix in ("R", "ng-R", "zR", "mR"):
        print(f"    {prefix:>5} @ 20/50/100: " + " / ".join(f"{metrics[f'{prefix}@{k}']:.4f}" for k in (20, 50, 100)))
    print(f"    detection AP50 {metrics['AP50']:.4f}, AP {metrics['AP']:.4f}")
    print(f"    pictures: {demo_dir}/training_curves.png and {demo_dir}/<image id>.png (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
