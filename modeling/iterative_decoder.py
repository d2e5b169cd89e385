"""The three mutually conditioned DETR decoders of IterativeSG (subject, object, predicate).

Query ``i`` of the three decoders forms triplet ``i``.  At every layer the object decoder's positional query is
conditioned on the subject decoder's output, the predicate decoder's on both; between layers every branch's
content input is refined by attending over all three branches' outputs (docs/MODEL.md).  Module names mirror the
released checkpoint (``subject_layers``, ``object_pos_attn``, ``subject_graph_query_attn``, …) so that loading
it is a key rename.
"""
from typing import Dict, Optional

import torch
from torch import nn

from .transformer_layers import FusedMultiheadAttention, TransformerDecoderLayer


def _attention(d_model: int, nhead: int, dropout: float, kdim: int) -> FusedMultiheadAttention:
    return FusedMultiheadAttention(d_model, nhead, dropout=dropout, kdim=kdim, vdim=kdim)


class IterativeDecoder(nn.Module):
    """Subject, object and predicate decoders refining each other layer by layer.

    ``forward`` returns, for each branch, the per-layer outputs after the branch's pre-head LayerNorm
    (subject and object share ``subject_norm``), stacked to (num_layers, B, Q, d) for deep supervision.
    """

    BRANCHES = ("subject", "object", "relation")

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MODEL.DETR.DEC_LAYERS must be >= 1, got {num_layers}")
        self.num_layers = num_layers

        def decoder_layers() -> nn.ModuleList:
            return nn.ModuleList(
                TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
            )

        self.subject_layers = decoder_layers()
        self.object_layers = decoder_layers()
        self.relation_layers = decoder_layers()
        self.subject_norm = nn.LayerNorm(d_model)
        self.relation_norm = nn.LayerNorm(d_model)

        # Per-layer conditioning of the object (on subjects) and predicate (on subjects + objects) positional queries.
        self.object_pos_attn = nn.ModuleList(_attention(d_model, nhead, dropout, d_model) for _ in range(num_layers))
        self.object_pos_linear = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(num_layers))
        self.relation_pos_attn = nn.ModuleList(
            _attention(d_model, nhead, dropout, 2 * d_model) for _ in range(num_layers)
        )
        self.relation_pos_linear = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(num_layers))

        # Between-layer refinement of each branch's content input by attention over all three branches.
        def graph_attentions() -> nn.ModuleList:
            return nn.ModuleList(_attention(d_model, nhead, dropout, 3 * d_model) for _ in range(num_layers - 1))

        def graph_residuals() -> nn.ModuleList:
            return nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(num_layers - 1))

        def graph_norms() -> nn.ModuleList:
            return nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers - 1))

        self.subject_graph_query_attn = graph_attentions()
        self.subject_graph_query_residual = graph_residuals()
        self.subject_graph_query_norm = graph_norms()
        self.object_graph_query_attn = graph_attentions()
        self.object_graph_query_residual = graph_residuals()
        self.object_graph_query_norm = graph_norms()
        self.relation_graph_query_attn = graph_attentions()
        self.relation_graph_query_residual = graph_residuals()
        self.relation_graph_query_norm = graph_norms()
        self.dropout = nn.Dropout(dropout)

    def conditioning_linears(self) -> list:
        """The linears that start at zero, so the initial model is three independent DETR decoders."""
        return [*self.object_pos_linear, *self.relation_pos_linear, *self.subject_graph_query_residual,
                *self.object_graph_query_residual, *self.relation_graph_query_residual]

    def graph_refinement(self, branch: str) -> tuple:
        """The (attention, residual linear, norm) module lists refining ``branch``'s content between layers."""
        if branch == "subject":
            return self.subject_graph_query_attn, self.subject_graph_query_residual, self.subject_graph_query_norm
        if branch == "object":
            return self.object_graph_query_attn, self.object_graph_query_residual, self.object_graph_query_norm
        return self.relation_graph_query_attn, self.relation_graph_query_residual, self.relation_graph_query_norm

    def forward(self, memory: torch.Tensor, memory_pos: torch.Tensor, memory_padding_mask: Optional[torch.Tensor],
                subject_query: torch.Tensor, object_query: torch.Tensor, relation_query: torch.Tensor
                ) -> Dict[str, torch.Tensor]:
        """``memory``/``memory_pos``: (B, N, d); queries: (B, Q, d) learned positional queries.

        Returns ``{"subject", "object", "relation"}`` → (num_layers, B, Q, d).
        """
        subject_pos = subject_query
        subject_tgt = torch.zeros_like(subject_query)
        object_tgt = torch.zeros_like(object_query)
        relation_tgt = torch.zeros_like(relation_query)
        outputs = {branch: [] for branch in self.BRANCHES}
        for layer in range(self.num_layers):
            subject = self.subject_layers[layer](subject_tgt, subject_pos, memory, memory_pos, memory_padding_mask)

            object_context = self.object_pos_attn[layer](
                object_query, subject + subject_pos, subject, need_weights=False)[0]
            object_pos = object_query + self.dropout(self.object_pos_linear[layer](object_context))
            obj = self.object_layers[layer](object_tgt, object_pos, memory, memory_pos, memory_padding_mask)

            relation_context = self.relation_pos_attn[layer](
                relation_query,
                torch.cat([subject + subject_pos, obj + object_pos], dim=-1),
                torch.cat([subject, obj], dim=-1),
                need_weights=False,
            )[0]
            relation_pos = relation_query + self.dropout(self.relation_pos_linear[layer](relation_context))
            relation = self.relation_layers[layer](relation_tgt, relation_pos, memory, memory_pos,
                                                   memory_padding_mask)

            outputs["subject"].append(self.subject_norm(subject))
            outputs["object"].append(self.subject_norm(obj))
            outputs["relation"].append(self.relation_norm(relation))

            if layer < self.num_layers - 1:
                features = {"subject": subject, "object": obj, "relation": relation}
                positions = {"subject": subject_pos, "object": object_pos, "relation": relation_pos}
                graph_key = torch.cat([features[b] + positions[b] for b in self.BRANCHES], dim=-1)
                graph_value = torch.cat([features[b] for b in self.BRANCHES], dim=-1)
                refined = {}
                for branch in self.BRANCHES:
                    attentions, residuals, norms = self.graph_refinement(branch)
                    attended = attentions[layer](
                        features[branch] + positions[branch], graph_key, graph_value, need_weights=False)[0]
                    refined[branch] = features[branch] + norms[layer](self.dropout(residuals[layer](attended)))
                subject_tgt, object_tgt, relation_tgt = (refined[b] for b in self.BRANCHES)
        return {branch: torch.stack(outputs[branch]) for branch in self.BRANCHES}
