"""benchmarks/compare_step_time.py: variants are timed in turns, the table holds each variant's own overrides, and
bad variants fail with a message naming the option."""
import os
import sys

import pytest

from tests.model_helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import compare_step_time  # noqa: E402

TINY = os.path.join(ROOT, "configs", "tiny_cpu.yaml")


def test_two_variants_are_timed_and_the_first_is_the_reference(capsys):
    rows = compare_step_time.main(["--config-file", TINY, "--batch", "2", "--warmup", "0", "--rounds", "2",
                                   "--variant", "96", "128", "--variant", "64", "96", "MODEL.DETR.DEC_LAYERS", "1"])
    assert [row["variant"] for row in rows] == ["96 128", "64 96 MODEL.DETR.DEC_LAYERS 1"]
    assert rows[0]["relative"] == 1.0
    assert all(0 < row["min_ms"] <= row["median_ms"] for row in rows)
    assert rows[1]["relative"] == pytest.approx(rows[1]["median_ms"] / rows[0]["median_ms"])
    assert "64 96 MODEL.DETR.DEC_LAYERS 1" in capsys.readouterr().out


def test_variant_overrides_reach_the_model():
    times = compare_step_time.time_variants(TINY, [(64, 96, ["MODEL.DETR.DEC_LAYERS", "1"])], 1, 0, 1)
    assert len(times) == 1 and len(times[0]) == 1 and times[0][0] > 0


@pytest.mark.parametrize("words, message", [
    (["96"], "needs a height and a width"),
    (["96", "x"], "needs a height and a width"),
    (["96", "128", "MODEL.DETR.DEC_LAYERS"], "KEY VALUE pairs"),
])
def test_bad_variants_name_the_option(words, message):
    with pytest.raises(SystemExit, match=message):
        compare_step_time.parse_variant(words)


@pytest.mark.parametrize("config, opts, message", [
    ("nope.yaml", [], "nope.yaml: no such file"),
    ("tiny_cpu.yaml", ["MODEL.NO_SUCH_KEY", "1"], "MODEL.NO_SUCH_KEY"),
    ("demo_synthetic.yaml", ["MODEL.CENTERMASK.HEAD_CONVS", "0"], "MODEL.CENTERMASK.HEAD_CONVS must be >= 1"),
])
def test_bad_config_or_override_is_one_error_naming_it(config, opts, message):
    with pytest.raises(SystemExit, match=message) as stop:
        compare_step_time.time_variants(os.path.join(ROOT, "configs", config), [(64, 96, opts)], 1, 0, 1)
    assert str(stop.value).startswith("error: --variant 64 96")
