"""CenterMaskInjector: the contract of docs/ARCHITECTURE.md on tiny random feature maps."""
import pytest
import torch

from configs.defaults import get_cfg
from modeling.centermask import CenterMaskInjector
from modeling.centermask.roi_features import assign_boxes_to_levels, multilevel_roi_align

IMAGE_SIZES = [(64, 64), (56, 48)]  # the padded batch is 64×64


def _cfg(**centermask):
    cfg = get_cfg()
    cfg.MODEL.FPN.OUT_CHANNELS = 64  # GroupNorm(32) needs 2+ values per group on the 1×1 P6/P7 maps
    cfg.MODEL.DETR.HIDDEN_DIM = 32
    cfg.MODEL.DETR.NUM_CLASSES = 5
    cfg.MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS = 10
    for key, value in centermask.items():
        cfg.MODEL.CENTERMASK[key] = value
    return cfg


def _injector(cfg=None) -> CenterMaskInjector:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    injector = CenterMaskInjector(cfg or _cfg())
    # Spread the untrained regression so the detections have varied sizes, as after some training.
    torch.nn.init.normal_(injector.fcos.head.regression_head.bbox_reg.weight, std=0.3)
    return injector


def _features(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        f"p{level}": torch.randn(2, 64, 64 // 2**level or 1, 64 // 2**level or 1, generator=generator)
        .requires_grad_(requires_grad)
        for level in range(3, 8)
    }


def _targets():
    return [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 2.0, 60.0, 20.0]]), "labels": torch.tensor([2, 0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image without boxes
    ]


def test_shapes_padding_and_eval_losses():
    injector = _injector(_cfg(NUM_INJECTED_DETECTIONS=200)).eval()  # more slots than detections survive NMS
    tokens, pos, padding_mask, losses = injector(_features(), IMAGE_SIZES, _targets())
    assert tokens.shape == (2, 200, 32) and pos.shape == (2, 200, 32)
    assert padding_mask.shape == (2, 200) and padding_mask.dtype == torch.bool
    assert losses == {}
    assert padding_mask.any(dim=1).all() and (~padding_mask).any(dim=1).all()
    assert (padding_mask.int().diff(dim=1) >= 0).all()  # detections first, padding after
    assert (tokens[padding_mask] == 0).all() and (pos[padding_mask] == 0).all()
    assert (tokens[~padding_mask].abs().sum(1) > 0).all() and (pos[~padding_mask].abs().sum(1) > 0).all()


def test_tokens_are_attended_roi_features_of_the_detections():
    injector = _injector().eval()
    features = _features()
    tokens, pos, padding_mask, _ = injector(features, IMAGE_SIZES)
    detections, _ = injector.fcos([features[f"p{level}"] for level in range(3, 8)], IMAGE_SIZES)
    assert torch.equal(padding_mask, detections.padding_mask)

    for image, slot in (~padding_mask).nonzero().tolist():
        box = detections.boxes[image, slot]
        area = torch.tensor([float(IMAGE_SIZES[image][0] * IMAGE_SIZES[image][1])])
        level = assign_boxes_to_levels(box[None], area, 3, 5)
        roi = torch.cat((torch.tensor([float(image)]), box))[None]
        pooled = multilevel_roi_align({lv: features[f"p{lv}"] for lv in (3, 4, 5)}, roi, level, 7)
        expected = injector.token_proj(injector.spatial_attention(pooled))[0]
        torch.testing.assert_close(tokens[image, slot], expected)
        size = torch.tensor(IMAGE_SIZES[image], dtype=torch.float32)
        torch.testing.assert_close(pos[image, slot], injector.box_embedding(box, size))



def test_detection_content_adds_box_and_scored_class_embeddings_to_the_tokens():
    plain = _injector().eval()
    assert not hasattr(plain, "content_class_embedding")  # off by default: the token is the RoI feature alone
    with_content = _injector(_cfg(TOKEN_DETECTION_CONTENT=True)).eval()
    with_content.load_state_dict(plain.state_dict(), strict=False)  # same FCOS, projection and position embedding
    features = _features()
    base, base_pos, base_mask, _ = plain(features, IMAGE_SIZES)
    tokens, pos, padding_mask, _ = with_content(features, IMAGE_SIZES)
    detections, _ = plain.fcos([features[f"p{level}"] for level in range(3, 8)], IMAGE_SIZES)
    assert torch.equal(padding_mask, base_mask) and torch.equal(pos, base_pos)
    assert (tokens[padding_mask] == 0).all()
    valid = (~padding_mask).nonzero().tolist()
    assert len(valid) > 1 and len(set(detections.labels[~padding_mask].tolist())) > 1
    for image, slot in valid:
        size = torch.tensor(IMAGE_SIZES[image], dtype=torch.float32)
        label, score = detections.labels[image, slot], detections.scores[image, slot]
        sines = with_content.box_embedding.sine_features(detections.boxes[image, slot], size)
        expected = (base[image, slot] + with_content.content_box_proj(sines)
                    + with_content.content_class_embedding(label) * score)
        torch.testing.assert_close(tokens[image, slot], expected)
    extra = sum(p.numel() for p in with_content.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == (32 * 32 + 32) + 5 * 32  # a second projection of the box + one class embedding row per class


def test_gradients_reach_features_through_roi_path_not_box_coordinates():
    injector = _injector().train()
    features = _features(requires_grad=True)
    tokens, pos, padding_mask, losses = injector(features, IMAGE_SIZES, _targets())
    (tokens.sum() + pos.sum()).backward()

    roi_levels_grad = [features[f"p{level}"].grad for level in (3, 4, 5)]
    assert sum(grad.abs().sum() for grad in roi_levels_grad if grad is not None) > 0
    assert features["p6"].grad is None and features["p7"].grad is None  # FCOS-only levels: no token path
    assert all(p.grad is None for p in injector.fcos.parameters())  # detections are detached
    assert injector.token_proj[1].weight.grad.abs().sum() > 0
    assert injector.spatial_attention.conv.weight.grad.abs().sum() > 0

    sum(losses.values()).backward()
    assert all(p.grad is not None for p in injector.fcos.parameters())


def test_training_losses_weighted_finite_and_need_targets():
    injector = _injector().train()
    _, _, _, losses = injector(_features(), IMAGE_SIZES, _targets())
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert all(torch.isfinite(value) and value.dim() == 0 for value in losses.values())

    doubled = _injector(_cfg(FCOS_LOSS_WEIGHT=2.0)).train()
    doubled.load_state_dict(injector.state_dict())
    _, _, _, doubled_losses = doubled(_features(), IMAGE_SIZES, _targets())
    for name, value in losses.items():
        torch.testing.assert_close(doubled_losses[name], 2 * value)

    assert injector(_features(), IMAGE_SIZES, None)[3] == {}


def test_no_detection_above_threshold_gives_all_padding():
    injector = _injector(_cfg(SCORE_THRESH=0.99)).eval()
    tokens, pos, padding_mask, _ = injector(_features(), IMAGE_SIZES)
    assert padding_mask.all() and (tokens == 0).all() and (pos == 0).all()


def test_full_size_parameter_count():
    injector = CenterMaskInjector(get_cfg())  # 256 FPN channels, d = 256, 150 classes, 7×7 RoIs
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in injector.named_children()}
    assert counts == {
        "fcos": 5_082_016,
        "spatial_attention": 18,
        "token_proj": 256 * 49 * 256 + 256 + 2 * 256,
        "box_embedding": 256 * 256 + 256,
    }
    assert sum(counts.values()) == 8_359_858


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.FPN.OUT_CHANNELS", 48, "MODEL.FPN.OUT_CHANNELS"),
        ("MODEL.DETR.HIDDEN_DIM", 36, "MODEL.DETR.HIDDEN_DIM"),
        ("MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS", 0, "MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS"),
        ("MODEL.CENTERMASK.NMS_THRESH", 1.5, "MODEL.CENTERMASK.NMS_THRESH"),
    ],
)
def test_bad_config_names_the_key(key, value, message):
    cfg = _cfg()
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=message):
        CenterMaskInjector(cfg)


def test_bad_inputs_raise_clear_errors():
    injector = _injector().eval()
    features = _features()
    with pytest.raises(KeyError, match=r"missing \['p7'\]"):
        injector({k: v for k, v in features.items() if k != "p7"}, IMAGE_SIZES)
    with pytest.raises(ValueError, match="MODEL.FPN.OUT_CHANNELS"):
        injector({**features, "p4": features["p4"][:, :32]}, IMAGE_SIZES)
    with pytest.raises(ValueError, match="1 image_sizes for a batch of 2"):
        injector(features, IMAGE_SIZES[:1])
