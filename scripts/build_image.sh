#!/usr/bin/env bash
# Builds the container image (`make image`): with Docker where its daemon answers, else with
# Podman where it works, else with buildah (no daemon; chroot isolation, which also works
# where runc cannot start containers). IMAGE_BUILDER=docker|podman|buildah picks one;
# IMAGE names the tag (default llm-manager:latest); further arguments go to the build, e.g.
# --build-arg PYTHON_IMAGE=... (tests/test_image.py builds on a stand-in base that way).
# Podman and buildah write the Docker image format: OCI images cannot hold a HEALTHCHECK.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=${IMAGE:-llm-manager:latest}
builder=${IMAGE_BUILDER:-}
if [ -z "$builder" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then builder=docker
  elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then builder=podman
  elif command -v buildah >/dev/null 2>&1; then builder=buildah
  else echo "no image builder: install Docker, Podman or buildah (make system-deps installs buildah)" >&2; exit 1
  fi
fi
case "$builder" in
  docker) exec docker build --tag "$image" "$@" "$root" ;;
  podman) exec podman build --format docker --layers --force-rm --tag "$image" "$@" "$root" ;;
  buildah) exec buildah bud --isolation "${BUILDAH_ISOLATION:-chroot}" --format docker --layers --force-rm --tag "$image" "$@" "$root" ;;
  *) echo "IMAGE_BUILDER must be docker, podman or buildah, not $builder" >&2; exit 2 ;;
esac
