"""The "paste" fusion: box -> grid placement, the batched resize against F.interpolate, the SAG-Mask head, the
module and the scene-graph model built with it."""
import pytest
import torch
import torch.nn.functional as F

from configs.defaults import get_cfg
from modeling import build_model
from modeling.centermask import CenterMaskPaste, build_centermask_encoder
from modeling.centermask.paste import SAGMaskHead, box_cells, interpolation_matrix, paste_maps

from tests import ROOT


def _paste_one(height, width, box, source_map, stride=32):
    """Paste a single (C, S, S) map for one box onto a zero (1, C, height, width) grid."""
    channels = source_map.shape[0]
    grid = torch.zeros(1, channels, height, width)
    return paste_maps(grid, source_map[None, None], torch.tensor([[box]], dtype=torch.float32),
                      torch.tensor([[True]]), stride)[0]


def test_box_goes_to_its_cells_x_along_width_y_along_height_on_a_non_square_image():
    # A 96 x 192 image: a 3 x 6 grid of stride-32 cells.  Box x 40..140, y 70..100: columns 40//32 = 1 up to
    # 140//32 = 4 (exclusive) and row 70//32 = 2 up to 100//32 = 3 (exclusive).
    pasted = _paste_one(3, 6, [40.0, 70.0, 140.0, 100.0], torch.ones(1, 4, 4))
    expected = torch.zeros(1, 3, 6)
    expected[0, 2, 1:4] = 1.0
    torch.testing.assert_close(pasted, expected)
    # The lab's loop would have written rows 1..3 of column 2 (x indexing the rows): nothing there.
    assert pasted[0, 1, 2] == 0 and pasted[0, 0, 2] == 0


def test_hand_computed_bilinear_resize_with_align_corners():
    # A 2 x 2 map [[0, 1], [2, 3]] onto 3 rows x 1 column (box x 0..40, y 32..128 on a 5 x 2 grid):
    # rows sample source rows 0, 0.5, 1 and the single column samples source column 0 -> 0, 1, 2.
    source_map = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    pasted = _paste_one(5, 2, [0.0, 32.0, 40.0, 128.0], source_map)
    expected = torch.zeros(1, 5, 2)
    expected[0, 1:4, 0] = torch.tensor([0.0, 1.0, 2.0])
    torch.testing.assert_close(pasted, expected)


def test_cells_rule_clips_at_the_far_edges_and_skips_negative_or_empty_boxes():
    boxes = torch.tensor([
        [64.0, 32.0, 400.0, 90.0],  # crosses the right border: columns 2..12 cut to 2..5 (4 columns)
        [-1.0, 0.0, 64.0, 64.0],  # a negative coordinate: skipped
        [10.0, 10.0, 30.0, 300.0],  # 10//32 = 30//32 = 0: no column, skipped
        [0.0, 0.0, 32.0, 32.0],  # exactly one cell
    ])
    row0, col0, rows, cols, pasted = box_cells(boxes, 32, (4, 6))
    assert pasted.tolist() == [True, False, False, True]
    assert (row0[0].item(), col0[0].item(), rows[0].item(), cols[0].item()) == (1, 2, 1, 4)
    assert (rows[3].item(), cols[3].item()) == (1, 1)


