#!/usr/bin/env bash
# bench/ceiling.sh — the catalog item read path through the gateway (`tideway up`, the
# default deployment: gateway → catalog in-process → SQLite, with ETag and cache headers)
# vs a bare axum hello handler (`tideway bench-upstream`, no middleware): this machine's
# ceiling for an axum handler. Side by side, interleaved (A B A B …).
#
#   c8, c64 — wrk -t2 at saturation: req/s, p99, requests per CPU-second of the server;
#   rate    — `tideway load --path … --rate R_RATE` (open loop): p50/p99/p99.9.
#
# Usage: bash bench/ceiling.sh      (BENCH_ROUNDS=3 BENCH_SECS=8 R_RATE=1000)
# Results: target/bench/ceiling-*/runs.tsv and summary.txt.

source "$(dirname "$0")/lib.sh"
R_RATE=${R_RATE:-1000}
bench_setup ceiling

export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
start hello "$TIDEWAY_BIN" bench-upstream --listen 127.0.0.1:9300
start one env TIDEWAY_DATA_DIR="$BENCH_OUT/data" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9380 \
    "$TIDEWAY_BIN" up
wait_http http://127.0.0.1:9300/
for i in $(seq 1 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9380/health/ready) == 200 ]] && break
    sleep 0.2
done
ITEM=$(curl -s 'http://127.0.0.1:9380/api/v1/catalog/items?page_size=1' | jq -r '.items[0].id')

declare -A BASE=([hello]=http://127.0.0.1:9300 [item]=http://127.0.0.1:9380)
declare -A PATHS=([hello]=/hello [item]=/api/v1/catalog/items/$ITEM)
declare -A TESTED=([hello]=$PID_hello [item]=$PID_one)
declare -A OTHER=([hello]=$PID_one [item]=$PID_hello)

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for load in c8 c64 rate; do
        for target in hello item; do
            label="$load $target"
            if [[ $load == rate ]]; then
                measure "$label" "${TESTED[$target]}" "${OTHER[$target]}" load \
                    --target "${BASE[$target]}" --path "${PATHS[$target]}" --rate "$R_RATE"
            else
                measure "$label" "${TESTED[$target]}" "${OTHER[$target]}" wrk "${load#c}" \
                    "${BASE[$target]}${PATHS[$target]}"
            fi
        done
    done
    log "round $round done"
done

{
    echo "catalog item through the gateway vs bare axum hello · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    echo "rate runs at $R_RATE/s (tideway load, open loop)"
    summary 2 "req/s|ok/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 7 "p99.9 ms"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
