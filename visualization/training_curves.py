"""Plot the loss and evaluation curves recorded in ``OUTPUT_DIR/metrics.json`` (one JSON object per line)."""
from __future__ import annotations

import json
import re

from .figure_io import save_figure


def read_metrics(path: str) -> list[dict]:
    """The records of a ``metrics.json`` file; a truncated last line (killed run) is ignored."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def loss_terms_over_layers(records: list[dict]) -> dict[str, tuple[list, list]]:
    """``{term: (iterations, values)}`` with each loss term summed over decoder layers (``loss_sub_ce_0`` +
    ``loss_sub_ce_1`` + … → ``sub_ce``)."""
    terms: dict[str, dict[int, float]] = {}
    for r in records:
        if "iteration" not in r:
            continue
        for k, v in r.items():
            if k.startswith("loss_") and isinstance(v, (int, float)):
                name = re.sub(r"_\d+$", "", k[len("loss_"):])
                terms.setdefault(name, {}).setdefault(r["iteration"], 0.0)
                terms[name][r["iteration"]] += v
    return {name: (sorted(by_it), [by_it[i] for i in sorted(by_it)]) for name, by_it in sorted(terms.items())}


def plot_training_curves(metrics_path: str, output_path: str, eval_metric: str = "R@50") -> str:
    """Write a PNG with the total loss (left) and, on the right, ``eval_metric`` of the periodic evaluations —
    or, when the run made none (``TEST.EVAL_PERIOD 0``), each loss term summed over the decoder layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    if not records:
        raise ValueError(f"{metrics_path}: no metrics recorded")
    loss_it = [r["iteration"] for r in records if "total_loss" in r]
    loss = [r["total_loss"] for r in records if "total_loss" in r]
    ev = [(r["iteration"], v) for r in records if "iteration" in r for k, v in sorted(r.items())
          if (k == eval_metric or k.endswith("/" + eval_metric)) and isinstance(v, (int, float))]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(loss_it, loss)
    a.set_xlabel("iteration")
    a.set_ylabel("total loss")
    a.set_yscale("log")
    a.grid(alpha=0.3)
    if ev:
        b.plot([i for i, _ in ev], [v for _, v in ev], marker="o")
        b.set_ylabel(f"{eval_metric} (periodic evaluation)")
    else:
        for name, (its, values) in loss_terms_over_layers(records).items():
            b.plot(its, values, label=name)
        b.set_yscale("log")
        b.set_ylabel("loss terms (sum over layers)")
        b.legend(fontsize=7, ncol=2)
    b.set_xlabel("iteration")
    b.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, output_path)
