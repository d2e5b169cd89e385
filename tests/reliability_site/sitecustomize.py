"""Test-only fault injection for the reliability tests: SIGKILL this process at a named point of a training run.

Python imports ``sitecustomize`` at start-up from the first ``PYTHONPATH`` entry that has one, so putting this folder
first on ``PYTHONPATH`` arms every process of a run, the ones ``--num-gpus`` spawns included.  Nothing happens
unless ``RELIABILITY_KILL_AT`` is set; the project's code never imports this file.

``RELIABILITY_KILL_AT=<point>:<argument>[@<rank>]`` (only in process ``<rank>`` when given, default: every process):

* ``step:<i>`` mid-iteration ``i``: after the forward pass and the recording of its losses, before backward and
  the optimizer step;
* ``eval:<i>`` during the evaluation after iteration ``i``, once the evaluator has processed its first image;
* ``checkpoint:<name>`` while ``<name>.pth`` is being written: half of its bytes are in the temporary file.

``RELIABILITY_TRACE_WRITES=<file>`` appends one line per file opened for writing (``open <path>``) and per rename
(``rename <source> <destination>``) to ``<file>``, through an audit hook, so a test can check that every output
is a temporary file renamed into place.
"""
import io
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _in_target_rank(rank: str) -> bool:
    if not rank:
        return True
    from utils import comm

    return comm.get_rank() == int(rank)


def _kill_mid_step(iteration: int, rank: str) -> None:
    from engine.train_loop import SimpleTrainer

    # The step's loss bookkeeping, called after the forward pass and before backward (its name changed once: a
    # kill switch that finds neither must fail, not silently let the run finish).
    name = next((n for n in ("_record_losses", "_check_finite_and_record") if hasattr(SimpleTrainer, n)), None)
    if name is None:
        raise AttributeError("RELIABILITY_KILL_AT step: SimpleTrainer has no _record_losses to hook")
    record_losses = getattr(SimpleTrainer, name)

    def record_then_die(self, loss_dict, data_time):
        record_losses(self, loss_dict, data_time)
        if self.iter == iteration and _in_target_rank(rank):
            _die()

    setattr(SimpleTrainer, name, record_then_die)


def _kill_mid_evaluation(iteration: int, rank: str) -> None:
    from engine.hooks import EvalHook
    from evaluation.sgg_evaluator import SGGEvaluator

    evaluating_after = {"iteration": None}
    run_evaluation, process = EvalHook._evaluate, SGGEvaluator.process

    def remember_iteration(self):
        evaluating_after["iteration"] = self.trainer.iter
        run_evaluation(self)

    def process_then_die(self, inputs, outputs):
        process(self, inputs, outputs)
        if evaluating_after["iteration"] == iteration and _in_target_rank(rank):
            _die()

    EvalHook._evaluate = remember_iteration
    SGGEvaluator.process = process_then_die


def _kill_mid_checkpoint_write(name: str, rank: str) -> None:
    import engine.checkpoint

    atomic_write = engine.checkpoint.atomic_write

    def write_half_then_die(path, write):
        if os.path.basename(path) != f"{name}.pth" or not _in_target_rank(rank):
            return atomic_write(path, write)

        def write_half(f):
            buffer = io.BytesIO()
            write(buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            _die()

        return atomic_write(path, write_half)

    engine.checkpoint.atomic_write = write_half_then_die


def _trace_writes(trace_path: str) -> None:
    trace = open(trace_path, "a", buffering=1)

    def audit(event, args):
        if event == "open" and args[0] is not None and not isinstance(args[0], int):
            mode, flags = args[1], args[2]
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and flags & (os.O_WRONLY | os.O_RDWR))
            if writing:
                trace.write(f"open {os.path.abspath(os.fsdecode(args[0]))}\n")
        elif event == "os.rename":
            trace.write(f"rename {os.path.abspath(os.fsdecode(args[0]))} {os.path.abspath(os.fsdecode(args[1]))}\n")

    sys.addaudithook(audit)


def _arm() -> None:
    trace_path = os.environ.get("RELIABILITY_TRACE_WRITES")
    if trace_path:
        _trace_writes(trace_path)
    kill_at = os.environ.get("RELIABILITY_KILL_AT")
    if not kill_at:
        return
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    point, _, argument = kill_at.partition(":")
    argument, _, rank = argument.partition("@")
    install = {"step": lambda: _kill_mid_step(int(argument), rank),
               "eval": lambda: _kill_mid_evaluation(int(argument), rank),
               "checkpoint": lambda: _kill_mid_checkpoint_write(argument, rank)}
    if point not in install:
        raise ValueError(f"RELIABILITY_KILL_AT: unknown point {point!r}; expected one of {sorted(install)}")
    install[point]()


_arm()
