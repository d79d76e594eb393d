#!/usr/bin/env bash
# bench/pages.sh — what a page of the web front costs next to the API call beneath it, in
# the default deployment (`tideway up`): the catalog item as JSON (/api/v1/catalog/items/ID)
# vs the item's page (/items/ID: gateway → web → gateway in-process → catalog, rendered
# with maud), the catalog grid (/catalog: items, categories and brands, three calls) and
# the home page (/: categories and new items). Side by side, interleaved, wrk -t2 -c8.
#
# Usage: bash bench/pages.sh      (BENCH_ROUNDS=3 BENCH_SECS=8)
# Results: target/bench/pages-*/runs.tsv and summary.txt.

source "$(dirname "$0")/lib.sh"
bench_setup pages

export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
start one env TIDEWAY_DATA_DIR="$BENCH_OUT/data" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9390 \
    "$TIDEWAY_BIN" up
for i in $(seq 1 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9390/health/ready) == 200 ]] && break
    sleep 0.2
done
BASE=http://127.0.0.1:9390
ITEM=$(curl -s "$BASE/api/v1/catalog/items?page_size=1" | jq -r '.items[0].id')
declare -A PATHS=([api-item]=/api/v1/catalog/items/$ITEM [item-page]=/items/$ITEM
    [catalog-page]=/catalog [home-page]=/)

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for target in api-item item-page catalog-page home-page; do
        measure "c8 $target" "$PID_one" "" wrk 8 "$BASE${PATHS[$target]}"
    done
    log "round $round done"
done

{
    echo "web pages vs the API call beneath them · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    summary 2 "req/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
