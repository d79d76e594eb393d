#!/usr/bin/env bash
# bench/split.sh — the all-in-one process (`tideway up`) vs the gateway and each service as
# separate processes (`tideway serve identity|catalog|basket` + `tideway gateway`), under
# the same `tideway load` mix, side by side.
#
# Both shapes run at once on loopback with SQLite in their own data directories:
#   all-in-one — gateway on :9280;
#   split      — identity :9281, catalog :9282, basket :9283, gateway :9290.
# Tideway logs at `warn` (no access logs). For each round the shapes run in turn (A B A B …):
#   shop   — `tideway load --mix shop --rate R_SHOP --users 16` (open loop; the 5% checkout
#            share goes out as basket views until checkout exists, see the report's notes);
#   browse — `tideway load --mix browse --rate R_BROWSE` (anonymous catalog reads), at a
#            rate near or above what the machine can serve, so ok/s shows the ceiling;
#   c64    — wrk -c64 on one catalog item (closed-loop saturation of the read path).
# CPU: the generator samples /proc/<pid>/stat of every process of the shape around the
# measured phase only (not the users' registration), so "req/cpu-s" is per CPU-second of
# the whole shape. Idle wait, steal and foreign CPU as in bench/lib.sh.
#
# Usage: bash bench/split.sh        (BENCH_ROUNDS=3 BENCH_SECS=8 R_SHOP=300 R_BROWSE=1500)
# Results: target/bench/split-*/runs.tsv, summary.txt, and each run's report.json/plot.png.

source "$(dirname "$0")/lib.sh"
R_SHOP=${R_SHOP:-300}
R_BROWSE=${R_BROWSE:-1500}
bench_setup split

export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
# Each round registers and signs in its users again from one address: past the default
# sign-in and registration limits.
export TIDEWAY_GATEWAY__RATE_LIMIT__ENABLED=false
mkdir -p "$BENCH_OUT/one" "$BENCH_OUT/split"

start one env TIDEWAY_DATA_DIR="$BENCH_OUT/one" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9280 \
    "$TIDEWAY_BIN" up

SPLIT_ENV=(TIDEWAY_DATA_DIR="$BENCH_OUT/split"
    TIDEWAY_IDENTITY__LISTEN=127.0.0.1:9281 TIDEWAY_CATALOG__LISTEN=127.0.0.1:9282
    TIDEWAY_BASKET__LISTEN=127.0.0.1:9283 TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9290
    TIDEWAY_URLS__IDENTITY=http://127.0.0.1:9281 TIDEWAY_URLS__CATALOG=http://127.0.0.1:9282
    TIDEWAY_URLS__BASKET=http://127.0.0.1:9283)
start identity env "${SPLIT_ENV[@]}" "$TIDEWAY_BIN" serve identity
wait_http http://127.0.0.1:9281/health/ready
start catalog env "${SPLIT_ENV[@]}" "$TIDEWAY_BIN" serve catalog
start basket env "${SPLIT_ENV[@]}" "$TIDEWAY_BIN" serve basket
start gateway env "${SPLIT_ENV[@]}" "$TIDEWAY_BIN" gateway
for port in 9280 9290; do
    for i in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/ready") == 200 ]] && break
        sleep 0.2
    done
done

ITEM=$(curl -s 'http://127.0.0.1:9280/api/v1/catalog/items?page_size=1' | jq -r '.items[0].id')
SPLIT_ITEM=$(curl -s 'http://127.0.0.1:9290/api/v1/catalog/items?page_size=1' | jq -r '.items[0].id')
declare -A BASE=([one]=http://127.0.0.1:9280 [split]=http://127.0.0.1:9290)
declare -A ITEMS=([one]=$ITEM [split]=$SPLIT_ITEM)
declare -A TESTED=([one]="$PID_one" [split]="$PID_identity $PID_catalog $PID_basket $PID_gateway")

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for load in shop browse c64; do
        for shape in one split; do
            own=${TESTED[one]}
            [[ $shape == one ]] && own=${TESTED[split]}
            label="$load $shape"
            case $load in
            shop) measure "$label" "${TESTED[$shape]}" "$own" load --target "${BASE[$shape]}" \
                --mix shop --users 16 --rate "$R_SHOP" ;;
            browse) measure "$label" "${TESTED[$shape]}" "$own" load --target "${BASE[$shape]}" \
                --mix browse --rate "$R_BROWSE" --timeout 2s ;;
            c64) measure "$label" "${TESTED[$shape]}" "$own" wrk 64 \
                "${BASE[$shape]}/api/v1/catalog/items/${ITEMS[$shape]}" ;;
            esac
        done
    done
    log "round $round done"
done

{
    echo "split vs all-in-one · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds"
    echo "shop at $R_SHOP/s, browse at $R_BROWSE/s (tideway load, open loop); c64 = wrk on one item"
    summary 2 "req/s|ok/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 6 "errors"
    summary 7 "p99.9 ms"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
