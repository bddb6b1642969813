#!/usr/bin/env bash
# Installs every Debian package that building and testing Tessera needs.
# Idempotent: does nothing when all of them are already installed.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libfuse3-dev fuse3
  libsqlite3-dev sqlite3
  libpq-dev postgresql
  libhiredis-dev redis-server
  libgtest-dev nlohmann-json3-dev
  liblz4-dev libzstd-dev libssl-dev openssl
  libcurl4-openssl-dev
  etcd-server
  python3
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "Installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
