# One command each: `make test` (the test suite), `make demo` (train + evaluate on the synthetic world, CPU) and
# `make web` (the web demo of the model `make demo` trained, http://127.0.0.1:7860).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= output/demo_data
DEMO_OUT ?= output/demo

.PHONY: venv test demo web clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q tests

demo: venv
	$(PY) tools/run_demo.py --data-dir $(DEMO_DIR) --output-dir $(DEMO_OUT)

web: venv
	$(PY) tools/web_demo.py

clean:
	rm -rf output
