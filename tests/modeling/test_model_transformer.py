"""The iterative transformer: shapes, initialisation, conditioning wiring, padding, names and sizes."""
import math

import pytest
import torch

from configs.defaults import get_cfg
from modeling.iterative_model import IterativeSceneGraphModel
from modeling.position_encoding import PositionEmbeddingSine
from tests.model_helpers import StandInBackbone, batch_item, tiny_cfg
from tools.count_parameters import count_parameters


def _tiny_model(**overrides):
    torch.manual_seed(0)
    return IterativeSceneGraphModel(tiny_cfg(**overrides), StandInBackbone("p5", 32))


def _random_memory(batch_size=2, tokens=12, dim=64):
    torch.manual_seed(1)
    return torch.randn(batch_size, tokens, dim), torch.randn(batch_size, tokens, dim), torch.zeros(
        batch_size, tokens, dtype=torch.bool)


def test_per_layer_output_shapes():
    model = _tiny_model(MODEL__DETR__DEC_LAYERS=3).eval()
    src, pos, mask = _random_memory()
    out = model.transformer(src, pos, mask, model.query_embed.weight, model.object_query_embed.weight,
                            model.relation_query_embed.weight)
    assert out["subject_logits"].shape == (3, 2, 30, 13)
    assert out["object_logits"].shape == (3, 2, 30, 13)
    assert out["relation_logits"].shape == (3, 2, 30, 11)
    for branch in ("subject", "object", "relation"):
        boxes = out[f"{branch}_boxes"]
        assert boxes.shape == (3, 2, 30, 4)
        assert boxes.min() >= 0 and boxes.max() <= 1


def test_extra_memory_is_attended():
    model = _tiny_model().eval()
    src, pos, mask = _random_memory()
    queries = (model.query_embed.weight, model.object_query_embed.weight, model.relation_query_embed.weight)
    plain = model.transformer(src, pos, mask, *queries)
    extra = {"tokens": torch.randn(2, 5, 64), "pos": torch.randn(2, 5, 64), "padding_mask": torch.ones(2, 5).bool()}
    fully_padded = model.transformer(src, pos, mask, *queries, extra_memory=extra)
    torch.testing.assert_close(fully_padded["subject_boxes"], plain["subject_boxes"])
    extra["padding_mask"][:] = False
    attended = model.transformer(src, pos, mask, *queries, extra_memory=extra)
    assert not torch.allclose(attended["subject_boxes"], plain["subject_boxes"])


def test_conditioning_linears_start_at_zero_and_the_rest_is_xavier():
    decoder = _tiny_model().transformer.decoder
    linears = decoder.conditioning_linears()
    assert len(linears) == 2 * 2 + 3 * 1  # object/relation pos per layer, three graph residuals between layers
    for linear in linears:
        assert torch.count_nonzero(linear.weight) == 0 and torch.count_nonzero(linear.bias) == 0
    weight = decoder.subject_layers[0].linear1.weight
    bound = math.sqrt(6.0 / sum(weight.shape))
    assert weight.abs().max() <= bound and weight.abs().max() > 0.5 * bound


def _independent_detr_decoder(layers, norm, query, memory, memory_pos, mask):
    tgt = torch.zeros_like(query)
    outputs = []
    for layer in layers:
        tgt = layer(tgt, query, memory, memory_pos, mask)
        outputs.append(norm(tgt))
    return torch.stack(outputs)


def test_zero_conditioning_gives_three_independent_detr_decoders_and_conditioning_is_wired():
    model = _tiny_model().eval()
    decoder = model.transformer.decoder
    memory, memory_pos, mask = _random_memory()
    queries = [e.weight.unsqueeze(0).expand(2, -1, -1)
               for e in (model.query_embed, model.object_query_embed, model.relation_query_embed)]
    out = decoder(memory, memory_pos, mask, *queries)
    for branch, layers, norm, query in (
        ("subject", decoder.subject_layers, decoder.subject_norm, queries[0]),
        ("object", decoder.object_layers, decoder.subject_norm, queries[1]),
        ("relation", decoder.relation_layers, decoder.relation_norm, queries[2]),
    ):
        expected = _independent_detr_decoder(layers, norm, query, memory, memory_pos, mask)
        torch.testing.assert_close(out[branch], expected)

    with torch.no_grad():
        decoder.object_pos_linear[0].weight.normal_()
    conditioned = decoder(memory, memory_pos, mask, *queries)
    torch.testing.assert_close(conditioned["subject"], out["subject"])
    assert not torch.allclose(conditioned["object"], out["object"])
    torch.testing.assert_close(conditioned["relation"], out["relation"])  # its own conditioning is still zero
    with torch.no_grad():
        decoder.relation_pos_linear[0].weight.normal_()
    assert not torch.allclose(decoder(memory, memory_pos, mask, *queries)["relation"], out["relation"])

    with torch.no_grad():
        decoder.object_pos_linear[0].weight.zero_()
        decoder.relation_pos_linear[0].weight.zero_()
        decoder.subject_graph_query_residual[0].weight.normal_()
    refined = decoder(memory, memory_pos, mask, *queries)
    torch.testing.assert_close(refined["subject"][0], out["subject"][0])
    assert not torch.allclose(refined["subject"][1], out["subject"][1])


