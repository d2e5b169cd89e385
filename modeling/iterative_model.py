"""The IterativeSG meta-architecture: batch items in, losses (training) or scene graphs (inference) out."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .criterion import SceneGraphCriterion, predicate_class_weights, relation_targets
from .iterative_transformer import IterativeTransformer
from .matcher import HungarianTripletMatcher
from .position_encoding import PositionEmbeddingSine
from .postprocess import SceneGraphPostProcessor
from .transformer_encoder import encoder_input_channels


def _build_centermask_injector(cfg) -> nn.Module:
    try:
        from .centermask import CenterMaskInjector
    except ImportError as e:
        raise ImportError(
            "MODEL.ENCODER.NAME is 'CenterMask' but modeling.centermask.CenterMaskInjector cannot be imported "
            f"({e}); use MODEL.ENCODER.NAME DETR or install the CenterMask part"
        ) from e
    return CenterMaskInjector(cfg)


class IterativeSceneGraphModel(nn.Module):
    """Backbone → 1×1 input projection → DETR encoder → three iterative decoders → per-layer heads (SPEC §5).

    Takes a list of batch items (``docs/ARCHITECTURE.md``).  In training mode returns the loss dict, in eval mode
    one ``sgg-predictions/v1`` image entry per item (without ``image_id``).  With ``MODEL.ENCODER.NAME``
    ``CenterMask`` the CenterMask injector's tokens are appended to the encoder memory and its losses are added.
    Parameter names mirror the released checkpoint without its ``detr.`` prefix.
    """

    def __init__(self, cfg, backbone: nn.Module, predicate_counts: Optional[Sequence[int]] = None):
        super().__init__()
        detr = cfg.MODEL.DETR
        hidden_dim = detr.HIDDEN_DIM
        in_channels = encoder_input_channels(cfg, backbone)
        self.in_feature = cfg.MODEL.ENCODER.IN_FEATURE
        if len(cfg.MODEL.PIXEL_MEAN) != 3 or len(cfg.MODEL.PIXEL_STD) != 3:
            raise ValueError("MODEL.PIXEL_MEAN and MODEL.PIXEL_STD must have 3 values each")

        self.backbone = backbone
        self.size_divisibility = getattr(backbone, "size_divisibility", 32)
        self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
        self.query_embed = nn.Embedding(detr.NUM_OBJECT_QUERIES, hidden_dim)
        self.object_query_embed = nn.Embedding(detr.NUM_OBJECT_QUERIES, hidden_dim)
        self.relation_query_embed = nn.Embedding(detr.NUM_OBJECT_QUERIES, hidden_dim)
        self.position_embedding = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = IterativeTransformer(
            d_model=hidden_dim, nhead=detr.NHEADS, dim_feedforward=detr.DIM_FEEDFORWARD, dropout=detr.DROPOUT,
            num_encoder_layers=detr.ENC_LAYERS, num_decoder_layers=detr.DEC_LAYERS,
            num_classes=detr.NUM_CLASSES, num_relation_classes=detr.NUM_RELATION_CLASSES,
        )
        encoder_name = cfg.MODEL.ENCODER.NAME
        if encoder_name == "CenterMask":
            self.centermask = _build_centermask_injector(cfg)
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
        self.postprocessor = SceneGraphPostProcessor(cfg.TEST.NMS_THRESH, cfg.TEST.RELATIONS_PER_IMAGE)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_images(self, batch: List[dict]) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[int, int]]]:
        """Normalise and zero-pad the images to one (B, 3, H, W) tensor (H, W multiples of the backbone's size
        divisibility).  Returns it, the padding mask (B, H, W) bool (True = padding) and each (h, w)."""
        images = [item["image"].to(self.device, non_blocking=True) for item in batch]
        for index, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"batch item {index}: 'image' must be (3, H, W), got {tuple(image.shape)}")
        sizes = [(int(image.shape[1]), int(image.shape[2])) for image in images]
        divisor = self.size_divisibility
        height = -(-max(h for h, _ in sizes) // divisor) * divisor
        width = -(-max(w for _, w in sizes) // divisor) * divisor
        tensor = torch.zeros(len(images), 3, height, width, device=self.device)
        mask = torch.ones(len(images), height, width, dtype=torch.bool, device=self.device)
        for index, (image, (h, w)) in enumerate(zip(images, sizes)):
            tensor[index, :, :h, :w] = (image.float() - self.pixel_mean) / self.pixel_std
            mask[index, :h, :w] = False
        return tensor, mask, sizes

    def forward(self, batch: List[dict]):
        if self.training and any("instances" not in item for item in batch):
            raise KeyError("training batch items need 'instances' (boxes, labels, relations)")
        images, padding_mask, image_sizes = self.preprocess_images(batch)
        features = self.backbone(images)
        feature = features[self.in_feature]
        mask = F.interpolate(padding_mask[None].float(), size=feature.shape[-2:])[0].to(torch.bool)
        src = self.input_proj(feature).flatten(2).transpose(1, 2)
        pos = self.position_embedding(mask).to(src.dtype).flatten(2).transpose(1, 2)
        mask = mask.flatten(1)

        extra_memory, extra_losses = None, {}
        if self.centermask is not None:
            detection_targets = None
            if self.training:
                detection_targets = [
                    {"boxes": torch.as_tensor(item["instances"]["boxes"]).to(self.device, non_blocking=True),
                     "labels": torch.as_tensor(item["instances"]["labels"]).to(self.device, non_blocking=True)}
                    for item in batch
                ]
            tokens, token_pos, token_mask, extra_losses = self.centermask(features, image_sizes, detection_targets)
            extra_memory = {"tokens": tokens, "pos": token_pos, "padding_mask": token_mask}

        outputs = self.transformer(src, pos, mask, self.query_embed.weight, self.object_query_embed.weight,
                                   self.relation_query_embed.weight, extra_memory)
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
        return self.postprocessor(last_layer, [(int(item["height"]), int(item["width"])) for item in batch])
