"""End-to-end: a tiny model overfits two synthetic images and then recalls their ground-truth triplets."""
import torch
from torchvision.ops import box_iou

from modeling.iterative_model import IterativeSceneGraphModel
from tests.model_helpers import StandInBackbone, batch_item, tiny_cfg

SIZE = 96


def _draw(rectangles):
    """A grey 96×96 uint8 image with filled rectangles [(x1, y1, x2, y2, (r, g, b)), ...]."""
    image = torch.full((3, SIZE, SIZE), 128, dtype=torch.uint8)
    for x1, y1, x2, y2, colour in rectangles:
        image[:, y1:y2, x1:x2] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
    return image


def _synthetic_batch():
    red, blue, green, yellow = (220, 30, 30), (30, 30, 220), (30, 200, 30), (230, 220, 20)
    boxes_a = [(8, 30, 40, 70), (56, 20, 90, 60)]
    boxes_b = [(20, 6, 76, 36), (30, 56, 60, 90), (70, 60, 92, 88)]
    image_a = _draw([b + (c,) for b, c in zip(boxes_a, (red, blue))])
    image_b = _draw([b + (c,) for b, c in zip(boxes_b, (green, yellow, red))])
    # Item b's original image was twice as large: predictions must come back in original pixels.
    return [
        batch_item(image_a, boxes_a, [1, 2], [[0, 1, 3]]),
        batch_item(image_b, boxes_b, [4, 5, 1], [[0, 1, 6], [2, 1, 2]], original_size=(2 * SIZE, 2 * SIZE)),
    ]


def _recalled(prediction, item, scale):
    """How many GT triplets of ``item`` appear among the prediction rows (labels equal, both IoUs ≥ 0.5)."""
    gt = item["instances"]
    gt_boxes = gt["boxes"] * scale
    iou = box_iou(gt_boxes, prediction["boxes"])
    predicates = prediction["rel_scores"].argmax(1)
    hits = 0
    for subject, obj, predicate in gt["relations"].tolist():
        sub_ok = (iou[subject][prediction["rel_pairs"][:, 0]] >= 0.5) & (
            prediction["labels"][prediction["rel_pairs"][:, 0]] == gt["labels"][subject])
        obj_ok = (iou[obj][prediction["rel_pairs"][:, 1]] >= 0.5) & (
            prediction["labels"][prediction["rel_pairs"][:, 1]] == gt["labels"][obj])
        hits += bool((sub_ok & obj_ok & (predicates == predicate))[:10].any())
    return hits


def test_tiny_model_overfits_two_images():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = tiny_cfg(MODEL__DETR__NUM_OBJECT_QUERIES=10)
    model = IterativeSceneGraphModel(cfg, StandInBackbone("p5", 32), predicate_counts=[5] * 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    batch = _synthetic_batch()
    model.train()
    history = []
    for _ in range(150):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append(total.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert sum(history[-10:]) / 10 < 0.3 * sum(history[:10]) / 10, history[::10]

    model.eval()
    with torch.no_grad():
        predictions = model(batch)
    assert _recalled(predictions[0], batch[0], 1.0) == 1
    assert _recalled(predictions[1], batch[1], 2.0) == 2
    for prediction, item in zip(predictions, batch):
        assert prediction["boxes"][:, 2].max() <= item["width"] and prediction["boxes"][:, 3].max() <= item["height"]
