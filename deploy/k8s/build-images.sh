#!/usr/bin/env bash
# Builds the images the manifests run, one per service from deploy/Dockerfile, each with
# only its own dependency group (build-arg SERVICE).
#   deploy/k8s/build-images.sh dev                          # ibflow-<name>:dev, for overlays/dev
#   deploy/k8s/build-images.sh 0.1.0 registry.example.com/ibflow   # then push them
set -euo pipefail
tag=${1:?usage: build-images.sh TAG [REGISTRY]}
prefix=${2:+$2/}
cd "$(dirname "$0")/../.."
# image, SERVICE build-arg: the migration image runs every service's migrations.
while read -r image service; do
  docker build -f deploy/Dockerfile --build-arg "SERVICE=$service" -t "$prefix$image:$tag" .
done <<'IMAGES'
ibflow-artifacts artifacts
ibflow-scheduler scheduler
ibflow-signals signals
ibflow-gateway gateway
ibflow-migrate artifacts,scheduler
IMAGES
