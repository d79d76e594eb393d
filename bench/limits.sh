#!/usr/bin/env bash
# bench/limits.sh — what admission costs at the gateway, side by side in one run:
#
# (1) the rate limit check per request: three `tideway gateway`s in front of one hello
#     upstream (`tideway bench-upstream`), interleaved (off local global off local global …),
#     wrk -c8 and -c64 on /hello:
#       off    — gateway.rate_limit.enabled = false
#       local  — one rule on every path, keyed by client address, in process (governor)
#       global — the same rule on Redis (127.0.0.1:6379; one script call per request)
#     The rule's burst is far above what a run sends, so every request is checked and none
#     refused: the difference is the check. CPU is the gateway's only (Redis's own CPU for
#     the global store is in redis.cpu in the results).
# (2) goodput at twice the capacity: `tideway up`, the catalog item through the gateway;
#     its capacity is wrk -c64's req/s in that round, then `tideway load` sends twice that,
#     open loop, and the answered-OK rate is compared with the capacity. The excess is
#     refused by the server's load shedding (503, server.max_in_flight) or times out. Two
#     shops side by side: the default server.max_in_flight (1024) and 32.
#
# Usage: bash bench/limits.sh   (BENCH_ROUNDS=3 BENCH_SECS=6; BENCH_BUILD=0 reuses the binary)
# Results: target/bench/limits-*/runs.tsv and summary.txt.

source "$(dirname "$0")/lib.sh"
bench_setup limits

command -v redis-cli >/dev/null || { log "redis-cli missing: run scripts/deps.sh"; exit 1; }
redis-cli -h 127.0.0.1 ping >/dev/null || { log "Redis does not answer on 127.0.0.1:6379"; exit 1; }
PREFIX="tideway-bench-$(date +%s)"

write_config() { # NAME PORT RATE-LIMIT-TOML
    cat >"$BENCH_OUT/$1.toml" <<CONF
data_dir = "$BENCH_OUT/data-$1"
demo_users = false

[log]
filter = "warn"

[urls]
basket = "http://127.0.0.1:9500"

[gateway]
listen = "127.0.0.1:$2"

[[gateway.routes]]
prefix = "/hello"
upstream = "basket"
read = "public"
write = "public"

[gateway.rate_limit]
$3
CONF
}
RULE='
[[gateway.rate_limit.rules]]
name = "everyone"
path = "/"
key = "ip"
burst = 100000000
period_ms = 100000000'
write_config off 9510 'enabled = false'
write_config local 9511 "store = \"local\"$RULE"
write_config global 9512 "store = \"global\"
key_prefix = \"$PREFIX\"
redis_timeout_ms = 50$RULE"

start upstream "$TIDEWAY_BIN" bench-upstream --listen 127.0.0.1:9500
for name in off local global; do
    start "gw_$name" "$TIDEWAY_BIN" --config "$BENCH_OUT/$name.toml" gateway
done
export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
start shop env TIDEWAY_DATA_DIR="$BENCH_OUT/shop" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9520 \
    "$TIDEWAY_BIN" up
start tight env TIDEWAY_DATA_DIR="$BENCH_OUT/tight" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9521 \
    TIDEWAY_SERVER__MAX_IN_FLIGHT=32 "$TIDEWAY_BIN" up
for port in 9510 9511 9512; do wait_http "http://127.0.0.1:$port/hello"; done
declare -A SHOP_PORT=([default]=9520 [tight]=9521) ITEM
for shop in default tight; do
    wait_http "http://127.0.0.1:${SHOP_PORT[$shop]}/health/ready"
    for i in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${SHOP_PORT[$shop]}/health/ready") == 200 ]] && break
        sleep 0.2
    done
    ITEM[$shop]=$(curl -s "http://127.0.0.1:${SHOP_PORT[$shop]}/api/v1/catalog/items?page_size=1" | jq -r '.items[0].id')
done
for port in 9511 9512; do
    curl -s -D - -o /dev/null "http://127.0.0.1:$port/hello" | grep -qi '^ratelimit-limit' ||
        { log "the gateway on :$port does not check its limit"; exit 1; }
done
REDIS_PID=$(pgrep -o redis-server || echo "")

declare -A PORT=([off]=9510 [local]=9511 [global]=9512)
declare -A TESTED=([off]=$PID_gw_off [local]=$PID_gw_local [global]=$PID_gw_global)
declare -A SHOP_PID=([default]=$PID_shop [tight]=$PID_tight)
ALL="$PID_upstream $PID_gw_off $PID_gw_local $PID_gw_global $PID_shop $PID_tight"
redis_ticks() { [[ -n $REDIS_PID ]] && awk '{ print $14 + $15 }' "/proc/$REDIS_PID/stat" || echo 0; }

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for load in c8 c64; do
        for target in off local global; do
            r0=$(redis_ticks)
            measure "hello $load $target" "${TESTED[$target]}" "$ALL" wrk "${load#c}" \
                "http://127.0.0.1:${PORT[$target]}/hello"
            r1=$(redis_ticks)
            printf '%s\t%s\n' "hello $load $target" "$(awk -v t=$((r1 - r0)) -v hz="$HZ" 'BEGIN { printf "%.3f", t / hz }')" \
                >>"$BENCH_OUT/redis.cpu"
        done
    done
    # Each shop's capacity, then twice it: default server.max_in_flight (1024) and 32.
    for shop in default tight; do
        url=http://127.0.0.1:${SHOP_PORT[$shop]}
        measure "item capacity c64 $shop" "${SHOP_PID[$shop]}" "$ALL" wrk 64 "$url/api/v1/catalog/items/${ITEM[$shop]}"
        capacity=$(awk -F'\t' -v l="item capacity c64 $shop" '$1 == l { v = $2 } END { printf "%.0f", v }' "$BENCH_OUT/runs.tsv")
        rate=$((capacity * 2))
        measure "item 2x capacity $shop" "${SHOP_PID[$shop]}" "$ALL" load --target "$url" \
            --path "/api/v1/catalog/items/${ITEM[$shop]}" --rate "$rate"
        goodput=$(awk -F'\t' -v l="item 2x capacity $shop" '$1 == l { v = $2 } END { printf "%.0f", v }' "$BENCH_OUT/runs.tsv")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$shop" "$capacity" "$rate" "$goodput" \
            "$(awk -v g="$goodput" -v c="$capacity" 'BEGIN { printf "%.2f", c ? g / c : 0 }')" >>"$BENCH_OUT/overload.tsv"
    done
    log "round $round done"
done

{
    echo "admission at the gateway · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    summary 2 "req/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 6 "errors"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
    echo "Redis CPU seconds per run (global store):"
    awk -F'\t' '$1 ~ /global/ { print "  " $1 ": " $2 " s" }' "$BENCH_OUT/redis.cpu"
    echo "overload rounds (round, shop, capacity req/s, offered req/s, answered OK/s, goodput / capacity):"
    sed 's/^/  /' "$BENCH_OUT/overload.tsv"
} | tee "$BENCH_OUT/summary.txt"
