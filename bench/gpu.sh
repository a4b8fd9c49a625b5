#!/usr/bin/env bash
# On a GPU box, in under five minutes: the CUDA tests, then training throughput (tokens/s, MFU against the
# GPU's bf16 peak; with and without --compile) and generation throughput. Record the figures in
# docs/PERFORMANCE.md.   Usage: bench/gpu.sh   (PYTHON=path/to/python to use another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== CUDA tests"
timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py
echo "== training throughput"
timeout 150 "$PYTHON" bench/train_cuda.py --presets small,medium --steps 60   # Muon + AdamW (the default), AdamW alone
timeout 100 "$PYTHON" bench/train_cuda.py --presets small --steps 60 --compile on --optimizers auto
echo "== generation throughput"
timeout 60 "$PYTHON" bench/generate.py --device cuda --repeats 3
