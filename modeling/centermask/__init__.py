"""The lab's "CenterMask" encoder (SPEC §6): FCOS detections injected as extra tokens into the decoders' memory."""
from .injector import CenterMaskInjector

__all__ = ["CenterMaskInjector"]
