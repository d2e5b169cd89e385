"""The test suite, grouped like the project: tests/<package>/ tests that package; the files directly here test the
application (train_iterative_model.py) end to end.  Shared helpers: model_helpers.py, engine_standins.py,
reliability_helpers.py."""
import os

# The repository root (tests run from it and import its packages as top-level packages).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
