#!/usr/bin/env bash
# bench/server.sh — what the server's admission path costs per request: two builds of
# `tideway up` side by side, interleaved (A B A B …), on the catalog item read through the
# gateway. A is a binary built before a change to serving, B after (e.g. axum::serve vs the
# hyper server with the header-read and request timeouts, the connection cap and load
# shedding).
#
# Usage: TIDEWAY_BIN_A=/path/old TIDEWAY_BIN_B=/path/new bash bench/server.sh
#        (BENCH_ROUNDS=3 BENCH_SECS=8)
# Results: target/bench/server-*/runs.tsv and summary.txt.

source "$(dirname "$0")/lib.sh"
: "${TIDEWAY_BIN_A:?the binary built before the change}"
: "${TIDEWAY_BIN_B:?the binary built after the change}"
BENCH_BUILD=0
TIDEWAY_BIN=$TIDEWAY_BIN_B
bench_setup server

export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
start a env TIDEWAY_DATA_DIR="$BENCH_OUT/data-a" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9481 \
    "$TIDEWAY_BIN_A" up
start b env TIDEWAY_DATA_DIR="$BENCH_OUT/data-b" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9482 \
    "$TIDEWAY_BIN_B" up
declare -A BASE=([a]=http://127.0.0.1:9481 [b]=http://127.0.0.1:9482)
declare -A ITEM
for target in a b; do
    for i in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "${BASE[$target]}/health/ready") == 200 ]] && break
        sleep 0.2
    done
    ITEM[$target]=$(curl -s "${BASE[$target]}/api/v1/catalog/items?page_size=1" | jq -r '.items[0].id')
done
declare -A TESTED=([a]=$PID_a [b]=$PID_b)
declare -A OTHER=([a]=$PID_b [b]=$PID_a)

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for load in c8 c64; do
        for target in a b; do
            measure "$load $target" "${TESTED[$target]}" "${OTHER[$target]}" wrk "${load#c}" \
                "${BASE[$target]}/api/v1/catalog/items/${ITEM[$target]}"
        done
    done
    log "round $round done"
done

{
    echo "catalog item through tideway up: A $(basename "$TIDEWAY_BIN_A") vs B $(basename "$TIDEWAY_BIN_B") · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    summary 2 "req/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
