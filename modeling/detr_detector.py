"""Plain DETR (Carion et al. 2020) on Visual Genome boxes: the starting point of the released IterativeSG recipe.

The encoder, the decoder layer, the box MLP and the position encoding are the scene-graph model's own modules; a
DETR decoder is a stack of that decoder layer with one shared final LayerNorm.  Parameter names are DETR's
(``input_proj``, ``query_embed``, ``transformer.encoder.layers.N``, ``transformer.decoder.layers.N``,
``transformer.decoder.norm``, ``class_embed``, ``bbox_embed.layers.N``, ``backbone.*``), so a finished run is
handed to :class:`~modeling.iterative_model.IterativeSceneGraphModel` by ``modeling.weight_conversion``'s
single-decoder DETR rule (decoder copied into the three decoders, class and box heads to the subject/object heads).
"""
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torchvision.ops import box_convert

from .detection_criterion import SetCriterion
from .detector_base import ImageDetector
from .heads import build_detection_heads
from .matcher import HungarianBoxMatcher
from .meta_arch_base import clip_to_image, flatten_feature_map, original_sizes
from .transformer_layers import TransformerDecoderLayer, TransformerEncoder


class DETRDecoder(nn.Module):
    """``num_layers`` post-norm decoder layers; every layer's output goes through the shared ``norm`` (DETR's
    intermediate outputs for the auxiliary losses)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MODEL.DETR.DEC_LAYERS must be >= 1, got {num_layers}")
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, memory: torch.Tensor, memory_pos: torch.Tensor, memory_padding_mask: Optional[torch.Tensor],
                query_pos: torch.Tensor) -> torch.Tensor:
        """``memory``/``memory_pos``: (B, N, d); ``query_pos``: (B, Q, d).  Returns (num_layers, B, Q, d)."""
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, memory_pos, memory_padding_mask)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class DETRTransformer(nn.Module):
    """DETR's encoder-decoder (post-norm, batch-first), Xavier-initialised as in DETR."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_encoder_layers: int,
                 num_decoder_layers: int):
        super().__init__()
        self.encoder = TransformerEncoder(d_model, nhead, dim_feedforward, dropout, num_encoder_layers)
        self.decoder = DETRDecoder(d_model, nhead, dim_feedforward, dropout, num_decoder_layers)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor, query: torch.Tensor
                ) -> torch.Tensor:
        """``src``/``pos``: (B, N, d), ``padding_mask`` (B, N), ``query`` (Q, d).  Returns (L, B, Q, d)."""
        memory = self.encoder(src, pos, padding_mask)
        return self.decoder(memory, pos, padding_mask, query.unsqueeze(0).expand(src.shape[0], -1, -1))


class DETRDetector(ImageDetector):
    """Backbone → 1×1 input projection → DETR encoder-decoder → class linear (``MODEL.DETR.NUM_CLASSES`` + 1
    logits, the last "no object") and 3-layer box MLP on every decoder layer.

    Training: DETR's set loss (:class:`~modeling.detection_criterion.SetCriterion`) with the ``MODEL.DETR`` loss
    weights and matching costs, on every layer with ``DEEP_SUPERVISION``.  Inference: for every query of the last
    layer the most likely real class and its probability (DETR's post-processing), the best
    ``TEST.DETECTIONS_PER_IMAGE`` kept.  ``predicate_counts`` is accepted for ``build_model``'s signature and unused.
    """

    def __init__(self, cfg, backbone: nn.Module, predicate_counts: Optional[Sequence[int]] = None):
        super().__init__(cfg, backbone)
        detr = cfg.MODEL.DETR
        hidden_dim = detr.HIDDEN_DIM
        self.build_transformer_input(cfg)  # input_proj, query_embed, position_embedding
        self.transformer = DETRTransformer(hidden_dim, detr.NHEADS, detr.DIM_FEEDFORWARD, detr.DROPOUT,
                                           detr.ENC_LAYERS, detr.DEC_LAYERS)
        self.class_embed, self.bbox_embed = build_detection_heads(hidden_dim, detr.NUM_CLASSES)
        self.criterion = SetCriterion(
            detr.NUM_CLASSES, HungarianBoxMatcher(detr.COST_CLASS, detr.COST_BBOX, detr.COST_GIOU),
            class_weight=detr.CLASS_WEIGHT, l1_weight=detr.L1_WEIGHT, giou_weight=detr.GIOU_WEIGHT,
            no_object_weight=detr.NO_OBJECT_WEIGHT, deep_supervision=detr.DEEP_SUPERVISION,
        )

    def forward(self, batch: List[dict]):
        targets = self.detection_targets(batch) if self.training else None
        images, padding_mask, image_sizes = self.preprocess_images(batch)
        src, pos, mask = flatten_feature_map(self.backbone(images)[self.in_feature], padding_mask, self.input_proj,
                                             self.position_embedding, stride=self.feature_stride)
        hidden = self.transformer(src, pos, mask, self.query_embed.weight)
        logits = self.class_embed(hidden)
        boxes = self.bbox_embed(hidden).sigmoid()  # (L, B, Q, 4) cxcywh normalised by the resized image size
        if self.training:
            return self.criterion(logits, boxes, [normalised_targets(t, size) for t, size in zip(targets, image_sizes)])
        return self.postprocess(logits[-1], boxes[-1], original_sizes(batch))

    @torch.no_grad()
    def postprocess(self, logits: torch.Tensor, boxes: torch.Tensor, sizes: List[tuple]) -> List[dict]:
        """``logits`` (B, Q, C + 1), ``boxes`` (B, Q, 4) normalised cxcywh → per image the best detections in
        original-image pixels (the normalised boxes scale to the original size: resizing keeps the aspect)."""
        scores, labels = logits.float().softmax(-1)[..., :-1].max(-1)
        results = []
        for image_boxes, image_scores, image_labels, (height, width) in zip(boxes.float(), scores, labels, sizes):
            xyxy = box_convert(image_boxes, "cxcywh", "xyxy") * image_boxes.new_tensor([width, height] * 2)
            results.append(self.top_detections(clip_to_image(xyxy, (height, width)), image_scores, image_labels))
        return results


def normalised_targets(target: Dict[str, torch.Tensor], image_size: tuple) -> Dict[str, torch.Tensor]:
    """``boxes`` xyxy in resized-image pixels → (cx, cy, w, h) normalised by the unpadded ``image_size`` (h, w)."""
    height, width = image_size
    scale = target["boxes"].new_tensor([width, height, width, height])
    return {"labels": target["labels"], "boxes": box_convert(target["boxes"] / scale, "xyxy", "cxcywh")}
