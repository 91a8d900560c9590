# Shared by scripts/test, scripts/local and .ci/run: make sure a Pub/Sub
# emulator is reachable and PUBSUB_EMULATOR_HOST points at it.
#
# When PUBSUB_EMULATOR_HOST is already set, that emulator is used as it is.
# Otherwise Google's emulator is started on a free loopback port in its own
# process group, and stopped when the calling script exits.

emulator_launcher() {
  if command -v gcloud >/dev/null 2>&1; then
    local root
    root=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)
    if [ -n "$root" ] && [ -x "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ]; then
      echo "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
      return 0
    fi
  fi
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ensure_emulator() {
  # The fault suite starts (and kills) a private emulator with it.
  if [ -z "${PUBSUB_EMULATOR_LAUNCHER:-}" ] && PUBSUB_EMULATOR_LAUNCHER=$(emulator_launcher); then
    export PUBSUB_EMULATOR_LAUNCHER
  fi
  if [ -n "${PUBSUB_EMULATOR_HOST:-}" ]; then
    echo "Using the Pub/Sub emulator at $PUBSUB_EMULATOR_HOST"
    return 0
  fi
  local launcher=${PUBSUB_EMULATOR_LAUNCHER:-} port log
  if [ -z "$launcher" ]; then
    echo "The Pub/Sub emulator is not installed. Install it with:" >&2
    echo "  gcloud components install pubsub-emulator beta   (or: apt-get install google-cloud-cli-pubsub-emulator)" >&2
    return 1
  fi
  port=$(free_port)
  log=${EMULATOR_LOG:-$(mktemp -t pubsub-emulator.XXXXXX.log)}
  # Its own process group, so that stopping it also stops its JVM.
  setsid "$launcher" --host=127.0.0.1 --port="$port" >"$log" 2>&1 &
  EMULATOR_PGID=$!
  trap stop_emulator EXIT
  export PUBSUB_EMULATOR_HOST="127.0.0.1:$port"
  local deadline=$((SECONDS + 90))
  until curl -sf "http://$PUBSUB_EMULATOR_HOST/v1/projects/ready/topics" >/dev/null 2>&1; do
    if [ $SECONDS -gt $deadline ] || ! kill -0 "$EMULATOR_PGID" 2>/dev/null; then
      echo "The Pub/Sub emulator did not start; its log ($log):" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "Started the Pub/Sub emulator at $PUBSUB_EMULATOR_HOST (log: $log)"
}

stop_emulator() {
  if [ -n "${EMULATOR_PGID:-}" ]; then
    kill -- "-$EMULATOR_PGID" 2>/dev/null || true
    wait "$EMULATOR_PGID" 2>/dev/null || true
    EMULATOR_PGID=
  fi
}
