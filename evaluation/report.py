"""The printed evaluation block, in the reference evaluators' format (4-decimal fractions).

Example (the first line of the lab's README)::

    SGG eval:     R @ 20: 0.2179;     R @ 50: 0.2712;     R @ 100: 0.2972;  for mode=sgdet, type=Recall(Main).
"""
from typing import Dict, Sequence

from .protocols import PROTOCOLS
from .sgg_metrics import RECALL_KS

_LINE_TYPES = (
    ("R", "Recall(Main)"),
    ("ng-R", "No Graph Constraint Recall(Main)"),
    ("zR", "Zero Shot Recall"),
    ("ng-zR", "No Graph Constraint Zero Shot Recall"),
    ("mR", "Mean Recall"),
    ("ng-mR", "No Graph Constraint Mean Recall"),
)


def _recall_line(results: Dict[str, float], metric: str, description: str, ks: Sequence[int]) -> str:
    values = "".join(f"{metric:>6} @ {k}: {results[f'{metric}@{k}']:.4f};" for k in ks)
    return f"SGG eval:{values}  for mode=sgdet, type={description}."


def _per_predicate_line(results: Dict[str, float], prefix: str, predicate_names: Sequence[str], k: int) -> str:
    return " ".join(f"({name}:{results[f'per_predicate_{prefix}R@{k}/{name}']:.4f})" for name in predicate_names)


def _protocol_line(name: str) -> str:
    return PROTOCOLS[name].printed_line() if name in PROTOCOLS else f"SGG eval protocol: {name}"


def format_results(
    results: Dict[str, float], predicate_names: Sequence[str], ks: Sequence[int] = RECALL_KS
) -> str:
    """The block: R, ng-R, zR, ng-zR, mR (+ per-predicate R@max K), ng-mR (+ per-predicate), detection AP; led by
    a line naming the evaluation protocol when ``results`` has ``protocol`` (the evaluator always sets it)."""
    lines = [_protocol_line(str(results["protocol"]))] if "protocol" in results else []
    for metric, description in _LINE_TYPES:
        lines.append(_recall_line(results, metric, description, ks))
        if metric in ("mR", "ng-mR"):
            lines.append(_per_predicate_line(results, metric[:-2], predicate_names, max(ks)))
    lines.append(f"Detection evaluation mAp={results['AP50']:.4f} (AP[.5:.95]={results['AP']:.4f})")
    return "\n".join(lines)
