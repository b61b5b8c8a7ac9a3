#!/usr/bin/env bash
# Installs everything cairn needs on a fresh Debian 12 + Node 20 machine (run as root):
# the Debian packages for FUSE mounts (libfuse-dev and pkg-config: @cocalc/fuse-native
# compiles against libfuse2 at npm ci) and filesystem tools used by image tests, Ceph's
# monitor, OSD and radosgw (a real S3 server for the S3 tests, see scripts/rgw-s3.sh), then npm ci.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    libfuse2 libfuse-dev pkg-config fuse3 e2fsprogs dosfstools util-linux fdisk mtools \
    ntfs-3g attr acl \
    ceph-mon ceph-osd radosgw >/dev/null
fi
npm ci --no-audit --no-fund
