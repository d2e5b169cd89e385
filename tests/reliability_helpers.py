"""Shared pieces of the reliability tests: a tiny synthetic world, the command of a short deterministic CPU run,
subprocess runs of the real entry point (optionally armed with ``tests/reliability_site``'s kill switch), and
checks on what a run leaves in its output folder."""
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

import torch

from data.synthetic import config_overrides, generate_synthetic_vg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.yaml")
TRAIN_SCRIPT = os.path.join(ROOT, "train_iterative_model.py")
KILL_SWITCH_SITE = os.path.join(ROOT, "tests", "reliability_site")
# The temporary-file names of utils.file_io.atomic_write: "." + destination + "." + 8 random characters + ".tmp".
TEMP_FILE_NAME = re.compile(r"^\.(?P<destination>.+)\.[a-z0-9_]{8}\.tmp$")


def make_world(directory: str) -> List[str]:
    """A 20-image synthetic VG world (8 train, 2 val, 4 test images after the filters); its config overrides."""
    record = generate_synthetic_vg(directory, num_images=20, seed=3, number_of_validation_images=2)
    return [str(value) for value in config_overrides(directory, record)]


def short_run_overrides(world: List[str], output_dir: str) -> List[str]:
    """Six deterministic iterations on 128-160 px images: checkpoints after iterations 1, 3, 5 (and
    ``model_final``), evaluation of VG_val after iterations 2 and 5, no final test evaluation."""
    return world + [
        "OUTPUT_DIR", output_dir, "SEED", "7", "DETERMINISTIC", "True", "SOLVER.MAX_ITER", "6",
        "SOLVER.STEPS", "(4,)", "SOLVER.WARMUP_ITERS", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "3",
        "SOLVER.LOG_PERIOD", "1", "DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(128,)",
        "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
    ]


class TrainingProcess:
    """``python train_iterative_model.py <arguments>`` started in a fresh process, stdout and stderr to
    ``log_path``; with ``kill_at`` the kill switch of ``tests/reliability_site`` is armed there, with
    ``trace_writes`` every file write is traced to that file.  All runs use one CPU thread (the same arithmetic)."""

    def __init__(self, arguments: List[str], log_path: str, kill_at: Optional[str] = None,
                 trace_writes: Optional[str] = None) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([KILL_SWITCH_SITE, ROOT]))
        for name, value in (("RELIABILITY_KILL_AT", kill_at), ("RELIABILITY_TRACE_WRITES", trace_writes)):
            env.pop(name, None)
            if value:
                env[name] = value
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, TRAIN_SCRIPT, *arguments], cwd=ROOT, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 180) -> Tuple[int, str]:
        """(exit status, negative for a signal; everything the process printed)."""
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        with open(self.log_path) as log:
            return returncode, log.read()


def run_training(arguments: List[str], log_path: str, kill_at: Optional[str] = None) -> Tuple[int, str]:
    """Run :class:`TrainingProcess` to its end; returns its exit status and output."""
    return TrainingProcess(arguments, log_path, kill_at=kill_at).wait()


def temp_files(directory: str) -> List[str]:
    """Every leftover temporary file of an atomic write under ``directory``."""
    return sorted(os.path.join(root, name) for root, _, names in os.walk(directory)
                  for name in names if TEMP_FILE_NAME.match(name))


def load_checkpoint(path: str) -> Dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def tensors_differing(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> List[str]:
    """Keys whose tensors are not bit-identical (or present in one dict only)."""
    return sorted(set(a) ^ set(b)) + sorted(k for k in set(a) & set(b) if not torch.equal(a[k], b[k]))
