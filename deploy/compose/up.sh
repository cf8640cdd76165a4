#!/usr/bin/env bash
# One command for the whole compose stack: build the images (a debootstrapped Debian base when
# BASE_IMAGE is unset and no registry is reachable), then start everything.
#   deploy/compose/up.sh            # down: podman-compose -f deploy/compose.yaml down
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/podman/containers.conf}
if [ -z "${BASE_IMAGE:-}" ]; then
    podman/base-image.sh localhost/tierwise-base:bookworm
    export BASE_IMAGE=localhost/tierwise-base:bookworm
fi
ca=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    ca=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.pem:ro --build-arg PIP_CERT=/run/host-ca.pem)
fi
pm() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }
pm build --network=host --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" "${ca[@]}" \
    -t localhost/tierwise:latest -f ../Containerfile ..
pm build --network=host --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" "${ca[@]}" \
    --target train -t localhost/tierwise-train:latest -f ../Containerfile ..
pm build --network=host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -t localhost/tierwise-infra:latest -f compose/infra.Containerfile compose
exec podman-compose --podman-args="--runtime runc --cgroup-manager=cgroupfs" \
    -f compose.yaml up -d --no-build
