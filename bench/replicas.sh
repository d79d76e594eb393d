#!/usr/bin/env bash
# bench/replicas.sh — what balanced, resilient calls cost, and what they buy when one
# replica is slow.
#
# (a) CPU cost per request: `tideway bench-upstream` (hello) on :9100 behind two gateways
#     side by side, interleaved, wrk -c8 on /hello:
#       fixed    :9380  TIDEWAY_BALANCE__ENABLED=false (urls.basket, one pool, a deadline)
#       balanced :9381  the default stack: static discovery with one replica, P2C, breaker,
#                       retry budget, bulkhead, deadline over the body
#     Cost per request = 1/(req per CPU-s balanced) − 1/(req per CPU-s fixed), in µs of the
#     gateway's CPU.
# (b) One of three catalog replicas slowed 10×: three `tideway serve catalog` on one
#     PostgreSQL database (created as tideway_bench_replicas), registered in NATS discovery
#     (a bucket of their own), behind two gateways: p2c :9390 and round_robin :9391.
#     `tideway load --mix browse --rate R_BROWSE` (open loop) against each, interleaved,
#     first with every replica healthy, then with catalog-3 restarted with
#     TIDEWAY_FAULTS__LATENCY_MS = 9 × the median catalog read measured before (so 10×).
#     Success rate and p99 per gateway and phase.
#
# Usage: bash bench/replicas.sh     (BENCH_ROUNDS=3 BENCH_SECS=8 R_BROWSE=200)
# Needs: scripts/deps.sh (PostgreSQL, NATS). Results: target/bench/replicas-*/.

source "$(dirname "$0")/lib.sh"
R_BROWSE=${R_BROWSE:-200}
bench_setup replicas
export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false TIDEWAY_DATA_DIR="$BENCH_OUT"

# (a) the stack's cost on the proxy path
cat >"$BENCH_OUT/hello.toml" <<TOML
[urls]
basket = "http://127.0.0.1:9100"

[[gateway.routes]]
prefix = "/hello"
upstream = "basket"
read = "public"
write = "public"
TOML
start upstream "$TIDEWAY_BIN" bench-upstream --listen 127.0.0.1:9100
start fixed env TIDEWAY_BALANCE__ENABLED=false TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9380 \
    "$TIDEWAY_BIN" --config "$BENCH_OUT/hello.toml" gateway
start balanced env TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9381 \
    "$TIDEWAY_BIN" --config "$BENCH_OUT/hello.toml" gateway
for port in 9380 9381; do wait_http "http://127.0.0.1:$port/hello"; done
declare -A HELLO=([fixed]=9380 [balanced]=9381)
declare -A HELLO_PID=([fixed]=$PID_fixed [balanced]=$PID_balanced)
for round in $(seq 1 "$BENCH_ROUNDS"); do
    for target in fixed balanced; do
        own="$PID_upstream $PID_fixed $PID_balanced"
        own=$(tr ' ' '\n' <<<"$own" | grep -vx "${HELLO_PID[$target]}" | tr '\n' ' ')
        measure "hello c8 $target" "${HELLO_PID[$target]}" "$own" wrk 8 \
            "http://127.0.0.1:${HELLO[$target]}/hello"
    done
    log "round $round (a) done"
done

# (b) three catalog replicas, one slowed
DB=tideway_bench_replicas
dropdb -h 127.0.0.1 -U postgres --if-exists "$DB"
createdb -h 127.0.0.1 -U postgres "$DB"
BUCKET="bench_replicas_$(date +%s)"
REPLICA_ENV=(TIDEWAY_CATALOG__DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
    TIDEWAY_DISCOVERY__KIND=nats TIDEWAY_DISCOVERY__NATS__BUCKET="$BUCKET")
start_replica() { # start_replica N [EXTRA_ENV...]
    local n=$1
    shift
    start "catalog$n" env "${REPLICA_ENV[@]}" TIDEWAY_INSTANCE_ID="catalog-$n" \
        TIDEWAY_CATALOG__LISTEN="127.0.0.1:940$n" "$@" "$TIDEWAY_BIN" serve catalog
    wait_http "http://127.0.0.1:940$n/health/ready"
}
for n in 1 2 3; do start_replica "$n"; done
start p2c env "${REPLICA_ENV[@]}" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9390 "$TIDEWAY_BIN" gateway
start rr env "${REPLICA_ENV[@]}" TIDEWAY_BALANCE__POLICY=round_robin \
    TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9391 "$TIDEWAY_BIN" gateway
for port in 9390 9391; do
    for _ in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/v1/catalog/items?page_size=1") == 200 ]] && break
        sleep 0.2
    done
done
declare -A GW=([p2c]=9390 [rr]=9391)
browse() { # browse PHASE
    local phase=$1
    local gw pid
    for gw in p2c rr; do
        pid="PID_$gw"
        measure "browse $phase $gw" "${!pid} $PID_catalog1 $PID_catalog2 $PID_catalog3" \
            "" load --target "http://127.0.0.1:${GW[$gw]}" --mix browse --rate "$R_BROWSE" --timeout 5s
    done
}
for round in $(seq 1 "$BENCH_ROUNDS"); do browse healthy; log "round $round healthy done"; done

# The median of a healthy catalog read on this machine now, then catalog-3 at 10× it.
MEDIAN_MS=$(for _ in $(seq 1 51); do
    curl -s -o /dev/null -w '%{time_total}\n' 'http://127.0.0.1:9403/api/v1/catalog/items?page_size=20'
done | sort -n | sed -n 26p | awk '{ printf "%d", $1 * 1000 + 0.5 }')
ADDED_MS=$((MEDIAN_MS * 9 > 1 ? MEDIAN_MS * 9 : 1))
log "median read ${MEDIAN_MS} ms; catalog-3 gets +${ADDED_MS} ms"
kill -TERM "$PID_catalog3"
wait "$PID_catalog3" 2>/dev/null || true
start_replica 3 TIDEWAY_FAULTS__LATENCY_MS="$ADDED_MS"
for round in $(seq 1 "$BENCH_ROUNDS"); do browse slowed; log "round $round slowed done"; done

{
    echo "replicas · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    echo "(a) wrk -c8 /hello through the gateway: fixed URL vs the balanced stack"
    echo "(b) browse at $R_BROWSE/s over 3 catalog replicas; slowed: catalog-3 +${ADDED_MS} ms (median ${MEDIAN_MS} ms)"
    summary 2 "req/s|ok/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 5 "requests"
    summary 6 "errors"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
