"""Default configuration of etri-iterativeSG.

Every key the code reads lives here (and nowhere else); YAML files under ``configs/`` override them through
``_BASE_`` inheritance and the command line overrides them with trailing ``KEY VALUE`` pairs, exactly as in
detectron2.  ``get_cfg()`` returns a fresh copy.
"""
import difflib
import os
from typing import Any, Dict, List

import yaml
from fvcore.common.config import BASE_KEY
from fvcore.common.config import CfgNode as _FvCfgNode


class CfgNode(_FvCfgNode):
    """fvcore's CfgNode (yacs + ``_BASE_``) whose merges fail with messages naming the offending key and source.

    yacs reports an unknown command-line key with a bare ``AssertionError`` and never names the YAML file; here
    every merge goes through one checked path: an unknown key raises ``KeyError`` naming the full key, its source
    (the YAML file or "command line") and the closest existing keys; a value of the wrong type raises
    ``ValueError`` naming the key, the expected type and the default.  Besides yacs' list <-> tuple coercion, an
    ``int`` is accepted where a ``float`` is expected (``SOLVER.CLIP_GRADIENTS.CLIP_VALUE 1``).
    """

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if not os.path.isfile(cfg_filename):
            raise FileNotFoundError(f"Config file not found: {cfg_filename}")
        try:
            loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except FileNotFoundError as error:  # the file exists, so a _BASE_ it inherits from does not
            raise FileNotFoundError(
                f"{cfg_filename}: the {BASE_KEY} config file it inherits from does not exist: {error.filename} "
                f"(a relative {BASE_KEY} path is relative to the folder of the file naming it)"
            ) from None
        except yaml.YAMLError as error:
            raise ValueError(f"{cfg_filename} is not valid YAML: {' '.join(str(error).split())}") from None
        if loaded is None:  # an empty YAML file
            return
        if not isinstance(loaded, dict):
            raise ValueError(f"{cfg_filename}: a config file must hold a mapping of keys, got {type(loaded).__name__}")
        self._merge_checked(loaded, prefix="", source=cfg_filename)

    def merge_from_other_cfg(self, cfg_other: Dict[str, Any]) -> None:
        if BASE_KEY in cfg_other:
            raise KeyError(f"The reserved key '{BASE_KEY}' can only be used in config files")
        self._merge_checked(cfg_other, prefix="", source="merged config")

    def merge_from_list(self, cfg_list: List[Any]) -> None:
        if len(cfg_list) % 2 != 0:
            raise ValueError(
                f"Config overrides must be KEY VALUE pairs; got an odd number of items: {list(cfg_list)}"
            )
        for full_key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            if full_key == BASE_KEY:
                raise KeyError(f"The reserved key '{BASE_KEY}' can only be used in config files")
            *parents, leaf = full_key.split(".")
            nested: Dict[str, Any] = {leaf: value}
            for name in reversed(parents):
                nested = {name: nested}
            self._merge_checked(nested, prefix="", source="command line")

    def _merge_checked(self, values: Dict[str, Any], prefix: str, source: str) -> None:
        """Merge a plain (nested) dict into this node, checking every key and value type."""
        if self.is_frozen():
            raise AttributeError(f"Cannot merge {source} into a frozen config; call cfg.defrost() first")
        for key, raw in values.items():
            full_key = prefix + key
            if key not in self:
                hints = difflib.get_close_matches(key, list(self.keys()), n=3)
                hint = f" (did you mean {', '.join(prefix + h for h in hints)}?)" if hints else ""
                raise KeyError(f"{source}: unknown config key '{full_key}'{hint}")
            current = self[key]
            if isinstance(current, CfgNode):
                if not isinstance(raw, dict):
                    raise ValueError(
                        f"{source}: config key '{full_key}' is a group of keys; got the value {raw!r}"
                    )
                current._merge_checked(raw, prefix=full_key + ".", source=source)
                continue
            value = self._decode_cfg_value(raw)
            if isinstance(value, dict):
                raise ValueError(f"{source}: config key '{full_key}' takes a value, got the mapping {raw!r}")
            self[key] = _coerce_type(value, current, full_key, source)


