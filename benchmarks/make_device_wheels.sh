#!/usr/bin/env bash
# Wheels for an offline GPU machine (Python 3.12, x86-64) that already has torch, torchvision, h5py, scipy, numpy,
# pyyaml, tqdm, pillow, tensorboard and matplotlib but not the config/evaluation libraries this project needs.
# Run here, from the repository root, before the device call; carry ".whl" to the device, where
# benchmarks/run_gpu_benchmarks.sh installs them (pip install --no-index --target).  .whl/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# Binary wheels for the device's Python (pycocotools has a compiled part).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl yacs==0.1.8 termcolor pycocotools==2.0.11
# fvcore and iopath are source-only on PyPI and pure Python: build universal wheels here.
python3 -m pip wheel -q --no-deps -w .whl fvcore==0.1.5.post20221221 iopath==0.1.10
ls .whl
