"""The evaluator and the offline tool on the VG-format synthetic world, through the real data loader."""
import numpy as np
import pytest
import torch

import tools.evaluate_predictions as evaluate_tool
from configs.defaults import get_cfg
from data.synthetic import config_overrides, generate_synthetic_vg
from data.visual_genome import load_vg_split
from evaluation import build_sgg_evaluator


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic_vg"))
    record = generate_synthetic_vg(out, 150, seed=0, write_images=False)
    return out, config_overrides(out, record)


def perfect_predictions(record, num_predicates):
    """Every ground-truth box with its label, one row per ground-truth relation row claiming its predicate."""
    relations = record["relations"]
    rel_scores = np.zeros((len(relations), num_predicates), dtype=np.float32)
    rel_scores[np.arange(len(relations)), relations[:, 2]] = 1.0
    return {"boxes": torch.from_numpy(record["boxes"]), "labels": torch.from_numpy(record["labels"]),
            "scores": torch.ones(len(record["boxes"])), "rel_pairs": torch.from_numpy(relations[:, :2].copy()),
            "rel_scores": torch.from_numpy(rel_scores)}


def test_perfect_predictions_on_the_synthetic_world(world, tmp_path, capsys):
    out, overrides = world
    cfg = get_cfg()
    cfg.merge_from_list(overrides)
    split = load_vg_split(cfg, "VG_test")
    num_predicates = len(split.idx_to_predicate)
    evaluator = build_sgg_evaluator(cfg, "VG_test", str(tmp_path / "inference"))
    evaluator.reset()
    for i in range(len(split)):
        record = split.get_record(i)
        evaluator.process([{"image_id": record["image_id"]}], [perfect_predictions(record, num_predicates)])
    results = evaluator.evaluate()
    printed = capsys.readouterr().out

    present = {int(p) for i in range(len(split)) for p in split.get_record(i)["relations"][:, 2]}
    assert num_predicates == 10 and results["num_images"] == len(split)
    assert results["R@100"] == 1.0 and results["ng-R@100"] == 1.0
    assert results["mR@100"] == pytest.approx(len(present) / num_predicates)
    assert results["num_zero_shot_relations"] > 0 and results["zR@100"] == 1.0  # unseen in VG_train
    assert results["AP50"] == pytest.approx(1.0) and results["AP"] == pytest.approx(1.0)

    config = tmp_path / "config.yaml"
    config.write_text("DATASETS:\n  TEST: [VG_test]\n")
    evaluate_tool.main(["--predictions", str(tmp_path / "inference" / "sgg_predictions.pt"),
                        "--config-file", str(config)] + [str(v) for v in overrides])
    assert capsys.readouterr().out == printed
