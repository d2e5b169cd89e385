"""Load foreign weights into our model: recognise the source format and rename its keys into our names.

``convert_to_model_state_dict(state_dict, model) -> (state_dict, report)`` understands

* ``ours``: checkpoints of this project (identity; a ``module.`` DDP prefix is stripped);
* ``iterativesg``: the released IterativeSG checkpoint and its DETR-on-VG pretraining checkpoint (``detr.`` prefix,
  detectron2-named ResNet under ``detr.backbone.0.backbone.``);
* ``detr``: single-decoder DETR checkpoints (original DETR: ``transformer.decoder.layers.N``, ``class_embed``,
  ``bbox_embed``, ``backbone.0.body``; or the detectron2 DETR wrapper with a ``detr.`` prefix). The decoder (and
  its final norm) is copied into the subject, object and relation decoders, ``query_embed`` into the three query
  embeddings, the class head into ``transformer.object_embed`` and the box head into
  ``transformer.object_bbox_coords``; the relation head and the conditioning modules stay as initialised.
  Every key may also keep its own name, so the same file loads into ``DETRDetector`` (DETR pre-training on VG);
  a finished ``DETRDetector`` run is such a checkpoint (the hand-off of the released recipe);
* ``fcos-detector``: a finished ``FCOSDetector`` run (``backbone.*``, ``fcos.head.*``) -> the "Ours" model's
  backbone, FPN and ``centermask.fcos.head.*``;
* ``vovnet``: vovnet-detectron2/centermask2 weights and the lab's CenterMask/FCOS checkpoints
  (``backbone.bottom_up.*``, ``backbone.fpn_lateral{3,4,5}``, ``backbone.fpn_output{3,4,5}``,
  ``backbone.top_block.p6/p7``, or the bare ImageNet names ``stem.*``/``stageN.*``; FCOS head
  ``proposal_generator.fcos_head.*``; SAG-Mask head ``roi_heads.mask_head.*``).  The backbone and FPN always
  convert; the FCOS head (towers, ``cls_logits``, ``bbox_pred``, ``ctrness``, per-level ``scales.N.scale``: 43
  tensors) goes to ``centermask.fcos.head.*`` or an ``FCOSDetector``'s ``fcos.head.*``, ``cls_logits`` only when its
  class count equals the model's (else it is listed in ``report.left_at_init`` and keeps its initialisation); the
  SAG-Mask convolutions, spatial attention and deconvolution go to the paste fusion's ``centermask.mask_head.*``.
  Whatever the model lacks (the mask predictor, the MaskIoU head, an FCOS head in a model without one) is reported
  unexpected.  A lab's full scene-graph checkpoint (``detr.*`` as the released one, its VoVNet under
  ``detr.backbone.0.backbone.``, FCOS and SAG-Mask also under ``detr.transformer.``) converts the same way;
* ``torchvision-resnet``: torchvision ImageNet ResNet weights (``conv1.weight``, ``layer1.0.*``, ``fc.*`` dropped).

Our names: the released IterativeSG names without ``detr.``; the backbone under ``backbone.`` with torchvision
ResNet names (``backbone.body.layer1.0.conv1.weight``) or, for VoVNet-FPN, vovnet-detectron2 names under
``backbone.bottom_up.`` and torchvision FPN names under ``backbone.fpn.``.  Another format is added by appending a
:class:`SourceFormat` to :data:`SOURCE_FORMATS`.

The returned state dict holds only keys of the model, so
``model.load_state_dict(state_dict, strict=False)`` reports exactly ``report.missing``. BatchNorm
``num_batches_tracked`` counters are never reported (FrozenBatchNorm2d has none; they carry no weights).
"""
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from utils.model_wrappers import unwrap_model
from utils.serialization import load_tensor_file

logger = logging.getLogger(__name__)

VOVNET_INPUT_NOTE = (
    "vovnet-detectron2/centermask2 weights expect BGR input in 0-255 with mean [103.530, 116.280, 123.675] and "
    "std 1: set INPUT.FORMAT BGR, MODEL.PIXEL_MEAN [103.530, 116.280, 123.675], MODEL.PIXEL_STD [1.0, 1.0, 1.0]"
)
TORCHVISION_INPUT_NOTE = (
    "torchvision ImageNet weights expect RGB input normalised by mean [123.675, 116.280, 103.530] and "
    "std [58.395, 57.120, 57.375] on 0-255 (the defaults)"
)
NUM_BATCHES_TRACKED = "num_batches_tracked"


