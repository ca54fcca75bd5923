#!/usr/bin/env bash
# Starts a real S3-compatible server for Strata's tests: OpenStack Swift with its s3api middleware,
# from Debian 12's packages, as a single-node all-in-one under one folder (default /tmp/strata-s3):
# one replica, a plain folder as the device, tempauth users, no memcached, no rsync, no systemd.
# Installs the packages when missing (as root, about a minute), starts the account, container,
# object and proxy servers unless they already run from this folder, waits until the proxy
# authenticates a user, and prints the environment the S3 tests read (also written to DIR/s3.env):
#   AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
# Knobs: S3_PORT (18080), S3_BACKEND_PORT (16200; uses three ports from it), S3_SECRET,
# S3_START_TIMEOUT (seconds, 60), S3_LOG_LEVEL (WARNING).
# Why Swift: it is the S3-compatible server Debian 12 ships; MinIO, Garage and SeaweedFS are not
# packaged there. It has no conditional PUT (If-None-Match answers 501), which is exactly the case
# Strata's lease protocol exists for.
set -euo pipefail

DIR="${1:-/tmp/strata-s3}"
PORT="${S3_PORT:-18080}"
BACKEND="${S3_BACKEND_PORT:-16200}"
OBJECT_PORT="$BACKEND"; CONTAINER_PORT=$((BACKEND + 1)); ACCOUNT_PORT=$((BACKEND + 2))
ACCOUNT=strata; USER_NAME=ci
SECRET="${S3_SECRET:-strata-secret}"
LOG_LEVEL="${S3_LOG_LEVEL:-WARNING}"
TIMEOUT="${S3_START_TIMEOUT:-60}"
PACKAGES=(swift swift-proxy swift-account swift-container swift-object)
SERVERS=(account container object proxy)

log() { echo "start-s3: $*" >&2; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing packages: ${missing[*]}; install them as root: apt-get install --no-install-recommends ${missing[*]}"
    exit 1
  fi
  log "installing ${missing[*]} (about a minute)"
  # Debian's own swift services would start on a systemd machine (reading /etc/swift, port 8080):
  # a temporary policy-rc.d keeps them from starting.
  local own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || {
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  } || rc=$?
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { log "apt-get install failed"; exit 1; }
}

# Writes a file only when its content changes, and remembers that a restart is needed.
CHANGED=""
write_if_changed() {
  local path="$1" content
  content="$(cat)"
  if [ ! -f "$path" ] || [ "$(cat "$path")" != "$content" ]; then
    printf '%s\n' "$content" > "$path"; CHANGED=1
  fi
}

write_configs() {
  mkdir -p "$DIR/etc" "$DIR/srv/d1" "$DIR/run" "$DIR/log"
  # Every Swift process reads this fixed path (hash prefix and suffix, storage policy 0).
  if [ ! -f /etc/swift/swift.conf ]; then
    mkdir -p /etc/swift
    printf '[swift-hash]\nswift_hash_path_suffix = strata-test\nswift_hash_path_prefix = strata-test\n\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' > /etc/swift/swift.conf
  fi
  local backend_common="bind_ip = 127.0.0.1
workers = 0
mount_check = false
devices = $DIR/srv
swift_dir = $DIR/etc
log_level = $LOG_LEVEL"
  for kind in account container object; do
    local port_var="${kind^^}_PORT"
    write_if_changed "$DIR/etc/$kind-server.conf" <<EOF
[DEFAULT]
bind_port = ${!port_var}
$backend_common

[pipeline:main]
pipeline = healthcheck $kind-server

[app:$kind-server]
use = egg:swift#$kind

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
  done
  # s3api must come before the auth filter and slo after it (multipart uploads); copy serves
  # CopyObject; cache is required by tempauth even with no memcached running (it only logs,
  # silenced with "set log_level").
  write_if_changed "$DIR/etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PORT
workers = 0
swift_dir = $DIR/etc
log_level = $LOG_LEVEL

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
max_upload_part_num = 10000

[filter:tempauth]
use = egg:swift#tempauth
user_${ACCOUNT}_${USER_NAME} = $SECRET .admin

[filter:cache]
use = egg:swift#memcache
set log_level = CRITICAL

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_object_versioning = true

[filter:symlink]
use = egg:swift#symlink
EOF
}