def _reference_paste(feature_map, maps, boxes, valid, stride):
    """The lab's per-box loop with rows and columns the right way round (y indexes H, x indexes W)."""
    out = feature_map.clone()
    height, width = feature_map.shape[-2:]
    for b in range(maps.shape[0]):
        for k in range(maps.shape[1]):
            x0, y0, x1, y1 = (boxes[b, k] // stride).to(torch.int64).tolist()
            if not valid[b, k] or (boxes[b, k] < 0).any():
                continue
            h, w = min(y1 - y0, height - y0), min(x1 - x0, width - x0)
            if h < 1 or w < 1:
                continue
            resized = F.interpolate(maps[b, k][None], size=(h, w), mode="bilinear", align_corners=True)[0]
            out[b, :, y0:y0 + h, x0:x0 + w] += resized
    return out


def test_batched_paste_equals_the_per_box_interpolate_loop():
    generator = torch.Generator().manual_seed(0)
    batch, slots, channels, size, height, width = 2, 6, 3, 28, 5, 7
    feature_map = torch.randn(batch, channels, height, width, generator=generator)
    maps = torch.randn(batch, slots, channels, size, size, generator=generator)
    corners = torch.rand(batch, slots, 2, generator=generator) * torch.tensor([width * 32.0, height * 32.0])
    sides = torch.rand(batch, slots, 2, generator=generator) * 200 + 1
    boxes = torch.cat((corners, corners + sides), dim=-1)  # some cross the far borders
    boxes[0, 0] = torch.tensor([-3.0, 10.0, 100.0, 100.0])  # negative: skipped
    boxes[1, 1] = torch.tensor([0.0, 0.0, 224.0, 160.0])  # the whole grid
    boxes[1, 2] = boxes[1, 1]  # overlapping maps add up
    valid = torch.ones(batch, slots, dtype=torch.bool)
    valid[0, 5] = False  # a padding slot: skipped
    expected = _reference_paste(feature_map, maps, boxes, valid, 32)
    torch.testing.assert_close(paste_maps(feature_map, maps, boxes, valid, 32), expected, rtol=1e-5, atol=1e-5)


def test_interpolation_matrix_rows_sum_to_one_inside_the_extent_and_zero_outside():
    matrix = interpolation_matrix(torch.tensor([2.0]), torch.tensor([3.0]), 8, 28)[0]
    assert matrix.shape == (8, 28)
    torch.testing.assert_close(matrix.sum(1), torch.tensor([0.0, 0, 1, 1, 1, 0, 0, 0]))
    assert matrix[2, 0] == 1 and matrix[3, 13] == 0.5 and matrix[3, 14] == 0.5 and matrix[4, 27] == 1


def test_sag_mask_head_size_and_output_without_the_mask_predictor():
    head = SAGMaskHead(256)
    assert sum(p.numel() for p in head.parameters()) == 2_622_738  # centermask2's 2,643,298 less 80 x 257
    assert sorted(name for name, _ in head.named_parameters())[:3] == [
        "deconv.bias", "deconv.weight", "mask_fcn1.bias"]
    small = SAGMaskHead(8)
    out = small(torch.randn(3, 8, 14, 14))
    assert out.shape == (3, 8, 28, 28) and (out >= 0).all()


def _tiny_paste_cfg(**centermask):
    cfg = get_cfg()
    cfg.merge_from_file(f"{ROOT}/configs/tiny_cpu.yaml")
    cfg.MODEL.ENCODER.NAME = "CenterMask"
    cfg.MODEL.ENCODER.IN_FEATURE = "p5"
    cfg.MODEL.DETR.ENC_LAYERS = 0
    cfg.MODEL.CENTERMASK.FUSION = "paste"
    cfg.MODEL.CENTERMASK.ROI_RESOLUTION = 14
    cfg.MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS = 5
    cfg.MODEL.CENTERMASK.NUM_INJECTED_DETECTIONS_TRAIN = 8
    cfg.MODEL.CENTERMASK.SCORE_THRESH = 0.0
    for key, value in centermask.items():
        cfg.MODEL.CENTERMASK[key] = value
    return cfg


def _pyramid(batch, channels, height, width):
    generator = torch.Generator().manual_seed(1)
    return {f"p{level}": torch.randn(batch, channels, -(-height // 2**level), -(-width // 2**level),
                                     generator=generator, requires_grad=True) for level in range(3, 8)}


def test_module_pastes_detections_onto_p5_with_frozen_fcos_at_weight_zero():
    torch.manual_seed(0)
    paste = build_centermask_encoder(_tiny_paste_cfg(FCOS_LOSS_WEIGHT=0.0))
    assert isinstance(paste, CenterMaskPaste)
    assert not any(p.requires_grad for p in paste.fcos.parameters())
    with torch.no_grad():  # boxes 8 strides wide (an untrained head regresses near-empty boxes)
        paste.fcos.head.regression_head.bbox_reg.bias.fill_(4.0)
    features = _pyramid(2, 64, 96, 160)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 90.0, 60.0]]), "labels": torch.tensor([1])}] * 2
    paste.train()
    fused, losses = paste(features, [(96, 160), (64, 128)], targets)
    assert losses == {}  # the lab's model discards FCOS's losses
    assert fused.shape == features["p5"].shape
    assert not torch.equal(fused, features["p5"])
    fused.sum().backward()
    assert paste.mask_head.mask_fcn1.weight.grad is not None and features["p3"].grad is not None

    with_losses = build_centermask_encoder(_tiny_paste_cfg(FCOS_LOSS_WEIGHT=2.0)).train()
    _, losses = with_losses(features, [(96, 160), (64, 128)], targets)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}


def test_paste_needs_hidden_dim_equal_to_fpn_channels():
    cfg = _tiny_paste_cfg()
    cfg.MODEL.DETR.HIDDEN_DIM = 32
    with pytest.raises(ValueError, match="MODEL.DETR.HIDDEN_DIM"):
        build_centermask_encoder(cfg)
    cfg = _tiny_paste_cfg()
    cfg.MODEL.CENTERMASK.FUSION = "glue"
    with pytest.raises(ValueError, match="MODEL.CENTERMASK.FUSION"):
        build_centermask_encoder(cfg)


def test_scene_graph_model_with_paste_trains_and_predicts():
    torch.manual_seed(0)
    cfg = _tiny_paste_cfg()
    model = build_model(cfg)
    assert isinstance(model.input_proj, torch.nn.Identity) and len(model.transformer.encoder.layers) == 0
    assert not any(name.startswith("input_proj.") for name, _ in model.named_parameters())
    batch = [{"image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8), "height": 96, "width": 128,
              "image_id": 1, "instances": {"boxes": torch.tensor([[5.0, 5.0, 60.0, 80.0], [50.0, 20.0, 120.0, 90.0]]),
                                           "labels": torch.tensor([0, 3]), "relations": torch.tensor([[0, 1, 2]])}}]
    model.train()
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and "loss_fcos_cls" in losses
    total.backward()
    assert model.centermask.mask_head.deconv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        (prediction,) = model(batch)
    assert prediction["rel_scores"].shape[1] == cfg.MODEL.DETR.NUM_RELATION_CLASSES


def test_paste_traces_as_one_graph_for_torch_compile():
    """The paste has no data-dependent shapes or host synchronisation: dynamo traces it without a graph break."""
    torch._dynamo.reset()
    compiled = torch.compile(paste_maps, backend="eager", fullgraph=True, dynamic=False)
    generator = torch.Generator().manual_seed(2)
    feature_map = torch.randn(2, 3, 4, 5, generator=generator)
    maps = torch.randn(2, 3, 3, 28, 28, generator=generator)
    boxes = torch.tensor([[[0.0, 0.0, 100.0, 64.0], [-1.0, 0.0, 10.0, 10.0], [32.0, 32.0, 170.0, 140.0]]] * 2)
    valid = torch.tensor([[True, True, True], [True, False, True]])
    torch.testing.assert_close(compiled(feature_map, maps, boxes, valid, 32),
                               paste_maps(feature_map, maps, boxes, valid, 32))
