#!/usr/bin/env bash
# Installs dependencies, builds Tessera, formats a volume on the embedded
# default (SQLite metadata + a local directory for data) and mounts it.
#   TESSERA_META   metadata URL    (default sqlite3://$HOME/.tessera/tessera.db)
#   TESSERA_MOUNT  mount point     (default $HOME/tessera)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh build >/dev/null

meta="${TESSERA_META:-sqlite3://$HOME/.tessera/tessera.db}"
mnt="${TESSERA_MOUNT:-$HOME/tessera}"
if grep -q " $(realpath -m "$mnt") fuse.tessera " /proc/self/mountinfo; then
  echo "A tessera volume is already mounted at $mnt"
  exit 0
fi
build/tessera format "$meta" tessera
mkdir -p "$mnt"
build/tessera mount -d "$meta" "$mnt"
echo
echo "Volume 'tessera' is mounted at $mnt"
echo "  metadata: $meta"
echo "  status:   build/tessera status $meta"
echo "  unmount:  build/tessera umount $mnt"
