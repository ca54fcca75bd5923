#!/usr/bin/env bash
# Stops the S3 test server that start-s3.sh started from DIR (default /tmp/strata-s3): exactly the
# processes its PID files name, and only while their command line still names DIR's config (a PID
# the system reused for something else is never signalled). --purge also deletes DIR.
set -euo pipefail
DIR="${1:-/tmp/strata-s3}"
PURGE="${2:-}"
stopped=()
for pidfile in "$DIR"/run/*.pid; do
  [ -f "$pidfile" ] || continue
  name="$(basename "$pidfile" .pid)"; pid="$(cat "$pidfile")"
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$DIR/etc/$name-server.conf"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
    stopped+=("$name")
  fi
  rm -f "$pidfile"
done
if [ ${#stopped[@]} -eq 0 ]; then echo "stop-s3: stopped: none running" >&2; else echo "stop-s3: stopped ${stopped[*]}" >&2; fi
if [ "$PURGE" = "--purge" ]; then rm -rf "$DIR"; fi