def _coerce_type(value: Any, default: Any, full_key: str, source: str) -> Any:
    """``value`` converted to the type of ``default``, or a ValueError naming the key."""
    expected, given = type(default), type(value)
    if given is expected or value is None or default is None:
        return value
    if {expected, given} == {list, tuple}:
        return expected(value)
    if expected is float and given is int:
        return float(value)
    raise ValueError(
        f"{source}: config key '{full_key}' expects type {expected.__name__} (default {default!r}), "
        f"got {given.__name__} {value!r}"
    )


_C = CfgNode()

# Directory for checkpoints, logs, metrics, predictions and the merged config.yaml.
_C.OUTPUT_DIR = "./output"
# Random seed (< 0: draw one at start-up and log it).
_C.SEED = 42
# CPU runs: torch.use_deterministic_algorithms + fixed data order, so reruns give bit-identical weights.
_C.DETERMINISTIC = False

# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# "cuda" or "cpu" (detectron2's key).
_C.MODEL.DEVICE = "cuda"
# Checkpoint to initialise from: ours, the released IterativeSG/DETR checkpoint, or vovnet/centermask2 weights.
_C.MODEL.WEIGHTS = ""
# Which network: "IterativeSceneGraphModel" (the paper), "DETRDetector" / "FCOSDetector" (pre-training).
_C.MODEL.META_ARCHITECTURE = "IterativeSceneGraphModel"
# Input normalisation in the channel order of INPUT.FORMAT, 0-255 scale.
_C.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
_C.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
# Wrap the model in torch.compile (the scene-graph model compiles its network and loss, not the matcher between).
_C.MODEL.COMPILE = False
# torch.compile mode: "" (torch's default), "reduce-overhead" (CUDA graphs; wants MODEL.STATIC_SHAPES), "max-autotune".
_C.MODEL.COMPILE_MODE = ""
# torch.compile backend: "" (inductor), or e.g. "aot_eager" (no code generation: compiles fast, checks the graphs).
_C.MODEL.COMPILE_BACKEND = ""
# Static shapes for compiled steps without recompilation (and CUDA graphs): batches padded to a few fixed sizes (by
# aspect group, from INPUT.MIN/MAX_SIZE_*) and relation targets to MAX_RELATIONS per image (more is an error).
_C.MODEL.STATIC_SHAPES = CfgNode()
_C.MODEL.STATIC_SHAPES.ENABLED = False
_C.MODEL.STATIC_SHAPES.MAX_RELATIONS = 64
# Convolution weights in channels-last (NHWC) memory format (same parameters and checkpoint keys; faster convolutions,
# -24 % CPU time per step of the demo model; results equal up to float rounding).
_C.MODEL.CHANNELS_LAST = False
# DistributedDataParallel's find_unused_parameters: needed when some parameters get no gradient in an iteration
# (e.g. the FPN levels a DETR encoder on P5 does not read); off by default because it costs a graph walk per step.
_C.MODEL.DDP_FIND_UNUSED_PARAMETERS = False

_C.MODEL.BACKBONE = CfgNode()
# "ResNet" (DETR's ResNet trunk, res5 output) or "VoVNetFPN" (VoVNetV2 + CenterMask FPN, P3-P7).
_C.MODEL.BACKBONE.NAME = "ResNet"
# Freeze the first N stages (0 = nothing, 1 = stem, 2 = stem + res2/stage2), as in detectron2.
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.RESNETS = CfgNode()
_C.MODEL.RESNETS.DEPTH = 101
# "FrozenBN", "BN", "GN" or "SyncBN".
_C.MODEL.RESNETS.NORM = "FrozenBN"

