#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: redis-server and
# postgresql (server binaries only; the tests start private instances on loopback), and
# buildah and debootstrap for the container image test (tests/test_image.py builds the
# Dockerfile on a debootstrapped stand-in base and runs the image with chroot isolation).
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
[ -x /usr/sbin/debootstrap ] || command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} from Debian" >&2
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged services; the tests run their own, so stop those.
"${sudo_cmd[@]}" service redis-server stop >/dev/null 2>&1 || true
"${sudo_cmd[@]}" service postgresql stop >/dev/null 2>&1 || true
