"""tools/run_demo.py: the threads it trains with, and the whole demo pipeline at toy length."""
import json
import os

import pytest

import tools.run_demo as run_demo
from tools.run_demo import busy_cores, main, training_processes, training_threads

from tests import ROOT


def test_threads_are_the_idle_cores_and_at_least_one():
    assert training_threads(2, 0.1) == 2  # quiet 2-core machine: both cores
    assert training_threads(2, 0.8) == 1  # one core busy
    assert training_threads(2, 7.5) == 1  # overloaded: one thread, never zero
    assert training_threads(16, 3.2) == 13
    assert training_threads(4, 0.0) == 4


def test_two_processes_as_soon_as_two_cores_are_idle():
    assert training_processes(1) == (1, 1)
    assert training_processes(2) == (2, 1)  # the quiet 2-core demo machine: one process per core
    assert training_processes(3) == (2, 1)
    assert training_processes(16) == (2, 8)
    assert training_processes(2, requested=1) == (1, 2)  # --processes 1: every idle core as a thread
    assert training_processes(3, requested=1) == (1, 3)
    assert training_processes(1, requested=2) == (2, 1)  # never zero threads


def test_busy_cores_is_the_non_idle_share_of_cpu_time_now(tmp_path, monkeypatch):
    """Measured over a short window from the kernel's CPU counters, not the 1-minute load average (which still
    counts the world generation the demo itself just ran)."""
    stat = tmp_path / "stat"
    monkeypatch.setattr(run_demo.os, "cpu_count", lambda: 2)

    def busy(before: str, after: str) -> float:
        stat.write_text(f"cpu  {before}\ncpu0 1 2 3 4\n")
        monkeypatch.setattr(run_demo.time, "sleep", lambda s: stat.write_text(f"cpu  {after}\ncpu0 1 2 3 4\n"))
        return busy_cores(0.5, str(stat))

    # user nice system idle iowait irq softirq: 1000 ticks pass, 250 of them idle or iowait -> 75 % of 2 cores.
    assert abs(busy("100 0 100 700 100 0 0", "600 0 350 900 150 0 0") - 1.5) < 1e-9
    assert training_threads(2, 1.5) == 1
    quiet = busy("100 0 100 700 100 0 0", "102 0 101 1697 100 0 0")  # 3 of 1000 ticks busy
    assert abs(quiet - 0.006) < 1e-9 and training_threads(2, quiet) == 2

    monkeypatch.setattr(run_demo.os, "getloadavg", lambda: (0.7, 0.0, 0.0))
    assert busy_cores(0.5, str(tmp_path / "missing")) == 0.7  # no /proc (macOS): the load average


def test_demo_pretrains_the_detector_then_trains_the_scene_graph_model_and_resumes(tmp_path, capsys):
    """The whole ``make demo`` pipeline at toy length: world -> detector (stage 1) -> converted initialisation ->
    scene-graph model (stage 2) -> test evaluation -> pictures; a second run skips the finished stages."""
    detector_config = tmp_path / "detector.yaml"
    detector_config.write_text(
        f'_BASE_: "{os.path.join(ROOT, "configs", "demo_synthetic_detector.yaml")}"\n'
        "SOLVER:\n  MAX_ITER: 2\n  STEPS: (1,)\n  WARMUP_ITERS: 1\n  IMS_PER_BATCH: 2\n")
    out = tmp_path / "demo"
    argv = ["--data-dir", str(tmp_path / "world"), "--output-dir", str(out), "--images", "40", "--num-drawn", "1",
            "--two-stage", "--detector-config-file", str(detector_config), "--processes", "2",
            "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "pre-trained detector on VG_val: AP50" in printed and "R @ 20/50/100" in printed
    for log in (out / "detector" / "log.txt", out / "log.txt"):  # both stages trained in two gloo processes
        assert "Rank 0 of 2 processes" in log.read_text()

    init = out / "detector" / "scene_graph_init.pth"
    assert (out / "detector" / "model_final.pth").is_file() and init.is_file()
    config = (out / "config.yaml").read_text()
    assert str(init) in config  # stage 2 started from the converted detector
    metrics = json.loads((out / "inference" / "VG_test" / "sgg_eval.json").read_text())
    assert 0.0 <= metrics["R@50"] <= 1.0
    assert (out / "demo" / "training_curves.png").stat().st_size > 0
    assert len(list((out / "demo").glob("*.json"))) == 1  # the one drawn test image's scene graph

    stamps = {path: path.stat().st_mtime_ns for path in (out / "detector" / "model_final.pth", init)}
    assert main(argv) == 0  # an interrupted or repeated demo continues: stage 1 is not redone
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


def test_a_missing_config_file_is_one_error_line_naming_the_flag_before_any_work(tmp_path):
    for flag in ("--config-file", "--detector-config-file"):
        with pytest.raises(SystemExit) as stop:
            main(["--data-dir", str(tmp_path / "world"), "--output-dir", str(tmp_path / "out"), "--two-stage",
                  flag, str(tmp_path / "nope.yaml")])
        assert str(stop.value) == f"error: {flag} {tmp_path / 'nope.yaml'} does not exist"
    assert not (tmp_path / "world").exists() and not (tmp_path / "out").exists()  # nothing was written
    with pytest.raises(SystemExit, match="--processes must be at least 1, got 0"):
        main(["--data-dir", str(tmp_path / "world"), "--processes", "0"])
