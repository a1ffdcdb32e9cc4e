#!/usr/bin/env bash
# The prepared GPU check (issue 21): at most 8 minutes on one H100/H200, results committed.
#
#   bash benchmarks/gpu_check.sh                   # on the GPU: benchmarks/results/gpu_check_*.json
#                                                  # and their BENCHMARKS.md sections
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh DIR   # the same steps on the CPU, tiny
#                                                  # settings (ResNet-20 for ResNet-18, 300
#                                                  # images), results in DIR (tests/test_gpu_check.py)
#
# 1. CIFAR-10 class 3 with ResNet-18 (the gpu profile): original and retrained models trained
#    here for a reduced budget (6 epochs), then famr and the strongest baselines with the attack
#    columns (linear probe, relearning), configurations from the CPU validation study.
# 2. The file data path on a torchvision ResNet-50 (Tiny-ImageNet subset at 224 px, 8 decoding
#    workers): training, FAMR and baselines, and streaming evaluation, with images/s and peak
#    GPU memory.
# 3. One process under torchrun with NCCL (gloo on the CPU): famr forget end to end (the process
#    group is started and the GPU bound; with one rank nothing is gathered).
# The steps' time limits add up to 8 minutes (290 + 130 + 60 s), model start-up included.
# Needs the shared data at ../shared/data (cifar10, tiny-imagenet-200-sub10).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
start=$SECONDS
if [ -n "${GPU_CHECK_TINY:-}" ]; then
  OUT=${1:?GPU_CHECK_TINY needs an output folder}
  DEVICE=cpu
  CIFAR=(--arch resnet20 --subset 300 --epochs 1 --methods famr scrub --cache "$OUT/cache")
  IMAGES=(--arch torchvision:resnet18 --image-size 32 --epochs 1 --max-steps 2 --methods famr --workers 1)
  LIMIT=(timeout 600)
else
  OUT=benchmarks/results
  DEVICE=cuda
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  CIFAR=(--epochs 6 --methods famr famr_head famr_retain neggrad_plus salun scrub)
  IMAGES=(--epochs 4 --methods famr famr_retain neggrad_plus scrub --workers 8)
  LIMIT=(timeout 290)
fi
mkdir -p "$OUT"
"${LIMIT[@]}" "$PY" benchmarks/cifar10_classwise.py --profile gpu --study cpu --device "$DEVICE" \
  --classes 3 "${CIFAR[@]}" --out "$OUT/gpu_check_cifar10.json"
echo "gpu_check: CIFAR-10 block done at $((SECONDS - start)) s"
timeout 130 "$PY" benchmarks/gpu_imagefolder.py --device "$DEVICE" --data-path files "${IMAGES[@]}" \
  --out "$OUT/gpu_check_imagefolder.json"
echo "gpu_check: ImageFolder block done at $((SECONDS - start)) s"
"$PY" -m famr train --epochs 2 --device "$DEVICE" --out "$OUT/ddp/digits.safetensors" --quiet --overwrite
OMP_NUM_THREADS=1 timeout 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
  -m famr.cli forget --checkpoint "$OUT/ddp/digits.safetensors" --classes 3 --device "$DEVICE" \
  --out "$OUT/ddp/forgot.safetensors" --quiet --overwrite
"$PY" -m famr verify "$OUT/ddp/forgot.audit.json" --device "$DEVICE" | tail -1
echo "gpu_check: torchrun ($([ "$DEVICE" = cuda ] && echo NCCL || echo gloo)) done; total $((SECONDS - start)) s"
