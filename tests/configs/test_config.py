"""configs.defaults.CfgNode: file/_BASE_ merges, command-line overrides and the errors they raise."""
import pytest
import yaml

from configs.defaults import get_cfg


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 5.0
    assert b.SOLVER.BASE_LR == 1e-4


def test_base_inheritance_child_overrides_base_and_base_path_is_relative_to_the_file(tmp_path):
    (tmp_path / "bases").mkdir()
    _write(tmp_path / "bases" / "base.yaml", "SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 100\nMODEL:\n  DEVICE: cpu\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: bases/base.yaml\nSOLVER:\n  MAX_ITER: 7\n")
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.MODEL.DEVICE) == (0.5, 7, "cpu")
    assert cfg.SOLVER.GAMMA == 0.1  # untouched default


def test_command_line_overrides_win_and_are_typed(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(_write(tmp_path / "c.yaml", "SOLVER:\n  IMS_PER_BATCH: 32\n"))
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", "12", "SOLVER.STEPS", "(100, 200)", "OUTPUT_DIR", "/tmp/x",
                         "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1", "INPUT.CROP.SIZE", "(384, 600)"])
    assert cfg.SOLVER.IMS_PER_BATCH == 12
    assert cfg.SOLVER.STEPS == (100, 200)
    assert cfg.OUTPUT_DIR == "/tmp/x"
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 1.0 and isinstance(cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE, float)
    assert cfg.INPUT.CROP.SIZE == [384, 600]  # tuple coerced to the default's list type


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = _write(tmp_path / "typo.yaml", "SOLVER:\n  BASE_LRR: 0.1\n")
    expected = r"typo.yaml: unknown config key 'SOLVER.BASE_LRR' \(did you mean SOLVER.BASE_LR"
    with pytest.raises(KeyError, match=expected):
        get_cfg().merge_from_file(path)


def test_unknown_key_inherited_from_base_names_the_top_file(tmp_path):
    _write(tmp_path / "base.yaml", "MODEL:\n  DETR:\n    NOT_A_KEY: 1\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(KeyError, match=r"child.yaml: unknown config key 'MODEL.DETR.NOT_A_KEY'"):
        get_cfg().merge_from_file(child)


def test_unknown_key_on_command_line_names_the_key():
    with pytest.raises(KeyError, match=r"command line: unknown config key 'SOLVER.NOPE'"):
        get_cfg().merge_from_list(["SOLVER.NOPE", "1"])
    with pytest.raises(KeyError, match=r"unknown config key 'NOPE'"):
        get_cfg().merge_from_list(["NOPE.DEEPER", "1"])


@pytest.mark.parametrize("overrides, message", [
    (["SOLVER.MAX_ITER", "many"], r"'SOLVER.MAX_ITER' expects type int \(default 250000\), got str 'many'"),
    (["SOLVER.BASE_LR", "True"], r"'SOLVER.BASE_LR' expects type float"),
    (["MODEL.DEVICE", "3"], r"'MODEL.DEVICE' expects type str"),
    (["SOLVER", "1"], r"'SOLVER' is a group of keys"),
    (["SOLVER.MAX_ITER"], r"KEY VALUE pairs"),
])
def test_wrong_types_and_shapes_on_command_line_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_cfg().merge_from_list(overrides)


def test_wrong_type_in_file_names_key_and_file(tmp_path):
    path = _write(tmp_path / "bad.yaml", "SOLVER:\n  STEPS: 1000\n")
    with pytest.raises(ValueError, match=r"bad.yaml: config key 'SOLVER.STEPS' expects type tuple"):
        get_cfg().merge_from_file(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        get_cfg().merge_from_file(str(tmp_path / "absent.yaml"))
    child = _write(tmp_path / "child.yaml", "_BASE_: gone.yaml\n")
    with pytest.raises(FileNotFoundError, match="gone.yaml"):
        get_cfg().merge_from_file(child)


def test_frozen_config_rejects_merges():
    cfg = get_cfg()
    cfg.freeze()
    with pytest.raises(AttributeError, match="frozen"):
        cfg.merge_from_list(["SEED", "1"])


def test_dump_round_trips(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.STEPS", "(10, 20)", "MODEL.DEVICE", "cpu"])
    path = _write(tmp_path / "dumped.yaml", cfg.dump())
    again = get_cfg()
    again.merge_from_file(path)
    assert again == cfg
    assert yaml.safe_load(cfg.dump())["SOLVER"]["STEPS"] == [10, 20]
