"""The released augmentation may crop every relation (or every box) out of an image: a training batch holding such
images must give finite losses and gradients, with the DETR and the CenterMask encoders."""
import pytest
import torch

from modeling import build_model

from tests.model_helpers import batch_item, tiny_cfg


@pytest.mark.parametrize("encoder", ["DETR", "CenterMask"])
def test_training_step_with_images_without_relations_or_boxes_is_finite(encoder):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend with the other tests' processes
    try:
        _check_step(encoder)
    finally:
        torch.set_num_threads(threads)


def _check_step(encoder):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(MODEL__ENCODER__NAME=encoder, MODEL__ENCODER__IN_FEATURE="p4"))
    model.train()
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    batch = [
        batch_item(image, [[4, 4, 40, 40], [30, 20, 60, 60]], [1, 2], [[0, 1, 3]]),
        batch_item(image, [[10, 10, 40, 40]], [5], []),  # boxes, no relation
        batch_item(image, [], [], []),  # nothing left after the crop
    ]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), {k: v for k, v in losses.items()}
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # A batch where no image has a relation: the box losses are 0, the class losses still train "no object".
    model.zero_grad()
    losses = model(batch[1:])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_sub_l1_1"].item() == 0.0 and losses["loss_rel_ce_1"].item() > 0
