#!/usr/bin/env bash
# One 10-minute GPU session: FAMR and the retrain-free baselines on a torchvision ResNet-50
# over the Tiny-ImageNet subset (224 px), with images/s and peak memory per method.
#   bash benchmarks/gpu_imagefolder.sh [extra flags for gpu_imagefolder.py]
# Needs a CUDA GPU and the shared data at ../shared/data/tiny-imagenet-200-sub10.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PY=${PYTHON:-.venv/bin/python}
# training ~15 epochs of 5,000 images at 224 px, then 12 unlearning runs; about 5-7 minutes on an H100
timeout 570 "$PY" benchmarks/gpu_imagefolder.py --device cuda "$@"
