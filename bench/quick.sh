#!/usr/bin/env bash
# bench/quick.sh — the hot path in a few minutes, run before a change to the gateway or a hop
# lands, and appended as one line to docs/bench-history.tsv so its cost shows over time.
#
# Side by side in one run, interleaved (A B C A B C …), each on an idle machine:
#   hello  — `tideway bench-upstream` (bare axum) at wrk -c8: the ceiling of this machine now;
#   proxy  — the gateway (`tideway gateway`) in front of that hello at wrk -c8;
#   item   — one catalog item through `tideway up` (gateway → catalog, SQLite) at wrk -c8;
#   shop   — `tideway up` under `tideway load --mix shop --rate R_SHOP` (open loop).
# Figures are ratios to the bare hello of the same run (req/s) and requests per CPU-second
# of the process under test; absolute req/s differ from day to day on this machine kind.
#
# Usage: bash bench/quick.sh        (BENCH_ROUNDS=3 BENCH_SECS=5 R_SHOP=300)
#        BENCH_HISTORY=0 bash bench/quick.sh   (do not append to docs/bench-history.tsv)
# Results: target/bench/quick-*/runs.tsv and summary.txt; one line in docs/bench-history.tsv:
# date, commit, hello req/s, proxy req/s, proxy/hello, proxy req per CPU-s, item req/s,
# item/hello, shop req per CPU-s, shop p99 ms, max foreign cores of the runs.

source "$(dirname "$0")/lib.sh"
BENCH_SECS=${BENCH_SECS:-5}
R_SHOP=${R_SHOP:-300}
bench_setup quick

DATA=$BENCH_OUT/data
mkdir -p "$DATA/gw" "$DATA/up"
cat >"$BENCH_OUT/gateway.toml" <<EOF2
data_dir = "$DATA/gw"
demo_users = false

[log]
filter = "warn"

[urls]
basket = "http://127.0.0.1:9400"

[gateway]
listen = "127.0.0.1:9401"

[[gateway.routes]]
prefix = "/hello"
upstream = "basket"
read = "public"
write = "public"
EOF2

export TIDEWAY_LOG__FILTER=warn
start upstream "$TIDEWAY_BIN" bench-upstream --listen 127.0.0.1:9400
start gateway "$TIDEWAY_BIN" --config "$BENCH_OUT/gateway.toml" gateway
start up env TIDEWAY_DATA_DIR="$DATA/up" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9402 \
    TIDEWAY_DEMO_USERS=false TIDEWAY_GATEWAY__RATE_LIMIT__ENABLED=false "$TIDEWAY_BIN" up
wait_http http://127.0.0.1:9400/hello
wait_http http://127.0.0.1:9401/hello
for i in $(seq 1 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9402/health/ready) == 200 ]] && break
    sleep 0.2
done
ITEM=$(curl -s 'http://127.0.0.1:9402/api/v1/catalog/items?page_size=1' | jq -r '.items[0].id')
[[ -n $ITEM && $ITEM != null ]] || { log "no catalog item through tideway up"; exit 1; }

ALL="$PID_upstream $PID_gateway $PID_up"
others() { tr ' ' '\n' <<<"$ALL" | grep -vx "$1" | tr '\n' ' '; }
for round in $(seq 1 "$BENCH_ROUNDS"); do
    measure hello "$PID_upstream" "$(others "$PID_upstream")" wrk 8 http://127.0.0.1:9400/hello
    measure proxy "$PID_gateway" "$(others "$PID_gateway")" wrk 8 http://127.0.0.1:9401/hello
    measure item "$PID_up" "$(others "$PID_up")" wrk 8 "http://127.0.0.1:9402/api/v1/catalog/items/$ITEM"
    measure shop "$PID_up" "$(others "$PID_up")" load --target http://127.0.0.1:9402 \
        --mix shop --users 16 --rate "$R_SHOP"
    log "round $round done"
done

median() { # median of column COL for LABEL
    awk -F'\t' -v l="$1" -v c="$2" '$1 == l { print $c }' "$BENCH_OUT/runs.tsv" | sort -g |
        awk '{ a[NR] = $1 } END { if (!NR) { print 0; exit } print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}
hello=$(median hello 2)
proxy=$(median proxy 2)
item=$(median item 2)
{
    echo "quick · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds · shop at $R_SHOP/s"
    summary 2 "req/s|ok/s"
    summary 4 "p99 ms"
    summary 9 "req/cpu-s"
    summary 11 "foreign cores"
    awk -v h="$hello" -v p="$proxy" -v i="$item" 'BEGIN { if (h > 0) printf "proxy/hello %.2f  item/hello %.2f\n", p / h, i / h }'
} | tee "$BENCH_OUT/summary.txt"

if [[ ${BENCH_HISTORY:-1} == 1 ]]; then
    history=$REPO/docs/bench-history.tsv
    [[ -f $history ]] || printf 'date\tcommit\thello_rps\tproxy_rps\tproxy_per_hello\tproxy_req_per_cpu_s\titem_rps\titem_per_hello\tshop_req_per_cpu_s\tshop_p99_ms\tmax_foreign_cores\n' >"$history"
    foreign=$(awk -F'\t' 'BEGIN { m = 0 } $11 > m { m = $11 } END { print m }' "$BENCH_OUT/runs.tsv")
    awk -v d="$(date -u +%F)" -v c="$BENCH_COMMIT" -v h="$hello" -v p="$proxy" -v i="$item" \
        -v pc="$(median proxy 9)" -v sc="$(median shop 9)" -v sp="$(median shop 4)" -v f="$foreign" \
        'BEGIN { printf "%s\t%s\t%.0f\t%.0f\t%.2f\t%.0f\t%.0f\t%.2f\t%.0f\t%.2f\t%s\n", d, c, h, p, (h ? p / h : 0), pc, i, (h ? i / h : 0), sc, sp, f }' >>"$history"
    log "appended to $history"
fi