build_rings() {
  local stamp="$OBJECT_PORT $CONTAINER_PORT $ACCOUNT_PORT"
  if [ -f "$DIR/etc/rings.stamp" ] && [ "$(cat "$DIR/etc/rings.stamp")" = "$stamp" ] && [ -f "$DIR/etc/object.ring.gz" ]; then return 0; fi
  # One Python call instead of nine swift-ring-builder runs. /usr/bin/python3 is Debian's, which
  # has the swift module (a python3 earlier on PATH may not).
  /usr/bin/python3 - "$DIR/etc" "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT" <<'PY'
import sys
from swift.common.ring.builder import RingBuilder
etc, ports = sys.argv[1], dict(zip(('account', 'container', 'object'), map(int, sys.argv[2:5])))
for name, port in ports.items():
    builder = RingBuilder(8, 1, 1)
    builder.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': port, 'device': 'd1', 'weight': 100, 'meta': ''})
    builder.rebalance()
    builder.get_ring().save(f'{etc}/{name}.ring.gz')
PY
  echo "$stamp" > "$DIR/etc/rings.stamp"; CHANGED=1
}

# A server runs when its PID file names a live process started with this folder's config.
running_pid() {
  local pidfile="$DIR/run/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$DIR/etc/$1-server.conf" && echo "$pid"
}

port_of() { case "$1" in account) echo "$ACCOUNT_PORT";; container) echo "$CONTAINER_PORT";; object) echo "$OBJECT_PORT";; proxy) echo "$PORT";; esac; }

start_servers() {
  if [ -n "$CHANGED" ]; then
    for s in "${SERVERS[@]}"; do
      if pid="$(running_pid "$s")"; then log "config changed: restarting $s-server"; kill "$pid"; sleep 0.5; fi
    done
  fi
  for s in "${SERVERS[@]}"; do
    if running_pid "$s" >/dev/null; then continue; fi
    local port; port="$(port_of "$s")"
    if ss -Hltn "sport = :$port" | grep -q .; then
      log "port $port (for $s-server) is already in use by another process; set S3_PORT / S3_BACKEND_PORT"
      exit 1
    fi
    setsid "/usr/bin/swift-$s-server" "$DIR/etc/$s-server.conf" -v </dev/null >>"$DIR/log/$s.log" 2>&1 &
    echo $! > "$DIR/run/$s.pid"
  done
}

# One SigV4-signed ListBuckets (hand-signed: Debian's python has no S3 client installed, and the
# server must be proven ready before the tests' own client exists).
s3_ping() {
  /usr/bin/python3 - "http://127.0.0.1:$PORT" "$ACCOUNT:$USER_NAME" "$SECRET" <<'PY'
import datetime, hashlib, hmac, sys, urllib.request
endpoint, key_id, secret = sys.argv[1:4]
now = datetime.datetime.now(datetime.timezone.utc)
stamp, day = now.strftime('%Y%m%dT%H%M%SZ'), now.strftime('%Y%m%d')
host = endpoint.split('//', 1)[1]
empty = hashlib.sha256(b'').hexdigest()
canonical = f'GET\n/\n\nhost:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{stamp}\n\nhost;x-amz-content-sha256;x-amz-date\n{empty}'
scope = f'{day}/us-east-1/s3/aws4_request'
to_sign = f'AWS4-HMAC-SHA256\n{stamp}\n{scope}\n' + hashlib.sha256(canonical.encode()).hexdigest()
k = ('AWS4' + secret).encode()
for part in (day, 'us-east-1', 's3', 'aws4_request'):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
request = urllib.request.Request(endpoint + '/', headers={
    'x-amz-date': stamp, 'x-amz-content-sha256': empty,
    'Authorization': f'AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}'})
try:
    sys.exit(0 if urllib.request.urlopen(request, timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

wait_ready() {
  local deadline=$((SECONDS + TIMEOUT))
  while :; do
    local ok=1
    for s in "${SERVERS[@]}"; do
      if ! running_pid "$s" >/dev/null; then log "$s-server died:"; tail -20 "$DIR/log/$s.log" >&2; exit 1; fi
    done
    for port in "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT"; do
      [ "$(curl -s -m 2 "http://127.0.0.1:$port/healthcheck" || true)" = OK ] || ok=""
    done
    # A signed ListBuckets answering 200 proves the whole path: s3api, tempauth, the backends.
    [ -n "$ok" ] && s3_ping && return 0
    if [ $SECONDS -ge $deadline ]; then log "not ready after ${TIMEOUT}s; logs in $DIR/log"; tail -n 5 "$DIR"/log/*.log >&2; exit 1; fi
    sleep 0.2
  done
}

install_packages
write_configs
build_rings
start_servers
wait_ready
cat > "$DIR/s3.env" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=$ACCOUNT:$USER_NAME
AWS_SECRET_ACCESS_KEY=$SECRET
EOF
chmod 600 "$DIR/s3.env"
cat "$DIR/s3.env"
