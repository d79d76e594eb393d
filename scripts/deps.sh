#!/usr/bin/env bash
# Makes sure the servers the tests talk to are installed and running on loopback.
# Idempotent: a server that already answers is left alone; one that is missing is installed
# from Debian's packages and started. Used by .ci/run and by developers on a new machine.
#
#   scripts/deps.sh            # PostgreSQL, NATS with JetStream, Redis and RabbitMQ (what the tests need)
#
# Environment: TIDEWAY_DEPS_TIMEOUT (seconds to wait for a server, default 60);
# TIDEWAY_NATS_DIR (JetStream storage and log of a NATS server started here,
# default /var/lib/tideway-nats).
set -euo pipefail

timeout_s="${TIDEWAY_DEPS_TIMEOUT:-60}"
apt_updated=0

log() { printf '[deps] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# wait_for NAME COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
  local name=$1; shift
  local deadline=$(( $(date +%s) + timeout_s ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name did not come up within ${timeout_s}s"
      return 1
    fi
    sleep 0.5
  done
  log "$name is up"
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

postgres_answers() {
  psql "postgresql://postgres@127.0.0.1:5432/postgres" -Atqc 'select 1' 2>/dev/null | grep -q 1
}

ensure_postgres() {
  if command -v psql >/dev/null && postgres_answers; then
    log "PostgreSQL answers on 127.0.0.1:5432"
    return
  fi
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql postgresql-client
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  local conf="/etc/postgresql/$version/main"
  if [ ! -d "$conf" ]; then
    as_root pg_createcluster "$version" main
  fi
  # The tests connect over loopback as `postgres` without a password: trust loopback only.
  if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$conf/pg_hba.conf"; then
    log "allowing trust authentication on loopback"
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$conf/pg_hba.conf"
  fi
  as_root sed -i -E "s/^#?listen_addresses\s*=.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
  if ! tcp_open 5432; then
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  else
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  fi
  wait_for PostgreSQL postgres_answers
}

# Two replicas of every service, each with its pools, plus tests running in parallel need
# more than PostgreSQL's default 100 connections: raise the limit once and restart.
POSTGRES_MAX_CONNECTIONS=${POSTGRES_MAX_CONNECTIONS:-400}
ensure_postgres_connections() {
  local have cluster
  have=$(psql "postgresql://postgres@127.0.0.1:5432/postgres" -Atqc 'show max_connections' 2>/dev/null || echo 0)
  if [ "${have:-0}" -ge "$POSTGRES_MAX_CONNECTIONS" ]; then
    log "PostgreSQL allows $have connections"
    return
  fi
  cluster=$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }')
  if [ -z "$cluster" ]; then
    log "warning: PostgreSQL allows $have connections and is not a local cluster this script can restart"
    return
  fi
  log "raising PostgreSQL's max_connections from $have to $POSTGRES_MAX_CONNECTIONS (restart)"
  psql "postgresql://postgres@127.0.0.1:5432/postgres" -Atqc \
    "ALTER SYSTEM SET max_connections = $POSTGRES_MAX_CONNECTIONS" >/dev/null
  # shellcheck disable=SC2086
  as_root pg_ctlcluster --skip-systemctl-redirect $cluster restart
  wait_for PostgreSQL postgres_answers
}

# NATS announces its features in the INFO line it sends on connect: `"jetstream":true`.
nats_jetstream_answers() {
  local info
  info=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222; head -n1 <&3' 2>/dev/null) || return 1
  [[ $info == INFO* && $info == *'"jetstream":true'* ]]
}

ensure_nats() {
  if nats_jetstream_answers; then
    log "NATS with JetStream answers on 127.0.0.1:4222"
    return
  fi
  if tcp_open 4222; then
    log "something answers on 127.0.0.1:4222 but it is not NATS with JetStream; stop it first"
    return 1
  fi
  if ! command -v nats-server >/dev/null; then
    apt_install nats-server
  fi
  local dir="${TIDEWAY_NATS_DIR:-/var/lib/tideway-nats}"
  as_root mkdir -p "$dir"
  log "starting nats-server with JetStream (storage $dir)"
  # Detached, so it outlives this script; its log goes beside its storage.
  as_root nohup setsid "$(command -v nats-server)" -js -a 127.0.0.1 -p 4222 -sd "$dir" \
    -l "$dir/nats-server.log" </dev/null >/dev/null 2>&1 &
  wait_for "NATS JetStream" nats_jetstream_answers
}

redis_answers() {
  if command -v redis-cli >/dev/null; then
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG
  else
    # No client: speak the protocol by hand.
    (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null
  fi
}

ensure_redis() {
  if redis_answers; then
    log "Redis answers on 127.0.0.1:6379"
    return
  fi
  if tcp_open 6379; then
    log "something answers on 127.0.0.1:6379 but it is not Redis; stop it first"
    return 1
  fi
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server
  fi
  log "starting redis-server on 127.0.0.1:6379 (nothing kept on disk)"
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/tideway-redis.log
  wait_for "Redis" redis_answers
}

# RabbitMQ answers the AMQP 0-9-1 protocol header with a method frame (type 1,
# connection.start); the tests log in as guest/guest, which RabbitMQ allows on loopback.
rabbitmq_answers() {
  local first
  first=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672; printf "AMQP\x00\x00\x09\x01" >&3; head -c 1 <&3 | od -An -tx1' 2>/dev/null) || return 1
  [[ $first == *01* ]]
}

ensure_rabbitmq() {
  if rabbitmq_answers; then
    log "RabbitMQ answers on 127.0.0.1:5672"
    return
  fi
  if tcp_open 5672; then
    log "something answers on 127.0.0.1:5672 but it is not RabbitMQ; stop it first"
    return 1
  fi
  # Loopback only: the node, its Erlang distribution and the AMQP listener (kept when a
  # configuration is already there).
  as_root mkdir -p /etc/rabbitmq
  if [ ! -s /etc/rabbitmq/rabbitmq-env.conf ]; then
    printf '%s\n' 'NODENAME=rabbit@localhost' 'ERL_EPMD_ADDRESS=127.0.0.1' \
      'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"' \
      | as_root tee /etc/rabbitmq/rabbitmq-env.conf >/dev/null
  fi
  if [ ! -s /etc/rabbitmq/rabbitmq.conf ]; then
    echo 'listeners.tcp.local = 127.0.0.1:5672' | as_root tee /etc/rabbitmq/rabbitmq.conf >/dev/null
  fi
  if ! command -v rabbitmq-server >/dev/null; then
    apt_install rabbitmq-server
  fi
  # The package may have started it (with systemd); otherwise start it detached, as the
  # rabbitmq user (Debian's wrapper switches to it), so it outlives this script.
  if ! rabbitmq_answers; then
    log "starting rabbitmq-server on 127.0.0.1:5672"
    # Its own log goes to /var/log/rabbitmq.
    as_root nohup setsid rabbitmq-server </dev/null >/dev/null 2>&1 &
  fi
  wait_for "RabbitMQ" rabbitmq_answers
}

ensure_postgres
ensure_postgres_connections
ensure_nats
ensure_redis
ensure_rabbitmq

# Python servers the tests start themselves (aiosmtpd), in a venv under ~/.cache.
bash "$(dirname "$0")/test-tools.sh"
# Prometheus (Debian's package): promtool checks and unit-tests deploy/prometheus/, and a
# system test runs the server against a running shop. Only installed; each test starts its
# own server.
ensure_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    log "prometheus and promtool installed"
    return
  fi
  apt_install prometheus
}
ensure_prometheus
