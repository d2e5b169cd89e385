"""Plot the loss and evaluation curves recorded in ``OUTPUT_DIR/metrics.json`` (one JSON object per line)."""
from __future__ import annotations

import json

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


def plot_training_curves(metrics_path: str, output_path: str, eval_metric: str = "R@50") -> str:
    """Write a PNG with the total loss (left) and ``eval_metric`` of periodic evaluations (right)."""
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
    b.set_xlabel("iteration")
    b.set_ylabel(eval_metric)
    b.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, output_path)
