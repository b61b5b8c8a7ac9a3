#!/usr/bin/env bash
# Installs everything cairn needs on a fresh Debian 12 + Node 20 machine (run as root):
# the Debian packages for FUSE mounts (libfuse-dev and pkg-config: @cocalc/fuse-native
# compiles against libfuse2 at npm ci) and filesystem tools used by image tests, then npm ci.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    libfuse2 libfuse-dev pkg-config fuse3 e2fsprogs dosfstools util-linux fdisk mtools \
    ntfs-3g attr acl >/dev/null
fi
npm ci --no-audit --no-fund
