#!/usr/bin/env bash
# What the test suite drives for real beyond the project's own dependencies: Debian's Chromium
# (web page tests), Prometheus (dashboard proof), LibreOffice + CJK fonts (PDF fixtures), util-linux
# (`unshare --net` for the Milvus-server tests), Redis (the fleet's state store), and Alibaba's official PAI-EAS SDK in the venv.
# Usage: install-test-system.sh VENV_DIR
set -euo pipefail
venv=${1:-.venv}
# The SDK pins protobuf<=3.20, which would break gRPC; with --no-deps it runs (in its own process,
# as the client tests run it) under PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "eas-prediction==0.36"

pkgs=(chromium prometheus libreoffice-writer-nogui fonts-wqy-zenhei util-linux redis-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install: apt packages ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
