"""TEST.SGG_PROTOCOL: the four conventions of the standard and iterativesg protocols on hand-made cases, the
rel_ranking_scores order (file format v2), and the offline tool with a protocol override."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import tools.evaluate_predictions as evaluate_tool
from configs.defaults import get_cfg
from data.vg_writer import vocabulary_dicts, write_json, write_vg_h5
from data.visual_genome import GT_CLIP_MARGIN, clear_cache, load_vg_split
from evaluation.predictions_file import PredictionsFileError, load_predictions, save_predictions
from evaluation.protocols import ITERATIVESG, PROTOCOLS, STANDARD, get_protocol
from evaluation.reference_loop import evaluate_reference
from evaluation.sgg_evaluator import SGGEvaluator, build_sgg_evaluator
from evaluation.sgg_metrics import box_iou_detectron2, box_iou_plus1
from evaluation.synthetic import InMemorySplit, random_prediction, random_split

PREDICATES = ["p0", "p1", "p2", "p3"]  # p3 occurs in no image
CLASSES = ["c0", "c1", "c2"]
BOXES = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49]], dtype=np.float32)
LABELS = np.array([0, 1, 2], dtype=np.int64)
NO_ZERO_SHOT = np.zeros((0, 3), dtype=np.int64)


def record(image_id, relations, boxes=BOXES, labels=LABELS):
    return {"image_id": image_id, "width": 100, "height": 100, "boxes": boxes, "labels": labels,
            "relations": np.asarray(relations, dtype=np.int64).reshape(-1, 3)}


def prediction(rows, boxes=BOXES, labels=LABELS, ranking=None):
    """One row per ``(subject, object, {predicate: prob})``; entity scores 1; optional ranking scores."""
    rel_scores = np.zeros((len(rows), len(PREDICATES)), dtype=np.float32)
    for i, (_, _, probs) in enumerate(rows):
        for predicate, prob in probs.items():
            rel_scores[i, predicate] = prob
    output = {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
              "scores": np.ones(len(boxes), np.float32),
              "rel_pairs": np.array([[s, o] for s, o, _ in rows], dtype=np.int64).reshape(-1, 2),
              "rel_scores": rel_scores}
    if ranking is not None:
        output["rel_ranking_scores"] = np.asarray(ranking, np.float32)
    return output


def evaluate(split, outputs, protocol, zero_shot=NO_ZERO_SHOT, output_dir=None):
    evaluator = SGGEvaluator(split, zero_shot_triplets=zero_shot, protocol=protocol,
                             output_dir=None if output_dir is None else str(output_dir))
    for image_id, output in zip(split.image_ids, outputs):
        evaluator.process([{"image_id": int(image_id)}], [output])
    return evaluator.evaluate()


def test_protocol_names_defaults_and_bad_value():
    assert get_cfg().TEST.SGG_PROTOCOL == "standard"
    assert sorted(PROTOCOLS) == ["iterativesg", "standard"]
    # the loader's ground-truth margins are the protocols' (data cannot import evaluation)
    assert GT_CLIP_MARGIN == {name: protocol.gt_clip_margin for name, protocol in PROTOCOLS.items()}
    assert (STANDARD.skip_images_without_rows, STANDARD.iou_plus_one, STANDARD.mean_recall_slot0) == (
        False, True, False)
    assert (ITERATIVESG.skip_images_without_rows, ITERATIVESG.iou_plus_one, ITERATIVESG.mean_recall_slot0) == (
        True, False, True)
    with pytest.raises(ValueError, match="TEST.SGG_PROTOCOL must be one of"):
        get_protocol("released")
    split = InMemorySplit([record(1, [(0, 1, 0)])], CLASSES, PREDICATES)
    with pytest.raises(ValueError, match="TEST.SGG_PROTOCOL"):
        SGGEvaluator(split, NO_ZERO_SHOT, protocol="Standard")


# ---------------------------------------------------------------------------------------------------------------
# Convention 1: images without prediction rows
# ---------------------------------------------------------------------------------------------------------------
def test_image_without_rows_counts_zero_or_is_skipped(capsys):
    # A: both rows recalled; B: no prediction row at all (boxes only); C: rows that recall nothing.
    split = InMemorySplit([record(1, [(0, 1, 0), (1, 2, 1)]), record(2, [(0, 1, 0)]), record(3, [(1, 2, 2)])],
                          CLASSES, PREDICATES)
    outputs = [prediction([(0, 1, {0: 0.9}), (1, 2, {1: 0.8})]), prediction([]), prediction([(2, 0, {3: 0.9})])]
    zero_shot = np.array([[0, 1, 0]])  # (c0, c1, p0): row 0 of A (recalled) and of B
    standard = evaluate(split, outputs, "standard", zero_shot)
    assert "SGG eval protocol: standard (" in capsys.readouterr().out
    skip_only = evaluate(split, outputs, replace(STANDARD, skip_images_without_rows=True), zero_shot)
    iterativesg = evaluate(split, outputs, "iterativesg", zero_shot)
    assert "SGG eval protocol: iterativesg (released IterativeSG evaluator" in capsys.readouterr().out
    # standard: R = (1 + 0 + 0) / 3; zR = (1 + 0) / 2; mR = (p0 (1 + 0) / 2 + p1 1 + p2 0 + p3 0) / 4
    assert standard["R@100"] == pytest.approx(1 / 3) and standard["ng-R@100"] == pytest.approx(1 / 3)
    assert standard["zR@100"] == 0.5 and standard["mR@100"] == 0.375
    assert standard["num_images_scored"] == 3 and standard["num_images_without_rows"] == 1
    # B skipped: R = (1 + 0) / 2; zR = 1 / 1; mR = (p0 1 + p1 1 + p2 0) / 4
    assert skip_only["R@100"] == 0.5 and skip_only["zR@100"] == 1.0 and skip_only["mR@100"] == 0.5
    assert skip_only["num_images_scored"] == 2 and skip_only["num_gt_relations"] == 4
    # iterativesg also blends slot 0: A (2 hits + 1 p0 hit) / (2 rows + 1 p0 row) = 1, C 0 / 1 = 0 -> p0 0.5;
    # mR = (0.5 + 1 + 0 + 0) / 4
    assert iterativesg["R@100"] == 0.5 and iterativesg["zR@100"] == 1.0 and iterativesg["mR@100"] == 0.375
    assert iterativesg["protocol"] == "iterativesg" and standard["protocol"] == "standard"


# ---------------------------------------------------------------------------------------------------------------
# Conventions 2 and 3: IoU without +1 px, ground truth clipped at W/H (through the VG loader)
# ---------------------------------------------------------------------------------------------------------------
def test_detectron2_iou():
    a = np.array([0, 0, 10, 10], np.float32)
    # 10x5 inside 10x10: 50 / 100 without +1 px; 10x5 px vs 10x10 px is 66/121 with it
    assert box_iou_detectron2(a, [0, 0, 10, 5]) == np.float32(0.5)
    assert box_iou_plus1(a, [0, 0, 10, 5]) == pytest.approx(66 / 121)
    # touching boxes and empty boxes give 0 (no NaN), as detectron2's pairwise_iou
    assert box_iou_detectron2(a, [10, 0, 20, 10]) == 0 and box_iou_detectron2([5, 5, 5, 5], [5, 5, 5, 5]) == 0
    assert box_iou_detectron2(a, [0, 0, 10, 5]).dtype == np.float32
    # float32 arithmetic in detectron2's order: inter / ((area_a + area_b) - inter)
    b = np.array([0.1, 0.2, 7.3, 9.9], np.float32)
    inter = (np.float32(7.3) - np.float32(0.1)) * (np.float32(9.9) - np.float32(0.2))
    assert box_iou_detectron2(a, b) == inter / (np.float32(100) + inter - inter)


@pytest.fixture
def sliver_world(tmp_path):
    """A one-image VG-format world (1024 x 1024, so the 1024-scale boxes are pixels) with:

    box 0 (c0): x 1022..1026, y 0..10 -- a sliver running 2 px past the right border;
    box 1 (c1): 100..200 x 100..200;
    box 2 (c2): x 1024..1030, y 300..340 -- entirely right of the image;
    relations (0, 1, p0) and (2, 1, p1).
    """
    (tmp_path / "VG_100K").mkdir()
    cxcywh = np.array([[1024, 5, 4, 10], [150, 150, 100, 100], [1027, 320, 6, 40]])
    write_vg_h5(str(tmp_path / "vg.h5"), {
        "split": [2], "img_to_first_box": [0], "img_to_last_box": [2], "img_to_first_rel": [0],
        "img_to_last_rel": [1], "labels": [1, 2, 3], "boxes_1024": cxcywh, "boxes_512": cxcywh // 2,
        "relationships": [[0, 1], [2, 1]], "predicates": [1, 2], "attributes": np.zeros((3, 10)),
        "active_object_mask": np.ones(3, bool)})
    counts = {"object": {}, "predicate": {}, "attribute": {}}
    write_json(str(tmp_path / "dicts.json"), vocabulary_dicts(CLASSES, PREDICATES, ["a"], counts))
    write_json(str(tmp_path / "image_data.json"), [{"image_id": 7, "width": 1024, "height": 1024}])
    cfg = get_cfg()
    vg = cfg.DATASETS.VISUAL_GENOME
    vg.IMAGES, vg.MAPPING_DICTIONARY = str(tmp_path / "VG_100K"), str(tmp_path / "dicts.json")
    vg.IMAGE_DATA, vg.VG_ATTRIBUTE_H5 = str(tmp_path / "image_data.json"), str(tmp_path / "vg.h5")
    cfg.MODEL.DETR.NUM_CLASSES, cfg.MODEL.DETR.NUM_RELATION_CLASSES = 3, 4
    clear_cache()
    yield cfg
    clear_cache()


def loaded(cfg, protocol):
    cfg = cfg.clone()
    cfg.TEST.SGG_PROTOCOL = protocol
    return load_vg_split(cfg, "VG_test")


def test_ground_truth_boxes_follow_the_protocol_at_load(sliver_world):
    standard = loaded(sliver_world, "standard").get_record(0)
    # clamped to [0, W - 1]: the sliver keeps 1 px of width, the outside box becomes a zero-width line; both kept
    assert standard["boxes"].tolist() == [[1022, 0, 1023, 10], [100, 100, 200, 200], [1023, 300, 1023, 340]]
    assert standard["relations"].tolist() == [[0, 1, 0], [2, 1, 1]]
    iterativesg = loaded(sliver_world, "iterativesg")
    assert iterativesg.sgg_protocol == "iterativesg"
    clipped = iterativesg.get_record(0)
    # clipped to [0, W]; the outside box is empty and dropped with its relation (the released test mapper)
    assert clipped["boxes"].tolist() == [[1022, 0, 1024, 10], [100, 100, 200, 200]]
    assert clipped["labels"].tolist() == [0, 1] and clipped["relations"].tolist() == [[0, 1, 0]]
    bad = sliver_world.clone()
    bad.TEST.SGG_PROTOCOL = "other"
    with pytest.raises(ValueError, match="TEST.SGG_PROTOCOL must be one of"):
        load_vg_split(bad, "VG_test")


def test_sliver_box_match_depends_on_the_plus_one_and_on_the_clip(sliver_world):
    # Predicted sliver P0 = [1023, 0, 1024, 10] (a model's boxes stop at W), P1 = the object, P2 near the outside box.
    output = prediction([(0, 1, {0: 0.9}), (2, 1, {1: 0.8})],
                        boxes=[[1023, 0, 1024, 10], [100, 100, 200, 200], [1022, 300, 1024, 340]])
    # Subject IoU of P0 with the ground-truth sliver:
    #   standard     GT [1022, 1023], +1 px: inter 1x11, areas 2x11 + 2x11 -> 11 / 33 = 0.33  (miss)
    #   IoU alone    GT [1022, 1023], no +1: inter 0                         -> 0             (miss)
    #   clip alone   GT [1022, 1024], +1 px: inter 2x11, areas 3x11 + 2x11 -> 22 / 33 = 0.67  (hit)
    #   iterativesg  GT [1022, 1024], no +1: inter 1x10, areas 2x10 + 1x10 -> 10 / 20 = 0.50  (hit)
    # The second GT row (outside box, zero width under standard: IoU with P2 41 / 123 = 0.33 with +1 px, 0 without)
    # is never recalled and only exists under the standard clamp.
    standard_split, clipped_split = loaded(sliver_world, "standard"), loaded(sliver_world, "iterativesg")
    cases = [(standard_split, STANDARD, 0.0, 2), (standard_split, replace(STANDARD, iou_plus_one=False), 0.0, 2),
             (clipped_split, replace(STANDARD, gt_clip_margin=0), 1.0, 1), (clipped_split, ITERATIVESG, 1.0, 1)]
    for split, protocol, recall, rows in cases:
        results = SGGEvaluator(split, NO_ZERO_SHOT, protocol=protocol)
        results.process([{"image_id": 7}], [output])
        metrics = results.recall_metrics(results.results)
        assert (metrics["R@20"], metrics["num_gt_relations"]) == (recall, rows), protocol
    iou = box_iou_plus1(standard_split.get_record(0)["boxes"][0], output["boxes"][0])
    assert iou == pytest.approx(1 / 3)
    assert box_iou_detectron2(clipped_split.get_record(0)["boxes"][0], output["boxes"][0]) == np.float32(0.5)
    # a split loaded for one ground-truth convention cannot be evaluated under the other
    with pytest.raises(ValueError, match="was loaded with TEST.SGG_PROTOCOL 'standard'"):
        SGGEvaluator(standard_split, NO_ZERO_SHOT, protocol="iterativesg")
    # build_sgg_evaluator loads the split for TEST.SGG_PROTOCOL
    cfg = sliver_world.clone()
    cfg.TEST.SGG_PROTOCOL = "iterativesg"
    cfg.DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS = ""
    evaluator = build_sgg_evaluator(cfg, "VG_test", None)
    assert evaluator.protocol is ITERATIVESG and evaluator.split.sgg_protocol == "iterativesg"


# ---------------------------------------------------------------------------------------------------------------
# Convention 4: the slot-0 mean-recall accumulation
# ---------------------------------------------------------------------------------------------------------------
def test_mean_recall_slot0_accumulation():
    # A: (0,1,p0) hit, (1,2,p1) miss, (0,2,p1) hit; B: (0,1,p2) hit, (1,2,p2) miss (perfect boxes, so the IoU
    # convention does not matter; every image has rows, so neither does the skip).
    split = InMemorySplit([record(1, [(0, 1, 0), (1, 2, 1), (0, 2, 1)]), record(2, [(0, 1, 2), (1, 2, 2)])],
                          CLASSES, PREDICATES)
    outputs = [prediction([(0, 1, {0: 0.9}), (0, 2, {1: 0.8})]), prediction([(0, 1, {2: 0.9})])]
    standard = evaluate(split, outputs, "standard")
    iterativesg = evaluate(split, outputs, "iterativesg")
    # standard: p0 = 1/1, p1 = 1/2, p2 = 1/2, p3 = 0 -> mR = 2 / 4 = 0.5
    assert standard["mR@100"] == 0.5 and standard["per_predicate_R@100/p0"] == 1.0
    # iterativesg slot 0, per image (hits + p0 hits) / (rows + p0 rows): A (2 + 1) / (3 + 1) = 0.75,
    # B (1 + 0) / (2 + 0) = 0.5 -> p0 = 0.625; mR = (0.625 + 0.5 + 0.5 + 0) / 4 = 0.40625, 0.09375 below standard
    assert iterativesg["per_predicate_R@100/p0"] == 0.625
    assert iterativesg["mR@100"] == 0.40625 and standard["mR@100"] - iterativesg["mR@100"] == 0.09375
    assert iterativesg["ng-mR@100"] == 0.40625  # the same accumulation without the graph constraint
    assert iterativesg["per_predicate_R@100/p1"] == standard["per_predicate_R@100/p1"] == 0.5
    for key in ("R@20", "R@100", "ng-R@100"):  # (2/3 + 1/2) / 2 under both
        assert iterativesg[key] == standard[key] == pytest.approx(7 / 12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("protocol", ["standard", "iterativesg"])
def test_vectorised_agrees_with_the_loop_reference(seed, protocol):
    rng = np.random.default_rng(seed)
    coarse = seed == 2  # IoUs of exactly 0.5 and tied scores
    split = random_split(rng, 6, 5, 4, boxes_per_image=6, relations_per_image=5, coarse=coarse)
    outputs = [random_prediction(rng, r, 5, 4, num_boxes=12, num_rows=0 if i == 2 else 120, coarse=coarse)
               for i, r in enumerate(split.records)]
    if seed == 1:  # ranked rows (v2)
        for output in outputs:
            output["rel_ranking_scores"] = rng.integers(0, 3, len(output["rel_pairs"])).astype(np.float32)
    zero_shot = np.stack([rng.integers(0, 5, 6), rng.integers(0, 5, 6), rng.integers(0, 4, 6)], axis=1)
    ours = evaluate(split, outputs, protocol, zero_shot)
    reference = evaluate_reference(zip(split.records, outputs), split.idx_to_predicate,
                                   set(map(tuple, zero_shot.tolist())), protocol=protocol)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    assert ours["num_images_scored"] == (5 if protocol == "iterativesg" else 6)


# ---------------------------------------------------------------------------------------------------------------
# rel_ranking_scores: graph-constrained order and the v2 file
# ---------------------------------------------------------------------------------------------------------------
def ranked_case(true_row_index, true_ranking, filler_ranking=0.5, num_rows=25):
    """One GT row (0, 1, p0); ``num_rows`` rows of which one recalls it (product score 0.9, above every filler's
    0.5) at ``true_row_index``, with ranking score ``true_ranking``."""
    rows = [(2, 0, {3: 0.5})] * num_rows
    rows[true_row_index] = (0, 1, {0: 0.9})
    ranking = np.full(num_rows, filler_ranking)
    ranking[true_row_index] = true_ranking
    return rows, ranking


@pytest.mark.parametrize("protocol", ["standard", "iterativesg"])
def test_graph_list_is_ordered_by_ranking_scores_when_given(protocol):
    split = InMemorySplit([record(1, [(0, 1, 0)])], CLASSES, PREDICATES)

    def recalls(rows, ranking=None):
        metrics = evaluate(split, [prediction(rows, ranking=ranking)], protocol)
        return metrics["R@20"], metrics["R@50"], metrics["ng-R@20"]

    rows, ranking = ranked_case(0, 0.1)
    assert recalls(rows) == (1.0, 1.0, 1.0)  # product order: the true row first
    assert recalls(rows, ranking) == (0.0, 1.0, 1.0)  # ranked last (position 24); ng list unchanged
    rows, ranking = ranked_case(22, 0.5)
    assert recalls(rows) == (1.0, 1.0, 1.0)
    assert recalls(rows, ranking) == (0.0, 1.0, 1.0)  # all tied: stable, file position 22 >= 20
    rows, ranking = ranked_case(5, 0.5)
    assert recalls(rows, ranking) == (1.0, 1.0, 1.0)  # tied at file position 5


def test_ranked_predictions_file_is_v2_and_reevaluates_bit_for_bit(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(4)
    split = random_split(rng, 5, 6, 4, first_image_id=10)
    outputs = [random_prediction(rng, r, 6, 4, num_boxes=20, num_rows=150) for r in split.records]
    for output in outputs:
        output["rel_ranking_scores"] = rng.uniform(0, 1, len(output["rel_pairs"])).astype(np.float32)
    zero_shot_path = tmp_path / "zs.npy"
    np.save(zero_shot_path, np.array([[1, 2, 3]]))
    config = tmp_path / "config.yaml"
    config.write_text(f"DATASETS:\n  TEST: [synthetic_test]\n  VISUAL_GENOME:\n"
                      f"    ZERO_SHOT_TRIPLETS: '{zero_shot_path}'\n")
    monkeypatch.setattr(evaluate_tool, "get_split", lambda cfg, name: split)
    for protocol in ("standard", "iterativesg"):
        live_dir = tmp_path / protocol
        live = evaluate(split, outputs, protocol, np.array([[0, 1, 2]]), output_dir=live_dir)
        printed = capsys.readouterr().out
        payload = torch.load(live_dir / "sgg_predictions.pt", weights_only=True)
        assert payload["format"] == "sgg-predictions/v2"
        first = payload["images"][0]
        assert first["rel_ranking_scores"].dtype == torch.float32
        assert first["rel_ranking_scores"].shape == (len(first["rel_pairs"]),) and len(first["rel_pairs"]) < 150
        assert json.loads((live_dir / "sgg_eval.json").read_text())["protocol"] == protocol
        # the offline tool with the protocol as a trailing override reproduces everything
        assert evaluate_tool.main(["--predictions", str(live_dir / "sgg_predictions.pt"), "--config-file",
                                   str(config), "--output-dir", str(tmp_path / f"{protocol}_offline"),
                                   "TEST.SGG_PROTOCOL", protocol]) == 0
        assert capsys.readouterr().out == printed
        assert (tmp_path / f"{protocol}_offline" / "sgg_eval.json").read_text() == \
            (live_dir / "sgg_eval.json").read_text()
        assert live["protocol"] == protocol
    assert capsys.readouterr().out == ""
    # the per-convention table of the same file
    assert evaluate_tool.main(["--predictions", str(tmp_path / "standard" / "sgg_predictions.pt"), "--config-file",
                               str(config), "--conventions"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| Evaluated with | R@20 |") and len(table) == 8
    assert table[2].startswith("| standard | ") and table[-1].startswith("| iterativesg (1-4) | ")
    # a bad protocol name on the command line
    assert evaluate_tool.main(["--predictions", str(tmp_path / "standard" / "sgg_predictions.pt"), "--config-file",
                               str(config), "TEST.SGG_PROTOCOL", "paper"]) == 2
    assert "error: TEST.SGG_PROTOCOL must be one of ['iterativesg', 'standard'], got 'paper'" in capsys.readouterr().err


def _image(ranking, rows=2):
    image = {"image_id": 3, "boxes": np.zeros((2, 4), np.float32), "labels": np.zeros(2, np.int64),
             "scores": np.ones(2, np.float32), "rel_pairs": np.zeros((rows, 2), np.int64),
             "rel_scores": np.full((rows, 4), 0.25, np.float32)}
    if ranking is not None:
        image["rel_ranking_scores"] = np.asarray(ranking, np.float32)
    return image


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["images"][0].pop("rel_ranking_scores"), "missing field 'rel_ranking_scores'"),
    (lambda p: p.update(format="sgg-predictions/v1"), "'rel_ranking_scores' is a sgg-predictions/v2 field"),
    (lambda p: p["images"][0].update(rel_ranking_scores=torch.zeros(3)), "'rel_ranking_scores' has shape (3,)"),
    (lambda p: p["images"][0].update(rel_ranking_scores=torch.zeros(2, dtype=torch.float64)), "must be float32"),
    (lambda p: p["images"][0].update(rel_ranking_scores=torch.tensor([0.5, float("nan")])), "NaN"),
    (lambda p: p["images"][0].update(rel_ranking_scores=torch.tensor([0.5, -1.0])), "must be non-negative"),
])
def test_ranking_scores_are_validated(tmp_path, edit, message):
    path = str(tmp_path / "p.pt")
    save_predictions(path, [_image([0.5, 0.25])])
    assert load_predictions(path, num_predicates=4)[0]["rel_ranking_scores"].tolist() == [0.5, 0.25]
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    with pytest.raises(PredictionsFileError) as error:
        load_predictions(path, num_predicates=4)
    assert path in str(error.value) and message in str(error.value)


def test_ranking_scores_all_or_none(tmp_path):
    path = str(tmp_path / "p.pt")
    save_predictions(path, [_image(None)])
    assert torch.load(path, weights_only=True)["format"] == "sgg-predictions/v1"  # unchanged without them
    with pytest.raises(PredictionsFileError, match="some images have 'rel_ranking_scores'"):
        save_predictions(path, [_image([1, 0]), dict(_image(None), image_id=4)])
    split = InMemorySplit([record(1, [(0, 1, 0)]), record(2, [(0, 1, 0)])], CLASSES, PREDICATES)
    evaluator = SGGEvaluator(split, NO_ZERO_SHOT)
    evaluator.process([{"image_id": 1}], [prediction([(0, 1, {0: 0.9})], ranking=[0.3])])
    with pytest.raises(PredictionsFileError, match="image_id 2: 'rel_ranking_scores' is absent here but present"):
        evaluator.process([{"image_id": 2}], [prediction([(0, 1, {0: 0.9})])])
    evaluator = SGGEvaluator(split, NO_ZERO_SHOT)  # model outputs are checked like the file's fields
    evaluator.process([{"image_id": 2}], [prediction([(0, 1, {0: 0.9})], ranking=[float("nan")])])
    with pytest.raises(PredictionsFileError, match="image_id 2: 'rel_ranking_scores' contains NaN"):
        evaluator.evaluate()
    with pytest.raises(PredictionsFileError, match="image_id 1: 'rel_ranking_scores' has shape \\(2,\\)"):
        evaluator.process([{"image_id": 1}], [prediction([(0, 1, {0: 0.9})], ranking=[0.1, 0.2])])
