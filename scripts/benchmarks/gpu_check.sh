#!/usr/bin/env bash
# One GPU check (<= 8 minutes on a CUDA machine): Whisper and Wav2Vec2 ASR throughput,
# torch prosody on CUDA (+ pytest -m gpu), openSMILE with 1/4/8/16 processes, and
# `atrisk extract --engine ray` end to end, written as one JSON.
#   scripts/benchmarks/gpu_check.sh --out docs/results/gpu_check.json
#   scripts/benchmarks/gpu_check.sh --dry-run --out /tmp/gpu_check_dry.json   # CPU, tiny sizes
# PYTHON overrides the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" scripts/benchmarks/gpu_check.py "$@"
