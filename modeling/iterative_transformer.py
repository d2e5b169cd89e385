"""IterativeSG's transformer: DETR encoder, the three iterative decoders and the per-layer prediction heads.

The heads (``modeling/heads.py``) are attributes of this module (``object_embed``, ``object_bbox_coords``,
``relation_embed``) because the released checkpoint stores them under ``transformer.``; one class linear and one
box MLP are shared by the subject and object branches, the predicate branch has its own class linear and reuses
the box MLP for its box.
"""
from typing import Dict, Optional

import torch
from torch import nn

from .heads import build_triplet_heads, predict_triplets
from .iterative_decoder import IterativeDecoder
from .transformer_layers import TransformerEncoder


class IterativeTransformer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_encoder_layers: int,
                 num_decoder_layers: int, num_classes: int, num_relation_classes: int):
        super().__init__()
        self.encoder = TransformerEncoder(d_model, nhead, dim_feedforward, dropout, num_encoder_layers)
        self.decoder = IterativeDecoder(d_model, nhead, dim_feedforward, dropout, num_decoder_layers)
        self.object_embed, self.object_bbox_coords, self.relation_embed = build_triplet_heads(
            d_model, num_classes, num_relation_classes)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Xavier-uniform for every matrix, then zeros for the decoder's conditioning linears."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for linear in self.decoder.conditioning_linears():
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor,
                subject_query: torch.Tensor, object_query: torch.Tensor, relation_query: torch.Tensor,
                extra_memory: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Encode ``src`` (B, N, d) and decode the triplets.

        ``extra_memory`` (optional ``tokens``/``pos``/``padding_mask`` of shape (B, K, d)/(B, K, d)/(B, K)) is
        appended to the encoder output before decoding (the CenterMask encoder's injected RoI features).
        Queries are (Q, d) embeddings.  Returns per-layer predictions stacked on dim 0:
        ``{subject,object,relation}_logits`` (L, B, Q, C + 1) and ``{subject,object,relation}_boxes``
        (L, B, Q, 4) normalised (cx, cy, w, h).
        """
        memory = self.encoder(src, pos, padding_mask)
        memory_pos, memory_mask = pos, padding_mask
        if extra_memory is not None:
            memory = torch.cat([memory, extra_memory["tokens"].to(memory.dtype)], dim=1)
            memory_pos = torch.cat([memory_pos, extra_memory["pos"].to(memory_pos.dtype)], dim=1)
            memory_mask = torch.cat([memory_mask, extra_memory["padding_mask"]], dim=1)
        batch_size = src.shape[0]

        def expand(query: torch.Tensor) -> torch.Tensor:
            return query.unsqueeze(0).expand(batch_size, -1, -1)

        features = self.decoder(memory, memory_pos, memory_mask,
                                expand(subject_query), expand(object_query), expand(relation_query))
        return predict_triplets(features, self.object_embed, self.object_bbox_coords, self.relation_embed)
