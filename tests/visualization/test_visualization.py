"""Pictures: training curves read the right metric; scene graphs are drawn from the evaluator's ranking."""
import json

import numpy as np
import torch

from visualization import draw_scene_graph, plot_training_curves, select_triplets
from visualization.training_curves import read_metrics


def _png(path):
    return open(path, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_curves_pick_the_exact_metric_and_skip_a_truncated_line(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.json"
    rows = [{"iteration": i, "total_loss": 10.0 / (i + 1)} for i in range(5)]
    rows.append({"iteration": 4, "VG_val/R@50": 0.25, "VG_val/ng-R@50": 0.9, "VG_val/mR@50": 0.8})
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"iteration": 5, "total_')
    assert len(read_metrics(str(metrics))) == 6

    plotted = {}
    import matplotlib.axes

    original = matplotlib.axes.Axes.plot

    def spy(self, x, y, *args, **kwargs):
        plotted.setdefault(self.get_ylabel() or "?", []).append((list(x), list(y)))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    out = plot_training_curves(str(metrics), str(tmp_path / "curves.png"), eval_metric="R@50")
    assert _png(out)
    values = [y for _, ys in sum(plotted.values(), []) for y in ys]
    assert 0.25 in values and 0.9 not in values and 0.8 not in values  # ng-R@50 / mR@50 are other metrics


def test_select_triplets_ranks_like_the_evaluator():
    prediction = {
        "scores": torch.tensor([0.9, 0.5, 0.8]),
        "rel_pairs": torch.tensor([[0, 1], [2, 0], [1, 2]]),
        "rel_scores": torch.tensor([[0.1, 0.9], [0.6, 0.4], [0.3, 0.7]]),
    }
    rows = select_triplets(prediction, top_k=2)
    # row scores: 0.9*0.9*0.5 = 0.405, 0.6*0.8*0.9 = 0.432, 0.7*0.5*0.8 = 0.28
    assert [(r["subject"], r["object"], r["predicate"]) for r in rows] == [(2, 0, 0), (0, 1, 1)]
    assert np.isclose(rows[0]["score"], 0.432) and np.isclose(rows[1]["score"], 0.405)
    assert select_triplets(prediction, top_k=5, score_threshold=0.3) == rows
    assert select_triplets({"scores": torch.zeros(0), "rel_pairs": torch.zeros(0, 2), "rel_scores": torch.zeros(0, 2)}) == []


def test_draw_scene_graph_writes_a_png(tmp_path):
    image = np.full((60, 80, 3), 200, dtype=np.uint8)
    boxes = np.array([[5, 5, 30, 30], [40, 10, 70, 50]], dtype=np.float32)
    triplets = [{"subject": 0, "object": 1, "predicate": 1, "score": 0.5}]
    out = draw_scene_graph(image, boxes, [0, 1], triplets, ["cat", "dog"], ["near", "on"], str(tmp_path / "g.png"))
    assert _png(out) and not list(tmp_path.glob("*.tmp"))
    empty = draw_scene_graph(image, boxes, [0, 1], [], ["cat", "dog"], ["near", "on"], str(tmp_path / "e.png"))
    assert _png(empty)


def test_loss_terms_are_summed_over_layers_when_there_is_no_evaluation(tmp_path):
    from visualization.training_curves import loss_terms_over_layers

    records = [{"iteration": 0, "total_loss": 6.0, "loss_sub_ce_0": 1.0, "loss_sub_ce_1": 2.0, "loss_fcos_cls": 3.0},
               {"iteration": 1, "total_loss": 3.0, "loss_sub_ce_0": 0.5, "loss_sub_ce_1": 1.0, "loss_fcos_cls": 1.5}]
    assert loss_terms_over_layers(records) == {"fcos_cls": ([0, 1], [3.0, 1.5]), "sub_ce": ([0, 1], [3.0, 1.5])}
    metrics = tmp_path / "metrics.json"
    metrics.write_text("\n".join(json.dumps(r) for r in records))
    assert _png(plot_training_curves(str(metrics), str(tmp_path / "c.png")))