# ---------------------------------------------------------------------------------------------------------------
# Renaming rules
# ---------------------------------------------------------------------------------------------------------------
_D2_STAGE_BLOCK = re.compile(r"res([2-5])\.(\d+)\.(conv[123]|shortcut)\.(weight|norm\.\w+)")


def detectron2_resnet_to_torchvision(name: str) -> Optional[str]:
    """detectron2 ResNet name -> torchvision name (``res2.0.conv1.norm.bias`` -> ``layer1.0.bn1.bias``).

    ``None`` when ``name`` is not a detectron2 ResNet parameter.
    """
    if name == "stem.conv1.weight":
        return "conv1.weight"
    if name.startswith("stem.conv1.norm."):
        return "bn1." + name[len("stem.conv1.norm."):]
    match = _D2_STAGE_BLOCK.fullmatch(name)
    if match is None:
        return None
    stage, block, conv, tensor = match.groups()
    prefix = f"layer{int(stage) - 1}.{block}."
    if conv == "shortcut":
        return prefix + ("downsample.0.weight" if tensor == "weight" else "downsample.1." + tensor[len("norm."):])
    index = conv[len("conv"):]
    return prefix + (f"conv{index}.weight" if tensor == "weight" else f"bn{index}." + tensor[len("norm."):])


def rename_detr_backbone(name: str) -> Optional[str]:
    """A DETR-style backbone key (prefix already stripped of ``detr.``) -> ours, or ``None`` if not one.

    ``backbone.0.body.*`` (DETR's own Joiner, torchvision names) and ``backbone.0.backbone.*`` (detectron2 ResNet
    inside the detectron2 DETR wrapper) both become ``backbone.body.*``.
    """
    if name.startswith("backbone.0.body."):
        return "backbone.body." + name[len("backbone.0.body."):]
    if name.startswith("backbone.0.backbone."):
        renamed = detectron2_resnet_to_torchvision(name[len("backbone.0.backbone."):])
        return None if renamed is None else "backbone.body." + renamed
    return None


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


def rename_iterativesg(name: str) -> List[str]:
    """Released IterativeSG key -> ours: drop ``detr.``, translate the detectron2 ResNet.  The lab's CenterMask
    variant also has a VoVNet-FPN under ``backbone.0.backbone.`` and FCOS/SAG-Mask heads (:func:`rename_vovnet`)."""
    name = _strip(name, "detr.")
    if name.startswith("backbone.0.backbone.") and rename_detr_backbone(name) is None:
        return rename_vovnet("backbone." + name[len("backbone.0.backbone."):])
    if name.startswith(_LAB_FCOS_PREFIXES + _LAB_MASK_PREFIXES):
        return rename_centermask_heads(name)
    return [rename_detr_backbone(name) or name]


_DETR_REPLICATED_PREFIXES = {
    "transformer.decoder.layers.": ["transformer.decoder.subject_layers.", "transformer.decoder.object_layers.",
                                    "transformer.decoder.relation_layers."],
    "transformer.decoder.norm.": ["transformer.decoder.subject_norm.", "transformer.decoder.relation_norm."],
    "query_embed.": ["query_embed.", "object_query_embed.", "relation_query_embed."],
    "class_embed.": ["transformer.object_embed."],
    "bbox_embed.": ["transformer.object_bbox_coords."],
}


def rename_single_decoder_detr(name: str) -> List[str]:
    """Single-decoder DETR key -> ours; decoder, decoder norm and queries are replicated (several targets).

    The DETR name itself is the last candidate, for a ``DETRDetector`` model (only candidates the model has are
    used)."""
    name = _strip(name, "detr.")
    backbone = rename_detr_backbone(name)
    if backbone is not None:
        return [backbone]
    for prefix, targets in _DETR_REPLICATED_PREFIXES.items():
        if name.startswith(prefix):
            renamed = [target + name[len(prefix):] for target in targets]
            return renamed + ([name] if name not in renamed else [])
    return [name]


def rename_fcos_detector(name: str) -> List[str]:
    """``FCOSDetector`` key -> ours: the FCOS module moves under the CenterMask encoder, the backbone stays."""
    return ["centermask." + name] if name.startswith("fcos.") else [name]


