#!/usr/bin/env bash
# Debian packages the test suite drives for real: Chromium (web page tests),
# Prometheus (dashboard proof), LibreOffice + CJK fonts (PDF fixtures), util-linux (`unshare --net`
# for the Milvus-server tests).
set -euo pipefail
pkgs=(chromium prometheus libreoffice-writer-nogui fonts-wqy-zenhei util-linux)
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