_C.MODEL.VOVNET = CfgNode()
# "V-19-slim-eSE", "V-19-slim-dw-eSE", "V-19-eSE", "V-39-eSE", "V-57-eSE" or "V-99-eSE".
_C.MODEL.VOVNET.CONV_BODY = "V-99-eSE"
_C.MODEL.VOVNET.NORM = "FrozenBN"

_C.MODEL.FPN = CfgNode()
_C.MODEL.FPN.OUT_CHANNELS = 256

_C.MODEL.ENCODER = CfgNode()
# "DETR" (paper) or "CenterMask" (the lab's FCOS + RoI-feature encoder; needs BACKBONE.NAME VoVNetFPN).
_C.MODEL.ENCODER.NAME = "DETR"
# Feature map the transformer encoder reads: "res5" for ResNet, "p5" for the FPN.
_C.MODEL.ENCODER.IN_FEATURE = "res5"

_C.MODEL.DETR = CfgNode()
_C.MODEL.DETR.HIDDEN_DIM = 256
_C.MODEL.DETR.NHEADS = 8
_C.MODEL.DETR.DIM_FEEDFORWARD = 2048
_C.MODEL.DETR.ENC_LAYERS = 6
_C.MODEL.DETR.DEC_LAYERS = 6
_C.MODEL.DETR.DROPOUT = 0.1
_C.MODEL.DETR.NUM_OBJECT_QUERIES = 300
_C.MODEL.DETR.NUM_CLASSES = 150
_C.MODEL.DETR.NUM_RELATION_CLASSES = 50
# Loss weights (also the matching costs: class 1, L1 5, GIoU 2).
_C.MODEL.DETR.CLASS_WEIGHT = 1.0
_C.MODEL.DETR.L1_WEIGHT = 5.0
_C.MODEL.DETR.GIOU_WEIGHT = 2.0
_C.MODEL.DETR.COST_CLASS = 1.0
_C.MODEL.DETR.COST_BBOX = 5.0
_C.MODEL.DETR.COST_GIOU = 2.0
# Weight of the "no object" class in the subject/object cross-entropy.
_C.MODEL.DETR.NO_OBJECT_WEIGHT = 0.1
# Predicate CE weights w_c = max(sqrt(alpha / (f_c + 1e-5)), 1) ** U, f_c = count_c / total (alpha = OVERSAMPLE, U = 2 beta).
_C.MODEL.DETR.REWEIGHT_RELATIONS = True
_C.MODEL.DETR.OVERSAMPLE_PARAM = 0.07
_C.MODEL.DETR.UNDERSAMPLE_PARAM = 1.5
# Weight of the "no relation" class in the predicate cross-entropy.
_C.MODEL.DETR.REWEIGHT_REL_EOS_COEF = 0.1
# Losses on every decoder layer (deep supervision).
_C.MODEL.DETR.DEEP_SUPERVISION = True

