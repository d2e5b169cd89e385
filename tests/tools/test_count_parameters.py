"""tools/count_parameters.py reproduces the parameter counts of docs/MODEL.md for every released config."""
import os
import subprocess
import sys

import pytest

from tools.count_parameters import main

from tests import ROOT

# (config, backbone, total): the ResNet-101/DETR row A and the lab's VoVNetV2-FPN variants.
EXPECTED = [
    ("iterative_model.yaml", 42_394_816, 93_251_470),
    ("iterative_vovnet39_fpn.yaml", None, 79_102_606),
    ("iterative_vovnet57_fpn.yaml", None, 95_362_190),
    ("iterative_vovnet99_fpn.yaml", None, 123_408_270),
]


@pytest.mark.parametrize("config,backbone,total", EXPECTED)
def test_released_configs_have_the_published_sizes(config, backbone, total, capsys):
    counts = main(["--config-file", os.path.join(ROOT, "configs", config)])
    printed = capsys.readouterr().out.splitlines()
    assert f"total: {total}" in printed
    assert f"backbone: {counts['backbone']}" in printed
    if backbone is not None:
        assert counts["backbone"] == backbone
    in_channels = 2048 if config == "iterative_model.yaml" else 256
    # Everything but the backbone: input projection + the transformer parts listed in docs/MODEL.md (Heads).
    assert counts["total"] - counts["backbone"] == (in_channels * 256 + 256) + 230_400 + 7_890_432 \
        + 28_417_536 + 13_609_216 + 184_526
    assert counts["other"] == 0


def test_command_line_overrides_and_output_format():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "count_parameters.py"), "--config-file",
         os.path.join(ROOT, "configs", "tiny_cpu.yaml"), "MODEL.DETR.NUM_OBJECT_QUERIES", "10"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ") for line in result.stdout.splitlines() if ": " in line)
    assert int(lines["total"]) > int(lines["backbone"]) > 0
    # Three 10-query embeddings of width 64.
    queries_row = next(line for line in result.stdout.splitlines() if line.startswith("queries"))
    assert queries_row.split()[-1] == f"{3 * 10 * 64:,}"


def test_bad_override_names_the_key():
    with pytest.raises(KeyError, match="MODEL.DETR.NO_SUCH_KEY"):
        main(["--config-file", os.path.join(ROOT, "configs", "tiny_cpu.yaml"), "MODEL.DETR.NO_SUCH_KEY", "1"])
