"""What every meta-architecture (the scene-graph model and the two pre-training detectors) shares: pixel
normalisation, the padded image batch, the DETR input preamble (backbone map → 1×1 projection → flattened tokens
with sine positions) and the original-size helpers."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .image_list import ImageList
from .position_encoding import PositionEmbeddingSine

__all__ = ["MetaArchitectureBase", "encoder_input_channels", "flatten_feature_map", "feature_padding_mask",
           "clip_to_image", "original_sizes", "static_image_sizes"]

# Backbone inputs are padded to a multiple of this unless the backbone says otherwise (``size_divisibility``).
DEFAULT_SIZE_DIVISIBILITY = 32


class MetaArchitectureBase(nn.Module):
    """Holds the backbone and the normalisation buffers; :meth:`preprocess_images` turns batch items
    (docs/ARCHITECTURE.md) into an :class:`~modeling.image_list.ImageList` on the model's device."""

    def __init__(self, cfg, backbone: nn.Module):
        super().__init__()
        if len(cfg.MODEL.PIXEL_MEAN) != 3 or len(cfg.MODEL.PIXEL_STD) != 3:
            raise ValueError("MODEL.PIXEL_MEAN and MODEL.PIXEL_STD must have 3 values each")
        self.backbone = backbone
        self.size_divisibility = getattr(backbone, "size_divisibility", DEFAULT_SIZE_DIVISIBILITY)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1), persistent=False)
        # MODEL.STATIC_SHAPES: the padded batch sizes of training and of inference (None: pad to the batch's largest).
        self.static_image_sizes = None
        if cfg.MODEL.STATIC_SHAPES.ENABLED:
            self.static_image_sizes = {
                True: static_image_sizes(max(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN, self.size_divisibility),
                False: static_image_sizes(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, self.size_divisibility),
            }

    def build_transformer_input(self, cfg) -> None:
        """The DETR input preamble's modules, under the released names: ``input_proj`` (1×1 conv from the backbone
        output ``MODEL.ENCODER.IN_FEATURE`` to ``MODEL.DETR.HIDDEN_DIM``), ``query_embed``
        (``NUM_OBJECT_QUERIES`` learned queries) and the sine ``position_embedding`` (no parameters)."""
        hidden_dim = cfg.MODEL.DETR.HIDDEN_DIM
        self.in_feature = cfg.MODEL.ENCODER.IN_FEATURE
        self.input_proj = nn.Conv2d(encoder_input_channels(cfg, self.backbone), hidden_dim, kernel_size=1)
        self.query_embed = nn.Embedding(cfg.MODEL.DETR.NUM_OBJECT_QUERIES, hidden_dim)
        self.position_embedding = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        # Stride of that map: its padding mask keeps ceil(h / stride) x ceil(w / stride) cells of each image.
        self.feature_stride = int(self.backbone.output_shape()[self.in_feature][1])

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_images(self, batch: List[dict]) -> ImageList:
        """Normalise and zero-pad the batch's images: ``(tensor (B, 3, H, W), padding_mask (B, H, W) bool with
        True = padding, image_sizes [(h, w)])``, H and W multiples of ``size_divisibility`` (with
        ``MODEL.STATIC_SHAPES``: one of the few fixed sizes of :func:`static_image_sizes`)."""
        fixed_sizes = None if self.static_image_sizes is None else self.static_image_sizes[self.training]
        return ImageList.from_tensors([item["image"] for item in batch], self.size_divisibility, self.pixel_mean,
                                      self.pixel_std, fixed_sizes)


def static_image_sizes(short: int, long: int, size_divisibility: int) -> List[Tuple[int, int]]:
    """The fixed (H, W) batch sizes of ``MODEL.STATIC_SHAPES`` for images resized to a shorter side of at most
    ``short`` and a longer side of at most ``long``: landscape (short x long), portrait (long x short) and, for a
    batch mixing the two aspect groups, square (long x long), each rounded up to ``size_divisibility``."""
    divisor = max(int(size_divisibility), 1)
    short, long = (-(-int(side) // divisor) * divisor for side in (min(short, long), long))
    return [(short, long), (long, short), (long, long)]


def encoder_input_channels(cfg, backbone: nn.Module) -> int:
    """Channels of the backbone output ``MODEL.ENCODER.IN_FEATURE`` that the encoder's 1×1 input projection reads;
    also checks ``MODEL.DETR.HIDDEN_DIM`` is even (the sine position encoding splits it between y and x)."""
    hidden_dim = cfg.MODEL.DETR.HIDDEN_DIM
    if hidden_dim % 2 != 0:
        raise ValueError(f"MODEL.DETR.HIDDEN_DIM must be even for the sine position encoding, got {hidden_dim}")
    in_feature = cfg.MODEL.ENCODER.IN_FEATURE
    shapes = backbone.output_shape()
    if in_feature not in shapes:
        raise KeyError(f"MODEL.ENCODER.IN_FEATURE {in_feature!r} is not an output of the backbone "
                       f"{cfg.MODEL.BACKBONE.NAME!r} (it gives {sorted(shapes)})")
    return shapes[in_feature][0]


def feature_padding_mask(padding_mask: torch.Tensor, feature_size: Tuple[int, int], stride: int) -> torch.Tensor:
    """(B, h, w) bool, True = padding: the cells of a stride-``stride`` map that an image of unpadded size
    (hi, wi) leaves valid are its first ceil(hi / stride) x ceil(wi / stride) — detectron2's
    ``MaskedBackbone.mask_out_padding``, which the released code uses.  Cell i is valid iff pixel i·stride is, so
    the mask is the pixel mask sampled every ``stride`` pixels (padding where the map extends past the image)."""
    height, width = feature_size
    mask = padding_mask[:, ::stride, ::stride][:, :height, :width]
    if mask.shape[1:] != (height, width):
        mask = F.pad(mask, (0, width - mask.shape[2], 0, height - mask.shape[1]), value=True)
    return mask


def flatten_feature_map(feature: torch.Tensor, padding_mask: torch.Tensor, input_proj: nn.Module,
                        position_embedding: nn.Module, stride: Optional[int] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DETR's encoder input from one backbone map (B, C, h, w) and the image padding mask (B, H, W):
    ``(src (B, h·w, d), pos (B, h·w, d), mask (B, h·w) bool, True = padding)``.  With the map's ``stride`` the mask
    follows :func:`feature_padding_mask`; without it the pixel mask is resized (nearest) to the map, which is the
    same when H and W are multiples of the stride."""
    if stride is not None:
        mask = feature_padding_mask(padding_mask, tuple(feature.shape[-2:]), int(stride))
    else:
        mask = F.interpolate(padding_mask[None].float(), size=feature.shape[-2:])[0].to(torch.bool)
    src = input_proj(feature).flatten(2).transpose(1, 2)
    pos = position_embedding(mask).to(src.dtype).flatten(2).transpose(1, 2)
    return src, pos, mask.flatten(1)


def clip_to_image(boxes_xyxy: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``boxes_xyxy`` (N, 4) clamped to an image of ``size`` (height, width)."""
    height, width = size
    upper = boxes_xyxy.new_tensor([width, height, width, height])
    return torch.minimum(boxes_xyxy.clamp(min=0), upper)


def original_sizes(batch: Sequence[dict]) -> List[Tuple[int, int]]:
    """The original (height, width) of every batch item."""
    return [(int(item["height"]), int(item["width"])) for item in batch]
