"""tools/count_parameters.py: trainable beside total for every VoVNet config (the lab trains the whole backbone,
FREEZE_AT 0), and the CenterMask components beside the lab's table."""
import os

import pytest

from tools.count_parameters import main

from tests import ROOT

# VoVNetV2 stem (3x3 convs 3->64, 64->64, 64->128: 1,728 + 36,864 + 73,728) and stage 2 of V-39/57/99 (one OSA
# module: five 3x3 128->128 convs 737,280, the 768->256 1x1 concat conv 196,608, eSE 256x256 + 256 = 65,792);
# FrozenBN statistics are buffers.
STEM_AND_STAGE2 = 112_320 + 737_280 + 196_608 + 65_792
assert STEM_AND_STAGE2 == 1_112_000

# (config, total, trainable)
EXPECTED = [
    ("iterative_vovnet39_fpn.yaml", 79_102_606, 79_102_606),
    ("iterative_vovnet57_fpn.yaml", 95_362_190, 95_362_190),
    ("iterative_vovnet99_fpn.yaml", 123_408_270, 123_408_270),
    ("iterative_vovnet99_centermask.yaml", 131_768_128, 131_768_128),
    ("centermask_pretrain_vg_V39.yaml", 33_786_720, 33_786_720),
    ("centermask_pretrain_vg_V57.yaml", 50_046_304, 50_046_304),
    ("centermask_pretrain_vg_V99.yaml", 78_092_384, 78_092_384),
    # The lab's row: the FCOS head (5,082,016) stays as pre-trained (FCOS_LOSS_WEIGHT 0).
    ("iterative_vovnet57_centermask_paste.yaml", 95_110_720, 95_110_720 - 5_082_016),
    ("tiny_cpu.yaml", 3_511_916, 3_511_916),
    ("tiny_fcos_cpu.yaml", 3_217_958, 3_217_958),
    # FREEZE_AT 2 (V-19-slim stem + stage 2: 308,272 frozen); two convolutions per FCOS tower instead of four
    # (-4 x (3x3 conv 64->64 + GroupNorm) = -148,224) and the detection content of the tokens (box embedding
    # 64 x 64 + 64, class embedding 12 x 64: +4,928).
    ("demo_synthetic.yaml", 3_876_916, 3_876_916 - 308_272),
    ("demo_synthetic_detector.yaml", 3_217_958, 3_217_958),  # the two-stage demo's stage 1: tiny_fcos_cpu at 128 px
    # Its stage 2 also keeps the pre-trained FCOS head frozen: 4 x (3x3 conv 64->64 + GroupNorm) per tower x 2 =
    # 296,448, class 6,924, box 2,308, centerness 577, 5 scales.
    ("demo_synthetic_two_stage.yaml", 4_020_212, 4_020_212 - 308_272 - 306_262),
    ("iterative_model.yaml", 93_251_470, 93_251_470 - 222_400),  # row A keeps the released FREEZE_AT 2
]


@pytest.mark.parametrize("config,total,trainable", EXPECTED)
def test_trainable_parameters_of_each_config(config, total, trainable, capsys):
    counts = main(["--config-file", os.path.join(ROOT, "configs", config)])
    printed = capsys.readouterr().out.splitlines()
    assert (counts["total"], counts["trainable"]) == (total, trainable)
    assert f"trainable: {trainable}" in printed and f"total: {total}" in printed


def test_freezing_stem_and_stage2_of_a_vovnet_config_on_request():
    counts = main(["--config-file", os.path.join(ROOT, "configs", "iterative_vovnet99_fpn.yaml"),
                   "MODEL.BACKBONE.FREEZE_AT", "2"])
    assert counts["total"] - counts["trainable"] == STEM_AND_STAGE2
    assert counts["trainable_parts"]["backbone"] == counts["backbone"] - STEM_AND_STAGE2


def test_paste_config_components_beside_the_lab_table(capsys):
    counts = main(["--config-file", os.path.join(ROOT, "configs", "iterative_vovnet57_centermask_paste.yaml")])
    out = capsys.readouterr().out
    assert counts["FCOS head"] == 5_082_016 and counts["SAG-Mask head"] == 2_643_298 - 256 * 80 - 80
    assert counts["encoder"] == 0 and counts["input_proj"] == 0 and counts["RoI tokens"] == 0
    # The lab's V-57 CenterMask total less what this fusion does not build: MaskIoU head, the mask predictor,
    # the DETR encoder and the 256->256 input projection.
    assert counts["total"] == 119_427_808 - 16_340_304 - 20_560 - 7_890_432 - 65_792
    assert "CenterMask components ('paste' fusion)" in out
    assert "5,082,016" in out and "2,643,298" in out and "119,427,808" in out
