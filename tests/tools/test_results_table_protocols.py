"""tools/results_table.py names each row's evaluation protocol and footnotes a table that mixes protocols."""
import json

from configs.defaults import get_cfg
from tools.results_table import main as table_main


def make_run(root, name, protocol=None, r100=0.25):
    """A run folder with config.yaml, parameters.json and inference/VG_test/sgg_eval.json (``protocol`` key only
    when given, as written before TEST.SGG_PROTOCOL existed otherwise)."""
    run = root / name
    (run / "inference" / "VG_test").mkdir(parents=True)
    (run / "config.yaml").write_text(get_cfg().dump())
    (run / "parameters.json").write_text(json.dumps({"backbone": 10, "total": 20}))
    metrics = {f"{m}@{k}": r100 for m in ("R", "ng-R", "zR", "mR", "ng-mR") for k in (20, 50, 100)}
    metrics.update(AP50=0.5, AP=0.3)
    if protocol is not None:
        metrics["protocol"] = protocol
    (run / "inference" / "VG_test" / "sgg_eval.json").write_text(json.dumps(metrics))
    return str(run)


def table(tmp_path, runs, names, capsys):
    assert table_main(runs + ["--names", *names]) == 0
    return capsys.readouterr().out


def test_one_protocol_is_named_in_the_title_and_rows(tmp_path, capsys):
    runs = [make_run(tmp_path, "a", "iterativesg"), make_run(tmp_path, "b", "iterativesg", 0.3)]
    text = table(tmp_path, runs, ["A", "B"], capsys)
    assert "### Scene graph generation (sgdet, VG_test, %, protocol iterativesg)" in text
    assert "| A | 25.00/25.00/25.00 | 25.00/25.00/25.00 | 25.00/25.00/25.00 | 25.00/25.00/25.00 | " \
           "25.00/25.00/25.00 | iterativesg |" in text
    assert "| B | 30.00/30.00/30.00 |" in text and "not directly comparable" not in text


def test_mixed_protocols_are_footnoted(tmp_path, capsys):
    runs = [make_run(tmp_path, "old"), make_run(tmp_path, "ours", "iterativesg")]  # "old" predates the key
    text = table(tmp_path, runs, ["A", "Ours"], capsys)
    assert "### Scene graph generation (sgdet, VG_test, %)" in text
    assert text.count("| standard¹ |") == 1 and text.count("| iterativesg² |") == 1
    lines = text.splitlines()
    note = lines.index("The rows were evaluated with different protocols, whose numbers are not directly "
                       "comparable (docs/PROTOCOL.md):")
    assert lines[note + 1].startswith("- ¹ `standard`: Scene-Graph-Benchmark: images without rows count 0")
    assert lines[note + 2].startswith("- ² `iterativesg`: released IterativeSG evaluator: images without rows skipped")


def test_unknown_protocol_is_an_error(tmp_path, capsys):
    run = make_run(tmp_path, "x", "paper")
    assert table_main([run]) == 2
    assert "sgg_eval.json: unknown protocol 'paper'" in capsys.readouterr().err
