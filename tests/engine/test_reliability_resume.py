"""Kill-anywhere resume: a CPU training run SIGKILLed mid-evaluation, mid-checkpoint-write and mid-iteration, and
restarted with ``--resume`` after each kill, continues every time from its last complete checkpoint and ends with
the weights, optimizer state, best model and metrics.json iterations of an uninterrupted run, bit for bit; every
output file is a temporary file renamed into place, with the umask's permissions, and no temporary file survives a
resume.

The kills form one chain (each resume is the next killed run): every Python process costs seconds of imports, and
the uninterrupted reference run proceeds alongside it in a second process.
"""
import json
import os
import signal

import pytest

from tests.reliability_helpers import (TEMP_FILE_NAME, TINY_CONFIG, TrainingProcess, load_checkpoint, make_world,
                                       run_training, short_run_overrides, temp_files, tensors_differing)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(str(tmp_path_factory.mktemp("world")))


@pytest.fixture(scope="module")
def reference_process(world, tmp_path_factory):
    """The uninterrupted run, with every file write traced, started at once in its own process."""
    folder = tmp_path_factory.mktemp("reference")
    out, trace = str(folder / "out"), str(folder / "writes.txt")
    process = TrainingProcess(["--config-file", TINY_CONFIG, *short_run_overrides(world, out)],
                              str(folder / "log.txt"), trace_writes=trace)
    yield process, out, trace
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait()


@pytest.fixture(scope="module")
def reference(reference_process):
    """The finished reference run: its output folder and the lines of its write trace."""
    process, out, trace = reference_process
    returncode, output = process.wait()
    assert returncode == 0, output[-3000:]
    with open(trace) as f:
        return out, f.read().splitlines()


def _logged_iterations_and_lr(output_dir):
    """(iteration, lr) of each metrics.json line (losses are logged as medians over a window that restarts with
    the process, so those differ after a resume even though the weights do not)."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(row["iteration"], row.get("lr")) for row in rows]


# (kill point, the last complete checkpoint when the process dies, the iteration the next --resume starts at)
KILL_CHAIN = [
    ("eval:2", "model_0000001.pth", 2),  # evaluating after iteration 2, before that iteration's checkpoint
    ("checkpoint:model_0000003", "model_0000001.pth", 2),  # half of model_0000003.pth is on disk
    ("step:4", "model_0000003.pth", 4),  # after the forward pass of iteration 4, before its optimizer step
]


def test_run_killed_anywhere_resumes_to_the_uninterrupted_result(world, reference_process, tmp_path, request):
    out = str(tmp_path / "run")
    command = ["--config-file", TINY_CONFIG, *short_run_overrides(world, out)]
    resuming_at = None
    for attempt, (kill_at, last_complete, next_start) in enumerate(KILL_CHAIN):
        returncode, output = run_training((["--resume"] if attempt else []) + command,
                                          str(tmp_path / f"log{attempt}.txt"), kill_at=kill_at)
        assert returncode == -signal.SIGKILL, output[-3000:]
        if resuming_at is not None:
            assert f"Resuming at iteration {resuming_at}" in output, kill_at
        with open(os.path.join(out, "last_checkpoint")) as f:
            assert f.read() == last_complete, kill_at
        assert load_checkpoint(os.path.join(out, last_complete))["iteration"] == next_start - 1
        assert not os.path.exists(os.path.join(out, "model_final.pth"))
        leftovers = [os.path.basename(path) for path in temp_files(out)]
        if kill_at.startswith("checkpoint:"):  # the torn write exists only as a temporary file
            assert not os.path.exists(os.path.join(out, "model_0000003.pth"))
            assert len(leftovers) == 1 and leftovers[0].startswith(".model_0000003.pth."), leftovers
        else:
            assert leftovers == [], kill_at  # the previous kill's temporary file was removed on resume
        resuming_at = next_start

    returncode, output = run_training(["--resume", *command], str(tmp_path / "log_final.txt"))
    assert returncode == 0, output[-3000:]
    assert f"Resuming at iteration {resuming_at}" in output
    assert temp_files(out) == []

    reference_dir, _ = request.getfixturevalue("reference")  # waits for the reference run, started alongside
    for name in ("model_final.pth", "best_model_final.pth"):
        ours, theirs = load_checkpoint(os.path.join(out, name)), load_checkpoint(os.path.join(reference_dir, name))
        assert ours["iteration"] == theirs["iteration"], name
        assert tensors_differing(ours["model"], theirs["model"]) == [], name
    ours, theirs = (load_checkpoint(os.path.join(d, "model_final.pth")) for d in (out, reference_dir))
    assert len(ours["optimizer"]["state"]) == len(theirs["optimizer"]["state"]) > 0
    for state_ours, state_theirs in zip(ours["optimizer"]["state"].values(), theirs["optimizer"]["state"].values()):
        assert tensors_differing(state_ours, state_theirs) == []
    assert ours["scheduler"] == theirs["scheduler"]
    assert ours["best_checkpointer"] == theirs["best_checkpointer"]
    assert _logged_iterations_and_lr(out) == _logged_iterations_and_lr(reference_dir)  # each iteration once


# Outputs that must only ever appear through a rename (metrics.json, log.txt and TensorBoard events are
# append-only logs; metrics.json drops a torn last line on resume).
ATOMIC_OUTPUTS = ("config.yaml", "run_info.json", "last_checkpoint", "model_0000001.pth", "model_0000003.pth",
                  "model_0000005.pth", "model_final.pth", "best_model_final.pth",
                  os.path.join("inference", "VG_val", "sgg_eval.json"),
                  os.path.join("inference", "VG_val", "sgg_predictions.pt"))


def test_every_output_is_a_temporary_file_renamed_into_place(reference):
    out, trace = reference
    opened = {line.split(" ", 1)[1] for line in trace if line.startswith("open ")}
    renames = [line.split(" ")[1:] for line in trace if line.startswith("rename ")]
    for name in ATOMIC_OUTPUTS:
        path = os.path.join(out, name)
        assert os.path.isfile(path), name
        assert path not in opened, f"{name} was opened for writing in place"
        sources = [source for source, destination in renames if destination == path]
        assert sources, f"{name} was never renamed into place"
        for source in sources:
            match = TEMP_FILE_NAME.match(os.path.basename(source))
            assert match and match["destination"] == os.path.basename(name), source
            assert os.path.dirname(source) == os.path.dirname(path) and source in opened


def test_outputs_get_the_umask_permissions(reference):
    out, _ = reference
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ATOMIC_OUTPUTS:
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~umask, name
