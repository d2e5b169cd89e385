"""The training step compiles without graph breaks on either side of its host call (the matcher), and with
``MODEL.STATIC_SHAPES`` it never recompiles after warm-up and gives the losses of the unpadded eager path.

``torch.compile(fullgraph=True, backend="aot_eager")`` traces forward and backward like inductor does (any graph
break or data-dependent operator raises) without generating code, so these tests stay CPU-sized: row A
(``configs/iterative_model.yaml``: ResNet-50 / DETR encoder, shrunk), the VoVNet-FPN backbone and both CenterMask
fusions (``configs/demo_synthetic.yaml``'s model: "tokens" and "paste").
"""
import copy
import os

import pytest
import torch
import torch._dynamo

from configs.defaults import get_cfg
from modeling import build_model
from tests.model_helpers import ROOT

SHRUNK_TRANSFORMER = ["MODEL.DEVICE", "cpu", "MODEL.DETR.HIDDEN_DIM", 32, "MODEL.DETR.NHEADS", 4,
                      "MODEL.DETR.DIM_FEEDFORWARD", 64, "MODEL.DETR.ENC_LAYERS", 1, "MODEL.DETR.DEC_LAYERS", 2,
                      "MODEL.DETR.DROPOUT", 0.0, "MODEL.DETR.NUM_OBJECT_QUERIES", 10, "MODEL.DETR.NUM_CLASSES", 5,
                      "MODEL.DETR.NUM_RELATION_CLASSES", 4]
MAX_RELATIONS = 8


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()
    torch.set_num_threads(threads)


def _cfg(config_file, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", config_file))
    cfg.merge_from_list(SHRUNK_TRANSFORMER + list(overrides))
    cfg.freeze()
    return cfg


def _random_batch(generator, batch_size, max_height, max_width, num_classes, num_predicates):
    """Landscape images of random sizes up to ``max_height`` x ``max_width`` with 1..MAX_RELATIONS relations."""
    batch = []
    for _ in range(batch_size):
        height = int(torch.randint(max_height // 2, max_height + 1, (), generator=generator))
        width = int(torch.randint(height, max_width + 1, (), generator=generator))
        num_boxes = int(torch.randint(2, 6, (), generator=generator))
        low = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([width - 8.0, height - 8.0])
        size = 4 + torch.rand(num_boxes, 2, generator=generator) * 20
        high = torch.minimum(low + size, torch.tensor([float(width), float(height)]))
        pairs = torch.cartesian_prod(torch.arange(num_boxes), torch.arange(num_boxes))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        num_relations = min(int(torch.randint(1, MAX_RELATIONS + 1, (), generator=generator)), len(pairs))
        pairs = pairs[torch.randperm(len(pairs), generator=generator)[:num_relations]]
        predicates = torch.randint(num_predicates, (num_relations, 1), generator=generator)
        batch.append({
            "image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator),
            "height": height, "width": width, "image_id": 0,
            "instances": {"boxes": torch.cat([low, high], 1),
                          "labels": torch.randint(num_classes, (num_boxes,), generator=generator),
                          "relations": torch.cat([pairs, predicates], 1)},
        })
    return batch


def _compiled_and_eager(cfg):
    """The model of ``cfg`` with its parts compiled (aot_eager, fullgraph) and an eager copy with the same weights
    whose targets are not padded (only to the batch's largest relation count).  Both pad images alike: how much
    padding surrounds an image changes the convolution features near its border (a norm's shift makes the
    padding non-zero after the first layer), as it does between any two batches of the released model."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    eager = copy.deepcopy(model)
    eager.criterion.max_relations = None
    model.compile_parts(backend="aot_eager")  # fullgraph=True inside: a graph break raises
    return model, eager


def _assert_same_losses(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_row_a_static_step_compiles_whole_never_recompiles_and_equals_the_unpadded_losses():
    cfg = _cfg("iterative_model.yaml", "MODEL.RESNETS.DEPTH", 50, "MODEL.STATIC_SHAPES.ENABLED", True,
               "MODEL.STATIC_SHAPES.MAX_RELATIONS", MAX_RELATIONS, "INPUT.MIN_SIZE_TRAIN", (64,),
               "INPUT.MAX_SIZE_TRAIN", 96)
    model, eager = _compiled_and_eager(cfg)
    counters = torch._dynamo.utils.counters
    generator = torch.Generator().manual_seed(0)
    relation_counts, graphs_after_warmup = set(), None
    for step in range(20):
        batch = _random_batch(generator, 2, 64, 96, 5, 4)
        relation_counts.add(max(len(item["instances"]["relations"]) for item in batch))
        expected = eager(batch)
        got = model(batch)
        _assert_same_losses(got, expected)
        sum(got.values()).backward()  # the compiled backward graphs run too
        model.zero_grad(set_to_none=True)
        if step == 0:
            graphs_after_warmup = counters["stats"]["unique_graphs"]
    assert len(relation_counts) > 3  # the unpadded targets had several shapes ...
    assert graphs_after_warmup == 2  # ... the compiled one two graphs: network and loss
    assert counters["stats"]["unique_graphs"] == graphs_after_warmup  # and no recompilation after the first batch
    assert not counters["graph_break"]


@pytest.mark.parametrize("fusion", ["tokens", "paste"])
def test_vovnet_fpn_and_centermask_fusions_compile_whole_and_match_eager(fusion):
    cfg = _cfg("demo_synthetic.yaml", "MODEL.CENTERMASK.FUSION", fusion, "MODEL.FPN.OUT_CHANNELS", 32,
               "MODEL.STATIC_SHAPES.ENABLED", True,
               "MODEL.STATIC_SHAPES.MAX_RELATIONS", MAX_RELATIONS, "INPUT.MIN_SIZE_TRAIN", (64,),
               "INPUT.MAX_SIZE_TRAIN", 96, "MODEL.BACKBONE.FREEZE_AT", 0)
    model, eager = _compiled_and_eager(cfg)
    batch = _random_batch(torch.Generator().manual_seed(1), 2, 64, 96, 5, 4)
    got = model(batch)
    _assert_same_losses(got, eager(batch))
    sum(got.values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    # The VoVNet-FPN backbone, the transformer and the loss are each one graph; the CenterMask detector (NMS, a
    # variable number of detections) runs eagerly between them.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 3
    assert not torch._dynamo.utils.counters["graph_break"]
