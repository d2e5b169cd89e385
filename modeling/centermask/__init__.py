"""The lab's "CenterMask" encoder (docs/MODEL.md, CenterMask section): FCOS detections fused into the decoders'
memory, either as extra tokens (``CenterMaskInjector``) or pasted onto P5 (``CenterMaskPaste``, the lab's)."""
from torch import nn

from .injector import CenterMaskInjector
from .paste import CenterMaskPaste

__all__ = ["CenterMaskInjector", "CenterMaskPaste", "build_centermask_encoder"]

FUSIONS = {"tokens": CenterMaskInjector, "paste": CenterMaskPaste}


def build_centermask_encoder(cfg) -> nn.Module:
    """The module of ``MODEL.CENTERMASK.FUSION`` ("tokens" or "paste")."""
    fusion = cfg.MODEL.CENTERMASK.FUSION
    if fusion not in FUSIONS:
        raise ValueError(f"MODEL.CENTERMASK.FUSION must be one of {sorted(FUSIONS)}, got {fusion!r}")
    return FUSIONS[fusion](cfg)
