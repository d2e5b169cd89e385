#!/usr/bin/env python
"""Write the lab's three results tables (Markdown) from finished runs.

    python tools/results_table.py RUN_DIR [RUN_DIR ...] [--names A Ours] [--dataset VG_test] [--output FILE]

Each RUN_DIR is an ``OUTPUT_DIR`` of ``train_iterative_model.py``: its ``config.yaml`` gives the model, backbone
and batch; ``run_info.json`` (written at start-up) the GPU; ``inference/<dataset>/sgg_eval.json`` the scene-graph
metrics and ``detection_eval.json`` (if a detector pre-training run) or the SGG file the detection AP.
Parameter counts come from ``parameters.json`` when present, otherwise the model is built from the config
(on the CPU, no weights) and counted like ``tools/count_parameters.py``.

The scene-graph table names the evaluation protocol of every row (``protocol`` in ``sgg_eval.json``; files written
before ``TEST.SGG_PROTOCOL`` existed are ``standard``). Rows of different protocols never share a column silently:
each row is marked with its protocol's footnote and the footnotes say what differs (docs/PROTOCOL.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.protocols import PROTOCOLS  # noqa: E402

_FOOTNOTE_MARKS = ("¹", "²", "³")


def _load_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _encoder_name(cfg) -> str:
    if cfg.MODEL.BACKBONE.NAME == "ResNet":
        backbone = f"ResNet-{cfg.MODEL.RESNETS.DEPTH}"
    else:
        spec = cfg.MODEL.VOVNET.CONV_BODY.replace("-eSE", "").replace("V-", "VoVNetV2-")
        backbone = f"{spec}-FPN"
    return f"{backbone}/{'CenterMask' if cfg.MODEL.ENCODER.NAME == 'CenterMask' else 'DETR'}"


def _parameter_counts(run_dir: str, cfg) -> tuple[int, int]:
    saved = _load_json(os.path.join(run_dir, "parameters.json"))
    if saved is not None:
        return int(saved["backbone"]), int(saved["total"])
    from tools.count_parameters import build_on_meta, count_parameters

    counts = count_parameters(build_on_meta(cfg))
    return int(counts["backbone"]), int(counts["total"])


def _fmt_triple(metrics: dict, prefix: str) -> str:
    keys = [f"{prefix}@{k}" for k in (20, 50, 100)]
    if not all(k in metrics for k in keys):
        return "-"
    return "/".join(f"{100 * metrics[k]:.2f}" for k in keys)


def collect(run_dir: str, name: str, dataset: str) -> dict:
    """Everything the tables need from one run directory (errors name the missing file)."""
    from configs.defaults import get_cfg

    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{run_dir}: no config.yaml (is it an OUTPUT_DIR of train_iterative_model.py?)")
    cfg = get_cfg()
    cfg.set_new_allowed(True)
    cfg.merge_from_file(cfg_path)
    cfg.MODEL.DEVICE = "cpu"
    info = _load_json(os.path.join(run_dir, "run_info.json")) or {}
    eval_dir = os.path.join(run_dir, "inference", dataset)
    sgg = _load_json(os.path.join(eval_dir, "sgg_eval.json"))
    det = _load_json(os.path.join(eval_dir, "detection_eval.json")) or sgg or {}
    backbone_params, total_params = _parameter_counts(run_dir, cfg)
    protocol = str(sgg.get("protocol", "standard")) if sgg else None
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"{os.path.join(eval_dir, 'sgg_eval.json')}: unknown protocol {protocol!r}")
    return {
        "name": name,
        "encoder": _encoder_name(cfg),
        "decoder": f"3×{cfg.MODEL.DETR.DEC_LAYERS}",
        "backbone_params": backbone_params,
        "total_params": total_params,
        "gpu": info.get("device_name", "-"),
        "num_devices": info.get("world_size", "-"),
        "batch": cfg.SOLVER.IMS_PER_BATCH,
        "sgg": sgg,
        "protocol": protocol,
        "det": det,
    }


def render(rows: list[dict], dataset: str) -> str:
    out = ["### Models\n",
           "| Model | Encoder (Backbone/Detector) | Decoder | Backbone parameters | Total parameters | GPU | Batch |",
           "|:-----:|:---------------------------:|:-------:|-------------------:|----------------:|:---:|:-----:|"]
    for r in rows:
        gpu = r["gpu"] if r["num_devices"] in ("-", 1) else f"{r['num_devices']}× {r['gpu']}"
        out.append(f"| {r['name']} | {r['encoder']} | {r['decoder']} | {r['backbone_params']:,} | "
                   f"{r['total_params']:,} | {gpu} | {r['batch']} |")
    protocols = sorted({r["protocol"] for r in rows if r["protocol"]}, key=list(PROTOCOLS).index)
    mixed = len(protocols) > 1
    marks = {name: _FOOTNOTE_MARKS[i] for i, name in enumerate(protocols)} if mixed else {}
    title = f"sgdet, {dataset}, %" + (f", protocol {protocols[0]}" if len(protocols) == 1 else "")
    out += ["", f"### Scene graph generation ({title})\n",
            "| Model | R@20/50/100 | ng-R@20/50/100 | zR@20/50/100 | mR@20/50/100 | ng-mR@20/50/100 | Protocol |",
            "|:-----:|:-----------:|:--------------:|:------------:|:------------:|:---------------:|:--------:|"]
    for r in rows:
        m = r["sgg"] or {}
        protocol = f"{r['protocol']}{marks.get(r['protocol'], '')}" if r["protocol"] else "-"
        out.append(f"| {r['name']} | "
                   + " | ".join(_fmt_triple(m, p) for p in ("R", "ng-R", "zR", "mR", "ng-mR")) + f" | {protocol} |")
    if mixed:  # never two protocols in one column without saying so
        out.append("")
        out.append("The rows were evaluated with different protocols, whose numbers are not directly comparable "
                   "(docs/PROTOCOL.md):")
        for name in protocols:
            out.append(f"- {marks[name]} `{name}`: {PROTOCOLS[name].description}.")
    out += ["", f"### Object detection ({dataset}, %)\n", "| Model | AP50 | AP |", "|:-----:|:----:|:--:|"]
    for r in rows:
        d = r["det"]
        ap50 = f"{100 * d['AP50']:.2f}" if "AP50" in d else "-"
        ap = f"{100 * d['AP']:.2f}" if "AP" in d else "-"
        out.append(f"| {r['name']} | {ap50} | {ap} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--names", nargs="*", help="row names (default: the run folders' names)")
    parser.add_argument("--dataset", default="VG_test", help="evaluated split to report (default VG_test)")
    parser.add_argument("--output", help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"--names has {len(names)} entries for {len(args.runs)} runs")
    try:
        rows = [collect(r, n, args.dataset) for r, n in zip(args.runs, names)]
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = render(rows, args.dataset)
    print(text)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