def test_sine_encoding_of_an_image_does_not_depend_on_batch_padding():
    encoding = PositionEmbeddingSine(8)
    tight = torch.zeros(1, 4, 5, dtype=torch.bool)
    padded = torch.ones(1, 7, 9, dtype=torch.bool)
    padded[:, :4, :5] = False
    a, b = encoding(tight), encoding(padded)
    assert a.shape == (1, 16, 4, 5)
    torch.testing.assert_close(b[:, :, :4, :5], a)
    # normalize=True: the last valid row/column sits at 2π (channel 0 is sin of y · 2π → ~0).
    assert abs(a[0, 0, -1, 0].item()) < 1e-4 and abs(a[0, 8, 0, -1].item()) < 1e-4


def test_predictions_do_not_depend_on_the_other_images_in_the_batch():
    model = _tiny_model().eval()
    torch.manual_seed(2)
    small = batch_item(torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), [(1, 1, 20, 20)], [1], [])
    large = batch_item(torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8), [(1, 1, 20, 20)], [1], [])
    with torch.no_grad():
        alone = model([small])[0]
        batched = model([small, large])[0]
    for key in ("boxes", "scores", "rel_scores"):
        torch.testing.assert_close(batched[key], alone[key], atol=1e-4, rtol=1e-4)


def test_training_returns_every_term_of_every_layer():
    model = _tiny_model().train()
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    losses = model([batch_item(image, [(2, 2, 30, 30), (20, 20, 60, 60)], [1, 2], [[0, 1, 4]])])
    expected = {f"loss_{b}_{t}_{layer}" for b in ("sub", "obj", "rel") for t in ("ce", "l1", "giou")
                for layer in (0, 1)}
    assert set(losses) == expected
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.input_proj.weight.grad is not None and model.input_proj.weight.grad.abs().sum() > 0


def test_bad_configuration_errors_name_the_key():
    with pytest.raises(KeyError, match="MODEL.ENCODER.IN_FEATURE"):
        IterativeSceneGraphModel(tiny_cfg(), StandInBackbone("res5", 32))
    with pytest.raises(ValueError, match="MODEL.ENCODER.NAME"):
        IterativeSceneGraphModel(tiny_cfg(MODEL__ENCODER__NAME="Deformable"), StandInBackbone("p5", 32))
    model = _tiny_model().train()
    item = batch_item(torch.zeros(3, 32, 32, dtype=torch.uint8), [], [], [])
    del item["instances"]
    with pytest.raises(KeyError, match="instances"):
        model([item])


def test_released_checkpoint_names_shapes_and_sizes():
    """Full-size transformer on the meta device: names/shapes of the released checkpoint, the sizes of
    docs/MODEL.md (Heads)."""
    cfg = get_cfg()
    with torch.device("meta"):
        model = IterativeSceneGraphModel(cfg, StandInBackbone("res5", 2048))
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["input_proj.weight"] == (256, 2048, 1, 1)
    assert shapes["query_embed.weight"] == (300, 256)
    assert shapes["transformer.decoder.relation_pos_attn.5.k_proj_weight"] == (256, 512)
    assert shapes["transformer.decoder.object_pos_attn.5.in_proj_weight"] == (768, 256)
    assert shapes["transformer.decoder.relation_graph_query_attn.4.v_proj_weight"] == (256, 768)
    assert "transformer.decoder.relation_graph_query_attn.5.in_proj_bias" not in shapes
    assert shapes["transformer.decoder.object_graph_query_norm.4.weight"] == (256,)
    assert shapes["transformer.object_embed.weight"] == (151, 256)
    assert shapes["transformer.relation_embed.weight"] == (51, 256)
    assert shapes["transformer.object_bbox_coords.layers.2.weight"] == (4, 256)
    counts = count_parameters(model)
    assert counts["input_proj"] == 524_544
    assert counts["queries"] == 230_400
    assert counts["encoder"] == 7_890_432
    assert counts["decoder layers"] == 28_417_536
    assert counts["conditioning"] == 13_609_216
    assert counts["heads"] == 184_526
    assert counts["total"] - counts["backbone"] == 50_856_654