_CENTERMASK_FPN = {
    **{f"backbone.fpn_lateral{level}.": f"backbone.fpn.inner_blocks.{index}.0." for index, level in enumerate("345")},
    **{f"backbone.fpn_output{level}.": f"backbone.fpn.layer_blocks.{index}.0." for index, level in enumerate("345")},
    "backbone.top_block.": "backbone.fpn.extra_blocks.",
}
_VOVNET_TRUNK = re.compile(r"(stem|stage[2-5])\.")


# centermask2's FCOSHead (the lab's) -> torchvision's FCOSHead names inside ScaledFCOSHead.  Its towers are
# Sequential(conv, GroupNorm, ReLU) x 4 like torchvision's, so the indices (0, 1, 3, 4, ...) carry over.
_FCOS_HEAD = {
    "cls_tower.": "classification_head.conv.",
    "bbox_tower.": "regression_head.conv.",
    "cls_logits.": "classification_head.cls_logits.",
    "bbox_pred.": "regression_head.bbox_reg.",
    "ctrness.": "regression_head.bbox_ctrness.",
}
_FCOS_SCALE = re.compile(r"scales\.(\d+)\.scale")
# Where an FCOS head lives in our models: the scene-graph model's CenterMask encoder, or FCOSDetector.
_FCOS_HEAD_TARGETS = ("centermask.fcos.head.", "fcos.head.")
_SAG_MASK_HEAD = re.compile(r"(mask_fcn[1-4]\.(?:weight|bias)|deconv\.(?:weight|bias))")
# Class-count-dependent tensors: a shape mismatch leaves them at initialisation (reported) instead of failing.
CLASS_DEPENDENT_KEYS = re.compile(r".*fcos_head\.cls_logits\.(weight|bias)")
# Prefixes under which the lab's scene-graph model stores its FCOS and SAG-Mask modules (the same modules are
# registered several times, so each tensor appears under several of them).
_LAB_FCOS_PREFIXES = ("proposal_generator.fcos_head.", "transformer.proposal_generator.fcos_head.",
                      "transformer.centermask.fcos.fcos_head.")
_LAB_MASK_PREFIXES = ("roi_heads.mask_head.", "transformer.roi_heads.mask_head.",
                      "transformer.centermask.center_roi_heads.mask_head.")


def rename_centermask_heads(name: str) -> List[str]:
    """The lab's/centermask2's FCOS head and SAG-Mask head keys -> ours (no target for anything else).

    Per-level scales ``scales.N.scale`` (one-element tensors) become element N of our (levels,) ``scales``
    parameter, written ``...head.scales[N]``."""
    for prefix in _LAB_FCOS_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            scale = _FCOS_SCALE.fullmatch(rest)
            if scale is not None:
                return [f"{target}scales[{scale.group(1)}]" for target in _FCOS_HEAD_TARGETS]
            for source, ours in _FCOS_HEAD.items():
                if rest.startswith(source):
                    return [target + ours + rest[len(source):] for target in _FCOS_HEAD_TARGETS]
            return []
    for prefix in _LAB_MASK_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if rest == "spatialAtt.conv.weight":
                return ["centermask.mask_head.spatial_attention.conv.weight"]
            return ["centermask.mask_head." + rest] if _SAG_MASK_HEAD.fullmatch(rest) else []
    return []


def rename_vovnet(name: str) -> List[str]:
    """vovnet-detectron2/centermask2/lab key -> ours; keys with no place here get no target (reported
    unexpected)."""
    if name.startswith("backbone.bottom_up."):
        return [name]
    if _VOVNET_TRUNK.match(name):  # the bare ImageNet backbone file
        return ["backbone.bottom_up." + name]
    for prefix, target in _CENTERMASK_FPN.items():
        if name.startswith(prefix):
            return [target + name[len(prefix):]]
    return rename_centermask_heads(name)


def rename_torchvision_resnet(name: str) -> List[str]:
    """torchvision ImageNet ResNet key -> ``backbone.body.*``; the classifier has no target."""
    return [] if name.startswith("fc.") else ["backbone.body." + name]


# ---------------------------------------------------------------------------------------------------------------
# Source formats
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceFormat:
    """A checkpoint layout: how to recognise it and how to rename one of its keys into zero or more of ours."""

    name: str
    description: str
    matches: Callable[[Sequence[str]], bool]
    rename: Callable[[str], List[str]]
    notes: Tuple[str, ...] = ()


def _any_startswith(keys: Iterable[str], *prefixes: str) -> bool:
    return any(key.startswith(prefixes) for key in keys)


