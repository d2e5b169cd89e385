"""build_model with the real (tiny) backbone, the DETR and the CenterMask encoders."""
import pytest
import torch

from modeling import build_model
from tests.model_helpers import batch_item, tiny_cfg


def _batch():
    torch.manual_seed(0)
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    return [batch_item(image, [(4, 4, 60, 50), (50, 30, 120, 90)], [1, 2], [[0, 1, 3], [1, 0, 5]],
                       original_size=(192, 256))]


@pytest.mark.parametrize("encoder", ["DETR", "CenterMask"])
def test_tiny_config_trains_and_predicts(encoder):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(tiny_cfg(MODEL__ENCODER__NAME=encoder), predicate_counts=list(range(1, 11)))
    assert model.pixel_mean.device.type == "cpu"
    model.train()
    losses = model(_batch())
    assert {"loss_sub_ce_1", "loss_obj_giou_1", "loss_rel_l1_1"} <= set(losses)
    assert any(name.startswith("loss_fcos") for name in losses) == (encoder == "CenterMask")
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        (prediction,) = model(_batch())
    assert prediction["rel_scores"].shape[1] == 10 and prediction["rel_pairs"].shape[1] == 2
    assert len(prediction["rel_pairs"]) >= 1
    assert int(prediction["rel_pairs"].max()) < len(prediction["boxes"])
    assert prediction["boxes"][:, 2].max() <= 256 and prediction["boxes"][:, 3].max() <= 192


def test_unknown_meta_architecture_names_the_key():
    with pytest.raises(ValueError, match="MODEL.META_ARCHITECTURE"):
        build_model(tiny_cfg(MODEL__META_ARCHITECTURE="Nope"))
