"""tools/run_demo.py trains with the cores the machine's load leaves idle (at least one thread)."""
from tools.run_demo import training_threads


def test_threads_are_the_idle_cores_and_at_least_one():
    assert training_threads(2, 0.1) == 2  # quiet 2-core machine: both cores
    assert training_threads(2, 0.8) == 1  # one core busy
    assert training_threads(2, 7.5) == 1  # overloaded: one thread, never zero
    assert training_threads(16, 3.2) == 13
    assert training_threads(4, 0.0) == 4