SOURCE_FORMATS: List[SourceFormat] = [
    SourceFormat(
        "iterativesg", "released IterativeSG / DETR-on-VG checkpoint (detr.*, detectron2 ResNet)",
        lambda keys: _any_startswith(keys, "detr.transformer.decoder.subject_layers."),
        rename_iterativesg),
    SourceFormat(
        "detr", "single-decoder DETR checkpoint (decoder replicated into subject/object/relation decoders)",
        lambda keys: _any_startswith(keys, "transformer.decoder.layers.", "detr.transformer.decoder.layers."),
        rename_single_decoder_detr,
        ("relation head (transformer.relation_embed) and decoder conditioning modules are not in a DETR "
         "checkpoint and keep their initialisation",)),
    SourceFormat(
        "fcos-detector", "FCOSDetector pre-training run (backbone kept, fcos.* -> centermask.fcos.*)",
        lambda keys: _any_startswith(keys, "fcos.head."),
        rename_fcos_detector,
        ("CenterMask RoI-token modules and the DETR encoder/decoders are not in an FCOS run and keep their "
         "initialisation",)),
    SourceFormat(
        "vovnet", "vovnet-detectron2 / centermask2 / the lab's CenterMask weights (backbone, FPN, FCOS head and "
        "SAG-Mask head converted; mask predictor and MaskIoU head dropped)",
        lambda keys: _any_startswith(keys, "backbone.fpn_lateral", "backbone.top_block.", "stem.stem_1/",
                                     "stage2.OSA2_1.", "proposal_generator.fcos_head.", "roi_heads.mask_head."),
        rename_vovnet, (VOVNET_INPUT_NOTE,)),
    SourceFormat(
        "torchvision-resnet", "torchvision ImageNet ResNet weights",
        lambda keys: "conv1.weight" in keys and _any_startswith(keys, "layer1.0."),
        rename_torchvision_resnet, (TORCHVISION_INPUT_NOTE,)),
]
OURS = SourceFormat("ours", "etri-iterativeSG checkpoint (names kept)", lambda keys: True, lambda name: [name])


# ---------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ConversionReport:
    """What :func:`convert_to_model_state_dict` did.

    ``converted`` maps each used checkpoint key to the model keys it was written to (several for a replicated
    DETR decoder); ``missing`` are model keys the checkpoint does not provide; ``unexpected`` are checkpoint keys
    that have no place in the model (left out of the returned state dict); ``left_at_init`` are class-count
    dependent checkpoint tensors (an FCOS ``cls_logits``) whose class count differs from the model's: they are not
    loaded (their model keys are in ``missing``).  A target ``name[i]`` is element i of the model tensor ``name``.
    """

    source_format: str
    description: str
    converted: Dict[str, List[str]] = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    left_at_init: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def num_renamed(self) -> int:
        return sum(1 for source, targets in self.converted.items() if targets != [source])

    def __str__(self) -> str:
        lines = [f"source format: {self.source_format} ({self.description})",
                 f"loaded {sum(len(t) for t in self.converted.values())} model tensors (or elements) from "
                 f"{len(self.converted)} checkpoint tensors ({self.num_renamed} renamed or replicated)",
                 f"missing in checkpoint ({len(self.missing)}): {_summarise(self.missing)}",
                 f"unexpected in checkpoint, dropped ({len(self.unexpected)}): {_summarise(self.unexpected)}"]
        if self.left_at_init:
            lines.append(f"class count differs, left at initialisation ({len(self.left_at_init)}): "
                         + "; ".join(self.left_at_init))
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _summarise(keys: Sequence[str]) -> str:
    """Keys with layer/block indices folded (``a.0.b``, ``a.1.b`` -> ``a.*.b (x2)``), for readable logs."""
    if not keys:
        return "none"
    counts: Dict[str, int] = {}
    for key in keys:
        pattern = re.sub(r"\.\d+(?=\.)", ".*", key)
        counts[pattern] = counts.get(pattern, 0) + 1
    return ", ".join(p if n == 1 else f"{p} (x{n})" for p, n in counts.items())


