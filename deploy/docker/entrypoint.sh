#!/bin/sh
# Entry point of the EventFlow image. EVENTFLOW_ENV_FILE (if set) names a file of NAME=value lines (the service's
# own secrets, written by the secrets bootstrap of docker-compose.yml or mounted from a Kubernetes Secret): they
# are read at start, never baked into the image. With no command, it runs $EVENTFLOW_SERVICE on its usual port.
set -eu
if [ -n "${EVENTFLOW_ENV_FILE:-}" ]; then
  if [ ! -r "$EVENTFLOW_ENV_FILE" ]; then
    echo "eventflow: EVENTFLOW_ENV_FILE=$EVENTFLOW_ENV_FILE is not readable" >&2
    exit 78
  fi
  set -a
  . "$EVENTFLOW_ENV_FILE"
  set +a
fi
if [ "$#" -eq 0 ]; then
  case "${EVENTFLOW_SERVICE:-gateway}" in
    users) port=8001 ;;
    events) port=8002 ;;
    reservations) port=8003 ;;
    gateway) port=8080 ;;
    *) echo "eventflow: unknown EVENTFLOW_SERVICE=${EVENTFLOW_SERVICE}" >&2; exit 64 ;;
  esac
  exec python -m "services.${EVENTFLOW_SERVICE:-gateway}.main" --host 0.0.0.0 --port "${EVENTFLOW_PORT:-$port}"
fi
exec "$@"
