"""Draw a predicted scene graph: the image with its boxes on the left, the graph laid out on the right."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .figure_io import save_figure


def select_triplets(prediction: dict, top_k: int = 10, score_threshold: float = 0.0) -> list[dict]:
    """The ``top_k`` best graph-constrained triplets of one ``sgg-predictions`` image entry.

    Each row takes its arg-max predicate; its score is the entry's ``rel_ranking_scores`` when present (v2), else
    subject score × object score × predicate probability — as the evaluator ranks them. Rows scoring below ``score_threshold`` are dropped.
    """
    rel_pairs = np.asarray(prediction["rel_pairs"]).reshape(-1, 2)
    rel_scores = np.asarray(prediction["rel_scores"], dtype=np.float64)
    if len(rel_pairs) == 0:
        return []
    entity_scores = np.asarray(prediction["scores"], dtype=np.float64)
    predicates = rel_scores.argmax(axis=1)
    scores = rel_scores[np.arange(len(rel_pairs)), predicates]
    scores = scores * entity_scores[rel_pairs[:, 0]] * entity_scores[rel_pairs[:, 1]]
    if prediction.get("rel_ranking_scores") is not None:  # sgg-predictions/v2: the evaluator's own ranking
        scores = np.asarray(prediction["rel_ranking_scores"], dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    out = []
    for row in order[: max(top_k, 0)]:
        if scores[row] < score_threshold:
            break
        out.append(
            {
                "subject": int(rel_pairs[row, 0]),
                "object": int(rel_pairs[row, 1]),
                "predicate": int(predicates[row]),
                "predicate_score": float(rel_scores[row, predicates[row]]),
                "score": float(scores[row]),
            }
        )
    return out


def draw_scene_graph(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int],
    triplets: Sequence[dict],
    class_names: Sequence[str],
    predicate_names: Sequence[str],
    output_path: str,
    title: str = "",
) -> str:
    """Write a PNG: ``image`` (H, W, 3 uint8 RGB) with the boxes used by ``triplets``, and the graph beside it.

    ``triplets`` are dicts with ``subject``, ``object`` (indices into ``boxes``), ``predicate`` and ``score``
    (as returned by :func:`select_triplets`). The file is written atomically; returns its path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    used = sorted({t["subject"] for t in triplets} | {t["object"] for t in triplets})
    cmap = plt.get_cmap("tab20")
    colour = {b: cmap(i % 20) for i, b in enumerate(used)}
    node_name = {b: f"{class_names[int(labels[b])]}#{b}" for b in used}

    fig, (ax_img, ax_graph) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1, 1]})
    ax_img.imshow(image)
    ax_img.set_axis_off()
    for b in used:
        x1, y1, x2, y2 = boxes[b]
        ax_img.add_patch(
            matplotlib.patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, edgecolor=colour[b])
        )
        ax_img.text(x1, y1, node_name[b], fontsize=8, color="white", va="bottom",
                    bbox=dict(facecolor=colour[b], alpha=0.8, pad=1, lw=0))
    if title:
        ax_img.set_title(title, fontsize=10)

    graph = nx.MultiDiGraph()
    for b in used:
        graph.add_node(node_name[b])
    edge_labels = {}
    for t in triplets:
        u, v = node_name[t["subject"]], node_name[t["object"]]
        graph.add_edge(u, v)
        text = f"{predicate_names[t['predicate']]} ({t['score']:.2f})"
        edge_labels[(u, v)] = text if (u, v) not in edge_labels else edge_labels[(u, v)] + "\n" + text
    ax_graph.set_axis_off()
    if graph.number_of_nodes():
        pos = nx.circular_layout(graph)  # readable for the ~10-20 nodes of a scene graph; deterministic
        nx.draw_networkx_nodes(graph, pos, ax=ax_graph, node_color=[colour[b] for b in used], node_size=1400)
        nx.draw_networkx_labels(graph, pos, ax=ax_graph, font_size=8)
        nx.draw_networkx_edges(graph, pos, ax=ax_graph, arrows=True, arrowsize=18, node_size=1400,
                               connectionstyle="arc3,rad=0.1")
        nx.draw_networkx_edge_labels(nx.DiGraph(graph), pos, edge_labels=edge_labels, ax=ax_graph, font_size=7)
    else:
        ax_graph.text(0.5, 0.5, "no relations above the threshold", ha="center", va="center")
    ax_graph.set_title(f"scene graph: {len(triplets)} triplets", fontsize=10)
    fig.tight_layout()

    return save_figure(fig, output_path)
