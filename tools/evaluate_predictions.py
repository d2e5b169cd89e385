"""Evaluate a saved ``sgg-predictions`` file (v1 or v2) against the ground truth of ``DATASETS.TEST[0]``, offline.

    python tools/evaluate_predictions.py --predictions output/inference/VG_test/sgg_predictions.pt \\
        --config-file configs/iterative_model.yaml \\
        DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5 /data/VG-SGG-with-attri.h5 TEST.SGG_PROTOCOL iterativesg

Trailing ``KEY VALUE`` pairs override the config, as for the training command; ``TEST.SGG_PROTOCOL`` picks the
evaluation protocol (``standard`` or ``iterativesg``, docs/PROTOCOL.md), so one file can be scored under both.
Prints the same block as the evaluation at the end of training (the same numbers, bit for bit, for a file the
evaluator wrote under the same protocol) and, with ``--output-dir``, writes ``sgg_eval.json`` there.
``--conventions`` instead prints how much each of the four conventions that separate the protocols moves the
numbers of this file (each alone, then all four). The file must cover every image of the split exactly once; it
is read with ``torch.load(weights_only=True)``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.defaults import get_cfg  # noqa: E402
from data.catalog import get_split  # noqa: E402
from engine.defaults import run_command_line  # noqa: E402
from evaluation.predictions_file import load_predictions, order_by_split  # noqa: E402
from evaluation.protocol_study import convention_table, evaluate_conventions  # noqa: E402
from evaluation.sgg_evaluator import SGGEvaluator, build_zero_shot_source  # noqa: E402


def evaluate_predictions_file(cfg, path: str, output_dir: str = None) -> dict:
    """Validate ``path`` against split ``cfg.DATASETS.TEST[0]``, evaluate it, print the block; returns the metrics."""
    dataset_name = cfg.DATASETS.TEST[0]
    split = get_split(cfg, dataset_name)
    num_classes, num_predicates = len(split.idx_to_label), len(split.idx_to_predicate)
    images = load_predictions(path, num_predicates=num_predicates, num_classes=num_classes)
    images = order_by_split(images, split.image_ids, path)
    evaluator = SGGEvaluator(
        split,
        zero_shot_triplets=build_zero_shot_source(cfg, dataset_name, num_classes, num_predicates),
        output_dir=None,
        dataset_name=dataset_name,
        protocol=cfg.TEST.SGG_PROTOCOL,
    )
    for image in images:
        evaluator.process([{"image_id": image["image_id"]}], [image])
    metrics = evaluator.summarize(evaluator.results)
    if output_dir:
        evaluator.write_results(output_dir, metrics)
    return metrics


def main(argv=None) -> int:
    """The command line; returns the exit status (2, with one line ``error: ...`` on stderr, for a bad file)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", required=True, help="sgg-predictions file (sgg_predictions.pt)")
    parser.add_argument("--config-file", required=True, help="config YAML naming the dataset files")
    parser.add_argument("--output-dir", default="", help="also write sgg_eval.json here")
    parser.add_argument("--conventions", action="store_true",
                        help="print the effect of each protocol convention (standard, each alone, iterativesg)")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides: KEY VALUE pairs at the end, e.g. TEST.SGG_PROTOCOL iterativesg")
    args = parser.parse_args(argv)

    def evaluate() -> None:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.freeze()
        if args.conventions:
            print(convention_table(evaluate_conventions(cfg, args.predictions, load_split=get_split)))
        else:
            evaluate_predictions_file(cfg, args.predictions, args.output_dir)

    return run_command_line(evaluate)


if __name__ == "__main__":
    sys.exit(main())