def extract_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """The tensors of a raw state dict or of a ``{"model": ...}`` / ``{"state_dict": ...}`` checkpoint.

    numpy arrays (detectron2 ``.pkl`` files) become tensors; a ``module.`` prefix on every key is stripped.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"expected a state dict or a checkpoint dict, got {type(checkpoint).__name__}")
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            break
    state_dict = {}
    for key, value in checkpoint.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if isinstance(value, torch.Tensor):
            state_dict[str(key)] = value
    if not state_dict:
        raise ValueError(f"the checkpoint holds no tensors (top-level keys: {list(checkpoint)[:10]})")
    if all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


_ELEMENT_TARGET = re.compile(r"(.+)\[(\d+)\]")


def _split_element(target: str) -> Tuple[str, Optional[int]]:
    """``"name[i]"`` -> ``("name", i)``; a plain model key -> ``(key, None)``."""
    match = _ELEMENT_TARGET.fullmatch(target)
    return (target, None) if match is None else (match.group(1), int(match.group(2)))


def detect_source_format(keys: Sequence[str], model_keys: Iterable[str]) -> SourceFormat:
    """The :class:`SourceFormat` of a checkpoint with ``keys``: ours if every key is a model key, else the first
    format of :data:`SOURCE_FORMATS` that matches, else ours."""
    model_keys = set(model_keys)
    if all(key in model_keys for key in keys if not key.endswith(NUM_BATCHES_TRACKED)):
        return OURS
    for source_format in SOURCE_FORMATS:
        if source_format.matches(keys):
            return source_format
    return OURS


def convert_to_model_state_dict(state_dict: Mapping[str, Any], model: nn.Module,
                                input_format: Optional[str] = None
                                ) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """Rename the keys of ``state_dict`` (any supported format, raw or wrapped) into the names of ``model``.

    Args:
        state_dict: a raw state dict or a checkpoint dict holding one under ``"model"``/``"state_dict"``.
        model: the model to load into (only its state-dict names and shapes are read).
        input_format: ``cfg.INPUT.FORMAT``; when given and not "BGR", loading vovnet/centermask2 weights logs a
            warning (they expect BGR 0-255 input).

    Returns:
        ``(converted, report)``: ``converted`` holds only keys of ``model``; see :class:`ConversionReport`.

    Raises:
        ValueError: a tensor's shape differs from the model's (every such key is named).
    """
    source = extract_state_dict(state_dict)
    model_state = unwrap_model(model).state_dict()
    source_format = detect_source_format(list(source), model_state)
    report = ConversionReport(source_format.name, source_format.description, notes=list(source_format.notes))

    converted: Dict[str, torch.Tensor] = {}
    mismatched = []
    for key, tensor in source.items():
        targets = [target for target in source_format.rename(key) if _split_element(target)[0] in model_state]
        if not targets:
            if not key.endswith(NUM_BATCHES_TRACKED):
                report.unexpected.append(key)
            continue
        if CLASS_DEPENDENT_KEYS.fullmatch(key) and any(
                tuple(tensor.shape) != tuple(model_state[target].shape) for target in targets):
            report.left_at_init.append(f"{key} {tuple(tensor.shape)} vs model "
                                       f"{tuple(model_state[targets[0]].shape)}")
            continue
        for index, target in enumerate(targets):
            base, element = _split_element(target)
            expected = model_state[base]
            if element is not None:  # one element of a model tensor (FCOS per-level scales)
                if tensor.numel() != 1 or element >= expected.numel():
                    mismatched.append(f"{key} -> {target}: checkpoint {tuple(tensor.shape)} vs model "
                                      f"{tuple(expected.shape)}")
                    continue
                merged = converted.setdefault(base, expected.detach().clone())
                merged.view(-1)[element] = tensor.reshape(())
                continue
            if tuple(tensor.shape) != tuple(expected.shape):
                mismatched.append(f"{key} -> {target}: checkpoint {tuple(tensor.shape)} vs model "
                                  f"{tuple(expected.shape)}")
            converted[target] = tensor if index == 0 else tensor.clone()  # replicas must not share storage
        report.converted[key] = targets
    if mismatched:
        raise ValueError(f"shape mismatch converting {source_format.name} weights into the model:\n  "
                         + "\n  ".join(mismatched))
    report.missing = [key for key in model_state
                      if key not in converted and not key.endswith(NUM_BATCHES_TRACKED)]
    if source_format.name == "vovnet" and input_format is not None and input_format.upper() != "BGR":
        logger.warning("INPUT.FORMAT is %s, but %s", input_format, VOVNET_INPUT_NOTE)
    return converted, report


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Read a weights file on the CPU without running arbitrary pickled code (:func:`utils.serialization.load_tensor_file`)."""
    checkpoint = load_tensor_file(path, "weights file")
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: expected a dict (a state dict or a checkpoint), got {type(checkpoint).__name__}")
    return dict(checkpoint)
