"""The IterativeSG meta-architecture: batch items in, losses (training) or scene graphs (inference) out."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .centermask import build_centermask_encoder
from .iterative_transformer import IterativeTransformer
from .matcher import HungarianTripletMatcher
from .meta_arch_base import MetaArchitectureBase, flatten_feature_map, original_sizes
from .postprocess import SceneGraphPostProcessor
from .scene_graph_criterion import SceneGraphCriterion, predicate_class_weights, relation_targets


class IterativeSceneGraphModel(MetaArchitectureBase):
    """Backbone → 1×1 input projection → DETR encoder → three iterative decoders → per-layer heads (docs/MODEL.md).

    Takes a list of batch items (``docs/ARCHITECTURE.md``).  In training mode returns the loss dict, in eval mode
    one ``sgg-predictions/v1`` image entry per item (without ``image_id``).  With ``MODEL.ENCODER.NAME``
    ``CenterMask`` the detector's objects join the memory (``MODEL.CENTERMASK.FUSION``: "tokens" appended to the
    encoder memory, or "paste": SAG-Mask maps added onto the encoder's input map) and its losses are added.
    Parameter names mirror the released checkpoint without its ``detr.`` prefix.
    """

    def __init__(self, cfg, backbone: nn.Module, predicate_counts: Optional[Sequence[int]] = None):
        super().__init__(cfg, backbone)
        detr = cfg.MODEL.DETR
        hidden_dim = detr.HIDDEN_DIM
        self.build_transformer_input(cfg)  # input_proj, query_embed (the subject queries), position_embedding
        self.object_query_embed = nn.Embedding(detr.NUM_OBJECT_QUERIES, hidden_dim)
        self.relation_query_embed = nn.Embedding(detr.NUM_OBJECT_QUERIES, hidden_dim)
        self.transformer = IterativeTransformer(
            d_model=hidden_dim, nhead=detr.NHEADS, dim_feedforward=detr.DIM_FEEDFORWARD, dropout=detr.DROPOUT,
            num_encoder_layers=detr.ENC_LAYERS, num_decoder_layers=detr.DEC_LAYERS,
            num_classes=detr.NUM_CLASSES, num_relation_classes=detr.NUM_RELATION_CLASSES,
        )
        encoder_name = cfg.MODEL.ENCODER.NAME
        if encoder_name == "CenterMask":
            self.centermask = build_centermask_encoder(cfg)
            if self.centermask.fusion == "paste":
                self.input_proj = nn.Identity()  # the decoders read the pasted FPN map itself (as the lab's model)
        elif encoder_name == "DETR":
            self.centermask = None
        else:
            raise ValueError(f"MODEL.ENCODER.NAME must be 'DETR' or 'CenterMask', got {encoder_name!r}")

        if detr.REWEIGHT_RELATIONS:
            predicate_weights = predicate_class_weights(predicate_counts, detr.NUM_RELATION_CLASSES,
                                                        detr.OVERSAMPLE_PARAM, detr.UNDERSAMPLE_PARAM,
                                                        detr.REWEIGHT_REL_EOS_COEF)
        else:
            predicate_weights = predicate_class_weights(None, detr.NUM_RELATION_CLASSES, 0.0, 0.0,
                                                        detr.REWEIGHT_REL_EOS_COEF)
        self.criterion = SceneGraphCriterion(
            detr.NUM_CLASSES, detr.NUM_RELATION_CLASSES,
            HungarianTripletMatcher(detr.COST_CLASS, detr.COST_BBOX, detr.COST_GIOU),
            class_weight=detr.CLASS_WEIGHT, l1_weight=detr.L1_WEIGHT, giou_weight=detr.GIOU_WEIGHT,
            no_object_weight=detr.NO_OBJECT_WEIGHT, predicate_weights=predicate_weights,
            deep_supervision=detr.DEEP_SUPERVISION,
        )
        if cfg.MODEL.STATIC_SHAPES.ENABLED:
            self.criterion.max_relations = cfg.MODEL.STATIC_SHAPES.MAX_RELATIONS
        self.postprocessor = SceneGraphPostProcessor(cfg.TEST.NMS_THRESH, cfg.TEST.RELATIONS_PER_IMAGE)
        self._compiled_network = None  # set by compile_parts()

    def compile_parts(self, **compile_kwargs) -> None:
        """``torch.compile(fullgraph=True, **compile_kwargs)`` the parts on either side of the step's host call
        (the matcher): the network (backbone → transformer heads) and the loss (:meth:`SceneGraphCriterion.losses`).
        With the CenterMask encoder, whose detector (NMS, a variable number of detections) stays eager, the
        backbone and the transformer are compiled instead of the whole network.  Parameter names are unchanged."""
        if self.centermask is None:
            self._compiled_network = torch.compile(self.network, fullgraph=True, **compile_kwargs)
        else:
            self.backbone.compile(fullgraph=True, **compile_kwargs)
            self.transformer.compile(fullgraph=True, **compile_kwargs)
        self.criterion.compile_losses(**compile_kwargs)

    def network(self, images: torch.Tensor, padding_mask: torch.Tensor, image_sizes: List[Tuple[int, int]],
                detection_targets: Optional[List[dict]] = None) -> Tuple[Dict[str, torch.Tensor], dict]:
        """The network without pre- and post-processing (what ``tools/export_onnx.py`` exports): normalised padded
        ``images`` (B, 3, H, W), ``padding_mask`` (B, H, W) and unpadded ``image_sizes`` → per-decoder-layer
        ``{subject,object,relation}_{logits,boxes}`` and the CenterMask injector's losses (``{}`` without
        ``detection_targets``)."""
        features = self.backbone(images)
        feature_map, extra_memory, extra_losses = features[self.in_feature], None, {}
        if self.centermask is not None and self.centermask.fusion == "paste":
            feature_map, extra_losses = self.centermask(features, image_sizes, detection_targets)
        src, pos, mask = flatten_feature_map(feature_map, padding_mask, self.input_proj, self.position_embedding,
                                             stride=self.feature_stride)
        if self.centermask is not None and self.centermask.fusion == "tokens":
            tokens, token_pos, token_mask, extra_losses = self.centermask(features, image_sizes, detection_targets)
            extra_memory = {"tokens": tokens, "pos": token_pos, "padding_mask": token_mask}
        outputs = self.transformer(src, pos, mask, self.query_embed.weight, self.object_query_embed.weight,
                                   self.relation_query_embed.weight, extra_memory)
        return outputs, extra_losses

    def forward(self, batch: List[dict]):
        if self.training and any("instances" not in item for item in batch):
            raise KeyError("training batch items need 'instances' (boxes, labels, relations)")
        images, padding_mask, image_sizes = self.preprocess_images(batch)
        detection_targets = None
        if self.training and self.centermask is not None:
            detection_targets = [
                {"boxes": torch.as_tensor(item["instances"]["boxes"]).to(self.device, non_blocking=True),
                 "labels": torch.as_tensor(item["instances"]["labels"]).to(self.device, non_blocking=True)}
                for item in batch
            ]
        network = self.network if self._compiled_network is None else self._compiled_network
        outputs, extra_losses = network(images, padding_mask, image_sizes, detection_targets)
        if self.training:
            targets = [relation_targets(item["instances"], size, self.device, self.criterion.num_classes,
                                        self.criterion.num_relation_classes)
                       for item, size in zip(batch, image_sizes)]
            losses = self.criterion(outputs, targets)
            overlap = set(losses) & set(extra_losses)
            if overlap:
                raise KeyError(f"CenterMask injector loss names collide with the model's: {sorted(overlap)}")
            losses.update(extra_losses)
            return losses
        last_layer = {name: value[-1] for name, value in outputs.items()}
        return self.postprocessor(last_layer, original_sizes(batch), image_sizes)
