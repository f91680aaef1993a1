#!/bin/sh
# One-GPU rehearsal (< 8 min on an H200): the seed's 4 trainings, index encoding, ITM re-ranking -> benchmarks/results/gpu_rehearsal.{json,md}
cd "$(dirname "$0")/.." && PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" benchmarks/gpu_rehearsal.py --device cuda "$@"
