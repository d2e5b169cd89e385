"""Batched FCOS post-processing: threshold, clipping, class-aware per-image NMS, top-K, padding."""
import torch
from torchvision.models.detection._utils import BoxLinearCoder

from modeling.centermask.fcos_postprocess import select_detections
from modeling.centermask.fcos_targets import fcos_anchors

# One 2×2 level of stride 8: locations at (4, 4), (12, 4), (4, 12), (12, 12).
ANCHORS = fcos_anchors([(2, 2)], [8], torch.device("cpu"))
CODER = BoxLinearCoder(normalize_by_size=True)


def _distances(anchor: torch.Tensor, box: list[float]) -> torch.Tensor:
    return CODER.encode(anchor, torch.tensor(box))


def _head_outputs(batch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Class logits of 3 classes at 4 locations, every image alike; returns the outputs and the expected scores."""
    logits = torch.full((batch, 4, 3), -10.0)
    logits[:, 0, 1] = 3.0  # best: box A, class 1
    logits[:, 1, 1] = 2.0  # box B overlaps A (IoU 0.90), same class: suppressed
    logits[:, 1, 2] = 1.0  # box B again but class 2: kept
    logits[:, 2, 0] = -8.0  # below the score threshold
    logits[:, 3, 0] = 0.5  # box C sticks out of the image: clipped
    boxes = [[0, 0, 20, 20], [1, 0, 21, 20], [0, 8, 8, 16], [6, 6, 40, 44]]
    regression = torch.stack([_distances(ANCHORS[i], box) for i, box in enumerate(boxes)])
    centerness = torch.zeros(batch, 4, 1)
    outputs = {
        "cls_logits": logits,
        "bbox_regression": regression.expand(batch, 4, 4).clone(),
        "bbox_ctrness": centerness,
    }
    return outputs, torch.sqrt(torch.sigmoid(logits) * 0.5)


def _select(outputs, image_sizes, score_thresh=0.05, k=4, pre_nms_topk=100):
    return select_detections(outputs, ANCHORS, [4], image_sizes, CODER, score_thresh, 0.6, pre_nms_topk, k)


def test_threshold_clip_nms_topk_and_padding():
    outputs, scores = _head_outputs(batch=2)
    detections = _select(outputs, [(32, 32), (16, 32)])

    assert detections.boxes.shape == (2, 4, 4)
    expected_padding = torch.tensor([[False, False, False, True]] * 2)
    assert torch.equal(detections.padding_mask, expected_padding)  # no cross-image suppression
    assert torch.equal(detections.labels, torch.tensor([[1, 2, 0, -1]] * 2))
    expected_scores = torch.stack((scores[0, 0, 1], scores[0, 1, 2], scores[0, 3, 0], torch.tensor(0.0)))
    torch.testing.assert_close(detections.scores, expected_scores.expand(2, 4))
    torch.testing.assert_close(
        detections.boxes[0],
        torch.tensor([[0.0, 0.0, 20.0, 20.0], [1.0, 0.0, 21.0, 20.0], [6.0, 6.0, 32.0, 32.0], [0.0, 0.0, 0.0, 0.0]]),
    )
    torch.testing.assert_close(detections.boxes[1, 2], torch.tensor([6.0, 6.0, 32.0, 16.0]))  # clipped to h = 16
    assert not detections.boxes.requires_grad


def test_fewer_slots_keep_the_best_and_high_threshold_pads_everything():
    outputs, _ = _head_outputs(batch=2)
    full = _select(outputs, [(32, 32), (32, 32)])
    two = _select(outputs, [(32, 32), (32, 32)], k=2)
    torch.testing.assert_close(two.boxes, full.boxes[:, :2])
    assert not two.padding_mask.any()

    none = _select(outputs, [(32, 32), (32, 32)], score_thresh=0.99)
    assert none.padding_mask.all() and (none.boxes == 0).all() and (none.labels == -1).all()


def test_pre_nms_topk_limits_candidates_per_level():
    outputs, _ = _head_outputs(batch=1)
    detections = _select(outputs, [(32, 32)], pre_nms_topk=1)
    assert torch.equal(detections.labels[0], torch.tensor([1, -1, -1, -1]))


def test_boxes_clipped_to_nothing_are_dropped():
    outputs, _ = _head_outputs(batch=1)
    detections = _select(outputs, [(32, 5)])  # box C spans x 6..40: nothing of it is left in a 5-pixel-wide image
    assert torch.equal(detections.labels[0], torch.tensor([1, 2, -1, -1]))
    torch.testing.assert_close(detections.boxes[0, 0], torch.tensor([0.0, 0.0, 5.0, 20.0]))


def test_image_sizes_as_a_tensor_equal_the_list():
    """tools/export_onnx.py passes the sizes as a (B, 2) tensor (traced from the input's shape): same detections."""
    outputs, _ = _head_outputs(batch=2)
    as_list = _select(outputs, [(32, 32), (16, 32)])
    as_tensor = _select(outputs, torch.tensor([[32, 32], [16, 32]]))
    for expected, got in zip(as_list, as_tensor):
        assert torch.equal(expected, got)
    assert as_tensor.boxes[1, 2, 3] == 16  # clipped to the tensor's h
