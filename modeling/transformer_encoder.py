"""DETR's post-norm transformer encoder (batch-first)."""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F


class TransformerEncoderLayer(nn.Module):
    """Self-attention → add & norm → ReLU FFN → add & norm; the positional encoding is added to queries and keys."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``src``, ``pos``: (B, N, d); ``padding_mask``: (B, N) bool, True = padding."""
        q = k = src + pos
        attended = self.self_attn(q, k, src, key_padding_mask=padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` post-norm encoder layers (no final norm, as in DETR's post-norm setting)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos, padding_mask)
        return src


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
