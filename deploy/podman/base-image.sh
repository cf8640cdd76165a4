#!/usr/bin/env bash
# Build a minimal Debian bookworm base image from Debian's own packages (no image registry needed)
# and import it into podman as $1 (default localhost/tierwise-base:bookworm). Kept when present.
#   deploy/podman/base-image.sh [IMAGE]
# Needs root, debootstrap and podman (apt-get install podman debootstrap runc).
set -euo pipefail
IMAGE=${1:-localhost/tierwise-base:bookworm}
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
podman() { command podman --runtime runc --cgroup-manager=cgroupfs "$@"; }
if podman image exists "$IMAGE"; then
    echo "base image $IMAGE: present (cached)"
    exit 0
fi
# the machine's own Debian mirror (deb822 or one-line sources), else deb.debian.org
mirror=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -v security | head -1 | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//' || true)
mirror=${mirror:-http://deb.debian.org/debian}
dir=$(mktemp -d /tmp/tierwise-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT
echo "debootstrap minbase bookworm from $mirror"
debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || { tail -20 "$dir.log"; exit 1; }
rm -f "$dir.log"
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | podman import - "$IMAGE" >/dev/null
echo "base image $IMAGE: built"