# The lab's "CenterMask" encoder (docs/MODEL.md, CenterMask section) and the FCOS pre-training detector.
_C.MODEL.CENTERMASK = CfgNode()
# How detections reach the decoders: "tokens" (RoI features appended to the DETR encoder memory as extra tokens)
# or "paste" (the lab's published fusion: SAG-Mask maps added onto P5 at each box; set MODEL.DETR.ENC_LAYERS 0).
_C.MODEL.CENTERMASK.FUSION = "tokens"
# Weight of the FCOS detection losses in the joint objective (the lab's model discards them: 0).
_C.MODEL.CENTERMASK.FCOS_LOSS_WEIGHT = 1.0
# FCOS detections per image kept after NMS and fused, at test (centermask2's POST_NMS_TOPK_TEST).
_C.MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS = 50
# The same in training (centermask2's POST_NMS_TOPK_TRAIN; the lab: 100); 0 = NUM_INJECTED_DETECTIONS.
_C.MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS_TRAIN = 0
_C.MODEL.CENTERMASK.SCORE_THRESH = 0.05
# False: candidates need sqrt(class x centerness) > SCORE_THRESH (torchvision); True: sigmoid(class) alone
# (centermask2's THRESH_WITH_CTR False, the lab's).
_C.MODEL.CENTERMASK.SCORE_THRESH_BEFORE_CENTERNESS = False
# True: clip boxes to the image and drop empty ones before NMS (torchvision); False: NMS on the boxes as regressed
# (centermask2, the lab's).
_C.MODEL.CENTERMASK.CLIP_BEFORE_NMS = True
# FCOS box loss: "torchvision" (pixel GIoU per positive) or "fcos" (centermask2: GIoU with (I+1)/(U+1) on
# stride-normalised distances, weighted by the centerness target and divided by its sum).
_C.MODEL.CENTERMASK.BOX_LOSS = "torchvision"
# IoU of FCOS's class-aware NMS before the top NUM_INJECTED_DETECTIONS are kept.
_C.MODEL.CENTERMASK.NMS_THRESH = 0.6
# FCOS candidates kept per pyramid level and image (best scores above SCORE_THRESH) before NMS.
_C.MODEL.CENTERMASK.PRE_NMS_TOPK = 1000
# Convolutions in each of FCOS's two towers (class, box), shared by all levels (FCOS / centermask2: 4).
_C.MODEL.CENTERMASK.HEAD_CONVS = 4
# "tokens" only: True adds the detection itself to each token's content - a learned embedding of its box and of
# its FCOS class (scaled by the score) - so the decoders can read where and what an object is from the attended
# values (DETR's cross-attention adds positions to the keys only).  False: RoI features alone (docs/MODEL.md).
_C.MODEL.CENTERMASK.TOKEN_DETECTION_CONTENT = False
# RoIAlign output size: 7 for "tokens"; the SAG-Mask head of "paste" uses 14 (the lab's POOLER_RESOLUTION).
_C.MODEL.CENTERMASK.ROI_RESOLUTION = 7

# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
_C.DATASETS = CfgNode()
_C.DATASETS.TRAIN = ("VG_train",)
# Split used for periodic evaluation during training and best-model selection.
_C.DATASETS.VAL = ("VG_val",)
# Split(s) evaluated by --eval-only and at the end of training.
_C.DATASETS.TEST = ("VG_test",)

_C.DATASETS.VISUAL_GENOME = CfgNode()
_C.DATASETS.VISUAL_GENOME.IMAGES = ""
_C.DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY = ""
_C.DATASETS.VISUAL_GENOME.IMAGE_DATA = ""
_C.DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5 = ""
_C.DATASETS.VISUAL_GENOME.FILTER_EMPTY_RELATIONS = True
_C.DATASETS.VISUAL_GENOME.FILTER_NON_OVERLAP = True
_C.DATASETS.VISUAL_GENOME.FILTER_DUPLICATE_RELATIONS = True
_C.DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES = 5000
_C.DATASETS.VISUAL_GENOME.BOX_SCALE = 1024
# (Z, 3) .npy/.pt of 1-based (subject, object, predicate) zero-shot triplets; "" = test triplets unseen in train.
_C.DATASETS.VISUAL_GENOME.ZERO_SHOT_TRIPLETS = ""
# Your own splits in the COCO-with-relations format (docs/DATASETS.md): a list of {NAME, JSON, IMAGES} mappings;
# each NAME can then be used in DATASETS.TRAIN/VAL/TEST. The FILTER_* keys above apply to them (and the split
# named in DATASETS.TRAIN gets the train-only filters).
_C.DATASETS.COCO_RELATIONS = ()
# Panoptic Scene Graph (PSG_train / PSG_test, boxes only): OpenPSG's psg.json and the COCO image root.
_C.DATASETS.PSG = CfgNode()
_C.DATASETS.PSG.JSON = ""
_C.DATASETS.PSG.IMAGES = ""

_C.DATALOADER = CfgNode()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.ASPECT_RATIO_GROUPING = True

