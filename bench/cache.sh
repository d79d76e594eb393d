#!/usr/bin/env bash
# bench/cache.sh — what the caches buy, side by side in one run, interleaved (A B A B …):
#
#   1. the catalog item read through `tideway up` (release build) with the caches on
#      (`item-cached`), with them off (`item-uncached`: TIDEWAY_CATALOG__CACHE__ENABLED=false,
#      TIDEWAY_BASKET__CACHE__ENABLED=false, TIDEWAY_GATEWAY__CACHE_ENABLED=false), and a
#      bare axum hello (`tideway bench-upstream`): wrk -t2 -c8 and -c64, req/s and requests
#      per CPU-second of the server;
#   2. the shop mix (`tideway load --mix shop`, open loop at S_RATE/s) against the same two
#      shops: requests per CPU-second of the shop, p50/p99;
#   3. the hit ratio of every cache under the shop mix, from the cached shop's /metrics
#      (tideway_cache_{hits,misses}_total{cache}, tideway_gateway_cache_total{result}).
#
# The machine is shared: only the ratios between rows of one run hold.
#
# Usage: bash bench/cache.sh      (BENCH_ROUNDS=3 BENCH_SECS=8 S_RATE=300)
# Results: target/bench/cache-*/runs.tsv, hit-ratio.txt and summary.txt.

source "$(dirname "$0")/lib.sh"
S_RATE=${S_RATE:-300}
bench_setup cache

export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false TIDEWAY_GATEWAY__RATE_LIMIT__ENABLED=false
start hello "$TIDEWAY_BIN" bench-upstream --listen 127.0.0.1:9300
start cached env TIDEWAY_DATA_DIR="$BENCH_OUT/data-cached" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9381 \
    "$TIDEWAY_BIN" up
start uncached env TIDEWAY_DATA_DIR="$BENCH_OUT/data-uncached" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9382 \
    TIDEWAY_CATALOG__CACHE__ENABLED=false TIDEWAY_BASKET__CACHE__ENABLED=false \
    TIDEWAY_GATEWAY__CACHE_ENABLED=false "$TIDEWAY_BIN" up
wait_http http://127.0.0.1:9300/
for port in 9381 9382; do
    for _ in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/ready") == 200 ]] && break
        sleep 0.2
    done
done
ITEM=$(curl -s 'http://127.0.0.1:9381/api/v1/catalog/items?page_size=1' | jq -r '.items[0].id')

declare -A BASE=([hello]=http://127.0.0.1:9300 [item-cached]=http://127.0.0.1:9381 [item-uncached]=http://127.0.0.1:9382)
declare -A PATHS=([hello]=/hello [item-cached]=/api/v1/catalog/items/$ITEM [item-uncached]=/api/v1/catalog/items/$ITEM)
declare -A TESTED=([hello]=$PID_hello [item-cached]=$PID_cached [item-uncached]=$PID_uncached)
declare -A OTHER=([hello]="$PID_cached $PID_uncached" [item-cached]="$PID_hello $PID_uncached" [item-uncached]="$PID_hello $PID_cached")

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for load in c8 c64; do
        for target in hello item-cached item-uncached; do
            measure "$load $target" "${TESTED[$target]}" "${OTHER[$target]}" wrk "${load#c}" \
                "${BASE[$target]}${PATHS[$target]}"
        done
    done
    for target in item-cached item-uncached; do
        measure "shop $target" "${TESTED[$target]}" "${OTHER[$target]}" load \
            --target "${BASE[$target]}" --mix shop --rate "$S_RATE"
    done
    log "round $round done"
done

# Hit ratios of the cached shop, over everything it served in this run.
curl -s http://127.0.0.1:9381/metrics | awk '
    /^tideway_cache_hits_total\{/ { match($0, /cache="[^"]+"/); c = substr($0, RSTART + 7, RLENGTH - 8); hits[c] = $NF }
    /^tideway_cache_misses_total\{/ { match($0, /cache="[^"]+"/); c = substr($0, RSTART + 7, RLENGTH - 8); misses[c] = $NF }
    /^tideway_gateway_cache_total\{/ { match($0, /result="[^"]+"/); r = substr($0, RSTART + 8, RLENGTH - 9); gw[r] += $NF }
    END {
        for (c in hits) printf "%-20s hits %d misses %d ratio %.3f\n", c, hits[c], misses[c], hits[c] / (hits[c] + misses[c] + 0.0001)
        total = gw["hit"] + gw["miss"] + gw["stale"]
        if (total > 0) printf "%-20s hit %d stale %d miss %d ratio %.3f\n", "gateway", gw["hit"], gw["stale"], gw["miss"], (gw["hit"] + gw["stale"]) / total
    }' | tee "$BENCH_OUT/hit-ratio.txt"

{
    echo "caches on vs off vs bare axum hello · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    echo "shop mix at $S_RATE/s (tideway load, open loop)"
    summary 2 "req/s|ok/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
    cat "$BENCH_OUT/hit-ratio.txt"
} | tee "$BENCH_OUT/summary.txt"
