#!/usr/bin/env bash
# Makes a local stand-in for the official python:3.11-slim base in buildah's image storage,
# for machines that reach no image registry (the test suite's; tests/test_image.py):
# Debian bookworm's minbase root file system with Debian's Python 3.11 (debootstrap, from the
# Debian mirror apt uses), plus this host's CA bundle, so pip in the build trusts the TLS setup
# the host reaches package registries through. Kept in buildah's storage (/var/lib/containers),
# which outlives a checkout: later runs find it and return at once.
#
# What differs from the official image: Python is Debian's (/usr/bin/python3, 3.11.2, no
# `python` alias; the official one is built from source in /usr/local), and the CA bundle is
# this host's. The Dockerfile names only `python3` before its venv exists, so it builds on both.
#
# Usage: scripts/image_stand_in_base.sh [IMAGE]   (default localhost/llm-manager-base:stand-in)
set -euo pipefail
image=${1:-localhost/llm-manager-base:stand-in}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
for command in buildah debootstrap; do
  command -v "$command" >/dev/null 2>&1 || { echo "$command is not installed: run make system-deps" >&2; exit 1; }
done
# One build at a time on this machine (CI runs of several checkouts share buildah's storage).
exec 9>"${TMPDIR:-/tmp}/llm-manager-stand-in.lock"
flock 9
if buildah inspect --type image "$image" >/dev/null 2>&1; then
  echo "stand-in base $image: cached"
  exit 0
fi
rootfs=$(mktemp -d)
container=""
cleanup() {
  [ -n "$container" ] && buildah rm "$container" >/dev/null 2>&1 || true
  rm -rf "$rootfs"
}
trap cleanup EXIT
echo "stand-in base $image: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# As slim as the official base: no package lists or downloaded packages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
container=$(buildah from scratch)
mountpoint=$(buildah mount "$container")
tar -C "$rootfs" -c . | tar -C "$mountpoint" -x
buildah umount "$container" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd python3 "$container"
buildah commit --quiet --rm "$container" "$image" >/dev/null
container=""
echo "stand-in base $image: built"
