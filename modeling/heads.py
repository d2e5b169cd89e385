"""The prediction heads: DETR's box MLP, the scene-graph model's triplet heads and the DETR detector's heads.

The builders return plain modules that the owner assigns to explicitly named attributes, so the checkpoint keys
stay the released ones (``transformer.object_embed``, ``transformer.object_bbox_coords``,
``transformer.relation_embed``; ``class_embed``, ``bbox_embed`` for DETR).
"""
from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    """``num_layers`` linears with ReLU between them (DETR's box head: 3 layers, d → d → d → 4)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


def build_triplet_heads(d_model: int, num_classes: int, num_relation_classes: int
                        ) -> Tuple[nn.Linear, MLP, nn.Linear]:
    """IterativeSG's heads: the entity class linear (``num_classes`` + 1 logits, the last "no object") shared by
    the subject and object branches, the 3-layer box MLP shared by all three branches, and the predicate class
    linear (``num_relation_classes`` + 1 logits, the last "no relation")."""
    return (nn.Linear(d_model, num_classes + 1), MLP(d_model, d_model, 4, 3),
            nn.Linear(d_model, num_relation_classes + 1))


def predict_triplets(features: Dict[str, torch.Tensor], entity_class: nn.Module, box_mlp: nn.Module,
                     relation_class: nn.Module) -> Dict[str, torch.Tensor]:
    """Per-branch decoder features (L, B, Q, d) → ``{subject,object,relation}_logits`` (L, B, Q, C + 1) and
    ``{subject,object,relation}_boxes`` (L, B, Q, 4) normalised (cx, cy, w, h)."""
    return {
        "subject_logits": entity_class(features["subject"]),
        "subject_boxes": box_mlp(features["subject"]).sigmoid(),
        "object_logits": entity_class(features["object"]),
        "object_boxes": box_mlp(features["object"]).sigmoid(),
        "relation_logits": relation_class(features["relation"]),
        "relation_boxes": box_mlp(features["relation"]).sigmoid(),
    }


def build_detection_heads(d_model: int, num_classes: int) -> Tuple[nn.Linear, MLP]:
    """DETR's heads: the class linear (``num_classes`` + 1 logits, the last "no object") and the box MLP."""
    return nn.Linear(d_model, num_classes + 1), MLP(d_model, d_model, 4, 3)
