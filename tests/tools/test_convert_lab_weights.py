"""The lab's FCOS checkpoint through tools/convert_weights.py and through MODEL.WEIGHTS (the engine's checkpointer),
with the key report."""
import torch

from engine.checkpoint import ModelCheckpointer
from tools import convert_weights

from tests import ROOT
from tests.modeling.test_lab_checkpoint_conversion import lab_fcos_head, tiny_model


def test_convert_weights_tool_reports_the_lab_head(tmp_path, capsys):
    source = tmp_path / "lab_fcos.pth"
    torch.save({"model": lab_fcos_head(num_classes=150)}, source)
    output = tmp_path / "converted.pth"
    args = ["--input", str(source), "--output", str(output), "--config-file", f"{ROOT}/configs/tiny_cpu.yaml",
            "MODEL.ENCODER.NAME", "CenterMask", "MODEL.DEVICE", "cpu"]
    assert convert_weights.main(args) == 0
    printed = capsys.readouterr().out
    assert "source format: vovnet" in printed
    assert "from 41 checkpoint tensors" in printed  # 43 less the 150-class logits (the model has 12 classes)
    assert "class count differs, left at initialisation (2)" in printed
    saved = torch.load(output, weights_only=True)
    assert len(saved["conversion"]["left_at_init"]) == 2
    torch.testing.assert_close(saved["model"]["centermask.fcos.head.scales"], torch.tensor([1.0, 1.1, 1.2, 1.3, 1.4]))


def test_model_weights_load_the_lab_head_through_the_checkpointer(tmp_path):
    model = tiny_model()
    checkpoint = lab_fcos_head(num_classes=12)
    path = tmp_path / "lab_fcos.pth"
    torch.save({"model": checkpoint}, path)
    ModelCheckpointer(model).resume_or_load(str(path), resume=False)
    head = model.centermask.fcos.head
    assert torch.equal(head.classification_head.cls_logits.weight,
                       checkpoint["proposal_generator.fcos_head.cls_logits.weight"])
    assert torch.equal(head.regression_head.conv[6].weight, checkpoint["proposal_generator.fcos_head.bbox_tower.6.weight"])
    torch.testing.assert_close(head.scales.detach(), torch.tensor([1.0, 1.1, 1.2, 1.3, 1.4]))
