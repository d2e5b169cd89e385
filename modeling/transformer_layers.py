"""DETR's post-norm transformer layers (batch-first): the encoder layer and stack, and the decoder layer that the
DETR detector stacks and the three IterativeSG decoders are built from."""
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


class TransformerDecoderLayer(nn.Module):
    """DETR's post-norm decoder layer: self-attention, cross-attention to the memory, ReLU FFN (batch-first)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                memory_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``tgt``, ``query_pos``: (B, Q, d); ``memory``, ``memory_pos``: (B, N, d); mask (B, N), True = pad."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attended = self.multihead_attn(tgt + query_pos, memory + memory_pos, memory,
                                       key_padding_mask=memory_padding_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))
