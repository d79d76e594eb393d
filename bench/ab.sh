#!/usr/bin/env bash
# bench/ab.sh — two builds of tideway side by side: what a change to the hot path buys or
# costs, as ratios B/A measured in one run, interleaved (A B A B …), each on an idle machine.
#
#   proxy  — `tideway gateway` of each build in front of one bare hello (`bench-upstream`)
#            at wrk -c8: the plain proxy path;
#   shop   — `tideway up` of each build under `tideway load --mix shop --rate R_SHOP`
#            (signed-in shoppers browsing, adding to baskets, checking out).
#
# Usage: TIDEWAY_BIN_A=/path/to/old/tideway TIDEWAY_BIN_B=/path/to/new/tideway bash bench/ab.sh
#        (BENCH_ROUNDS=3 BENCH_SECS=8 R_SHOP=300). Build A from an older commit with
#        `git worktree add /tmp/a <commit> && cargo build --release -p tideway` there.
# Results: target/bench/ab-*/runs.tsv and summary.txt.

source "$(dirname "$0")/lib.sh"
R_SHOP=${R_SHOP:-300}
: "${TIDEWAY_BIN_A:?the older build}"
TIDEWAY_BIN_B=${TIDEWAY_BIN_B:-$TIDEWAY_BIN}
BENCH_BUILD=${BENCH_BUILD:-0}
bench_setup ab

DATA=$BENCH_OUT/data
declare -A GW_PORT=([a]=9411 [b]=9412) UP_PORT=([a]=9413 [b]=9414) BIN=([a]=$TIDEWAY_BIN_A [b]=$TIDEWAY_BIN_B)
export TIDEWAY_LOG__FILTER=warn
start upstream "$TIDEWAY_BIN_B" bench-upstream --listen 127.0.0.1:9410
for v in a b; do
    mkdir -p "$DATA/gw-$v" "$DATA/up-$v"
    cat >"$BENCH_OUT/gateway-$v.toml" <<EOF2
data_dir = "$DATA/gw-$v"
demo_users = false

[log]
filter = "warn"

[urls]
basket = "http://127.0.0.1:9410"

[gateway]
listen = "127.0.0.1:${GW_PORT[$v]}"

[[gateway.routes]]
prefix = "/hello"
upstream = "basket"
read = "public"
write = "public"
EOF2
    start "gateway_$v" "${BIN[$v]}" --config "$BENCH_OUT/gateway-$v.toml" gateway
    start "up_$v" env TIDEWAY_DATA_DIR="$DATA/up-$v" TIDEWAY_GATEWAY__LISTEN="127.0.0.1:${UP_PORT[$v]}" \
        TIDEWAY_DEMO_USERS=false TIDEWAY_GATEWAY__RATE_LIMIT__ENABLED=false "${BIN[$v]}" up
done
wait_http http://127.0.0.1:9410/hello
for v in a b; do
    wait_http "http://127.0.0.1:${GW_PORT[$v]}/hello"
    for i in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${UP_PORT[$v]}/health/ready") == 200 ]] && break
        sleep 0.2
    done
done

ALL="$PID_upstream $PID_gateway_a $PID_gateway_b $PID_up_a $PID_up_b"
others() { tr ' ' '\n' <<<"$ALL" | grep -vx "$1" | tr '\n' ' '; }
for round in $(seq 1 "$BENCH_ROUNDS"); do
    for v in a b; do
        gw=PID_gateway_$v up=PID_up_$v
        measure "proxy-$v" "${!gw}" "$(others "${!gw}")" wrk 8 "http://127.0.0.1:${GW_PORT[$v]}/hello"
        # Each build's own load generator: its mix speaks that build's API paths.
        TIDEWAY_BIN=${BIN[$v]} measure "shop-$v" "${!up}" "$(others "${!up}")" load --target "http://127.0.0.1:${UP_PORT[$v]}" \
            --mix shop --users 16 --rate "$R_SHOP"
    done
    log "round $round done"
done

median() { # median of column COL for LABEL
    awk -F'\t' -v l="$1" -v c="$2" '$1 == l { print $c }' "$BENCH_OUT/runs.tsv" | sort -g |
        awk '{ a[NR] = $1 } END { if (!NR) { print 0; exit } print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}
{
    echo "ab · A $TIDEWAY_BIN_A · B $TIDEWAY_BIN_B · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds · shop at $R_SHOP/s"
    summary 2 "req/s|ok/s"
    summary 4 "p99 ms"
    summary 9 "req/cpu-s"
    summary 11 "foreign cores"
    for what in proxy shop; do
        awk -v w="$what" -v a="$(median "$what-a" 9)" -v b="$(median "$what-b" 9)" \
            -v ra="$(median "$what-a" 2)" -v rb="$(median "$what-b" 2)" \
            'BEGIN { if (a > 0 && ra > 0) printf "%s B/A: req per CPU-s %.2f, req/s %.2f\n", w, b / a, rb / ra }'
    done
} | tee "$BENCH_OUT/summary.txt"
