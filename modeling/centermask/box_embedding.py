"""Positional embedding of a box, in DETR's sine style."""
import math

import torch
from torch import Tensor, nn


class BoxSineEmbedding(nn.Module):
    """Sine/cosine features of a box's normalised (cx, cy, w, h), projected to ``dim`` channels by a linear layer.

    Each coordinate in [0, 1] is scaled to [0, 2π] and encoded with ``dim // 4`` channels (even sine, odd cosine,
    frequencies temperature^(-2i/(dim/4)), DETR's ``PositionEmbeddingSine`` recipe); the projection
    (dim * dim + dim parameters) learns how the decoders should read position and size.  Gives the injected
    detection tokens a position comparable to the DETR memory's normalised 2-D sine encoding.
    """

    def __init__(self, dim: int, temperature: float = 10000.0):
        super().__init__()
        if dim % 8 != 0:
            raise ValueError(f"BoxSineEmbedding: dim must be a multiple of 8 (sin + cos of 4 coordinates), got {dim}")
        self.feats_per_coord = dim // 4
        self.temperature = temperature
        self.proj = nn.Linear(dim, dim)

    def forward(self, boxes: Tensor, image_sizes: Tensor) -> Tensor:
        """``boxes`` (..., 4) xyxy pixels and ``image_sizes`` (..., 2) their image's (h, w) -> (..., dim)."""
        return self.proj(self.sine_features(boxes, image_sizes))

    def sine_features(self, boxes: Tensor, image_sizes: Tensor) -> Tensor:
        """The (..., dim) sine/cosine features before the projection (for other projections of the same boxes)."""
        h, w = image_sizes.to(boxes.dtype).unbind(-1)
        x0, y0, x1, y1 = boxes.unbind(-1)
        coords = torch.stack(((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h), dim=-1)
        steps = torch.arange(self.feats_per_coord, dtype=boxes.dtype, device=boxes.device)
        frequencies = self.temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / self.feats_per_coord)
        angles = coords[..., None] * (2 * math.pi) / frequencies  # (..., 4, dim // 4)
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-3)