_C.INPUT = CfgNode()
# Channel order the model sees: "RGB" or "BGR" (vovnet/centermask2 weights expect BGR 0-255).
_C.INPUT.FORMAT = "RGB"
_C.INPUT.MIN_SIZE_TRAIN = tuple(range(480, 801, 32))
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.RANDOM_FLIP = "horizontal"
_C.INPUT.CROP = CfgNode()
_C.INPUT.CROP.ENABLED = True
# "detr" (the released DETR mapper: flip, resize to RESIZE_BEFORE_CROP, crop h and w independently in SIZE, resize)
# or "keep_orientation" (crop of the original image, longer side along the longer side); data/mapper.py.
_C.INPUT.CROP.TYPE = "detr"
# Absolute random crop, side lengths in [SIZE[0], SIZE[1]] (capped by the image), applied with probability PROB.
_C.INPUT.CROP.SIZE = [384, 600]
_C.INPUT.CROP.PROB = 0.5
# "detr" only: shorter side resized to a random choice of these (no cap on the longer side) before the crop.
_C.INPUT.CROP.RESIZE_BEFORE_CROP = (400, 500, 600)

# ---------------------------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------------------------
_C.SOLVER = CfgNode()
_C.SOLVER.OPTIMIZER = "ADAMW"
_C.SOLVER.BASE_LR = 1e-4
_C.SOLVER.BACKBONE_MULTIPLIER = 0.1
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.MAX_ITER = 250000
# detectron2's schedule names: "WarmupMultiStepLR" (the released recipe: LR x GAMMA at each of STEPS) or
# "WarmupCosineLR" (half a cosine from BASE_LR to BASE_LR_END over MAX_ITER; STEPS and GAMMA unused).
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.STEPS = (160000,)
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.BASE_LR_END = 0.0
_C.SOLVER.WARMUP_ITERS = 10
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_METHOD = "linear"
# Total images per iteration over all processes.
_C.SOLVER.IMS_PER_BATCH = 12
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Periodic checkpoints (model_<iter>.pth) kept on disk, the newest; 0 = keep all. model_final/best_model_final stay.
_C.SOLVER.CHECKPOINT_MAX_TO_KEEP = 3
# Print/record training metrics every LOG_PERIOD iterations.
_C.SOLVER.LOG_PERIOD = 20
_C.SOLVER.CLIP_GRADIENTS = CfgNode()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = True
# "full_model" (one norm over every parameter, as released) or "norm" (per parameter).
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CfgNode()
# Mixed-precision autocast on GPU; ignored (fp32) on CPU.
_C.SOLVER.AMP.ENABLED = True
# "bfloat16" (ours, no loss scaling) or "float16" with a GradScaler (the released AMPTrainer; docs/DIFFERENCES.md).
_C.SOLVER.AMP.PRECISION = "bfloat16"

# ---------------------------------------------------------------------------------------------------------------
# Test / evaluation
# ---------------------------------------------------------------------------------------------------------------
_C.TEST = CfgNode()
# Evaluate DATASETS.VAL every EVAL_PERIOD iterations (0 = never).
_C.TEST.EVAL_PERIOD = 10000
# Metric that picks OUTPUT_DIR/best_model_final.pth, a key of the evaluator's result dict.
_C.TEST.BEST_METRIC = "mR@100"
# Inference post-processing: class-aware NMS IoU over the entity boxes, relation rows kept per image.
_C.TEST.NMS_THRESH = 0.5
_C.TEST.RELATIONS_PER_IMAGE = 300
# Boxes kept per image (best scores) by the detector meta-architectures DETRDetector / FCOSDetector.
_C.TEST.DETECTIONS_PER_IMAGE = 100
# SGG evaluation protocol: "standard" (Scene-Graph-Benchmark) or "iterativesg" (released evaluator); docs/PROTOCOL.md
_C.TEST.SGG_PROTOCOL = "standard"


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()
