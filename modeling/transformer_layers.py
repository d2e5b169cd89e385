"""DETR's post-norm transformer layers (batch-first): the encoder layer and stack, and the decoder layer that the
DETR detector stacks and the three IterativeSG decoders are built from; every attention is
:class:`FusedMultiheadAttention` (``F.scaled_dot_product_attention``)."""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class FusedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` (batch-first) whose forward calls ``F.scaled_dot_product_attention`` directly.

    Same parameters, names (``in_proj_weight`` or ``q/k/v_proj_weight`` when ``kdim != embed_dim``,
    ``in_proj_bias``, ``out_proj.*``), initialisation and random-number use as the parent, so checkpoints load
    unchanged and a seeded model is the same.  What differs is the forward: the key padding mask goes to SDPA as
    a (B, 1, 1, S) boolean mask (no float mask of B·heads rows is built), the fused kernel runs in training as
    well as inference, no attention weights are returned, and dropout is requested only when ``dropout > 0`` in
    training mode (``dropout_p = 0`` otherwise: no dropout kernel at test time).  Without padding the result is
    equal to the parent's up to float rounding.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, kdim: Optional[int] = None,
                 vdim: Optional[int] = None):
        super().__init__(embed_dim, num_heads, dropout=dropout, kdim=kdim, vdim=vdim, batch_first=True)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None, need_weights: bool = False
                ) -> Tuple[torch.Tensor, None]:
        """``query`` (B, L, E), ``key`` (B, S, kdim), ``value`` (B, S, vdim), ``key_padding_mask`` (B, S) bool
        with True = ignore.  Returns ``(output (B, L, E), None)``, as the parent with ``need_weights=False``."""
        if need_weights:
            raise ValueError("FusedMultiheadAttention returns no attention weights (need_weights must be False)")
        batch, length, _ = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q = F.linear(query, w_q, b_q).view(batch, length, heads, head_dim).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(batch, key.shape[1], heads, head_dim).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(batch, value.shape[1], heads, head_dim).transpose(1, 2)
        attn_mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        dropout_p = self.dropout if self.training and self.dropout > 0 else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, self.embed_dim)), None


class TransformerEncoderLayer(nn.Module):
    """Self-attention → add & norm → ReLU FFN → add & norm; the positional encoding is added to queries and keys."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = FusedMultiheadAttention(d_model, nhead, dropout=dropout)
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
        self.self_attn = FusedMultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = FusedMultiheadAttention(d_model, nhead, dropout=dropout)
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
