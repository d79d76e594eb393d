#!/usr/bin/env bash
# bench/distributed.sh — `tideway up` (every service in one process, SQLite, embedded bus)
# vs `tideway up --distributed --replicas N` (every service and the gateway as N processes
# each, on PostgreSQL and NATS JetStream), under the same shop mix, side by side.
#
# Both shapes run at once on loopback:
#   one  — `tideway up`, gateway on :9380, data in $BENCH_OUT/one;
#   dist — `tideway up --distributed --replicas $REPLICAS`, gateways sharing :9390, data in
#          $BENCH_OUT/dist, databases bench_<time>_<service> on 127.0.0.1:5432 (dropped at
#          the end), its own JetStream stream and subject root.
# Tideway logs at `warn` (no access logs). For each round the shapes run in turn (A B A B …):
#   shop — `tideway load --mix shop --rate R_SHOP --users 16` (open loop: browse, search,
#          item, basket and 5% checkouts).
# CPU ("req/cpu-s"): the tideway processes of the shape only — for dist the supervisor and
# every child; PostgreSQL's and NATS's own CPU is not in the figure (they are counted as
# ours, not as foreign CPU). Idle wait, steal and foreign CPU as in bench/lib.sh.
#
# Usage: bash bench/distributed.sh   (BENCH_ROUNDS=3 BENCH_SECS=8 R_SHOP=200 REPLICAS=2)
# Results: target/bench/distributed-*/runs.tsv, summary.txt, each run's report.json/plot.png.

source "$(dirname "$0")/lib.sh"
R_SHOP=${R_SHOP:-200}
REPLICAS=${REPLICAS:-2}
bench_setup distributed

PREFIX="bench_$(date -u +%H%M%S)_"
drop_databases() {
    bench_cleanup
    local service
    for service in identity catalog basket inventory payment ordering; do
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${PREFIX}${service} WITH (FORCE)" \
            >/dev/null 2>&1 || true
    done
}
trap drop_databases EXIT

export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
mkdir -p "$BENCH_OUT/one" "$BENCH_OUT/dist"

start one env TIDEWAY_DATA_DIR="$BENCH_OUT/one" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9380 \
    "$TIDEWAY_BIN" up
start dist env TIDEWAY_DATA_DIR="$BENCH_OUT/dist" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9390 \
    TIDEWAY_DISTRIBUTED__DATABASE_PREFIX="$PREFIX" \
    TIDEWAY_BUS__STREAM="BENCH_${PREFIX^^}" TIDEWAY_BUS__ROOT="bench${PREFIX//_/}" \
    "$TIDEWAY_BIN" up --distributed --replicas "$REPLICAS"
for port in 9380 9390; do
    for i in $(seq 1 600); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/ready") == 200 ]] && break
        sleep 0.2
    done
done
# The supervisor prints its table once every process is ready.
for i in $(seq 1 600); do
    grep -q 'Press Ctrl-C' "$BENCH_OUT/dist.log" && break
    sleep 0.2
done
log "distributed: $(grep -o 'ready in [0-9.]* s' "$BENCH_OUT/dist.log" || echo 'not ready')"

SERVERS="$(pgrep -o -x postgres || true) $(pgrep -o -x nats-server || true)"
declare -A BASE=([one]=http://127.0.0.1:9380 [dist]=http://127.0.0.1:9390)
declare -A TESTED=([one]="$PID_one" [dist]="$PID_dist")

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for shape in one dist; do
        own="${TESTED[dist]} $SERVERS"
        [[ $shape == dist ]] && own="${TESTED[one]} $SERVERS"
        measure "shop $shape" "${TESTED[$shape]}" "$own" load --target "${BASE[$shape]}" \
            --mix shop --users 16 --rate "$R_SHOP"
    done
    log "round $round done"
done

{
    echo "up vs up --distributed --replicas $REPLICAS · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    echo "shop at $R_SHOP/s (tideway load, open loop); CPU of the tideway processes only"
    summary 2 "ok/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 7 "p99.9 ms"
    summary 8 "cpu s"
    summary 9 "req/cpu-s"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
