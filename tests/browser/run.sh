#!/usr/bin/env bash
# Browser tests: builds tideway, starts `tideway up` on a free port with a fresh data
# directory, waits until it is ready, runs tests/browser/*.test.mjs in chromium against it,
# and always stops the server. Exit code: the tests'. Needs scripts/browser-deps.sh first.
#
# `run.sh --distributed` runs the same tests against `tideway up --distributed --replicas 2`
# (PostgreSQL and NATS on loopback, as scripts/deps.sh starts them; databases
# browser_<random>_<service>, dropped afterwards; a JetStream stream of their own).
set -euo pipefail

shape_args=(up)
prefix=""
export BROWSER_SHAPE=embedded
if [ "${1:-}" = "--distributed" ]; then
  prefix="browser_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')_"
  shape_args=(up --distributed --replicas 2)
  BROWSER_SHAPE=distributed
fi
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tideway-target}"
export SCREENSHOT_DIR="${SCREENSHOT_DIR:-$PWD/target/screenshots}"
ready_deadline_s=${READY_DEADLINE_S:-60}

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "error: tests/browser/node_modules is missing; run scripts/browser-deps.sh" >&2
  exit 1
fi

cargo build -p tideway --bin tideway
bin="$CARGO_TARGET_DIR/debug/tideway"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tideway-browser.XXXXXX")
log="$tmp/server.log"
server_pid=""

stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    # The server drains for at most 10 s on SIGTERM (the distributed supervisor stops its
    # gateways, then its services, 5 s each at most); do not wait forever past that.
    for _ in $(seq 1 150); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}

show_log() {
  echo "---- server log (last 80 lines of $log) ----" >&2
  tail -n 80 "$log" >&2 || true
  echo "---- end of server log ----" >&2
}

drop_databases() {
  [ -n "$prefix" ] || return 0
  for service in identity catalog basket inventory payment ordering; do
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${prefix}${service} WITH (FORCE)" \
      >/dev/null 2>&1 || true
  done
}

cleanup() {
  local code=$?
  stop_server
  drop_databases
  if [ "$code" -ne 0 ]; then
    show_log
    echo "server files kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null ||
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# Starts the server and waits for /health/ready. Returns 2 when the port was taken between
# picking it and binding it, so the caller can pick another.
start_server() {
  local port; port=$(free_port)
  BASE_URL="http://127.0.0.1:$port"
  rm -rf "$tmp/data"
  mkdir -p "$tmp/data"
  # A second version of the catalog at a fixed URL, which edge.test.mjs serves: one
  # process runs no versions of its own.
  CATALOG_V2_PORT=$(free_port)
  export CATALOG_V2_PORT
  printf '[gateway.upstream_urls]\n"catalog@v2" = "http://127.0.0.1:%s"\n' "$CATALOG_V2_PORT" \
    >"$tmp/browser.toml"
  echo "starting $bin ${shape_args[*]} on $BASE_URL (data in $tmp/data)"
  # Run from the temporary directory so a developer's ./tideway.toml does not apply; no
  # colour codes in the log file. The card provider answers after a second, so an order page
  # is seen Pending first and then follows its saga live.
  (
    cd "$tmp"
    if [ -n "$prefix" ]; then
      export TIDEWAY_DISTRIBUTED__DATABASE_PREFIX="$prefix" TIDEWAY_DISTRIBUTED__STOP_GRACE_MS=5000
      export TIDEWAY_BUS__STREAM="${prefix^^}" TIDEWAY_BUS__ROOT="${prefix//_/}"
    fi
    NO_COLOR=1 TIDEWAY_DATA_DIR="$tmp/data" TIDEWAY_GATEWAY__LISTEN="127.0.0.1:$port" \
      TIDEWAY_PAYMENT__LATENCY_MS="${PAYMENT_LATENCY_MS:-1000}" \
      exec "$bin" --config "$tmp/browser.toml" "${shape_args[@]}"
  ) >"$log" 2>&1 &
  server_pid=$!

  local deadline=$(( $(date +%s) + ready_deadline_s ))
  while :; do
    if curl -fsS -o /dev/null --max-time 2 "$BASE_URL/health/ready" 2>/dev/null; then
      echo "server ready on $BASE_URL"
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      wait "$server_pid" 2>/dev/null || true
      server_pid=""
      if grep -qi 'address already in use' "$log"; then
        echo "port $port was taken meanwhile; trying another"
        return 2
      fi
      echo "error: the server exited before it was ready" >&2
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: $BASE_URL/health/ready not ready within ${ready_deadline_s}s" >&2
      return 1
    fi
    sleep 0.2
  done
}

attempt=1
while :; do
  status=0
  start_server || status=$?
  [ "$status" -eq 0 ] && break
  if [ "$status" -eq 2 ] && [ "$attempt" -lt 3 ]; then
    attempt=$((attempt + 1))
    continue
  fi
  exit 1
done

export BASE_URL
echo "running the browser tests against $BASE_URL (screenshots in $SCREENSHOT_DIR)"
tests_status=0
node --test --test-concurrency=1 tests/browser/*.test.mjs || tests_status=$?
exit "$tests_status"
