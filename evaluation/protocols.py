"""The two sgdet evaluation protocols (``TEST.SGG_PROTOCOL``) and the four conventions in which they differ.

``standard`` is the Scene-Graph-Benchmark protocol, the one most scene-graph papers report. ``iterativesg`` is what
the released IterativeSG evaluator computes (the numbers of the IterativeSG paper and of the lab's table). They
agree on everything (lists, matching rule, averaging) except four conventions, each a flag of
:class:`SGGProtocol` (docs/PROTOCOL.md has the table and what each one moves):

1. ``skip_images_without_rows``: an image whose prediction has no relation row counts as recall 0 (standard) or is
   left out of every average (iterativesg: the released ``evaluate_relation_of_one_image`` returns before
   recording anything).
2. ``iou_plus_one``: box IoU with areas (x2 - x1 + 1)(y2 - y1 + 1) in float64 (standard), or detectron2's
   ``pairwise_iou``: areas (x2 - x1)(y2 - y1), float32 arithmetic, IoU 0 where the intersection is empty
   (iterativesg).
3. ``gt_clip_margin``: ground-truth boxes are clamped to [0, W - 1] x [0, H - 1] when the split is loaded (standard,
   margin 1), or clipped to [0, W] x [0, H], with boxes left empty dropped together with their relations, as the
   released test mapper does (iterativesg, margin 0). This one acts in ``data.visual_genome`` (the loader reads
   ``TEST.SGG_PROTOCOL``); the evaluator only checks that the split it is given was loaded for its protocol.
4. ``mean_recall_slot0``: per-predicate recall is each predicate's own (standard), or the released mean recall's
   per-image counts where every ground-truth row and every hit is also added to predicate slot 0 (a leftover of a
   background slot; predicates are 0-based there), so the first predicate's recall, and mR, are blends
   (iterativesg, a quirk kept for comparability). Applied to mR and ng-mR alike (the released code has no ng-mR).
"""
from dataclasses import dataclass
from typing import Union

__all__ = ["PROTOCOLS", "SGGProtocol", "get_protocol"]

CONFIG_KEY = "TEST.SGG_PROTOCOL"


@dataclass(frozen=True)
class SGGProtocol:
    """One evaluation protocol: a name and the four conventions (see the module docstring)."""

    name: str
    skip_images_without_rows: bool
    iou_plus_one: bool
    gt_clip_margin: int  # ground-truth boxes clipped to [0, W - margin] x [0, H - margin] at load
    mean_recall_slot0: bool
    description: str = ""

    def printed_line(self) -> str:
        """The line naming the protocol at the top of the printed block."""
        return f"SGG eval protocol: {self.name} ({self.description})"


STANDARD = SGGProtocol(
    name="standard",
    skip_images_without_rows=False,
    iou_plus_one=True,
    gt_clip_margin=1,
    mean_recall_slot0=False,
    description="Scene-Graph-Benchmark: images without rows count 0, IoU +1 px, GT clamped to W-1/H-1, "
    "per-predicate mR",
)
ITERATIVESG = SGGProtocol(
    name="iterativesg",
    skip_images_without_rows=True,
    iou_plus_one=False,
    gt_clip_margin=0,
    mean_recall_slot0=True,
    description="released IterativeSG evaluator: images without rows skipped, IoU without +1 px, GT clipped at "
    "W/H, mR with the slot-0 accumulation",
)
PROTOCOLS = {protocol.name: protocol for protocol in (STANDARD, ITERATIVESG)}


def get_protocol(protocol: Union[str, SGGProtocol]) -> SGGProtocol:
    """The protocol named ``protocol`` (a :class:`SGGProtocol` is returned as is); ``ValueError`` naming
    ``TEST.SGG_PROTOCOL`` for an unknown name."""
    if isinstance(protocol, SGGProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"{CONFIG_KEY} must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    return PROTOCOLS[protocol]
