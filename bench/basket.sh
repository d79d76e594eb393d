#!/usr/bin/env bash
# bench/basket.sh — the basket's get and add on SQL vs Redis, side by side: two `tideway up`
# shops from one binary, one with basket.store = "sql" (SQLite, the embedded default), one
# with basket.store = "redis" (a redis-server of the bench's own, so its CPU is counted
# with the shop's), loaded in turn (A B A B …) through the gateway with wrk.
#
#   get: GET /api/v1/basket of 64 signed-in users in turn, each holding 2 lines
#   add: POST /api/v1/basket/items of 1 unit of one of 4 items, 64 users in turn (baskets
#        emptied before each run, so no line reaches its limit)
#
# Both reprice every line through the catalog (in-process), so the figures are the whole
# request's, of which the store is one part. With BENCH_POSTGRES=1 a third shop keeps its
# basket on the PostgreSQL at 127.0.0.1:5432 (that server's CPU is not counted).
#
# Usage: bash bench/basket.sh   (BENCH_ROUNDS=3 BENCH_SECS=8 BENCH_LOADS="c8 c64")
# Results: target/bench/basket-*/runs.tsv and summary.txt.

source "$(dirname "$0")/lib.sh"
bench_setup basket
command -v redis-server >/dev/null || { log "redis-server is missing: run scripts/deps.sh"; exit 1; }
BENCH_LOADS=${BENCH_LOADS:-c8 c64}
USERS=${BENCH_USERS:-64}

REDIS_PORT=9499
start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$BENCH_OUT"
export TIDEWAY_LOG__FILTER=warn TIDEWAY_DEMO_USERS=false
start sql env TIDEWAY_DATA_DIR="$BENCH_OUT/data-sql" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9491 \
    "$TIDEWAY_BIN" up
start redis_shop env TIDEWAY_DATA_DIR="$BENCH_OUT/data-redis" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9492 \
    TIDEWAY_BASKET__STORE=redis TIDEWAY_BASKET__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    "$TIDEWAY_BIN" up
declare -A BASE=([sql]=http://127.0.0.1:9491 [redis]=http://127.0.0.1:9492)
declare -A TESTED=([sql]=$PID_sql [redis]="$PID_redis_shop $PID_redis")
TARGETS=(sql redis)
if [[ ${BENCH_POSTGRES:-0} == 1 ]]; then
    PGDB=tideway_bench_basket_$(date +%s)
    createdb -h 127.0.0.1 -U postgres "$PGDB"
    start pg_shop env TIDEWAY_DATA_DIR="$BENCH_OUT/data-pg" TIDEWAY_GATEWAY__LISTEN=127.0.0.1:9493 \
        TIDEWAY_BASKET__DATABASE_URL="postgres://postgres@127.0.0.1:5432/$PGDB" "$TIDEWAY_BIN" up
    BASE[postgres]=http://127.0.0.1:9493
    TESTED[postgres]=$PID_pg_shop
    TARGETS+=(postgres)
fi

# Users, their tokens and the items, per target.
for target in "${TARGETS[@]}"; do
    base=${BASE[$target]}
    for i in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$base/health/ready") == 200 ]] && break
        sleep 0.2
    done
    # The four items with the most stock.
    curl -s "$base/api/v1/catalog/items?page_size=100" |
        jq -r '.items | sort_by(-.stock) | .[0:4][] | .id' >"$BENCH_OUT/$target.items"
    : >"$BENCH_OUT/$target.tokens"
    for u in $(seq 1 $USERS); do
        email="bench$u@basket.test"
        curl -s -o /dev/null -X POST "$base/api/v1/identity/register" -H 'content-type: application/json' \
            -d "{\"email\":\"$email\",\"password\":\"bench-pass-$u\",\"name\":\"Bench $u\"}"
        curl -s -X POST "$base/api/v1/identity/login" -H 'content-type: application/json' \
            -d "{\"email\":\"$email\",\"password\":\"bench-pass-$u\"}" | jq -r .access_token \
            >>"$BENCH_OUT/$target.tokens"
    done
    log "$target: $(grep -c . "$BENCH_OUT/$target.tokens") users signed in"
done

# The wrk scripts: users (and items) in turn, read from files.
cat >"$BENCH_OUT/get.lua" <<'EOF'
local tokens, i = {}, 0
for line in io.lines(os.getenv("BASKET_TOKENS")) do tokens[#tokens + 1] = line end
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/v1/basket", { ["authorization"] = "Bearer " .. tokens[i] })
end
EOF
cat >"$BENCH_OUT/add.lua" <<'EOF'
local tokens, items, i = {}, {}, 0
for line in io.lines(os.getenv("BASKET_TOKENS")) do tokens[#tokens + 1] = line end
for line in io.lines(os.getenv("BASKET_ITEMS")) do items[#items + 1] = line end
request = function()
  i = i + 1
  local token = tokens[(i - 1) % #tokens + 1]
  local item = items[math.floor((i - 1) / #tokens) % #items + 1]
  return wrk.format("POST", "/api/v1/basket/items",
    { ["authorization"] = "Bearer " .. token, ["content-type"] = "application/json" },
    '{"item_id":"' .. item .. '","quantity":1}')
end
EOF

# Empties every basket of TARGET and, with "seed", puts 1 of the first 2 items in each.
prepare() {
    local target=$1 seed=${2:-} base=${BASE[$1]} token item
    while read -r token; do
        curl -s -o /dev/null -X DELETE "$base/api/v1/basket" -H "authorization: Bearer $token"
        if [[ $seed == seed ]]; then
            for item in $(head -2 "$BENCH_OUT/$target.items"); do
                curl -s -o /dev/null -X POST "$base/api/v1/basket/items" \
                    -H "authorization: Bearer $token" -H 'content-type: application/json' \
                    -d "{\"item_id\":\"$item\",\"quantity\":1}"
            done
        fi
    done <"$BENCH_OUT/$target.tokens"
}

others() {
    local target=$1 t pids=""
    for t in "${TARGETS[@]}"; do [[ $t != "$target" ]] && pids="$pids ${TESTED[$t]}"; done
    echo "$pids"
}

for round in $(seq 1 "$BENCH_ROUNDS"); do
    for load in $BENCH_LOADS; do
        for op in get add; do
            for target in "${TARGETS[@]}"; do
                if [[ $op == get ]]; then prepare "$target" seed; else prepare "$target"; fi
                export BASKET_TOKENS=$BENCH_OUT/$target.tokens BASKET_ITEMS=$BENCH_OUT/$target.items
                WRK_SCRIPT=$BENCH_OUT/$op.lua measure "$op $load $target" "${TESTED[$target]}" \
                    "$(others "$target")" wrk "${load#c}" "${BASE[$target]}/api/v1/basket"
            done
        done
    done
    log "round $round done"
done

{
    echo "basket get/add, SQL (SQLite) vs Redis, through tideway up · commit $BENCH_COMMIT · $(date -u +%FT%TZ) · ${BENCH_SECS}s runs · $BENCH_ROUNDS rounds · $USERS users"
    summary 2 "req/s"
    summary 3 "p50 ms"
    summary 4 "p99 ms"
    summary 6 "errors"
    summary 9 "req/cpu-s"
    summary 10 "steal %"
    summary 11 "foreign cores"
} | tee "$BENCH_OUT/summary.txt"
