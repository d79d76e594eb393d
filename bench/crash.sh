#!/usr/bin/env bash
# bench/crash.sh — orders cancelled when processes are killed during checkouts, for two
# binaries side by side (BEFORE: a build without the designed timings, AFTER: this tree).
#
# Each run starts the seven processes of the distributed shape (six services and the
# gateway) on PostgreSQL (a fresh database per service and run) and NATS JetStream (a
# stream and subject root of its own), sends `tideway load --mix checkout` at R orders/s for
# SECS seconds, and every KILL_EVERY seconds kills one of inventory, payment and ordering in
# turn with SIGKILL and restarts it a second later on the same address and database. Once
# the load ends it waits (at most SETTLE seconds) until no order is pending and counts, from
# the ordering database: orders, confirmed, cancelled by a step timeout ("timed out" in the
# reason), cancelled otherwise, still pending. Runs alternate BEFORE AFTER BEFORE AFTER …
# for ROUNDS rounds. The figure is a share of orders, not a speed, so debug builds do.
#
# Usage:
#   BEFORE_BIN=/path/to/old/tideway AFTER_BIN=target/debug/tideway bash bench/crash.sh
#   (ROUNDS=2 SECS=60 R=4 KILL_EVERY=5 SETTLE=90 PG=postgres://postgres@127.0.0.1:5432)
# Results: target/bench/crash-<UTC time>/runs.tsv and each run's process logs.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AFTER_BIN=${AFTER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/tideway}
BEFORE_BIN=${BEFORE_BIN:?set BEFORE_BIN to the binary to compare with}
ROUNDS=${ROUNDS:-2}
SECS=${SECS:-60}
R=${R:-4}
KILL_EVERY=${KILL_EVERY:-5}
SETTLE=${SETTLE:-90}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
OUT=${OUT:-$REPO/target/bench/crash-$(date -u +%Y%m%d-%H%M%S)}
SERVICES=(identity catalog basket inventory payment ordering)
VICTIMS=(inventory payment ordering)
BASE_PORT=${BASE_PORT:-19480}
mkdir -p "$OUT"
declare -A PID

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

port_of() { # service → port
    local i
    for i in "${!SERVICES[@]}"; do
        [[ ${SERVICES[$i]} == "$1" ]] && { echo $((BASE_PORT + 1 + i)); return; }
    done
    echo "$BASE_PORT"
}

psql_q() { psql -qtA "$PG/$1" -c "$2"; }

stop_all() {
    local name
    for name in "${!PID[@]}"; do kill -9 "${PID[$name]}" 2>/dev/null || true; done
    for name in "${!PID[@]}"; do wait "${PID[$name]}" 2>/dev/null || true; done
    PID=()
}
trap stop_all EXIT

# start_proc BIN RUN NAME: starts a service (or the gateway) with the run's environment.
start_proc() {
    local bin=$1 run=$2 name=$3 args
    if [[ $name == gateway ]]; then args=(gateway); else args=(serve "$name"); fi
    "$bin" "${args[@]}" >>"$OUT/$run/$name.log" 2>&1 &
    PID[$name]=$!
}

wait_ready() { # port
    local i
    for i in $(seq 1 600); do
        curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "port $1 not ready"; return 1
}

run_one() { # variant round
    local variant=$1 round=$2 bin run db s
    bin=$([[ $variant == before ]] && echo "$BEFORE_BIN" || echo "$AFTER_BIN")
    run=$variant-$round
    mkdir -p "$OUT/$run"
    export TIDEWAY_DATA_DIR=$OUT/$run TIDEWAY_LOG__FILTER=warn
    export TIDEWAY_BUS__STREAM=CRASH_${run//-/_}_$$ TIDEWAY_BUS__ROOT=crash${run//-/}x$$
    export TIDEWAY_GATEWAY__LISTEN=127.0.0.1:$BASE_PORT
    for s in "${SERVICES[@]}"; do
        db=crash_${run//-/_}_$$_$s
        dropdb --if-exists -h 127.0.0.1 -U postgres "$db"
        createdb -h 127.0.0.1 -U postgres "$db"
        export "TIDEWAY_${s^^}__DATABASE_URL=$PG/$db"
        export "TIDEWAY_${s^^}__LISTEN=127.0.0.1:$(port_of "$s")"
        export "TIDEWAY_URLS__${s^^}=http://127.0.0.1:$(port_of "$s")"
    done
    for s in "${SERVICES[@]}" gateway; do
        start_proc "$bin" "$run" "$s"
        wait_ready "$(port_of "$s")"
    done
    log "$run: load at $R orders/s for ${SECS}s, a kill every ${KILL_EVERY}s"
    "$AFTER_BIN" load --target "http://127.0.0.1:$BASE_PORT" --mix checkout --rate "$R" \
        --duration "${SECS}s" --users 8 --out "$OUT/$run/load" >"$OUT/$run/load.log" 2>&1 &
    local load=$! n=0 victim
    sleep 3
    while kill -0 "$load" 2>/dev/null; do
        sleep "$KILL_EVERY"
        kill -0 "$load" 2>/dev/null || break
        victim=${VICTIMS[$((n % 3))]}
        n=$((n + 1))
        kill -9 "${PID[$victim]}" 2>/dev/null || true
        wait "${PID[$victim]}" 2>/dev/null || true
        sleep 1
        start_proc "$bin" "$run" "$victim"
    done
    wait "$load" || true
    local orders_db=crash_${run//-/_}_$$_ordering pending i
    for i in $(seq 1 "$SETTLE"); do
        pending=$(psql_q "$orders_db" "SELECT COUNT(*) FROM orders WHERE status = 'pending'")
        [[ $pending == 0 ]] && break
        sleep 1
    done
    local total confirmed timed_out other
    total=$(psql_q "$orders_db" "SELECT COUNT(*) FROM orders")
    confirmed=$(psql_q "$orders_db" "SELECT COUNT(*) FROM orders WHERE status = 'confirmed'")
    timed_out=$(psql_q "$orders_db" "SELECT COUNT(*) FROM orders WHERE status = 'cancelled' AND reason LIKE '%timed out%'")
    other=$(psql_q "$orders_db" "SELECT COUNT(*) FROM orders WHERE status = 'cancelled' AND reason NOT LIKE '%timed out%'")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$round" "$n" "$total" "$confirmed" \
        "$timed_out" "$other" "$pending" | tee -a "$OUT/runs.tsv"
    stop_all
    for s in "${SERVICES[@]}"; do
        dropdb --if-exists -h 127.0.0.1 -U postgres "crash_${run//-/_}_$$_$s" || true
    done
}

printf 'variant\tround\tkills\torders\tconfirmed\tcancelled_timeout\tcancelled_other\tpending\n' >"$OUT/runs.tsv"
for round in $(seq 1 "$ROUNDS"); do
    run_one before "$round"
    run_one after "$round"
done
log "results in $OUT/runs.tsv"
awk -F'\t' 'NR > 1 { o[$1] += $4; t[$1] += $6; p[$1] += $8 }
    END { for (v in o) printf "%s: %d orders, %d cancelled by a step timeout (%.1f%%), %d pending\n",
          v, o[v], t[v], o[v] ? 100 * t[v] / o[v] : 0, p[v] }' "$OUT/runs.tsv" | tee "$OUT/summary.txt"
