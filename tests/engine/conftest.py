"""Fixtures of the engine tests."""
import pytest

from tests.engine_standins import reset_stand_in_switches


@pytest.fixture(autouse=True)
def _reset_stand_in_switches():
    """Every engine test starts with StandInTrainer's switches off, whatever the previous test set."""
    yield
    reset_stand_in_switches()
