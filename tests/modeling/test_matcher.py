"""The Hungarian matcher equals a brute-force search over assignments of the cost it claims to minimise."""
import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from modeling.matcher import HungarianTripletMatcher

BRANCHES = ("subject", "object", "relation")


def _random_outputs(num_layers, batch_size, num_queries, num_classes=5, num_predicates=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for branch in BRANCHES:
        classes = num_predicates if branch == "relation" else num_classes
        out[f"{branch}_logits"] = torch.randn(num_layers, batch_size, num_queries, classes + 1, generator=generator)
        centres = torch.rand(num_layers, batch_size, num_queries, 2, generator=generator) * 0.6 + 0.2
        sizes = torch.rand(num_layers, batch_size, num_queries, 2, generator=generator) * 0.3 + 0.05
        out[f"{branch}_boxes"] = torch.cat([centres, sizes], -1)
    return out


def _random_targets(num_relations, num_classes=5, num_predicates=4, seed=0):
    generator = torch.Generator().manual_seed(100 + seed)
    target = {}
    for branch in BRANCHES:
        classes = num_predicates if branch == "relation" else num_classes
        target[f"{branch}_labels"] = torch.randint(0, classes, (num_relations,), generator=generator)
        centres = torch.rand(num_relations, 2, generator=generator) * 0.6 + 0.2
        sizes = torch.rand(num_relations, 2, generator=generator) * 0.3 + 0.05
        target[f"{branch}_boxes"] = torch.cat([centres, sizes], -1)
    return target


def _pair_cost(outputs, image, query, target, t):
    """The matching cost (docs/MODEL.md, Matching) of one (query, relation) pair, written out term by term over
    layers and branches."""
    cost = 0.0
    for layer in range(outputs["subject_logits"].shape[0]):
        for branch in BRANCHES:
            prob = outputs[f"{branch}_logits"][layer, image, query].softmax(-1)
            predicted = outputs[f"{branch}_boxes"][layer, image, query]
            wanted = target[f"{branch}_boxes"][t]
            giou = generalized_box_iou(box_convert(predicted[None], "cxcywh", "xyxy"),
                                       box_convert(wanted[None], "cxcywh", "xyxy"))[0, 0]
            cost += (-1.0 * prob[target[f"{branch}_labels"][t]] + 5.0 * (predicted - wanted).abs().sum()
                     - 2.0 * giou).item()
    return cost


def _brute_force_minimum(outputs, image, target):
    num_queries = outputs["subject_logits"].shape[2]
    num_relations = len(target["relation_labels"])
    costs = [[_pair_cost(outputs, image, q, target, t) for t in range(num_relations)] for q in range(num_queries)]
    return min(sum(costs[q][t] for t, q in enumerate(queries))
               for queries in itertools.permutations(range(num_queries), num_relations)), costs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matcher_equals_brute_force_over_all_layers(seed):
    outputs = _random_outputs(num_layers=3, batch_size=3, num_queries=5, seed=seed)
    targets = [_random_targets(3, seed=seed), _random_targets(0, seed=seed), _random_targets(4, seed=seed + 7)]
    indices = HungarianTripletMatcher(1.0, 5.0, 2.0)(outputs, targets)
    assert [len(q) for q, _ in indices] == [3, 0, 4]
    for image, ((queries, relations), target) in enumerate(zip(indices, targets)):
        assert queries.dtype == torch.int64 and relations.dtype == torch.int64
        assert len(set(queries.tolist())) == len(queries) and sorted(relations.tolist()) == list(range(len(relations)))
        if len(relations) == 0:
            continue
        best, costs = _brute_force_minimum(outputs, image, target)
        found = sum(costs[q][t] for q, t in zip(queries.tolist(), relations.tolist()))
        assert found == pytest.approx(best, abs=1e-4)


def test_more_relations_than_queries_matches_every_query():
    outputs = _random_outputs(num_layers=1, batch_size=1, num_queries=2)
    (queries, relations), = HungarianTripletMatcher()(outputs, [_random_targets(4)])
    assert sorted(queries.tolist()) == [0, 1] and len(set(relations.tolist())) == 2


def test_batch_without_relations_and_diverged_predictions():
    outputs = _random_outputs(num_layers=2, batch_size=2, num_queries=3)
    indices = HungarianTripletMatcher()(outputs, [_random_targets(0), _random_targets(0)])
    assert all(len(q) == 0 and len(t) == 0 for q, t in indices)
    outputs["object_boxes"][0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="diverged"):
        HungarianTripletMatcher()(outputs, [_random_targets(2), _random_targets(1)])
